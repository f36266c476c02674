package relay

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/queue"
)

// An older reset that hard-bounces after a newer one for the same user was
// accepted is not escalated: the newer one decides, so support gets one
// Case for the user, not one per reset.
func TestSupersededResetNotEscalated(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	entered, release := make(chan struct{}, 1), make(chan struct{})
	e.sink.SetData(func(_ string, rcpts []string, _ []byte) *smtp.SMTPError {
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
	older := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "esc-old")), 0)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("delivery did not start")
	}
	time.Sleep(5 * time.Millisecond) // ids order by millisecond
	newer := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "esc-new")), 0)
	close(release)
	for _, id := range []string{older, newer} {
		waitFor(t, id+" final", 5*time.Second, func() bool { it := itemState(e, id); return it != nil && queue.Final(it.State) })
	}
	if types := strings.Join(eventTypes(t, e, older), ","); strings.Contains(types, "escalated") {
		t.Errorf("older reset's trail %s: escalated although a newer one replaced it", types)
	}
	if types := strings.Join(eventTypes(t, e, newer), ","); !strings.Contains(types, "escalated") {
		t.Errorf("newer reset's trail %s: want it escalated", types)
	}
}
