package audit

import (
	"testing"
	"time"
)

// A window starting before 1970 (e.g. `-since 1000000h`, "everything")
// must find every event, not none.
func TestReviewQuerySinceBefore1970(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	commit(t, db, l, life("Q1", "<m1@x>", 0)...)
	for _, since := range []time.Time{
		time.Date(1912, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Unix(-90, 0),
		time.Unix(-30, 0),
	} {
		got, err := Query(db, Filter{Since: since})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 7 {
			t.Errorf("Query since %v: %d events, want 7", since, len(got))
		}
	}
}
