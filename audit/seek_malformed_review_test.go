package audit

import (
	"testing"
	"time"
)

// A record under a too-short event key (damage or tampering) that sorts
// first must not make a time-window query panic (the relay's hourly
// calibration runs one): it is skipped as by a query without a window, and
// Verify is what reports it.
func TestReviewQuerySinceMalformedFirstKey(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	commit(t, db, l, life("Q1", "<m1@x>", 0)...)
	writeRaw(t, db, []byte(prefixEvent+"\x00"), []byte("junk"))
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Query panicked: %v", p)
		}
	}()
	got, err := Query(db, Filter{Since: t0.Add(-time.Minute)})
	if err != nil || len(got) != 7 {
		t.Errorf("Query = %d events, %v; want the 7 events", len(got), err)
	}
}
