package queue

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// List pages newest first, bounds by acceptance time and finds a recipient
// by part of its address: what the console's message search asks.
func TestListFilterPages(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var ids []string
	for i := 0; i < 10; i++ {
		m := testMsg(fmt.Sprintf("user%d@Example.test", i), "", base.Add(time.Duration(i)*time.Minute))
		if i%2 == 1 {
			m.Items[0].Class = "bulk"
		}
		if _, err := q.Enqueue(m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.Items[0].ID)
	}
	list := func(f Filter) []string {
		t.Helper()
		items, err := q.List(f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, it := range items {
			out = append(out, it.ID)
		}
		return out
	}
	rev := slices.Clone(ids)
	slices.Reverse(rev)

	if got := list(Filter{Newest: true, Limit: 3}); !slices.Equal(got, rev[:3]) {
		t.Errorf("newest page 1 = %v, want %v", got, rev[:3])
	}
	if got := list(Filter{Newest: true, Limit: 3, After: rev[2]}); !slices.Equal(got, rev[3:6]) {
		t.Errorf("newest page 2 = %v, want %v", got, rev[3:6])
	}
	if got := list(Filter{Limit: 3, After: ids[2]}); !slices.Equal(got, ids[3:6]) {
		t.Errorf("oldest-first page 2 = %v, want %v", got, ids[3:6])
	}
	// [10:02, 10:05): items 2, 3, 4.
	w := Filter{Since: base.Add(2 * time.Minute), Until: base.Add(5 * time.Minute)}
	if got := list(w); !slices.Equal(got, ids[2:5]) {
		t.Errorf("window = %v, want %v", got, ids[2:5])
	}
	w.Newest = true
	if got := list(w); !slices.Equal(got, []string{ids[4], ids[3], ids[2]}) {
		t.Errorf("window newest first = %v", got)
	}
	if got := list(Filter{Rcpt: "USER7@example"}); !slices.Equal(got, ids[7:8]) {
		t.Errorf("recipient search = %v, want %v", got, ids[7:8])
	}
	// The raw-JSON pre-test must not pass an item on a field other than the
	// recipient: "reset" is in every item's class, not in a recipient.
	if got := list(Filter{Rcpt: "reset"}); len(got) != 0 {
		t.Errorf("recipient search for a class name matched %v", got)
	}
	if got := list(Filter{Class: "bulk", Newest: true, Limit: 2}); !slices.Equal(got, []string{ids[9], ids[7]}) {
		t.Errorf("class filter = %v", got)
	}
	if got := list(Filter{Newest: true, After: ids[0]}); len(got) != 0 {
		t.Errorf("after the oldest = %v, want none", got)
	}
}

// idMillis, List's allocation-free reading of a key, agrees with AcceptedAt.
func TestIDMillis(t *testing.T) {
	for _, ms := range []int64{0, 1, 1_700_000_000_123, 1<<48 - 1} {
		id := ItemID(NewMsgID(time.UnixMilli(ms)), 1)
		if got := idMillis([]byte(id)); got != AcceptedAt(id).UnixMilli() || got != ms {
			t.Errorf("idMillis(%s) = %d, want %d", id, got, ms)
		}
	}
	if idMillis([]byte("not!an!id!!")) != 0 || idMillis([]byte("abc")) != 0 {
		t.Error("malformed ids must give 0")
	}
}

// A database written before the time index existed is indexed once when
// the queue opens it, and List then pages it in acceptance order, which
// is not the keys' byte order.
func TestListTimeIndexBuilt(t *testing.T) {
	dir := t.TempDir()
	st, q := openTest(t, dir)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i := 0; i < 12; i++ {
		m := testMsg(fmt.Sprintf("u%d@example.test", i), "", base.Add(time.Duration(i)*37*24*time.Hour+time.Duration(i)*time.Millisecond))
		if _, err := q.Enqueue(m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.Items[0].ID)
	}
	if slices.IsSorted(ids) {
		t.Fatal("test needs ids whose byte order differs from their time order")
	}
	// Back to the older layout: no index, no marker.
	if err := st.Update(func(tx *Tx) error {
		for _, id := range ids {
			if err := tx.Delete(timeKey(id)); err != nil {
				return err
			}
		}
		return tx.Delete(keyTimeIndexed)
	}); err != nil {
		t.Fatal(err)
	}
	if items, _ := q.List(Filter{State: "all"}); len(items) != 0 {
		t.Fatalf("without the index List found %d items; the test did not remove it", len(items))
	}
	st.Close()

	st, q = openTest(t, dir)
	defer st.Close()
	items, err := q.List(Filter{State: "all", Newest: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.ID)
	}
	want := slices.Clone(ids)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Errorf("after the rebuild, newest first = %v, want %v", got, want)
	}
	if err := st.View(func(txn *badger.Txn) error {
		v, err := getValue(txn, keyTimeIndexed)
		if v == nil && err == nil {
			t.Error("the rebuild did not mark the index complete")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
