package queue

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// lanes is the in-memory schedule: one heap of due times per class, so that
// each class's workers only ever look at their own items and a reset never
// waits behind bulk mail.
type lanes struct {
	mu      sync.Mutex
	byClass map[string]*lane
	where   map[string]*slot // live item id → its slot
}

type slot struct {
	id       string
	lane     *lane
	due      time.Time
	index    int  // position in lane heap; -1 when not in it
	inflight bool // leased by a worker
	claimed  bool // taken by a pending commit (supersede, drop)
}

type lane struct {
	name string
	h    slotHeap
	// waiters are the idle workers, oldest first, each with its own
	// one-slot channel: a change to the lane wakes one of them, not all (on
	// two cores, waking ten workers for one item was most of the
	// scheduler's delay at 150 msg/s, docs/benchmarks.md).
	waiters []chan struct{}
	// taken is closed (and replaced) when a worker leases an item: what
	// acceptance held back by the backlog waits for.
	taken chan struct{}
}

func newLanes() *lanes {
	return &lanes{byClass: map[string]*lane{}, where: map[string]*slot{}}
}

func (ls *lanes) lane(class string) *lane {
	l := ls.byClass[class]
	if l == nil {
		l = &lane{name: class, taken: make(chan struct{})}
		ls.byClass[class] = l
	}
	return l
}

// put schedules id in class's lane at due (or moves it there).
func (ls *lanes) put(class, id string, due time.Time) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.putLocked(class, id, due)
}

func (ls *lanes) putLocked(class, id string, due time.Time) {
	s := ls.where[id]
	if s == nil {
		s = &slot{id: id, index: -1}
		ls.where[id] = s
	}
	l := ls.lane(class)
	if s.index >= 0 && s.lane != l {
		heap.Remove(&s.lane.h, s.index)
	}
	s.lane, s.due, s.inflight, s.claimed = l, due, false, false
	if s.index >= 0 {
		heap.Fix(&l.h, s.index)
	} else {
		heap.Push(&l.h, s)
	}
	// One idle worker looks again; it wakes the next if more is due.
	l.wakeOne()
}

// wakeOne signals the longest-waiting idle worker, if any. Its channel has
// room: a waiter is registered once and removed when signalled.
func (l *lane) wakeOne() {
	if len(l.waiters) == 0 {
		return
	}
	w := l.waiters[0]
	l.waiters[0] = nil
	l.waiters = l.waiters[1:]
	w <- struct{}{}
}

// unwait removes w from the waiters, if it is still there.
func (l *lane) unwait(w chan struct{}) {
	for i, x := range l.waiters {
		if x == w {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			return
		}
	}
}

// putIdle moves id to due unless a worker leased it meanwhile (whose
// outcome will schedule it).
func (ls *lanes) putIdle(class, id string, due time.Time) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if s := ls.where[id]; s == nil || !s.inflight && !s.claimed {
		ls.putLocked(class, id, due)
	}
}

// forget removes id from the schedule for good (it reached a final state).
func (ls *lanes) forget(id string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if s := ls.where[id]; s != nil {
		if s.index >= 0 {
			heap.Remove(&s.lane.h, s.index)
		}
		delete(ls.where, id)
	}
}

// claim takes a queued (not in-flight) item off its lane so no worker can
// lease it while a commit decides its fate. It fails for an item being
// delivered: that delivery is allowed to finish.
func (ls *lanes) claim(id string) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	s := ls.where[id]
	if s == nil || s.inflight || s.claimed {
		return false
	}
	if s.index >= 0 {
		heap.Remove(&s.lane.h, s.index)
	}
	s.claimed = true
	return true
}

// unclaim puts a claimed item back on its lane (the commit failed).
func (ls *lanes) unclaim(id string) {
	ls.mu.Lock()
	s := ls.where[id]
	ls.mu.Unlock()
	if s != nil && s.claimed {
		ls.put(s.lane.name, id, s.due)
	}
}

// inflight reports whether id is leased by a worker.
func (ls *lanes) inflight(id string) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	s := ls.where[id]
	return s != nil && s.inflight
}

// next blocks until an item of class is due, leases it and returns its id.
func (ls *lanes) next(ctx context.Context, class string, now func() time.Time) (string, error) {
	ls.mu.Lock()
	l := ls.lane(class)
	ls.mu.Unlock()
	me := make(chan struct{}, 1)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		ls.mu.Lock()
		var wait time.Duration = time.Hour
		if l.h.Len() > 0 {
			top := l.h[0]
			d := top.due.Sub(now())
			if d <= 0 {
				heap.Pop(&l.h)
				top.inflight = true
				close(l.taken)
				l.taken = make(chan struct{})
				if l.h.Len() > 0 && !l.h[0].due.After(now()) {
					l.wakeOne() // more is due: a second worker takes it
				}
				ls.mu.Unlock()
				return top.id, nil
			}
			wait = d
		}
		l.waiters = append(l.waiters, me)
		ls.mu.Unlock()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			ls.mu.Lock()
			l.unwait(me)
			if len(me) > 0 {
				l.wakeOne() // pass on a wake meant for an idle worker
			}
			ls.mu.Unlock()
			return "", ctx.Err()
		case <-me:
		case <-t.C:
			ls.mu.Lock()
			l.unwait(me)
			select {
			case <-me: // signalled as the timer fired: this worker looks
			default:
			}
			ls.mu.Unlock()
		}
	}
}

// ready counts the items of class that are due and not leased, stopping
// at limit: the backlog the class's workers have not reached yet. Items
// due later (retries) are not backlog. Due items form a subtree at the
// heap's root (a child is never due before its parent), so the walk
// visits only them and their children.
func (ls *lanes) ready(class string, now time.Time, limit int) (int, <-chan struct{}) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l := ls.lane(class)
	n := 0
	var walk func(i int)
	walk = func(i int) {
		if i >= len(l.h) || n >= limit || l.h[i].due.After(now) {
			return
		}
		n++
		walk(2*i + 1)
		walk(2*i + 2)
	}
	walk(0)
	return n, l.taken
}

// waitReady waits until at most limit items of class are ready, at most
// max; it returns the backlog it last saw and whether it got there.
func (ls *lanes) waitReady(ctx context.Context, class string, limit int, max time.Duration, now func() time.Time) (int, bool) {
	n, taken := ls.ready(class, now(), limit+1)
	if n <= limit {
		return n, true
	}
	t := time.NewTimer(max)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return n, false
		case <-t.C:
			return n, false
		case <-taken:
		}
		if n, taken = ls.ready(class, now(), limit+1); n <= limit {
			return n, true
		}
	}
}

// depth returns, per class, the live items, how many are leased, and the
// acceptance time of the oldest (read from its id, which starts with it).
func (ls *lanes) depth() map[string]LaneDepth {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	out := map[string]LaneDepth{}
	for _, s := range ls.where {
		d := out[s.lane.name]
		d.Class = s.lane.name
		d.Live++
		if s.inflight {
			d.InFlight++
		}
		if t := AcceptedAt(s.id); !t.IsZero() && (d.Oldest.IsZero() || t.Before(d.Oldest)) {
			d.Oldest = t
		}
		out[s.lane.name] = d
	}
	return out
}

// LaneDepth is one class lane's load.
type LaneDepth struct {
	Class    string    `json:"class"`
	Live     int       `json:"live"`      // queued or being delivered
	InFlight int       `json:"in_flight"` // being delivered now
	Oldest   time.Time `json:"oldest"`    // acceptance of the oldest live item
}

type slotHeap []*slot

func (h slotHeap) Len() int           { return len(h) }
func (h slotHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h slotHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *slotHeap) Push(x any) {
	s := x.(*slot)
	s.index = len(*h)
	*h = append(*h, s)
}
func (h *slotHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.index = -1
	return s
}
