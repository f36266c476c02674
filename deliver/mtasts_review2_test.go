package deliver

import (
	"sync/atomic"
	"testing"
	"time"
)

// slowSTSStore is an STSStore whose SaveSTS takes a while, as a database
// write can, and that notes a save made after the test closed it.
type slowSTSStore struct {
	memSTSStore
	saved, late atomic.Bool
	closed      atomic.Bool
}

func (s *slowSTSStore) SaveSTS(domain string, p StoredSTS) error {
	time.Sleep(100 * time.Millisecond)
	if s.closed.Load() {
		s.late.Store(true)
	}
	s.saved.Store(true)
	return s.memSTSStore.SaveSTS(domain, p)
}

// The relay closes its database right after Deliverer.Close returns: a
// policy save still running then wrote to a closed store (and a goroutine
// outlived Close). Close now waits for it.
func TestMTASTSCloseWaitsForPolicySave(t *testing.T) {
	f := stsSetup(t, goodMX, policyEnforce, "1", nil)
	store := &slowSTSStore{memSTSStore: memSTSStore{m: map[string]StoredSTS{}}}
	f.d.SetSTSStore(store)
	if r := deliver1(t, f.d, "a@example.test")[0]; r.MTASTS != STSEnforce {
		t.Fatalf("mode %q", r.MTASTS)
	}
	f.d.Close()
	store.closed.Store(true)
	if !store.saved.Load() {
		t.Fatal("Close returned before the fetched policy was saved")
	}
	if _, ok := store.get("example.test"); !ok || store.late.Load() {
		t.Fatalf("stored %v, saved after close %v", ok, store.late.Load())
	}
}
