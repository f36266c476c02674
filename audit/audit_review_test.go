package audit

import (
	"testing"
	"time"
)

// Tampering at each end of the chain and around a checkpoint is named.
func TestReviewVerifyEdges(t *testing.T) {
	t.Run("reordered events", func(t *testing.T) {
		db, _ := tamperDB(t)
		a, b := readRaw(t, db, 3), readRaw(t, db, 4)
		writeRaw(t, db, eventKey(3), encodeStored(&b))
		writeRaw(t, db, eventKey(4), encodeStored(&a))
		r := mustVerify(t, db)
		wantProblem(t, r, KindChanged, 3)
		wantProblem(t, r, KindChanged, 4)
	})
	t.Run("deleted last event", func(t *testing.T) {
		db, _ := tamperDB(t)
		deleteRaw(t, db, eventKey(10))
		wantProblem(t, mustVerify(t, db), KindMissing, 10)
	})
	t.Run("changed last event", func(t *testing.T) {
		db, _ := tamperDB(t)
		ev := readRaw(t, db, 10)
		ev.Recipient = "attacker@evil.test"
		ev.Hash = ComputeHash(&ev)
		writeEvent(t, db, ev)
		wantProblem(t, mustVerify(t, db), KindChanged, 10)
	})
	t.Run("changed first event", func(t *testing.T) {
		db, _ := tamperDB(t)
		ev := readRaw(t, db, 1)
		ev.Recipient = "attacker@evil.test"
		ev.Hash = ComputeHash(&ev)
		writeEvent(t, db, ev)
		wantProblem(t, mustVerify(t, db), KindInserted, 2)
	})
	t.Run("inserted in the middle", func(t *testing.T) {
		db, _ := tamperDB(t)
		// Shift 6..10 up by one and put a forgery at 6: the head exposes it.
		for seq := uint64(10); seq >= 6; seq-- {
			ev := readRaw(t, db, seq)
			ev.Seq++
			ev.Hash = ComputeHash(&ev)
			writeEvent(t, db, ev)
		}
		r := mustVerify(t, db)
		if r.OK() {
			t.Fatal("an inserted event verified clean")
		}
	})
}

// Wiping every event and the head of a pruned chain leaves its checkpoint
// behind, which proves that a chain existed: Verify must not call that clean.
func TestReviewVerifyWipedPrunedChain(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	commit(t, db, l, life("OLD", "<old@x>", 0)...)
	commit(t, db, l, life("NEW", "<new@x>", 1000)...)
	if _, err := Prune(db, testKey, t0.Add(500*time.Second)); err != nil {
		t.Fatal(err)
	}
	wantClean(t, db)
	for seq := uint64(8); seq <= 14; seq++ {
		deleteRaw(t, db, eventKey(seq))
	}
	deleteRaw(t, db, []byte(keyHead))
	r := mustVerify(t, db)
	if r.OK() {
		t.Fatal("a pruned chain with every event and the signed head deleted verifies clean")
	}
}
