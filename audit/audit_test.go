package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)

func openDB(t testing.TB, dir string) *badger.DB {
	t.Helper()
	opts := badger.DefaultOptions(dir).WithLogger(nil).WithCompression(options.None)
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatalf("open badger: %v", err)
	}
	return db
}

func openLog(t testing.TB, db *badger.DB) *Log {
	t.Helper()
	l, err := Open(db, testKey)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

// commit appends evs in one transaction, as the relay's committer does.
func commit(t testing.TB, db *badger.DB, l *Log, evs ...*Event) {
	t.Helper()
	m := l.Mark()
	txn := db.NewTransaction(true)
	defer txn.Discard()
	for _, ev := range evs {
		if err := l.Append(txn, ev); err != nil {
			l.Rollback(m)
			t.Fatalf("Append: %v", err)
		}
	}
	if err := txn.Commit(); err != nil {
		l.Rollback(m)
		t.Fatalf("Commit: %v", err)
	}
}

// life returns a reset's full life, received to delivered, at t0+i seconds.
func life(queueID, msgID string, start int) []*Event {
	types := []string{Received, Signed, Queued, Attempt, Deferred, Attempt, Delivered}
	var out []*Event
	for i, typ := range types {
		out = append(out, &Event{
			Time: t0.Add(time.Duration(start+i) * time.Second), Type: typ,
			QueueID: queueID, MessageID: msgID, Class: "reset",
			Recipient: "user@example.test", Sender: "noreply@corp.test",
			Fields: map[string]string{"step": fmt.Sprint(i), "sfdc_org": "00D1", "sfdc_user": "005A"},
		})
	}
	return out
}

func types(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func mustVerify(t *testing.T, db *badger.DB) *VerifyReport {
	t.Helper()
	r, err := Verify(db, testKey)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return r
}

func wantClean(t *testing.T, db *badger.DB) *VerifyReport {
	t.Helper()
	r := mustVerify(t, db)
	if !r.OK() {
		t.Fatalf("Verify found problems in an untouched chain: %v", r.Problems)
	}
	return r
}

// wantProblem fails unless r names a problem of kind at seq.
func wantProblem(t *testing.T, r *VerifyReport, kind string, seq uint64) {
	t.Helper()
	for _, p := range r.Problems {
		if p.Kind == kind && p.Seq <= seq && seq <= max(p.Seq, p.SeqEnd) {
			return
		}
	}
	t.Errorf("Verify did not report %s at seq %d; got %v", kind, seq, r.Problems)
}

func TestLifeInBatchesShowsInOrder(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	a := life("Q1", "<m1@corp.test>", 0)
	b := life("Q2", "<m2@corp.test>", 100)
	// Interleave the two messages over several batches, as concurrent
	// sessions and deliveries do.
	commit(t, db, l, a[0], a[1], b[0])
	commit(t, db, l, a[2], b[1], b[2], a[3])
	commit(t, db, l, a[4])
	commit(t, db, l, b[3], b[4], b[5], b[6], a[5], a[6])

	want := []string{Received, Signed, Queued, Attempt, Deferred, Attempt, Delivered}
	for _, id := range []string{"Q1", "<m1@corp.test>", "m1@corp.test"} {
		got, err := Show(db, id)
		if err != nil {
			t.Fatalf("Show(%q): %v", id, err)
		}
		if !slices.Equal(types(got), want) {
			t.Errorf("Show(%q) = %v, want %v", id, types(got), want)
		}
		for i := 1; i < len(got); i++ {
			if got[i].Seq <= got[i-1].Seq {
				t.Errorf("Show(%q): seq %d after %d", id, got[i].Seq, got[i-1].Seq)
			}
		}
		for _, e := range got {
			if e.QueueID != "Q1" {
				t.Errorf("Show(%q) returned an event of %s", id, e.QueueID)
			}
		}
	}
	if _, err := Show(db, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Show(unknown) error = %v, want ErrNotFound", err)
	}
	// The chain: seq 1..14, each Prev the previous Hash.
	all, err := Query(db, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 14 {
		t.Fatalf("Query all = %d events, want 14", len(all))
	}
	for i, e := range all {
		if e.Seq != uint64(i+1) {
			t.Errorf("event %d has seq %d", i, e.Seq)
		}
		if i > 0 && !bytes.Equal(e.Prev, all[i-1].Hash) {
			t.Errorf("event %d Prev does not match event %d Hash", e.Seq, all[i-1].Seq)
		}
		if !bytes.Equal(ComputeHash(&e), e.Hash) {
			t.Errorf("event %d hash does not match its content", e.Seq)
		}
	}
	if len(all[0].Prev) != 0 {
		t.Errorf("first event has Prev %x", all[0].Prev)
	}
	wantClean(t, db)
}

func TestIdSharingPrefixIsNotMixedUp(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	// "a/b" and "a" share the index prefix a/m/a/...; the fixed-size seq
	// suffix must keep them apart.
	commit(t, db, l, &Event{Type: Received, MessageID: "<a>"}, &Event{Type: Received, MessageID: "<a/1234567>"})
	got, err := Show(db, "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].MessageID != "<a>" {
		t.Errorf("Show(a) = %+v", got)
	}
}

func TestReopenContinuesChain(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	l := openLog(t, db)
	evs := life("Q1", "<m1@corp.test>", 0)
	commit(t, db, l, evs[:3]...)
	seq, hash := l.Head()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openDB(t, dir)
	defer db.Close()
	l = openLog(t, db)
	if s, h := l.Head(); s != seq || !bytes.Equal(h, hash) {
		t.Fatalf("reopened head = %d %x, want %d %x", s, h, seq, hash)
	}
	commit(t, db, l, evs[3:]...)
	if evs[3].Seq != seq+1 || !bytes.Equal(evs[3].Prev, hash) {
		t.Errorf("after reopen: seq %d prev %x, want %d %x", evs[3].Seq, evs[3].Prev, seq+1, hash)
	}
	r := wantClean(t, db)
	if r.Events != 7 || r.LastSeq != 7 || r.HeadSeq != 7 {
		t.Errorf("report = %+v", r)
	}

	// Another key cannot continue this chain.
	if _, err := Open(db, []byte("another key, 16+ bytes long")); !errors.Is(err, ErrBadKey) {
		t.Errorf("Open with another key: %v, want ErrBadKey", err)
	}
	if _, err := Open(db, []byte("short")); err == nil {
		t.Error("Open accepted a short key")
	}
}

// tamperDB returns a database holding 10 events (seq 1..10) and its Log.
func tamperDB(t *testing.T) (*badger.DB, *Log) {
	t.Helper()
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	l := openLog(t, db)
	evs := append(life("Q1", "<m1@x>", 0), life("Q2", "<m2@x>", 10)[:3]...)
	commit(t, db, l, evs[:5]...)
	commit(t, db, l, evs[5:]...)
	wantClean(t, db)
	return db, l
}

func readRaw(t *testing.T, db *badger.DB, seq uint64) Event {
	t.Helper()
	var ev Event
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(eventKey(seq))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return ev.decodeStored(v) })
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func writeRaw(t *testing.T, db *badger.DB, key []byte, val []byte) {
	t.Helper()
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(key, val) }); err != nil {
		t.Fatal(err)
	}
}

func writeEvent(t *testing.T, db *badger.DB, ev Event) {
	t.Helper()
	writeRaw(t, db, eventKey(ev.Seq), encodeStored(&ev))
}

func deleteRaw(t *testing.T, db *badger.DB, key []byte) {
	t.Helper()
	if err := db.Update(func(txn *badger.Txn) error { return txn.Delete(key) }); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	t.Run("changed field", func(t *testing.T) {
		db, _ := tamperDB(t)
		ev := readRaw(t, db, 4)
		ev.Recipient = "attacker@evil.test"
		writeEvent(t, db, ev)
		r := mustVerify(t, db)
		wantProblem(t, r, KindChanged, 4)
		if len(r.Problems) != 1 {
			t.Errorf("problems = %v, want just seq 4", r.Problems)
		}
		if s := r.Problems[0].String(); !strings.HasPrefix(s, "changed seq 4 at "+ev.Time.Format(time.RFC3339Nano)) {
			t.Errorf("problem reads %q", s)
		}
		if !r.Problems[0].Time.Equal(ev.Time) {
			t.Errorf("problem time = %v, want the event's %v", r.Problems[0].Time, ev.Time)
		}
	})
	t.Run("changed field with hash recomputed", func(t *testing.T) {
		db, _ := tamperDB(t)
		ev := readRaw(t, db, 4)
		ev.Fields["reason"] = "forged"
		ev.Hash = ComputeHash(&ev)
		writeEvent(t, db, ev)
		wantProblem(t, mustVerify(t, db), KindInserted, 5) // seq 5 no longer links to 4
	})
	t.Run("deleted event", func(t *testing.T) {
		db, _ := tamperDB(t)
		deleteRaw(t, db, eventKey(6))
		r := mustVerify(t, db)
		wantProblem(t, r, KindMissing, 6)
		if len(r.Problems) != 1 || r.Problems[0].SeqEnd != 6 {
			t.Errorf("problems = %v, want one gap at seq 6", r.Problems)
		}
	})
	t.Run("deleted first event", func(t *testing.T) {
		db, _ := tamperDB(t)
		deleteRaw(t, db, eventKey(1))
		wantProblem(t, mustVerify(t, db), KindMissing, 1)
	})
	t.Run("truncated tail", func(t *testing.T) {
		db, _ := tamperDB(t)
		deleteRaw(t, db, eventKey(10))
		deleteRaw(t, db, eventKey(9))
		r := mustVerify(t, db)
		wantProblem(t, r, KindMissing, 9)
		wantProblem(t, r, KindMissing, 10)
	})
	t.Run("forged event appended", func(t *testing.T) {
		db, _ := tamperDB(t)
		last := readRaw(t, db, 10)
		// A forgery that links perfectly: only the signed head exposes it.
		forged := Event{Seq: 11, Time: last.Time.Add(time.Second), Type: Delivered, QueueID: "Q2", Prev: last.Hash}
		forged.Hash = ComputeHash(&forged)
		writeEvent(t, db, forged)
		r := mustVerify(t, db)
		wantProblem(t, r, KindInserted, 11)
		if len(r.Problems) != 1 {
			t.Errorf("problems = %v", r.Problems)
		}
	})
	t.Run("forged event far ahead", func(t *testing.T) {
		db, _ := tamperDB(t)
		forged := Event{Seq: 500, Time: t0, Type: Delivered}
		forged.Hash = ComputeHash(&forged)
		writeEvent(t, db, forged)
		wantProblem(t, mustVerify(t, db), KindInserted, 500)
	})
	t.Run("forged event replacing one", func(t *testing.T) {
		db, _ := tamperDB(t)
		orig := readRaw(t, db, 7)
		forged := Event{Seq: 7, Time: orig.Time, Type: Delivered, QueueID: orig.QueueID, Prev: orig.Prev}
		forged.Hash = ComputeHash(&forged)
		writeEvent(t, db, forged)
		wantProblem(t, mustVerify(t, db), KindInserted, 8)
	})
	t.Run("whole tail rewritten", func(t *testing.T) {
		db, _ := tamperDB(t)
		// Re-hash 5..10 after changing 5: every link holds, the signed head does not.
		prev := readRaw(t, db, 4).Hash
		for seq := uint64(5); seq <= 10; seq++ {
			ev := readRaw(t, db, seq)
			if seq == 5 {
				ev.Recipient = "attacker@evil.test"
			}
			ev.Prev = prev
			ev.Hash = ComputeHash(&ev)
			prev = ev.Hash
			writeEvent(t, db, ev)
		}
		wantProblem(t, mustVerify(t, db), KindChanged, 10)
	})
	t.Run("garbage under event and malformed key", func(t *testing.T) {
		db, _ := tamperDB(t)
		writeRaw(t, db, eventKey(3), []byte("{not json"))
		writeRaw(t, db, []byte(prefixEvent+"x"), []byte("{}"))
		r := mustVerify(t, db)
		wantProblem(t, r, KindChanged, 3)
		found := false
		for _, p := range r.Problems {
			found = found || (p.Kind == KindInserted && strings.Contains(p.Detail, "malformed key"))
		}
		if !found {
			t.Errorf("malformed key not reported: %v", r.Problems)
		}
	})
	t.Run("forged head", func(t *testing.T) {
		db, _ := tamperDB(t)
		writeRaw(t, db, []byte(keyHead), make([]byte, headLen))
		r := mustVerify(t, db)
		if len(r.Problems) == 0 || r.Problems[0].Kind != KindHead {
			t.Errorf("forged head not reported: %v", r.Problems)
		}
	})
}

func TestRollbackAfterFailedCommit(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	evs := life("Q1", "<m1@x>", 0)
	commit(t, db, l, evs[:2]...)

	// A real commit failure: the batch read a key that another transaction
	// changed before the batch committed, so Badger refuses it.
	m := l.Mark()
	txn := db.NewTransaction(true)
	if _, err := txn.Get([]byte("q/state")); !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatal(err)
	}
	for _, ev := range evs[2:4] {
		if err := l.Append(txn, ev); err != nil {
			t.Fatal(err)
		}
	}
	writeRaw(t, db, []byte("q/state"), []byte("changed"))
	if err := txn.Commit(); !errors.Is(err, badger.ErrConflict) {
		t.Fatalf("Commit = %v, want a conflict", err)
	}
	l.Rollback(m)

	commit(t, db, l, evs[4:]...)
	if evs[4].Seq != 3 {
		t.Errorf("after rollback the next seq is %d, want 3", evs[4].Seq)
	}
	r := wantClean(t, db)
	if r.Events != 5 {
		t.Errorf("events = %d, want 5", r.Events)
	}

	// Without the rollback the same failure leaves a gap Verify reports:
	// the test above is not passing by accident.
	txn = db.NewTransaction(true)
	_ = l.Append(txn, &Event{Type: Attempt})
	txn.Discard()
	commit(t, db, l, &Event{Type: Delivered})
	wantProblem(t, mustVerify(t, db), KindMissing, 6)
}

func TestPruneAndCheckpoint(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	old := life("OLD", "<old@x>", 0)
	newer := life("NEW", "<new@x>", 1000)
	commit(t, db, l, old...)
	commit(t, db, l, newer...)

	removed, err := Prune(db, testKey, t0.Add(500*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if removed != len(old) {
		t.Errorf("removed %d, want %d", removed, len(old))
	}
	r := wantClean(t, db)
	if r.Checkpoint == nil || r.Checkpoint.Seq != 8 || r.FirstSeq != 8 {
		t.Errorf("after prune: checkpoint %+v, first seq %d; want both 8", r.Checkpoint, r.FirstSeq)
	}
	if _, err := Show(db, "OLD"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Show(pruned) = %v, want ErrNotFound", err)
	}
	if n := countKeys(t, db, prefixQueue+"OLD/") + countKeys(t, db, prefixMsgID+"old@x/"); n != 0 {
		t.Errorf("%d index keys of pruned events left", n)
	}
	if got, _ := Show(db, "NEW"); len(got) != len(newer) {
		t.Errorf("retained events: %d, want %d", len(got), len(newer))
	}
	if n, err := Prune(db, testKey, t0.Add(500*time.Second)); n != 0 || err != nil {
		t.Errorf("second prune = %d, %v; want nothing to do", n, err)
	}

	// The chain goes on after pruning and across a reopen of the Log.
	l = openLog(t, db)
	commit(t, db, l, &Event{Type: Clicked, QueueID: "NEW", Time: t0.Add(2000 * time.Second)})
	wantClean(t, db)

	// Deleting the first retained event: the checkpoint exposes it.
	first := readRaw(t, db, 8)
	deleteRaw(t, db, eventKey(8))
	wantProblem(t, mustVerify(t, db), KindMissing, 8)
	writeEvent(t, db, first)
	wantClean(t, db)

	// A forged checkpoint (claiming the chain starts later, to hide a
	// deletion) is detected, and the deletion still shows.
	var cp checkpointJSON
	err = db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(checkpointKey(8))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return json.Unmarshal(v, &cp) })
	})
	if err != nil {
		t.Fatal(err)
	}
	ev9 := readRaw(t, db, 9)
	cp.Seq = 9
	cp.Prev = fmt.Sprintf("%x", ev9.Prev)
	cp.Hash = fmt.Sprintf("%x", ev9.Hash)
	b, _ := json.Marshal(cp)
	deleteRaw(t, db, checkpointKey(8))
	deleteRaw(t, db, eventKey(8))
	writeRaw(t, db, checkpointKey(9), b)
	r = mustVerify(t, db)
	wantProblem(t, r, KindCheckpoint, 9)
	wantProblem(t, r, KindMissing, 8)
}

func TestPruneEverything(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	var evs []*Event
	for i := range 2500 { // more than two delete batches
		evs = append(evs, &Event{Type: Received, QueueID: fmt.Sprintf("Q%d", i), Time: t0.Add(time.Duration(i) * time.Millisecond)})
	}
	commit(t, db, l, evs...)
	n, err := Prune(db, testKey, t0.Add(time.Hour))
	if err != nil || n != 2500 {
		t.Fatalf("Prune = %d, %v; want 2500", n, err)
	}
	if k := countKeys(t, db, "a/"); k != 3 { // the head, the checkpoint and where the time index starts
		t.Errorf("%d audit keys left, want 3", k)
	}
	if k := countKeys(t, db, prefixMinute); k != 0 {
		t.Errorf("%d minutes of the time index left after pruning everything", k)
	}
	wantClean(t, db)
	// A Log opened now finds no event: it continues from the signed head.
	l = openLog(t, db)
	commit(t, db, l, &Event{Type: Received})
	r := wantClean(t, db)
	if r.FirstSeq != 2501 {
		t.Errorf("first seq after prune-all = %d", r.FirstSeq)
	}
}

func countKeys(t *testing.T, db *badger.DB, prefix string) int {
	t.Helper()
	n := 0
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestQueryFilters(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	a := life("Q1", "<m1@x>", 0)
	b := life("Q2", "<m2@x>", 100)
	for _, e := range b {
		e.Recipient, e.Class = "Other@Example.test", "bulk"
		e.Fields["sfdc_user"] = "005B"
		e.Fields["sfdc_org"] = "00D2"
	}
	b[6].Type = Bounced
	commit(t, db, l, append(a, b...)...)

	cases := []struct {
		name string
		f    Filter
		want int
	}{
		{"all", Filter{}, 14},
		{"recipient any case", Filter{Recipient: "other@example.TEST"}, 7},
		{"class", Filter{Class: "reset"}, 7},
		{"type", Filter{Type: Attempt}, 4},
		{"outcome", Filter{Type: Bounced}, 1},
		{"queue id", Filter{QueueID: "Q2"}, 7},
		{"queue id and type", Filter{QueueID: "Q2", Type: Delivered}, 0},
		{"sfdc user", Filter{SFDCUser: "005B"}, 7},
		{"sfdc org", Filter{SFDCOrg: "00D1"}, 7},
		{"since", Filter{Since: t0.Add(100 * time.Second)}, 7},
		{"until exclusive", Filter{Until: t0.Add(2 * time.Second)}, 2},
		{"window", Filter{Since: t0.Add(5 * time.Second), Until: t0.Add(102 * time.Second)}, 4},
		{"limit", Filter{Type: Attempt, Limit: 3}, 3},
		{"nothing", Filter{Recipient: "nobody@x"}, 0},
	}
	for _, c := range cases {
		got, err := Query(db, c.f)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(got) != c.want {
			t.Errorf("%s: %d events, want %d", c.name, len(got), c.want)
		}
		for _, e := range got {
			if !c.f.match(&e) {
				t.Errorf("%s: returned non-matching event %d", c.name, e.Seq)
			}
		}
	}
}

func TestURLsInFieldsAreRedacted(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	u := "https://corp.test/reset?token=SECRETTOKEN"
	ev := &Event{Type: Bounced, Fields: map[string]string{"reply": "550 5.7.1 see " + u + " for help"}}
	commit(t, db, l, ev)
	got, _ := Query(db, Filter{})
	want := "550 5.7.1 see [url:" + l.URLHash(u) + "] for help"
	if got[0].Fields["reply"] != want {
		t.Errorf("stored reply = %q, want %q", got[0].Fields["reply"], want)
	}
	wantClean(t, db)
}

func TestInvalidUTF8StaysVerifiable(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	commit(t, db, l, &Event{Type: Rejected, Sender: "bad\xffsender", Fields: map[string]string{"k\xfe": "v\xff"}})
	wantClean(t, db)
}

func TestTokenNeverInBadgerFiles(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	l := openLog(t, db)
	const token = "Zq9TOKENx7Vb3kLm1Pw8"
	const marker = "positive-control-7f3a@example.test"
	body := []byte("From: noreply@corp.test\r\nTo: " + marker + "\r\nSubject: Reset\r\n" +
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Reset: https://corp.test/reset?t=3D" + token + "&u=3D1\r\n")
	hashes := l.URLHashes(body)
	if len(hashes) != 1 || hashes[0] != l.URLHash("https://corp.test/reset?t="+token+"&u=1") {
		t.Fatalf("URLHashes = %v", hashes)
	}
	fields := map[string]string{
		"body_sha256": BodyDigest(body),
		"url_hashes":  strings.Join(hashes, ","),
		"reply":       "250 ok https://corp.test/reset?t=" + token, // a careless caller
	}
	for _, typ := range []string{Received, Signed, Queued, Attempt, Delivered} {
		commit(t, db, l, &Event{Type: typ, QueueID: "Q1", MessageID: "<m@x>", Recipient: marker, Fields: fields})
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	found := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found["token"] = found["token"] || bytes.Contains(b, []byte(token))
		found["marker"] = found["marker"] || bytes.Contains(b, []byte(marker))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !found["marker"] {
		t.Fatal("positive control: the recipient is not in the Badger files, so the search proves nothing")
	}
	if found["token"] {
		t.Error("the reset token is stored in the Badger files")
	}
}
