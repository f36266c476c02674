package relay

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/queue"
)

const reloadPolicy = `default_class = "reset"
[[classes]]
name = "reset"
expiry = %q
margin = "0s"
retry = ["300ms"]
workers = 1
`

// SIGHUP (Server.Reload) re-reads the policy: a good edit takes effect for
// the next message on a connection that stays open; a broken edit is
// refused and the running policy stays; queued messages keep the deadline
// they were given.
func TestPolicyReloadKeepsConnections(t *testing.T) {
	e := newEnv(t, envOpts{policy: fmt.Sprintf(reloadPolicy, "30m")})
	file := e.srv.Policy.File()
	c := e.client("PLAIN")
	defer c.Close()
	window := func(id string) time.Duration {
		t.Helper()
		var it *queue.Item
		waitFor(t, "item "+id, 5*time.Second, func() bool { it = itemState(e, queue.ItemID(id, 0)); return it != nil })
		return it.Deadline.Sub(it.Accepted).Round(time.Minute)
	}
	first := e.sendID(c, "noreply@example.com", []string{"a@dest.test"}, resetMsg("a@dest.test", "r1"))
	if w := window(first); w != 30*time.Minute {
		t.Fatalf("first message's window %v, want 30m", w)
	}

	if err := os.WriteFile(file, []byte(fmt.Sprintf(reloadPolicy, "15m")), 0o600); err != nil {
		t.Fatal(err)
	}
	e.srv.Reload()
	second := e.sendID(c, "noreply@example.com", []string{"b@dest.test"}, resetMsg("b@dest.test", "r2"))
	if w := window(second); w != 15*time.Minute {
		t.Errorf("after a good edit: window %v, want 15m", w)
	}

	if err := os.WriteFile(file, []byte(fmt.Sprintf(reloadPolicy, "soon")), 0o600); err != nil {
		t.Fatal(err)
	}
	e.srv.Reload()
	third := e.sendID(c, "noreply@example.com", []string{"c@dest.test"}, resetMsg("c@dest.test", "r3"))
	if w := window(third); w != 15*time.Minute {
		t.Errorf("after a broken edit: window %v, want the running policy's 15m", w)
	}
	if w := window(first); w != 30*time.Minute {
		t.Errorf("the first message's deadline changed to %v", w)
	}
}

// A class that a reload adds gets its own delivery workers: its messages
// are delivered, not left queued past their deadline.
func TestPolicyReloadAddsClassLane(t *testing.T) {
	e := newEnv(t, envOpts{policy: fmt.Sprintf(reloadPolicy, "30m")})
	withAlerts := fmt.Sprintf(reloadPolicy, "30m") + `
[[classes]]
name = "alerts"
expiry = "30m"
margin = "0s"
retry = ["300ms"]
workers = 1

[[rules]]
name = "alerts-by-header"
class = "alerts"
[rules.header]
X-LK-Class = "^alerts$"
`
	if err := os.WriteFile(e.srv.Policy.File(), []byte(withAlerts), 0o600); err != nil {
		t.Fatal(err)
	}
	e.srv.Reload()
	msg := resetMsg("ops@dest.test", "alert1")
	msg = []byte(strings.Replace(string(msg), "X-LK-Class: reset", "X-LK-Class: alerts", 1))
	id := queue.ItemID(e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"ops@dest.test"}, msg), 0)
	waitFor(t, "the new class's message delivered", 5*time.Second, func() bool {
		it := itemState(e, id)
		return it != nil && it.State == queue.StateDelivered
	})
	if it := itemState(e, id); it.Class != "alerts" {
		t.Errorf("class %q, want alerts", it.Class)
	}
}
