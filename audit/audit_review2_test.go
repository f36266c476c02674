package audit

import (
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// A record that does not decode, stored after the signed head, is not
// latchkey's either. Open skipped it when looking for the last event, so the
// relay saw no unsigned tail and its next event overwrote the record: the
// evidence was erased and a Verify run afterwards reported nothing.
func TestUndecodableTailIsNotOverwritten(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	commit(t, db, openLog(t, db), life("q1aaaaaaaaaaaaaaaa", "<m1@x>", 0)...) // seq 1-7
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(eventKey(8), []byte("garbage")) }); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(db, testKey)
	if err != nil || rep.OK() {
		t.Fatalf("before the restart: %v, %+v; want the record reported", err, rep)
	}

	l := openLog(t, db)
	if from, to := l.UnsignedTail(); from != 8 || to != 8 {
		t.Fatalf("UnsignedTail = %d, %d; want 8, 8", from, to)
	}
	commit(t, db, l, l.IntegrityEvent())
	commit(t, db, l, life("q2aaaaaaaaaaaaaaaa", "<m2@x>", 100)...)
	if err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(eventKey(8))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if string(v) != "garbage" {
				t.Errorf("the record after the head was overwritten")
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	rep, err = Verify(db, testKey)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range rep.Problems {
		if p.Seq == 8 {
			found = true
		}
	}
	if !found {
		t.Errorf("after the restart Verify reports %v; want seq 8", rep.Problems)
	}
}
