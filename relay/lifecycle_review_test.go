package relay

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/queue"
)

// sendDSN sends a "failed, 5.1.1 user unknown" DSN about rcpt to the VERP
// address verp on the inbound listener, as a remote MTA would.
func sendDSN(t *testing.T, e *env, verp, rcpt string) {
	t.Helper()
	dsn, err := bounce.BuildDSN(bounce.DSNOptions{
		ReportingMTA: "mx.dest.test", From: "MAILER-DAEMON@mx.dest.test", To: verp,
		Recipients: []bounce.DSNRecipient{{Recipient: rcpt, Action: "failed", Status: "5.1.1",
			Diagnostic: "smtp; 550 5.1.1 <" + rcpt + ">: Recipient address rejected: User unknown", RemoteMTA: "mx.dest.test"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.Dial(e.srv.InboundAddrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Hello("mx.dest.test")
	if err := c.SendMail("", []string{verp}, bytes.NewReader(dsn)); err != nil {
		t.Fatalf("DSN refused: %v", err)
	}
}

func countType(t *testing.T, e *env, id, typ string) int {
	t.Helper()
	n := 0
	for _, ty := range eventTypes(t, e, id) {
		if ty == typ {
			n++
		}
	}
	return n
}

// A remote MTA that sends the same DSN twice (or two hops that each report
// the failure) must not escalate the reset twice: the second report finds
// the item already bounced.
func TestLifecycleDuplicateDSNEscalatesOnce(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	iid := queue.ItemID(e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "dup-dsn")), 0)
	got := e.sink.Wait(1, 5*time.Second)
	if len(got) != 1 {
		t.Fatal("first delivery missing")
	}
	sendDSN(t, e, got[0].From, "jane@dest.test")
	waitFor(t, "bounced", 5*time.Second, func() bool { return itemState(e, iid).State == queue.StateBounced })
	sendDSN(t, e, got[0].From, "jane@dest.test")
	if n := countType(t, e, iid, audit.Escalated); n != 1 {
		t.Errorf("%d escalated events after the same DSN twice, want 1: %v", n, eventTypes(t, e, iid))
	}
}

// A reset delivered to its backup address after a late bounce, followed by
// a repeat of that DSN (it names the original address): the backup address
// must not be suppressed, and the item stays delivered (to the backup).
func TestLifecycleStaleDSNAfterBackupDelivery(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	iid := queue.ItemID(e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "stale-dsn", "X-LK-Backup-Email: jane.backup@backup.test")), 0)
	got := e.sink.Wait(1, 5*time.Second)
	if len(got) != 1 {
		t.Fatal("first delivery missing")
	}
	sendDSN(t, e, got[0].From, "jane@dest.test")
	if got = e.sink.Wait(2, 5*time.Second); len(got) != 2 {
		t.Fatal("backup delivery missing")
	}
	waitFor(t, "delivered to backup", 5*time.Second, func() bool {
		it := itemState(e, iid)
		return it.State == queue.StateDelivered && it.Rcpt == "jane.backup@backup.test"
	})
	sendDSN(t, e, got[0].From, "jane@dest.test")
	if sup, _ := e.srv.Queue.Suppressed("jane.backup@backup.test", []string{"bounce"}); len(sup) != 0 {
		t.Errorf("a DSN about jane@dest.test suppressed the backup address: %v", sup)
	}
	if it := itemState(e, iid); it.State != queue.StateDelivered {
		t.Errorf("item %s after a stale DSN, want still delivered to the backup", it.State)
	}
	if n := countType(t, e, iid, audit.Escalated); n != 0 {
		t.Errorf("%d escalations for a reset its backup address received", n)
	}
}

// Two resets to the same user, both delivered, both bounced late. The DSN
// for the newer one arrives first and sends it to the backup address; the
// DSN for the older one then arrives: its link is dead and must not reach
// the backup address after the newer one.
func TestLifecycleLateDSNDoesNotRedirectSupersededReset(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	c := e.client("PLAIN")
	older := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "old-link", "X-LK-Backup-Email: jane.backup@backup.test")), 0)
	e.sink.Wait(1, 5*time.Second)
	time.Sleep(5 * time.Millisecond) // ids order by millisecond
	newer := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "new-link", "X-LK-Backup-Email: jane.backup@backup.test")), 0)
	if got := e.sink.Wait(2, 5*time.Second); len(got) != 2 {
		t.Fatal("deliveries missing")
	}
	waitFor(t, "both delivered", 5*time.Second, func() bool {
		return itemState(e, older).State == queue.StateDelivered && itemState(e, newer).State == queue.StateDelivered
	})
	sendDSN(t, e, itemState(e, newer).Sender, "jane@dest.test")
	if got := e.sink.Wait(3, 5*time.Second); len(got) != 3 || !bytes.Contains(got[2].Data, []byte("new-link")) {
		t.Fatal("newer reset not sent to the backup address")
	}
	sendDSN(t, e, itemState(e, older).Sender, "jane@dest.test")
	waitFor(t, "older bounced", 5*time.Second, func() bool { return itemState(e, older).State == queue.StateBounced })
	time.Sleep(500 * time.Millisecond)
	for _, m := range e.sink.Messages()[3:] {
		if bytes.Contains(m.Data, []byte("old-link")) {
			t.Errorf("the superseded reset was sent to %v after the newer one", m.To)
		}
	}
	if types := strings.Join(eventTypes(t, e, older), ","); strings.Contains(types, "retried_backup") {
		t.Errorf("older reset's trail %s claims a backup retry", types)
	}
}
