package relay

// Back-pressure at acceptance: when a class's workers fall behind, the 250
// after DATA is held (the message already on disk) until a worker takes the
// next message, so that a sender on kept-open connections cannot build a
// backlog in which every reset waits; bulk may instead be refused 451 4.3.2.

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/testutil/smtpsink"
)

const backlogPolicy = `default_class = "bulk"

[[classes]]
name = "reset"
expiry = "10m"
margin = "0s"
retry = ["1m"]
dedupe_window = "0s"
suppression = ["bounce"]
workers = 1
backlog = 2
backlog_delay = "%s"

[[classes]]
name = "bulk"
expiry = "72h"
margin = "0s"
retry = ["30m"]
dedupe_window = "0s"
suppression = ["bounce"]
workers = 1
backlog = 0
backlog_refuse = 2

[[rules]]
name = "reset"
class = "reset"
[rules.header]
X-LK-Class = '^\s*reset\s*$'
`

// heldObserver records the Held calls of the relay's observer.
type heldObserver struct {
	Observer
	mu   sync.Mutex
	held []string // "class late=bool"
}

func (o *heldObserver) Held(class string, d time.Duration, late bool) {
	o.mu.Lock()
	o.held = append(o.held, fmt.Sprintf("%s late=%v", class, late))
	o.mu.Unlock()
	o.Observer.Held(class, d, late)
}

func (o *heldObserver) calls() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.held...)
}

// gatedEnv is a relay whose MX holds every message until release is
// closed; delivered receives the time each message was accepted there.
func gatedEnv(t *testing.T, delay string) (e *env, obs *heldObserver, release func(), delivered chan time.Time) {
	gate := make(chan struct{})
	delivered = make(chan time.Time, 100)
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	obs = &heldObserver{}
	e = newEnv(t, envOpts{
		policy: fmt.Sprintf(backlogPolicy, delay),
		sink: smtpsink.Options{Data: func(from string, rcpts []string, data []byte) *smtp.SMTPError {
			<-gate
			delivered <- time.Now()
			return nil
		}},
		preStart: func(s *Server) { obs.Observer = s.Observe; s.Observe = obs },
	})
	t.Cleanup(release) // before the relay stops (cleanups run last first)
	return e, obs, release, delivered
}

// backlog = 2: a reset's 250 is held while three resets wait for the one
// busy worker, and sent when the worker takes the next one; up to two
// waiting hold nothing.
func TestBackpressureHoldsReplyUntilAWorkerIsFree(t *testing.T) {
	e, obs, release, delivered := gatedEnv(t, "10s")
	c := e.client("PLAIN")
	// The worker takes the first and hangs at the MX; two more wait.
	for i := 0; i < 3; i++ {
		e.sendID(c, "noreply@example.com", []string{fmt.Sprintf("u%d@dest.test", i)}, resetMsg(fmt.Sprintf("u%d@dest.test", i), fmt.Sprintf("tok%d", i)))
		if i == 0 {
			waitFor(t, "the worker to take the first reset", 10*time.Second, func() bool { return e.srv.Queue.Depth()["reset"].InFlight == 1 })
		}
	}
	replied := make(chan time.Time, 1)
	go func() {
		c2 := e.client("PLAIN")
		e.sendID(c2, "noreply@example.com", []string{"u3@dest.test"}, resetMsg("u3@dest.test", "tok3"))
		replied <- time.Now()
	}()
	select {
	case at := <-replied:
		t.Fatalf("250 sent at %v while 3 resets waited for the only worker", at)
	case <-time.After(300 * time.Millisecond):
	}
	release()
	first := <-delivered
	at := <-replied
	if at.Before(first) {
		t.Fatalf("250 at %v came before the MX took the first reset at %v", at, first)
	}
	got := obs.calls()
	if len(got) != 1 || got[0] != "reset late=false" {
		t.Errorf("held calls = %v, want one, the fourth reset's, let go in time (late=false)", got)
	}
}

// With the worker stuck past backlog_delay the reply goes anyway: a reset
// is held, never refused, and it is queued.
func TestBackpressureNeverRefusesAReset(t *testing.T) {
	e, obs, release, _ := gatedEnv(t, "50ms")
	c := e.client("PLAIN")
	for i := 0; i < 6; i++ {
		e.sendID(c, "noreply@example.com", []string{fmt.Sprintf("u%d@dest.test", i)}, resetMsg(fmt.Sprintf("u%d@dest.test", i), fmt.Sprintf("tok%d", i)))
		if i == 0 {
			waitFor(t, "the worker to take the first reset", 10*time.Second, func() bool { return e.srv.Queue.Depth()["reset"].InFlight == 1 })
		}
	}
	if d := e.srv.Queue.Depth()["reset"]; d.Live != 6 {
		t.Errorf("depth = %+v, want all 6 resets queued", d)
	}
	late := 0
	for _, h := range obs.calls() {
		if h == "reset late=true" {
			late++
		}
	}
	if late != 3 { // the 4th, 5th and 6th found more than 2 waiting
		t.Errorf("held calls = %v, want the last resets sent late", obs.calls())
	}
	release()
	waitFor(t, "all resets delivered", 20*time.Second, func() bool { return len(e.sink.Messages()) == 6 })
}

// Bulk with backlog_refuse is refused 451 4.3.2 before it is queued once
// that many wait, and accepted again when the worker catches up.
func TestBackpressureRefusesBulk(t *testing.T) {
	e, _, release, _ := gatedEnv(t, "50ms")
	c := e.client("PLAIN")
	bulk := func(i int) []byte {
		return []byte(fmt.Sprintf("From: <news@example.com>\r\nTo: <b%d@dest.test>\r\nSubject: news %d\r\n\r\nhello\r\n", i, i))
	}
	for i := 0; i < 3; i++ {
		e.sendID(c, "news@example.com", []string{fmt.Sprintf("b%d@dest.test", i)}, bulk(i))
		if i == 0 {
			waitFor(t, "the worker to take the first", 10*time.Second, func() bool { return e.srv.Queue.Depth()["bulk"].InFlight == 1 })
		}
	}
	_, err := send(c, "news@example.com", []string{"b3@dest.test"}, bulk(3))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 2}) || !strings.Contains(se.Message, "backlog") {
		t.Fatalf("fourth bulk message: %v, want 451 4.3.2 backlog full", err)
	}
	if d := e.srv.Queue.Depth()["bulk"]; d.Live != 3 {
		t.Errorf("bulk depth = %+v: the refused message was queued", d)
	}
	// A reset is not refused by the bulk backlog.
	e.sendID(c, "noreply@example.com", []string{"r@dest.test"}, resetMsg("r@dest.test", "tokr"))
	release()
	waitFor(t, "the bulk backlog to drain", 20*time.Second, func() bool { return e.srv.Queue.Depth()["bulk"].Live == 0 })
	e.sendID(c, "news@example.com", []string{"b3@dest.test"}, bulk(3))
}
