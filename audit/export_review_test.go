package audit

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"time"
)

// An attacker-controlled value (a Message-ID, a recipient, a reply) that
// starts like a spreadsheet formula must not reach a CSV cell as one, and
// the export must still give back the exact value.
func TestReviewExportCSVFormulaInjection(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	evil := []string{"=cmd|' /C calc'!A0", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)", "\t=1+1", "\r=1+1", "'quoted"}
	for i, v := range evil {
		commit(t, db, l, &Event{Time: t0.Add(time.Duration(i) * time.Second), Type: Received,
			QueueID: v, MessageID: v, Class: v, Recipient: v, Sender: v, Fields: map[string]string{"reply": v}})
	}
	var buf bytes.Buffer
	if err := Export(db, &buf, "csv", time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	all, err := Query(db, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for i, row := range rows[1:] {
		for j, cell := range row {
			if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
				t.Errorf("row %d column %s starts like a formula: %q", i+1, CSVHeader[j], cell)
			}
		}
		for j := range row {
			row[j] = UnescapeCSVCell(row[j])
		}
		ev, err := eventFromCSV(row)
		if err != nil {
			t.Fatalf("row %d: %v", i+1, err)
		}
		if !sameEvent(ev, all[i]) || !bytes.Equal(ComputeHash(&ev), ev.Hash) {
			t.Errorf("row %d does not read back exactly: %+v", i+1, ev)
		}
	}
}
