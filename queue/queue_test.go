package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func openTest(t testing.TB, dir string) (*Store, *Queue) {
	t.Helper()
	st, err := OpenStore(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	q, err := New(st, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return st, q
}

func testMsg(rcpt, key string, now time.Time) *Message {
	id := NewMsgID(now)
	it := &Item{ID: ItemID(id, 0), MsgID: id, Class: "reset", Rcpt: rcpt, Accepted: now, Due: now,
		Deadline: now.Add(time.Hour), Cutoff: now.Add(time.Hour), SupersedeKey: key}
	return &Message{MsgID: id, Body: bytes.Repeat([]byte("x"), 4096), Items: []*Item{it}}
}

// An acknowledged item is live again after the store is reopened.
func TestRestartRebuildsLanes(t *testing.T) {
	dir := t.TempDir()
	st, q := openTest(t, dir)
	m := testMsg("a@x.test", "", time.Now())
	if _, err := q.Enqueue(m); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, q = openTest(t, dir)
	defer st.Close()
	d := q.Depth()["reset"]
	if d.Live != 1 || d.InFlight != 0 {
		t.Fatalf("depth after reopen = %+v, want 1 live item", d)
	}
	// The oldest item's age comes from its id: the acceptance millisecond.
	if want := AcceptedAt(m.MsgID); !d.Oldest.Equal(want) || want.IsZero() {
		t.Errorf("oldest = %v, want %v", d.Oldest, want)
	}
	if b, _ := q.Body(m.MsgID); len(b) != 4096 {
		t.Errorf("body after reopen: %d bytes", len(b))
	}
}

// Ids carry their acceptance time to the millisecond.
func TestAcceptedAtRoundTrip(t *testing.T) {
	for _, ms := range []int64{0, 1, 1_700_000_000_123, 1<<48 - 1} {
		at := time.UnixMilli(ms)
		id := NewMsgID(at)
		if got := AcceptedAt(id); !got.Equal(at) {
			t.Errorf("AcceptedAt(NewMsgID(%d)) = %d", ms, got.UnixMilli())
		}
		if got := AcceptedAt(ItemID(id, 3)); !got.Equal(at) {
			t.Errorf("item id: %d, want %d", got.UnixMilli(), ms)
		}
	}
	if !AcceptedAt("not!an!id!!!!!!!").IsZero() || !AcceptedAt("abc").IsZero() {
		t.Error("malformed ids must give the zero time")
	}
}

// waitLeased waits until a worker holds item id.
func waitLeased(t *testing.T, q *Queue, id string) {
	t.Helper()
	for i := 0; !q.lanes.inflight(id); i++ {
		if i > 500 {
			t.Fatal("worker never leased the item")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type recorder struct {
	mu   sync.Mutex
	seen []string
	gate chan struct{}
}

func (r *recorder) Deliver(ctx context.Context, it *Item, body []byte) Outcome {
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	r.seen = append(r.seen, it.ID)
	r.mu.Unlock()
	return Outcome{State: StateDelivered, Attempt: &Attempt{Time: time.Now(), Code: 250}}
}
func (r *recorder) Expire(it *Item, now time.Time) Outcome { return Outcome{State: StateExpired} }

// Supersede ends a queued older item, but one being delivered is allowed to
// finish (the race the policy issue names).
func TestSupersedeInFlight(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	rec := &recorder{gate: make(chan struct{})}
	old := testMsg("a@x.test", "k", time.Now())
	if _, err := q.Enqueue(old); err != nil {
		t.Fatal(err)
	}
	q.Start(context.Background(), rec, map[string]int{"reset": 1})
	defer q.Stop()
	// Wait until the worker holds the old item.
	waitLeased(t, q, old.Items[0].ID)
	newer := testMsg("a@x.test", "k", time.Now())
	res, err := q.Enqueue(newer)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Superseded) != 0 {
		t.Errorf("an in-flight item was superseded: %v", res.Superseded)
	}
	close(rec.gate)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		a, _ := q.Get(old.Items[0].ID)
		b, _ := q.Get(newer.Items[0].ID)
		if a.State == StateDelivered && b.State == StateDelivered {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("both items should have been delivered")
}

func TestSupersedeQueued(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	old := testMsg("a@x.test", "k", time.Now())
	q.Enqueue(old)
	newer := testMsg("a@x.test", "k", time.Now())
	res, err := q.Enqueue(newer)
	if err != nil || len(res.Superseded) != 1 {
		t.Fatalf("superseded %v, %v", res, err)
	}
	a, _ := q.Get(old.Items[0].ID)
	if a.State != StateSuperseded || a.SupersededBy != newer.Items[0].ID {
		t.Errorf("old item %+v", a)
	}
	if b, _ := q.Body(old.MsgID); b != nil {
		t.Error("superseded body kept")
	}
}

func TestRateLimit(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	for i := 0; i < 4; i++ {
		m := testMsg(fmt.Sprintf("r%d@x.test", i%2), "", time.Now())
		m.Rate = []RateCheck{{Key: m.Items[0].Rcpt, Limit: 2, Window: time.Minute}}
		if _, err := q.Enqueue(m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	m := testMsg("r0@x.test", "", time.Now())
	m.Rate = []RateCheck{{Key: "r0@x.test", Limit: 2, Window: time.Minute}}
	res, err := q.Enqueue(m)
	if err != ErrRateLimited || res.RateLimited != "r0@x.test" {
		t.Fatalf("third message to r0: %v %+v", err, res)
	}
	if it, _ := q.Get(m.Items[0].ID); it != nil {
		t.Error("rate-limited message was queued")
	}
}

// BenchmarkEnqueueParallel measures durable enqueues (fsync per batch) from
// concurrent sessions; batch/op shows the group-commit factor.
func BenchmarkEnqueueParallel(b *testing.B) {
	st, q := openTest(b, b.TempDir())
	defer st.Close()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := q.Enqueue(testMsg("a@x.test", "", time.Now())); err != nil {
				b.Error(err)
			}
		}
	})
	batches, writes := st.BatchStats()
	b.ReportMetric(float64(writes)/float64(batches), "writes/batch")
}

// When the last recipient of a message fails but an earlier one was
// delivered, the body stays: an asynchronous bounce for the delivered one
// may still need it to try a backup address. With no delivery it goes.
func TestBodyKeptWhileASiblingWasDelivered(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	now := time.Now()
	for _, tc := range []struct {
		first string
		keep  bool
	}{{StateDelivered, true}, {StateBounced, false}} {
		m := testMsg("a@x.test", "", now)
		b := *m.Items[0]
		b.ID, b.Rcpt = ItemID(m.MsgID, 1), "b@x.test"
		m.Items = append(m.Items, &b)
		if _, err := q.Enqueue(m); err != nil {
			t.Fatal(err)
		}
		if err := q.Complete(m.Items[0].ID, Outcome{State: tc.first}); err != nil {
			t.Fatal(err)
		}
		if err := q.Complete(b.ID, Outcome{State: StateBounced, Reason: "550 5.1.1"}); err != nil {
			t.Fatal(err)
		}
		body, err := q.Body(m.MsgID)
		if err != nil {
			t.Fatal(err)
		}
		if got := body != nil; got != tc.keep {
			t.Errorf("first recipient %s: body kept = %v, want %v", tc.first, got, tc.keep)
		}
	}
}

// Queued bodies (live reset links) are encrypted at rest: after a message
// is written and the database closed, no file of the database holds its
// text; with the key it reads back; with another key the store refuses to
// open and says which file is wrong.
func TestBodiesEncryptedAtRest(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	st, q := openTest(t, dir)
	m := testMsg("a@x.test", "", time.Now())
	secret := []byte("https://acme.example/reset?token=NeverOnDisk7731")
	m.Body = append(bytes.Repeat([]byte("x"), 4096), secret...) // over the value threshold: in the value log
	if _, err := q.Enqueue(m); err != nil {
		t.Fatal(err)
	}
	st.Close()
	files := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("NeverOnDisk7731")) {
			t.Errorf("%s holds the reset token in clear", p)
		}
		return nil
	})
	if files == 0 {
		t.Fatal("no database files to check")
	}
	st, q = openTest(t, dir)
	if b, _ := q.Body(m.MsgID); !bytes.HasSuffix(b, secret) {
		t.Errorf("body after reopen: %q", b)
	}
	st.Close()
	if err := os.WriteFile(dir+".key", []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(dir, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "db.key") {
		t.Errorf("opening with the wrong key: %v", err)
	}
	if err := os.Remove(dir + ".key"); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(dir, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("opening without the key file: %v", err)
	}
}

// Retry of an item a worker is delivering is refused: putting it back on
// its lane would let a second worker deliver it too. Once delivered, it
// is delivered exactly once.
func TestRetryInFlightRefused(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	rec := &recorder{gate: make(chan struct{})}
	m := testMsg("a@x.test", "", time.Now())
	if _, err := q.Enqueue(m); err != nil {
		t.Fatal(err)
	}
	id := m.Items[0].ID
	q.Start(context.Background(), rec, map[string]int{"reset": 2})
	defer q.Stop()
	waitLeased(t, q, id)
	if err := q.Retry(id, "test"); !errors.Is(err, ErrInFlight) {
		t.Errorf("Retry of a leased item: %v, want ErrInFlight", err)
	}
	close(rec.gate)
	for i := 0; ; i++ {
		if it, _ := q.Get(id); it.State == StateDelivered {
			break
		}
		if i > 500 {
			t.Fatal("not delivered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.seen) != 1 {
		t.Errorf("delivered %d times", len(rec.seen))
	}
	if err := q.Retry(id, "test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Retry of a delivered item: %v, want ErrNotFound", err)
	}
}

// deferOnce defers the item named old (after gate opens) and delivers the rest.
type deferOnce struct {
	recorder
	old string
}

func (d *deferOnce) Deliver(ctx context.Context, it *Item, body []byte) Outcome {
	if it.ID != d.old {
		d.mu.Lock()
		d.seen = append(d.seen, it.ID)
		d.mu.Unlock()
		return Outcome{State: StateDelivered, Attempt: &Attempt{Time: time.Now(), Code: 250}}
	}
	<-d.gate
	return Outcome{Retry: time.Now(), Reason: "451 try later", Attempt: &Attempt{Time: time.Now(), Code: 451}}
}

// An older reset being delivered when a newer one arrives cannot be
// superseded then; when its attempt comes back deferred it must end as
// superseded, not be retried after the newer one (a dead link last).
func TestSupersededWhileInFlightThenDeferred(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	old := testMsg("a@x.test", "k", time.Now().Add(-time.Second))
	h := &deferOnce{recorder: recorder{gate: make(chan struct{})}, old: old.Items[0].ID}
	if _, err := q.Enqueue(old); err != nil {
		t.Fatal(err)
	}
	q.Start(context.Background(), h, map[string]int{"reset": 2})
	defer q.Stop()
	waitLeased(t, q, old.Items[0].ID)
	newer := testMsg("a@x.test", "k", time.Now())
	if _, err := q.Enqueue(newer); err != nil {
		t.Fatal(err)
	}
	// The newer one is delivered (and finished) before the old attempt ends.
	for i := 0; ; i++ {
		if it, _ := q.Get(newer.Items[0].ID); it.State == StateDelivered {
			break
		}
		if i > 500 {
			t.Fatal("newer not delivered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(h.gate)
	for i := 0; ; i++ {
		it, _ := q.Get(old.Items[0].ID)
		if it.State == StateSuperseded {
			if it.SupersededBy != newer.Items[0].ID {
				t.Errorf("superseded by %q, want %q", it.SupersededBy, newer.Items[0].ID)
			}
			break
		}
		if i > 300 || it.State == StateDelivered {
			t.Fatalf("old item ended %s, want superseded", it.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// panicky is a handler with a bug: it panics on items to "boom…"
// addresses, while delivering or (for boom-expire@) while expiring.
type panicky struct{ recorder }

func (p *panicky) Deliver(ctx context.Context, it *Item, body []byte) Outcome {
	if strings.HasPrefix(it.Rcpt, "boom") {
		var xs []int
		_ = xs[len(it.Rcpt)] // index out of range, as a real bug would
	}
	return p.recorder.Deliver(ctx, it, body)
}

func (p *panicky) Expire(it *Item, now time.Time) Outcome {
	if it.Rcpt == "boom-expire@x.test" {
		panic("expire bug")
	}
	return Outcome{State: StateExpired, Reason: "deadline passed"}
}

// waitItem waits until item id satisfies ok.
func waitItem(t *testing.T, q *Queue, id string, ok func(*Item) bool) *Item {
	t.Helper()
	for i := 0; ; i++ {
		it, err := q.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if it != nil && ok(it) {
			return it
		}
		if i > 1000 {
			t.Fatalf("item %s never reached the expected state: %+v", id, it)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A panic in the delivery handler is caught: the worker goes on with the
// next item, the item is tried again later, and it still ends in a
// recorded outcome (expired at its cut-off) rather than crash the relay
// at every restart.
func TestHandlerPanic(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	var mu sync.Mutex
	now := time.Now()
	clock := now
	q.SetClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return clock })

	bad := testMsg("boom@x.test", "", now)
	good := testMsg("ok@x.test", "", now)
	badExpire := testMsg("boom-expire@x.test", "", now)
	badExpire.Items[0].Cutoff = now.Add(-time.Second) // due for expiry at once
	for _, m := range []*Message{bad, good, badExpire} {
		if _, err := q.Enqueue(m); err != nil {
			t.Fatal(err)
		}
	}
	q.Start(context.Background(), &panicky{}, map[string]int{"reset": 1}) // one worker: it must survive
	defer q.Stop()

	waitItem(t, q, good.Items[0].ID, func(it *Item) bool { return it.State == StateDelivered })
	it := waitItem(t, q, bad.Items[0].ID, func(it *Item) bool { return it.Reason != "" })
	if d := it.Due.Sub(now.Add(panicRetry)); it.State != StateQueued || !strings.Contains(it.Reason, "internal error") || d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("after a panic: state %q reason %q due %v; want queued, internal error, due in %v", it.State, it.Reason, it.Due, panicRetry)
	}
	it = waitItem(t, q, badExpire.Items[0].ID, func(it *Item) bool { return Final(it.State) })
	if it.State != StateExpired || !strings.Contains(it.Reason, "internal error") {
		t.Errorf("expiry panicked: state %q reason %q; want expired, internal error", it.State, it.Reason)
	}

	// Past its cut-off, the item that kept panicking is expired by the
	// handler as usual.
	mu.Lock()
	clock = bad.Items[0].Cutoff.Add(time.Second)
	mu.Unlock()
	if err := q.Retry(bad.Items[0].ID, "test"); err != nil {
		t.Fatal(err)
	}
	it = waitItem(t, q, bad.Items[0].ID, func(it *Item) bool { return Final(it.State) })
	if it.State != StateExpired || it.Reason != "deadline passed" {
		t.Errorf("at the cut-off: state %q reason %q; want expired by the handler", it.State, it.Reason)
	}
}

// A late bounce (Reopen) of a delivered item: a redirect past the cut-off
// is refused with nothing written, and a final state is counted by OnFinal.
func TestReopenLate(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	var finals []string
	q.OnFinal = func(class, state, label string, _ time.Duration) { finals = append(finals, state+"/"+label) }
	now := time.Now()
	m := testMsg("a@x.test", "", now)
	if _, err := q.Enqueue(m); err != nil {
		t.Fatal(err)
	}
	id := m.Items[0].ID
	if err := q.Complete(id, Outcome{State: StateDelivered, Label: "delivered"}); err != nil {
		t.Fatal(err)
	}
	q.SetClock(func() time.Time { return m.Items[0].Cutoff.Add(time.Second) })
	requeued, err := q.Reopen(id, Outcome{Redirect: "b@x.test", Retry: now})
	if !errors.Is(err, ErrTooLate) || requeued {
		t.Fatalf("redirect past the cut-off: requeued %v, err %v; want ErrTooLate", requeued, err)
	}
	if it, _ := q.Get(id); it.State != StateDelivered || it.Rcpt != "a@x.test" || it.BackupTried {
		t.Errorf("after a refused redirect: %+v, want unchanged", it)
	}
	if _, err := q.Reopen(id, Outcome{State: StateBounced, Label: "userunknown", Reason: "5.1.1 late"}); err != nil {
		t.Fatal(err)
	}
	if it, _ := q.Get(id); it.State != StateBounced {
		t.Errorf("after the late bounce: state %q", it.State)
	}
	if want := []string{"delivered/delivered", "bounced/userunknown"}; strings.Join(finals, ",") != strings.Join(want, ",") {
		t.Errorf("OnFinal saw %v, want %v", finals, want)
	}
}
