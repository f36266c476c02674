package relay

import (
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/queue"
)

// A reset whose expiry header is already past when latchkey accepts it
// carries a dead link: it is never delivered, it expires and is escalated.
func TestTokenExpiredBeforeAcceptance(t *testing.T) {
	pol := strings.Replace(fastPolicy, `expiry = "4s"`, "expiry = \"4s\"\nexpiry_header = \"X-LK-Expires\"", 1)
	e := newEnv(t, envOpts{policy: pol})
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	id := queue.ItemID(e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "dead1", "X-LK-Expires: "+past)), 0)
	waitFor(t, "final", 5*time.Second, func() bool { it := itemState(e, id); return it != nil && queue.Final(it.State) })
	if it := itemState(e, id); it.State != queue.StateExpired || it.Attempts != 0 {
		t.Errorf("item %+v, want expired without an attempt", it)
	}
	if types := strings.Join(eventTypes(t, e, id), ","); types != "queued,expired,escalated" {
		t.Errorf("trail %s, want queued,expired,escalated", types)
	}
	if n := e.sink.Count(); n != 0 {
		t.Errorf("%d messages delivered; a dead link must never be sent", n)
	}
}
