package admin

import (
	"strings"
	"testing"
)

// FuzzParseSuppressionCSV: any import file is either rows or bad rows, never
// a panic; good rows are valid lower-case addresses; line numbers are real.
func FuzzParseSuppressionCSV(f *testing.F) {
	for _, s := range []string{
		"address,reason\na@example.test,unsubscribed\n",
		"\ufeffemail\nA@Example.test\r\nb@example.test,\"x, y\"\n",
		"# comment\n\nnot an address\n\"unterminated\n",
		"a@example.test,a,b\n\"a\"\"b\"@example.test\n",
		"Name <a@example.test>\n[1.2.3.4]@x\n@\n",
		strings.Repeat("x", 5000) + "\nz@example.test",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rows, bad, badCount, dataRows, err := parseSuppressionCSV(strings.NewReader(s))
		if err != nil {
			t.Fatalf("error reading a string: %v", err)
		}
		lines := strings.Count(s, "\n") + 1
		if len(rows)+badCount != dataRows {
			t.Errorf("%d good + %d bad != %d data rows", len(rows), badCount, dataRows)
		}
		prev := 0
		for _, r := range rows {
			if r.Line <= prev || r.Line > lines {
				t.Errorf("row line %d out of order or past %d lines", r.Line, lines)
			}
			prev = r.Line
			if a, err := CheckAddress(r.Address); err != nil || a != r.Address {
				t.Errorf("accepted address %q does not check again: %q %v", r.Address, a, err)
			}
			if len(r.Reason) > maxReason {
				t.Errorf("reason of %d bytes", len(r.Reason))
			}
		}
		for _, b := range bad {
			if b.Line < 1 || b.Line > lines || b.Error == "" {
				t.Errorf("bad row %+v of %d lines", b, lines)
			}
		}
	})
}
