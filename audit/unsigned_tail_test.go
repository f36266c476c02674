package audit

import (
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// forgeTail appends n events with a correct chain (the hashes are not
// keyed, so anyone can compute them) but puts the old signed head back: what
// someone with the database and without the key can do.
func forgeTail(t *testing.T, db *badger.DB, n int) {
	t.Helper()
	l := openLog(t, db)
	var head []byte
	if err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keyHead))
		if err != nil {
			return err
		}
		head, err = item.ValueCopy(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		commit(t, db, l, &Event{Time: t0.Add(time.Hour + time.Duration(i)*time.Second), Type: Delivered,
			QueueID: "forgedforgedforgaa", Recipient: "victim@example.test"})
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keyHead), head) }); err != nil {
		t.Fatal(err)
	}
}

// Events written after the signed head stay reported after a restart and
// more appends, instead of being signed into the chain.
func TestUnsignedTailStaysVisible(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	commit(t, db, openLog(t, db), life("q1aaaaaaaaaaaaaaaa", "<m1@x>", 0)...) // seq 1-7
	forgeTail(t, db, 2)                                                       // seq 8-9

	rep, err := Verify(db, testKey)
	if err != nil || rep.OK() {
		t.Fatalf("before the restart: %v, %+v; want problems", err, rep)
	}

	// The restart: Open finds the tail; the relay records it, then goes on.
	l := openLog(t, db)
	if from, to := l.UnsignedTail(); from != 8 || to != 9 {
		t.Fatalf("UnsignedTail = %d, %d; want 8, 9", from, to)
	}
	ie := l.IntegrityEvent()
	if ie == nil || ie.Fields["from"] != "8" || ie.Fields["to"] != "9" {
		t.Fatalf("integrity event %+v", ie)
	}
	commit(t, db, l, ie)
	commit(t, db, l, life("q2aaaaaaaaaaaaaaaa", "<m2@x>", 100)...)

	rep, err = Verify(db, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Problems) != 1 {
		t.Fatalf("after the restart: %d problems %v; want exactly the forged range", len(rep.Problems), rep.Problems)
	}
	if p := rep.Problems[0]; p.Kind != KindInserted || p.Seq != 8 || p.SeqEnd != 9 || !strings.Contains(p.Detail, "event 10") {
		t.Errorf("problem %v; want seq 8-9 inserted, recorded by event 10", p)
	}
	// A second restart finds nothing new: the tail was recorded once.
	if from, _ := openLog(t, db).UnsignedTail(); from != 0 {
		t.Errorf("UnsignedTail after recording = %d, want 0", from)
	}
}

// Without the integrity event (a tool that appends without recording it),
// the forged events are not signed in: the chain breaks right after them.
func TestUnsignedTailNotChainedIn(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	commit(t, db, openLog(t, db), life("q1aaaaaaaaaaaaaaaa", "<m1@x>", 0)...)
	forgeTail(t, db, 1) // seq 8
	commit(t, db, openLog(t, db), &Event{Time: t0.Add(2 * time.Hour), Type: Clicked, QueueID: "q1aaaaaaaaaaaaaaaa"})
	rep, err := Verify(db, testKey)
	if err != nil || rep.OK() {
		t.Fatalf("%v, %+v: want the break reported", err, rep)
	}
	if p := rep.Problems[0]; p.Kind != KindInserted || p.Seq != 9 {
		t.Errorf("problem %v; want the link at seq 9 reported", p)
	}
}
