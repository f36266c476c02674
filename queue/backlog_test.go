package queue

import (
	"context"
	"sync"
	"testing"
	"time"
)

// gate is a handler whose deliveries wait until released, so that a test
// decides when a worker is free to take the next item.
type gate struct {
	release chan struct{}
	mu      sync.Mutex
	taken   int
}

func (g *gate) Deliver(ctx context.Context, it *Item, body []byte) Outcome {
	g.mu.Lock()
	g.taken++
	g.mu.Unlock()
	select {
	case <-g.release:
	case <-ctx.Done():
	}
	return Outcome{State: StateDelivered}
}
func (g *gate) Expire(it *Item, now time.Time) Outcome { return Outcome{State: StateExpired} }

// The backlog is what is due and not yet taken by a worker: items being
// delivered and retries due later are not backlog, and a waiter is let go
// as soon as a worker takes one.
func TestBacklog(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	now := time.Now()
	for i := 0; i < 5; i++ {
		m := testMsg("u"+string(rune('a'+i))+"@x.test", "", now)
		if _, err := q.Enqueue(m); err != nil {
			t.Fatal(err)
		}
	}
	// A retry due in an hour is not backlog.
	later := testMsg("later@x.test", "", now)
	later.Items[0].Due = now.Add(time.Hour)
	if _, err := q.Enqueue(later); err != nil {
		t.Fatal(err)
	}
	if n := q.Backlog("reset", 100); n != 5 {
		t.Fatalf("backlog = %d, want 5 due items", n)
	}
	if n := q.Backlog("reset", 3); n != 3 {
		t.Errorf("backlog capped at 3 = %d", n)
	}
	if n := q.Backlog("bulk", 10); n != 0 {
		t.Errorf("backlog of an empty class = %d", n)
	}
	if !q.WaitBacklog(context.Background(), "reset", 0, time.Hour) {
		t.Error("limit 0 (off) waited")
	}
	if !q.WaitBacklog(context.Background(), "reset", 5, time.Hour) {
		t.Error("WaitBacklog waited with 5 waiting and a limit of 5")
	}
	if q.WaitBacklog(context.Background(), "reset", 4, 10*time.Millisecond) {
		t.Error("WaitBacklog reported the backlog down to 4 with 5 waiting and no worker")
	}

	g := &gate{release: make(chan struct{})}
	done := make(chan bool)
	go func() { done <- q.WaitBacklog(context.Background(), "reset", 4, time.Minute) }()
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); close(g.release); q.Stop() }()
	q.Start(ctx, g, map[string]int{"reset": 2})
	if !<-done {
		t.Fatal("waiter not let go when workers took items")
	}
	for end := time.Now().Add(10 * time.Second); q.Depth()["reset"].InFlight < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("two workers never took items: %+v", q.Depth()["reset"])
		}
	}
	// Two leased, three due: backlog 3.
	if n := q.Backlog("reset", 100); n != 3 {
		t.Errorf("backlog with two items in flight = %d, want 3", n)
	}
}
