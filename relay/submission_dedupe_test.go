package relay

import (
	"strings"
	"testing"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
)

// A reset to a suppressed address without a backup queues nothing but is
// escalated. Salesforce resubmits a message whose 250 it did not see: the
// resubmission must be recognised as a duplicate, not escalated again (a
// second Case for one reset).
func TestSuppressedResubmissionIsDeduplicated(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	if err := e.srv.Queue.AddSuppression(queue.Suppression{List: "bounce", Address: "gone@dest.test", Reason: "5.1.1 userunknown"}); err != nil {
		t.Fatal(err)
	}
	msg := resetMsg("gone@dest.test", "supdup")
	c := e.client("PLAIN")
	first := e.sendID(c, "noreply@example.com", []string{"gone@dest.test"}, msg)
	second := e.sendID(c, "noreply@example.com", []string{"gone@dest.test"}, msg)
	if second != first {
		t.Errorf("resubmission answered as %s, want the original %s", second, first)
	}
	evs, err := audit.Show(e.srv.Store.DB, "<supdup.abc@sfdc.net>")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	got := strings.Join(types, ",")
	if strings.Count(got, "escalated") != 1 || strings.Count(got, "suppressed") != 1 || strings.Count(got, "received") != 1 {
		t.Errorf("trail %s: want one received, one suppressed, one escalated", got)
	}
}

// A suppressed address whose backup is suppressed too (or is the same
// address) gets nothing queued: the reset is escalated, never sent to an
// address known to bounce.
func TestSuppressedBackupNotUsed(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	for _, a := range []string{"gone@dest.test", "gone.too@backup.test"} {
		if err := e.srv.Queue.AddSuppression(queue.Suppression{List: "bounce", Address: a, Reason: "5.1.1 userunknown"}); err != nil {
			t.Fatal(err)
		}
	}
	c := e.client("PLAIN")
	for i, backup := range []string{"Gone.Too@backup.test", "GONE@dest.test"} {
		id := e.sendID(c, "noreply@example.com", []string{"gone@dest.test"},
			resetMsg("gone@dest.test", "supbk"+string(rune('a'+i)), "X-LK-Backup-Email: "+backup))
		if it, _ := e.srv.Queue.Get(queue.ItemID(id, 0)); it != nil {
			t.Errorf("backup %s: item queued for %s, want nothing queued", backup, it.Rcpt)
		}
		evs, err := audit.Show(e.srv.Store.DB, "<supbk"+string(rune('a'+i))+".abc@sfdc.net>")
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, ev := range evs {
			types = append(types, ev.Type)
		}
		if got := strings.Join(types, ","); strings.Contains(got, "retried_backup") || !strings.Contains(got, "escalated") {
			t.Errorf("backup %s: trail %s, want escalated and no retried_backup", backup, got)
		}
	}
	if n := e.sink.Count(); n != 0 {
		t.Errorf("%d messages delivered", n)
	}
}
