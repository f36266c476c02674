package audit

import (
	"bytes"
	"errors"
	"testing"
)

// TestHashAt: the stored hash of an event by its sequence number, the one
// SignedHead names for the last; none for a sequence never written.
func TestHashAt(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	commit(t, db, l, life("q1", "m1", 0)...)
	seq, head, err := SignedHead(db, testKey)
	if err != nil || seq == 0 {
		t.Fatalf("SignedHead: %d, %v", seq, err)
	}
	got, err := HashAt(db, seq)
	if err != nil || !bytes.Equal(got, head) {
		t.Errorf("HashAt(%d) = %x, %v; want the head's %x", seq, got, err, head)
	}
	if prev, err := HashAt(db, seq-1); err != nil || bytes.Equal(prev, head) || len(prev) == 0 {
		t.Errorf("HashAt(%d) = %x, %v; want the previous event's own hash", seq-1, prev, err)
	}
	if _, err := HashAt(db, seq+1); !errors.Is(err, ErrNotFound) {
		t.Errorf("HashAt past the head: %v, want ErrNotFound", err)
	}
}
