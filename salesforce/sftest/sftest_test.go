package sftest

import (
	"strings"
	"testing"
)

func TestMakeID(t *testing.T) {
	id := makeID("003", 12345)
	if len(id) != 18 || !strings.HasPrefix(id, "003") {
		t.Fatalf("makeID = %q", id)
	}
	// Salesforce's well-known example: 001A0000006Vm9r is 001A0000006Vm9rIAC.
	if got := idSuffix("001A0000006Vm9r"); got != "IAC" {
		t.Errorf("idSuffix = %q, want IAC", got)
	}
	if got := idSuffix("AAAAAaaaaa00000"); got != "5AA" {
		t.Errorf("idSuffix = %q, want 5AA", got)
	}
}

func TestParseSOQL(t *testing.T) {
	q, err := parseSOQL(`SELECT Id, Email, Backup_Email__c FROM Contact WHERE Email = 'o\'b\\x\_y@example.com' LIMIT 1`)
	if err != nil {
		t.Fatal(err)
	}
	if q.object != "Contact" || len(q.fields) != 3 || q.op != "=" || q.value != `o'b\x_y@example.com` || q.limit != 1 {
		t.Errorf("parsed %+v", q)
	}
	q, err = parseSOQL(`select Id from Case where Subject like '%[latchkey:a\_b]%'`)
	if err != nil {
		t.Fatal(err)
	}
	re, err := likeRE(q.value)
	if err != nil {
		t.Fatal(err)
	}
	if !re.MatchString("x [latchkey:a_b]") || re.MatchString("x [latchkey:aXb]") {
		t.Errorf("LIKE %q matched wrongly", q.value)
	}
	for _, bad := range []string{
		"", "SELECT FROM Contact", "SELECT Id FROM Contact WHERE Email = 'x' OR Email = 'y'",
		"SELECT Id FROM Contact WHERE Email = 'unterminated", `SELECT Id FROM Contact WHERE Email = 'a\q'`,
		"DELETE FROM Contact", "SELECT Id FROM Contact LIMIT x",
	} {
		if _, err := parseSOQL(bad); err == nil {
			t.Errorf("parseSOQL(%q) accepted", bad)
		}
	}
}

func FuzzParseSOQL(f *testing.F) {
	for _, s := range []string{
		`SELECT Id FROM Contact WHERE Email = 'a@b' LIMIT 1`, `SELECT Id FROM Case WHERE Subject LIKE '%\_%'`, `SELECT Id FROM Lead`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := parseSOQL(s)
		if err == nil && q.op == "LIKE" {
			if _, err := likeRE(q.value); err != nil {
				t.Errorf("likeRE(%q): %v", q.value, err)
			}
		}
	})
}
