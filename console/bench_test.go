package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/console"
	"github.com/latchkey/latchkey/policy"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/relay"
)

// mx delivers every item at once, bouncing 2 % of them, writing the audit
// events the relay writes (attempt, then delivered or bounced). The events
// are stamped 2 s after the item's acceptance, as if each had been
// delivered then: a trail whose every delivery happened in the last minute
// would make every window, even the last hour's, read the whole chain.
type mx struct{}

func (mx) Deliver(ctx context.Context, it *queue.Item, body []byte) queue.Outcome {
	now := it.Accepted.Add(2 * time.Second)
	if strings.HasPrefix(it.Rcpt, "bounce") {
		return queue.Outcome{State: queue.StateBounced, Reason: "5.1.1 userunknown",
			Attempt: &queue.Attempt{Time: now, Host: "mx.dest.test", Code: 550, Enhanced: "5.1.1", Text: "User unknown", Permanent: true},
			Events: []*audit.Event{{Time: now, Type: audit.Attempt, Fields: map[string]string{"code": "550"}},
				{Time: now, Type: audit.Bounced, Fields: map[string]string{"status": "5.1.1", "hard": "true", "reason": "userunknown"}}}}
	}
	lat := now.Sub(it.Accepted).Milliseconds()
	return queue.Outcome{State: queue.StateDelivered,
		Attempt: &queue.Attempt{Time: now, Host: "mx.dest.test", Code: 250, Text: "2.0.0 Ok"},
		Events: []*audit.Event{{Time: now, Type: audit.Attempt, Fields: map[string]string{"code": "250"}},
			{Time: now, Type: audit.Delivered, Fields: map[string]string{"latency_ms": fmt.Sprint(lat)}}}}
}
func (mx) Expire(it *queue.Item, now time.Time) queue.Outcome {
	return queue.Outcome{State: queue.StateExpired}
}

var (
	benchOnce sync.Once
	benchSrv  *httptest.Server
	benchAPI  http.Handler
	benchCon  *console.Console
	benchIDs  []string
	benchDir  string
)

// benchConsole fills a real Badger database with n resets accepted over
// the last day, delivered (2 % bounced) through the queue's own workers,
// and serves the console over it.
func benchConsole(b *testing.B, n int) (*httptest.Server, []string) {
	benchOnce.Do(func() {
		benchDir, _ = os.MkdirTemp("", "latchkey-console-bench-")
		st, err := queue.OpenStore(benchDir, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		if st.Audit, err = audit.Open(st.DB, auditKey); err != nil {
			b.Fatal(err)
		}
		q, err := queue.New(st, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		// The queue's clock follows the fill, so each message's queued
		// event is stamped at its acceptance as a real relay stamps it;
		// 0 means the real clock again.
		var sim atomic.Int64
		q.SetClock(func() time.Time {
			if ns := sim.Load(); ns != 0 {
				return time.Unix(0, ns)
			}
			return time.Now()
		})
		q.Start(context.Background(), mx{}, map[string]int{"reset": 8})
		start := time.Now().Add(-23 * time.Hour)
		step := 23 * time.Hour / time.Duration(n)
		ids := make([]string, n)
		var wg sync.WaitGroup
		work := make(chan int)
		for w := 0; w < 64; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					at := start.Add(time.Duration(i) * step)
					for old := sim.Load(); old < at.UnixNano() && !sim.CompareAndSwap(old, at.UnixNano()); old = sim.Load() {
					}
					id := queue.NewMsgID(at)
					rcpt := fmt.Sprintf("user%d@dest%d.test", i, i%50)
					if i%50 == 7 {
						rcpt = "bounce" + rcpt
					}
					it := &queue.Item{ID: queue.ItemID(id, 0), MsgID: id, Class: "reset", Rcpt: rcpt, From: "noreply@example.test",
						MessageID: fmt.Sprintf("<reset-%d@example.test>", i), Accepted: at, Due: start,
						Deadline: time.Now().Add(time.Hour), Cutoff: time.Now().Add(time.Hour)}
					m := &queue.Message{MsgID: id, Body: []byte("Subject: reset\r\n\r\nhello\r\n"), Items: []*queue.Item{it},
						Events: []*audit.Event{{Time: at, Type: audit.Received, Class: "reset", MessageID: it.MessageID,
							Fields: map[string]string{"queue_id": id, "deadline": it.Deadline.Format(time.RFC3339)}}}}
					if _, err := q.Enqueue(m); err != nil {
						panic(err)
					}
					ids[i] = id
				}
			}()
		}
		for i := 0; i < n; i++ {
			work <- i
		}
		close(work)
		wg.Wait()
		for d := q.Depth()["reset"]; d.Live > 0; d = q.Depth()["reset"] {
			time.Sleep(100 * time.Millisecond)
		}
		sim.Store(0)
		p, _ := policy.Parse("policy.toml", conf.DefaultPolicy)
		pol := policy.NewStore("", p)
		api := admin.Handler(admin.Options{Token: token, Queue: q, Store: st, AuditKey: auditKey, Log: zerolog.Nop(),
			Extra: map[string]http.Handler{"GET /api/v1/stats": relay.StatsHandler(st.DB, pol.Get)}})
		c, err := console.New(console.Options{API: api, Token: token, Log: zerolog.Nop()})
		if err != nil {
			b.Fatal(err)
		}
		if d := os.Getenv("BENCH_SETTLE"); d != "" {
			dd, _ := time.ParseDuration(d)
			time.Sleep(dd)
		}
		benchSrv = httptest.NewServer(console.Mount(api, c))
		benchAPI, benchCon, benchIDs = api, c, ids
	})
	return benchSrv, benchIDs
}

// BenchmarkConsolePages renders each page over 100,000 messages, through
// HTTP, signed in (the target: under 200 ms). The compute/ cases
// are the API calls behind the overview and the audit page, each computed
// in full every time; the console runs them in the background (Warm), so
// the pages, measured after one pass of it as after a relay's start, read
// their answers.
func BenchmarkConsolePages(b *testing.B) {
	srv, ids := benchConsole(b, 100_000)
	for _, p := range []struct{ name, path string }{
		{"compute/stats-1h", "/api/v1/stats?class=reset&series=5m&since=1h"},
		{"compute/stats-24h", "/api/v1/stats?class=reset&series=1h&since=24h"},
		{"compute/stats-7d", "/api/v1/stats?class=reset&series=1h&since=168h"},
		{"compute/audit-verify", "/api/v1/audit/verify"},
	} {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest("GET", p.path, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				rec := httptest.NewRecorder()
				benchAPI.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("%s: %d %s", p.path, rec.Code, rec.Body)
				}
			}
		})
	}
	benchCon.WarmOnce()
	e := &env{srv: srv}
	br := e.browser(&testing.T{})
	if code, _ := br.login("", token); code != http.StatusSeeOther {
		b.Fatalf("login: %d", code)
	}
	for _, p := range []struct{ name, path string }{
		{"overview-1h", "/console/?window=1h"},
		{"overview-24h", "/console/?window=24h"},
		{"overview-7d", "/console/?window=7d"},
		{"messages", "/console/messages"},
		{"messages-page-1000", "/console/messages?after=" + queue.ItemID(ids[len(ids)-50_000], 0)},
		{"messages-by-recipient", "/console/messages?rcpt=user4242@"},
		{"messages-bounced", "/console/messages?state=bounced"},
		{"message-by-queued-as-id", "/console/messages/" + ids[4242]},
		{"messages-search-id", "/console/messages?id=" + ids[77777]},
		{"suppressions", "/console/suppressions"},
		{"audit", "/console/audit"},
	} {
		b.Run(p.name, func(b *testing.B) {
			br.t = &testing.T{}
			for b.Loop() {
				if code, _, body := br.do("GET", p.path, nil); code != http.StatusOK {
					b.Fatalf("%s: %d %s", p.path, code, errorText(body))
				}
			}
		})
	}
}
