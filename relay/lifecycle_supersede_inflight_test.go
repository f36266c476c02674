package relay

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/queue"
)

// A reset refused 5.1.1 while a newer reset for the same user was accepted
// during its attempt ends superseded: the trail must not claim that it was
// retried at the backup address, since it never is.
func TestLifecycleSupersededDuringBounceNoFalseBackupRetry(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	entered, release := make(chan struct{}, 1), make(chan struct{})
	e.sink.SetData(func(_ string, rcpts []string, _ []byte) *smtp.SMTPError {
		if rcpts[0] != "jane@dest.test" {
			return nil
		}
		select {
		case entered <- struct{}{}:
			select { // the first attempt waits for the newer reset
			case <-release:
			case <-time.After(3 * time.Second):
			}
		default:
		}
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	})
	c := e.client("PLAIN")
	older := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "old-link", "X-LK-Backup-Email: jane.backup@backup.test")), 0)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("delivery did not start")
	}
	time.Sleep(5 * time.Millisecond) // ids order by millisecond
	newer := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "new-link", "X-LK-Backup-Email: jane.backup@backup.test")), 0)
	close(release)
	waitFor(t, "older final", 5*time.Second, func() bool { return queue.Final(itemState(e, older).State) })
	if it := itemState(e, older); it.State != queue.StateSuperseded || it.SupersededBy != newer {
		t.Errorf("older reset %s by %q, want superseded by %s", it.State, it.SupersededBy, newer)
	}
	if types := strings.Join(eventTypes(t, e, older), ","); strings.Contains(types, "retried_backup") {
		t.Errorf("older reset's trail %s claims a backup retry that never happens", types)
	}
	waitFor(t, "newer delivered to the backup", 5*time.Second, func() bool {
		it := itemState(e, newer)
		return it.State == queue.StateDelivered && it.Rcpt == "jane.backup@backup.test"
	})
	for _, m := range e.sink.Messages() {
		if strings.Contains(string(m.Data), "old-link") {
			t.Errorf("the superseded reset was delivered to %v", m.To)
		}
	}
}
