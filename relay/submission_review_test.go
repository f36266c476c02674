package relay

import (
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/queue"
)

// A recipient longer than RFC 5321 allows is refused at RCPT, before it can
// reach the queue (or a Salesforce escalation, which could not store it).
func TestRecipientTooLong(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	c := e.client("PLAIN")
	if err := c.Mail("noreply@example.com", nil); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63) + ".test"
	err := c.Rcpt(long, nil)
	if code, enh := smtpCode(err); code != 501 || enh != "5.1.3" {
		t.Errorf("RCPT of a %d-byte address answered %v, want 501 5.1.3", len(long), err)
	}
	// A normal recipient in the same transaction still works.
	if err := c.Rcpt("jane@dest.test", nil); err != nil {
		t.Errorf("RCPT after the refusal: %v", err)
	}
}

// A message to an address on the bounce list and, as well, to that
// address's backup sends the backup one copy, not two.
func TestBackupAlreadyARecipient(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	if err := e.srv.Queue.AddSuppression(queue.Suppression{List: "bounce", Address: "gone@dest.test", Reason: "5.1.1"}); err != nil {
		t.Fatal(err)
	}
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"gone@dest.test", "Jane.Backup@dest.test"},
		resetMsg("gone@dest.test", "bkdup", "X-LK-Backup-Email: jane.backup@dest.test"))
	e.sink.Wait(1, 5*time.Second)
	waitFor(t, "second recipient delivered", 5*time.Second, func() bool {
		it := itemState(e, queue.ItemID(id, 1))
		return it != nil && it.State == queue.StateDelivered
	})
	time.Sleep(200 * time.Millisecond)
	if n := e.sink.Count(); n != 1 {
		t.Errorf("the backup got %d copies, want 1", n)
	}
	if it := itemState(e, queue.ItemID(id, 0)); it != nil {
		t.Errorf("the suppressed recipient was queued (for %s)", it.Rcpt)
	}
}
