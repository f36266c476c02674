package relay

import (
	"strings"
	"testing"
)

// A message to two recipients refused because one of them is over its rate
// limit queues nothing, so it must not count against the other one: else
// Salesforce's retries of the refused message lock the other user out.
func TestLifecycleRateLimitRefusalCountsNobody(t *testing.T) {
	pol := strings.Replace(fastPolicy, "workers = 2", "workers = 2\nrate_limit = 2\nrate_window = \"10m\"", 1)
	e := newEnv(t, envOpts{policy: pol})
	c := e.client("PLAIN")
	for i := 0; i < 2; i++ {
		e.sendID(c, "noreply@example.com", []string{"bob@dest.test"}, resetMsg("bob@dest.test", "rl-bob"+string(rune('a'+i))))
	}
	for i := 0; i < 3; i++ {
		if err := c.Mail("noreply@example.com", nil); err != nil {
			t.Fatal(err)
		}
		for _, r := range []string{"alice@dest.test", "bob@dest.test"} {
			if err := c.Rcpt(r, nil); err != nil {
				t.Fatal(err)
			}
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		w.Write(resetMsg("alice@dest.test", "rl-both"+string(rune('a'+i))))
		if err := w.Close(); err == nil {
			t.Fatal("message to a recipient over its limit accepted")
		} else if code, _ := smtpCode(err); code != 451 {
			t.Fatalf("refusal %v, want 451", err)
		}
	}
	// alice has received nothing yet: her own reset is accepted.
	e.sendID(c, "noreply@example.com", []string{"alice@dest.test"}, resetMsg("alice@dest.test", "rl-alice"))
}
