package cluster

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/queue"
)

// TestAdoptionTime measures how long a survivor takes to adopt a node
// whose intake holds LATCHKEY_BENCH_ADOPT messages (9 in 10 of them done
// before it died). A measurement, not a check: it runs only when the
// variable is set, and logs the figure (docs/benchmarks.md).
func TestAdoptionTime(t *testing.T) {
	total, _ := strconv.Atoi(os.Getenv("LATCHKEY_BENCH_ADOPT"))
	if total <= 0 {
		t.Skip("a measurement: set LATCHKEY_BENCH_ADOPT to the intake's size")
	}
	tc := newTestCluster(t)
	ctx := context.Background()
	a := tc.nodes[0]
	t0 := time.Now()
	var open []string
	sem := make(chan struct{}, 16)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m := resetMsg(queue.NewMsgID(t0.Add(time.Duration(i)*time.Microsecond)), fmt.Sprintf("u%d@dest.test", i), t0)
			m.Items[0].SupersedeKey = ""
			if _, err := a.Admit(ctx, m); err != nil {
				t.Error(err)
				return
			}
			if i%10 == 0 {
				mu.Lock()
				open = append(open, m.Items[0].ID)
				mu.Unlock()
			} else {
				a.Done(m.Items[0].ID, queue.StateDelivered)
			}
		}()
	}
	wg.Wait()
	for range 100 {
		if a.flushDone(ctx); len(a.pending) == 0 {
			break
		}
	}
	t.Logf("%d messages admitted on n1 and %d recorded done in %v", total, total-len(open), time.Since(start).Round(time.Millisecond))
	locals := []*fakeLocal{newFakeLocal(), newFakeLocal()}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, n := range tc.nodes[1:] {
		go n.Run(rctx, locals[i])
	}
	time.Sleep(time.Second) // the survivors have seen n1's heartbeat
	a.Close()
	tc.nodes[0] = nil
	died := time.Now()
	var claimed time.Time
	for time.Since(died) < 10*time.Minute {
		if claimed.IsZero() {
			if st, err := tc.nodes[1].Status(ctx); err == nil && len(st.Adoptions) == 1 {
				claimed = time.Now()
			}
		}
		if len(locals[0].list())+len(locals[1].list()) >= len(open) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := len(locals[0].list()) + len(locals[1].list())
	if got != len(open) {
		t.Fatalf("adopted %d items, want %d", got, len(open))
	}
	queued := time.Now()
	// The last marks are stored after the last item is queued.
	if !waitUntil(time.Minute, func() bool {
		st, err := tc.nodes[1].Status(ctx)
		return err == nil && len(st.Adoptions) == 1 && strings.HasPrefix(st.Adoptions[0].State, "done ")
	}) {
		t.Fatal("the adoption was not recorded as finished within a minute")
	}
	t.Logf("adoption recorded finished %v after the last item was queued (LATCHKEY_TEST_LOG=info shows the reading's own time)", time.Since(queued).Round(time.Millisecond))
	t.Logf("adoption of %d open items out of %d: %v after the death (claimed after %v, so reading took %v)",
		got, total, time.Since(died).Round(time.Millisecond), claimed.Sub(died).Round(time.Millisecond), time.Since(claimed).Round(time.Millisecond))
}
