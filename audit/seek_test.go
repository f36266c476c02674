package audit

import (
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// A time window is found through the minute index, and gives exactly what a
// filter over the whole chain gives, also when the clock stepped back (an
// event stamped before events written earlier), after pruning, and for a
// database whose oldest events predate the index.
func TestTimeWindowSeek(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	base := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	// Minutes 0..59, one event every 30 s; at minute 40 the clock steps
	// back 25 minutes for three events.
	var stamps []time.Time
	for i := 0; i < 120; i++ {
		ts := base.Add(time.Duration(i) * 30 * time.Second)
		if i >= 80 && i < 83 {
			ts = ts.Add(-25 * time.Minute)
		}
		stamps = append(stamps, ts)
		commit(t, db, l, &Event{Time: ts, Type: Queued, QueueID: "q" + string(rune('a'+i%26))})
	}
	brute := func(since, until time.Time) []uint64 {
		var out []uint64
		db.View(func(txn *badger.Txn) error {
			return walkEvents(txn, func(ev *Event) error {
				if !ev.Time.Before(since) && (until.IsZero() || ev.Time.Before(until)) {
					out = append(out, ev.Seq)
				}
				return nil
			})
		})
		return out
	}
	check := func(name string, since, until time.Time) {
		t.Helper()
		var got []uint64
		if err := Scan(db, Filter{Since: since, Until: until}, func(ev *Event) error {
			got = append(got, ev.Seq)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want := brute(since, until)
		if len(got) != len(want) {
			t.Fatalf("%s: %d events, want %d", name, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: event %d is seq %d, want %d", name, i, got[i], want[i])
			}
		}
	}
	check("last 10 minutes", base.Add(50*time.Minute), time.Time{})
	check("minutes 15-20 (the stepped-back events are in it)", base.Add(15*time.Minute), base.Add(20*time.Minute))
	check("all", base.Add(-time.Hour), time.Time{})
	check("none", base.Add(2*time.Hour), time.Time{})

	// The seek must actually skip: a window at the end starts late in the chain.
	var from uint64
	db.View(func(txn *badger.Txn) error {
		var err error
		from, err = firstSeqSince(txn, base.Add(50*time.Minute))
		return err
	})
	if from < 90 {
		t.Errorf("seek for the last 10 minutes starts at seq %d, want about 101", from)
	}

	if _, err := Prune(db, testKey, base.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	check("after pruning", base.Add(10*time.Minute), time.Time{})
	check("after pruning, late window", base.Add(45*time.Minute), time.Time{})

	// A database from before the index: events older than its first seq
	// are walked as before.
	txn := db.NewTransaction(true)
	txn.Set([]byte(keyMinuteStart), []byte{0, 0, 0, 0, 0, 0, 0, 200})
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	db.View(func(txn *badger.Txn) error {
		var err error
		from, err = firstSeqSince(txn, base.Add(50*time.Minute))
		return err
	})
	if from != 0 {
		t.Errorf("with events older than the index, seek starts at %d, want 0 (the whole chain)", from)
	}
	check("older events than the index", base.Add(50*time.Minute), time.Time{})
}
