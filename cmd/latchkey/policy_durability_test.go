package main

// Crash tests of the reset policy's state with the real binary: supersede
// links, dedupe keys and rate-limit counters live in Badger, so a kill -9
// between two submissions must not let an older reset out, queue a
// resubmission twice, or reset a recipient's limit.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// statePolicy turns on supersede, dedupe and a per-recipient limit of three.
const statePolicy = `default_class = "reset"

[[classes]]
name = "reset"
expiry = "10m"
margin = "0s"
retry = ["300ms"]
supersede = true
supersede_key = ["recipient"]
dedupe_window = "10m"
suppression = ["bounce"]
rate_limit = 3
rate_window = "10m"
workers = 2
`

// deferringMX defers every RCPT while deferring is set, and counts RCPTs
// per recipient.
type deferringMX struct {
	deferring atomic.Bool
	mu        sync.Mutex
	rcpts     map[string]int
}

func (m *deferringMX) options() smtpsink.Options {
	m.rcpts = map[string]int{}
	return smtpsink.Options{Rcpt: func(rcpt string) *smtp.SMTPError {
		m.mu.Lock()
		m.rcpts[rcpt]++
		m.mu.Unlock()
		if m.deferring.Load() {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}}
}

func (m *deferringMX) tries(rcpt string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rcpts[rcpt]
}

// usePolicy replaces the policy newDurEnv wrote, before the first start.
func usePolicy(t *testing.T, e *durEnv, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, "policy.toml"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := execLatchkey(t, "config", "check", "-config", e.cfgPath); err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
}

// A reset queued before a kill -9 is superseded by a newer one to the same
// recipient accepted after the restart: only the newer one is delivered.
func TestSupersedeSurvivesKill(t *testing.T) {
	mx := &deferringMX{}
	mx.deferring.Store(true)
	e := newDurEnv(t, mx.options())
	usePolicy(t, e, statePolicy)
	e.start()
	e.submitOne("x@dest.test", "sup-a@example.com")
	if !waitFor(10*time.Second, func() bool { return mx.tries("x@dest.test") >= 1 }) {
		t.Fatal("the relay never tried the first reset")
	}
	e.kill()
	before := mx.tries("x@dest.test")
	e.start()
	// The restarted relay tries the older reset at once (it is due); submit
	// the newer one just after that try, so the older one is queued, not in
	// flight (an in-flight one would be allowed to finish).
	if !waitFor(10*time.Second, func() bool { return mx.tries("x@dest.test") > before }) {
		t.Fatal("the restarted relay did not resume the first reset")
	}
	e.submitOne("x@dest.test", "sup-b@example.com")
	mx.deferring.Store(false)
	e.sink.Wait(1, 10*time.Second)
	// Several retry periods (300ms) for the older one to show up if it is
	// still queued.
	time.Sleep(1500 * time.Millisecond)
	got := arrivals(e.sink.Messages())
	if got["sup-b@example.com"] != 1 || got["sup-a@example.com"] != 0 || len(got) != 1 {
		t.Fatalf("arrivals = %v, want only sup-b@example.com, once", got)
	}
}

// A resubmission after a kill -9 (Salesforce retrying after the dropped
// connection) is answered with the original queue id and delivered once.
func TestDedupeSurvivesKill(t *testing.T) {
	mx := &deferringMX{}
	mx.deferring.Store(true)
	e := newDurEnv(t, mx.options())
	usePolicy(t, e, statePolicy)
	e.start()
	id1 := e.submitOne("x@dest.test", "dup-m@example.com")
	e.kill()
	e.start()
	id2 := e.submitOne("x@dest.test", "dup-m@example.com")
	if id2 != id1 {
		t.Errorf("resubmission after restart answered queue id %s, want the original %s", id2, id1)
	}
	mx.deferring.Store(false)
	e.sink.Wait(1, 10*time.Second)
	time.Sleep(1500 * time.Millisecond)
	if got := arrivals(e.sink.Messages()); got["dup-m@example.com"] != 1 || len(got) != 1 {
		t.Fatalf("arrivals = %v, want dup-m@example.com once", got)
	}
}

// The per-recipient count survives a kill -9: three resets before it, the
// fourth after it is refused 451 4.7.1; another recipient is unaffected.
func TestRateLimitSurvivesKill(t *testing.T) {
	mx := &deferringMX{}
	e := newDurEnv(t, mx.options())
	usePolicy(t, e, statePolicy)
	e.start()
	for i := 1; i <= 3; i++ {
		e.submitOne("y@dest.test", fmt.Sprintf("rl-%d@example.com", i))
	}
	e.kill()
	e.start()
	c, err := e.client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = submit(c, "y@dest.test", "rl-4@example.com")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 1}) {
		t.Fatalf("fourth reset to y after restart: %v, want 451 4.7.1", err)
	}
	if _, err := submit(c, "z@dest.test", "rl-z@example.com"); err != nil {
		t.Fatalf("reset to another recipient: %v", err)
	}
}

// execLatchkey runs a latchkey subcommand to completion.
func execLatchkey(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	return exec.Command(latchkeyBin(t), args...).CombinedOutput()
}
