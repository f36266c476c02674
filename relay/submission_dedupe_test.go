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
