package relay

// End-to-end tests of the policy's priority lanes and rate limit: a reset
// must reach the recipient's MX while thousands of bulk messages to the same
// domain are still waiting for a slow MX, and reset-bomb protection must
// refuse the one reset too many without touching other recipients.

import (
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// prioPolicy has a reset lane and a bulk lane with workers of their own;
// bulk mail is whatever the template does not mark as a reset. Dedupe is
// off so that queueing thousands of bulk items costs no index writes.
const prioPolicy = `default_class = "bulk"

[[classes]]
name = "reset"
expiry = "10m"
margin = "0s"
retry = ["500ms"]
supersede = true
supersede_key = ["recipient"]
dedupe_window = "0s"
suppression = ["bounce"]
workers = 2

[[classes]]
name = "bulk"
expiry = "72h"
margin = "0s"
retry = ["30m"]
dedupe_window = "0s"
suppression = ["bounce", "unsubscribe"]
workers = 4

[[rules]]
name = "reset-by-template-header"
class = "reset"
[rules.header]
X-LK-Class = '^\s*reset\s*$'
`

// prioBulkWorkers is the bulk class's workers in prioPolicy: at most that
// many bulk items are in flight at once, the rest are queued.
const prioBulkWorkers = 4

// slowMX is the recipients' MX: it holds every bulk message for a while
// before accepting it, as a throttling mailbox provider does, and answers
// resets at once. It counts instead of keeping messages, so 20,000 bulk
// messages cost no memory.
type slowMX struct {
	bulkDelay   time.Duration
	bulkArrived atomic.Int64
	resets      chan resetArrival
}

// resetArrival is a reset seen by the MX, with the number of bulk messages
// the MX had accepted by then.
type resetArrival struct {
	rcpt        string
	at          time.Time
	bulkArrived int64
}

func newSlowMX(bulkDelay time.Duration) *slowMX {
	return &slowMX{bulkDelay: bulkDelay, resets: make(chan resetArrival, 1024)}
}

func (m *slowMX) options() smtpsink.Options {
	return smtpsink.Options{Discard: true, Data: func(_ string, rcpts []string, _ []byte) *smtp.SMTPError {
		if len(rcpts) == 1 && strings.HasPrefix(rcpts[0], "reset") {
			m.resets <- resetArrival{rcpt: rcpts[0], at: time.Now(), bulkArrived: m.bulkArrived.Load()}
			return nil
		}
		time.Sleep(m.bulkDelay)
		m.bulkArrived.Add(1)
		return nil
	}}
}

// dialSubmission connects and authenticates as Salesforce Email Relay does.
func dialSubmission(addr string) (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// submitTo sends one message to rcpts and returns the server's reply text.
func submitTo(c *smtp.Client, rcpts []string, msg []byte) (string, error) {
	if err := c.Mail("noreply@example.com", nil); err != nil {
		return "", err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(msg); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

// bulkMsg is a campaign message (no reset marker: the default class).
func bulkMsg(n int) []byte {
	return []byte(fmt.Sprintf("From: Acme News <noreply@example.com>\r\nTo: undisclosed-recipients:;\r\n"+
		"Subject: Our autumn offers\r\nMessage-ID: <bulk%d@example.com>\r\nList-Unsubscribe: <mailto:unsub@example.com>\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOffer number %d.\r\n", n, n))
}

// queueBulk submits n bulk items to rcptDomain over conns connections, each
// transaction carrying perTx recipients, and returns once every one is
// acknowledged.
func queueBulk(tb testing.TB, addr string, n, perTx, conns int) {
	tb.Helper()
	var next atomic.Int64
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialSubmission(addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for {
				first := int(next.Add(int64(perTx))) - perTx
				if first >= n {
					return
				}
				rcpts := make([]string, 0, perTx)
				for i := first; i < min(first+perTx, n); i++ {
					rcpts = append(rcpts, fmt.Sprintf("bulk%05d@dest.test", i))
				}
				if _, err := submitTo(c, rcpts, bulkMsg(first)); err != nil {
					errs <- fmt.Errorf("bulk from %d: %w", first, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// resetsUnderBacklog submits n resets one after another, each once the
// previous one reached the MX, and returns what the MX saw for each with
// its latency from the start of the submission to the MX's end of DATA.
func resetsUnderBacklog(tb testing.TB, addr string, mx *slowMX, n int) ([]resetArrival, []time.Duration) {
	tb.Helper()
	c, err := dialSubmission(addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	var seen []resetArrival
	var lat []time.Duration
	for i := 0; i < n; i++ {
		rcpt := fmt.Sprintf("reset%03d@dest.test", i)
		t0 := time.Now()
		if _, err := submitTo(c, []string{rcpt}, resetMsg(rcpt, fmt.Sprintf("prio%03dtok", i))); err != nil {
			tb.Fatalf("reset %d: %v", i, err)
		}
		select {
		case a := <-mx.resets:
			if a.rcpt != rcpt {
				tb.Fatalf("MX got a reset for %s, want %s", a.rcpt, rcpt)
			}
			seen = append(seen, a)
			lat = append(lat, a.at.Sub(t0))
		case <-time.After(30 * time.Second):
			tb.Fatalf("reset %d not delivered within 30s (bulk delivered so far: %d)", i, mx.bulkArrived.Load())
		}
	}
	return seen, lat
}

// TestResetUnderBulkBacklog: 2,000 bulk messages wait for a slow MX of the
// same domain; every reset submitted after them reaches the MX while most of
// the bulk backlog is still queued. A single queue ordered by due time, or a
// worker or connection slot shared with bulk, would deliver each reset only
// after the 2,000 bulk messages ahead of it.
func TestResetUnderBulkBacklog(t *testing.T) {
	const nBulk, nReset = 2000, 5
	mx := newSlowMX(100 * time.Millisecond)
	e := newEnv(t, envOpts{policy: prioPolicy, sink: mx.options()})
	queueBulk(t, e.submitAddr(), nBulk, 100, 4)
	queued, err := e.srv.Queue.List(queue.Filter{Class: "bulk", State: queue.StateQueued})
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) < nBulk-100 {
		t.Fatalf("%d bulk items queued after submitting %d; the MX is not slow enough for this test", len(queued), nBulk)
	}
	seen, _ := resetsUnderBacklog(t, e.submitAddr(), mx, nReset)
	for i, a := range seen {
		// More than the bulk workers can hold in flight still waited in the
		// bulk lane when the reset arrived.
		if left := nBulk - int(a.bulkArrived); left <= prioBulkWorkers {
			t.Errorf("reset %d arrived after %d of %d bulk messages: it waited for the backlog", i, a.bulkArrived, nBulk)
		}
	}
	for i := 0; i < nReset; i++ {
		it := itemState(e, queue.ItemID(msgIDFor(t, e, fmt.Sprintf("reset%03d@dest.test", i)), 0))
		if it == nil || it.Class != "reset" {
			t.Errorf("reset %d: item %+v, want class reset", i, it)
		}
	}
}

// msgIDFor finds the queue id of the one message queued to rcpt.
func msgIDFor(t *testing.T, e *env, rcpt string) string {
	t.Helper()
	items, err := e.srv.Queue.List(queue.Filter{Class: "reset", State: "all"})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Rcpt == rcpt {
			return it.MsgID
		}
	}
	t.Fatalf("no reset item to %s", rcpt)
	return ""
}

// BenchmarkResetUnderBulkBacklog measures reset latency (submission start to
// the MX's end of DATA) while 20,000 bulk messages to the same domain drain
// through an MX that takes 200 ms per message. b.N resets are sent one after
// another; the backlog lasts far longer than they take. Run with e.g.
//
//	go test -run='^$' -bench=ResetUnderBulkBacklog -benchtime=100x ./relay/
func BenchmarkResetUnderBulkBacklog(b *testing.B) {
	const nBulk = 20000
	mx := newSlowMX(200 * time.Millisecond)
	addr, stop := benchRelay(b, prioPolicy, mx.options())
	defer stop()
	t0 := time.Now()
	queueBulk(b, addr, nBulk, 100, 4)
	b.Logf("queued %d bulk messages in %v", nBulk, time.Since(t0).Round(time.Millisecond))
	b.ResetTimer()
	seen, lat := resetsUnderBacklog(b, addr, mx, b.N)
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := int(p * float64(len(lat)-1))
		return float64(lat[i].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	last := seen[len(seen)-1]
	b.ReportMetric(float64(nBulk-int(last.bulkArrived)), "bulk-left")
	if left := nBulk - int(last.bulkArrived); left <= prioBulkWorkers {
		b.Errorf("the last reset arrived after %d of %d bulk messages: not under backlog", last.bulkArrived, nBulk)
	}
}

// benchRelay boots a relay for a benchmark in the usual test world (DNS,
// the MX on 127.0.0.2) and returns its submission address.
func benchRelay(b *testing.B, policyText string, so smtpsink.Options) (string, func()) {
	b.Helper()
	e := newEnv(b, envOpts{policy: policyText, sink: so, quiet: true})
	return e.submitAddr(), e.stop
}

// rateLimitPolicy allows two resets per recipient per minute.
const rateLimitPolicy = `default_class = "reset"
[[classes]]
name = "reset"
expiry = "10m"
margin = "0s"
retry = ["500ms"]
supersede = false
dedupe_window = "1m"
suppression = ["bounce"]
rate_limit = 2
rate_window = "1m"
workers = 2
`

// Reset-bomb protection end to end: the third reset to one recipient within
// the window is refused 451 4.7.1 and recorded; another recipient is not
// affected, and nothing refused is delivered.
func TestRateLimitEndToEnd(t *testing.T) {
	e := newEnv(t, envOpts{policy: rateLimitPolicy})
	c := e.client("PLAIN")
	for i := 1; i <= 2; i++ {
		e.sendID(c, "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", fmt.Sprintf("rl%d", i)))
	}
	third := resetMsg("jane@dest.test", "rl3")
	_, err := send(c, "noreply@example.com", []string{"jane@dest.test"}, third)
	if code, enh := smtpCode(err); code != 451 || enh != "4.7.1" {
		t.Fatalf("third reset to jane answered %v, want 451 4.7.1", err)
	}
	// Case differences do not get around the limit.
	_, err = send(c, "noreply@example.com", []string{"JANE@dest.test"}, resetMsg("JANE@dest.test", "rl4"))
	if code, _ := smtpCode(err); code != 451 {
		t.Errorf("fourth reset to JANE@ answered %v, want 451", err)
	}
	// The session goes on, and another recipient is unaffected.
	e.sendID(c, "noreply@example.com", []string{"bob@dest.test"}, resetMsg("bob@dest.test", "rl5"))

	evs, err := audit.Show(e.srv.Store.DB, "<rl3.abc@sfdc.net>")
	if err != nil {
		t.Fatalf("no audit trail for the refused reset: %v", err)
	}
	if len(evs) != 1 || evs[0].Type != audit.RateLimited || evs[0].Recipient != "jane@dest.test" ||
		evs[0].Fields["limit"] != "2" || evs[0].QueueID != "" {
		t.Errorf("refused reset's audit trail = %+v, want one rate_limited event for jane with limit 2", evs)
	}
	got := e.sink.Wait(3, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	got = e.sink.Messages()
	n := map[string]int{}
	for _, m := range got {
		for _, tok := range []string{"rl1", "rl2", "rl3", "rl4", "rl5"} {
			if strings.Contains(string(m.Data), "token="+tok+"\r\n") {
				n[tok]++
			}
		}
	}
	if len(got) != 3 || n["rl1"] != 1 || n["rl2"] != 1 || n["rl5"] != 1 {
		t.Errorf("delivered %d messages %v; want rl1, rl2 and rl5 once each", len(got), n)
	}
	items, _ := e.srv.Queue.List(queue.Filter{State: "all"})
	if len(items) != 3 {
		t.Errorf("%d items queued, want 3", len(items))
	}
}

// A reset in flight when a newer one for the same recipient is accepted is
// allowed to finish its attempt; when that attempt is deferred, the older
// reset is still queued and must end superseded, never delivered after the
// newer one (whose link is the only one that works).
func TestSupersedeInFlightThenDeferred(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink.Options{Rcpt: func(string) *smtp.SMTPError {
		if calls.Add(1) == 1 {
			close(held)
			<-release
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
		}
		return nil
	}}})
	c := e.client("PLAIN")
	old := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "inflightold")), 0)
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the first reset never reached the MX")
	}
	newer := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "inflightnew")), 0)
	if got := e.sink.Wait(1, 10*time.Second); len(got) != 1 {
		t.Fatal("the newer reset was not delivered")
	}
	close(release)
	// fastPolicy retries after 300ms: leave room for several retries.
	time.Sleep(1500 * time.Millisecond)
	for _, m := range e.sink.Messages() {
		if strings.Contains(string(m.Data), "token=inflightold") {
			t.Errorf("the older reset was delivered after the newer one %s", newer)
		}
	}
	if it := itemState(e, old); it == nil || it.State != queue.StateSuperseded || it.SupersededBy != newer {
		t.Errorf("older reset: %+v, want superseded by %s", it, newer)
	}
}
