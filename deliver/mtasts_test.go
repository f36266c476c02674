package deliver

import (
	"strings"
	"testing"
	"time"
)

func TestParseSTSRecord(t *testing.T) {
	for _, tc := range []struct {
		in, id, err string
	}{
		{"v=STSv1; id=20160831085700Z;", "20160831085700Z", ""},
		{"v=STSv1;id=abc", "abc", ""},
		{"v=STSv1 ;\tid=abc ; ", "abc", ""},
		{"v=STSv1; ext_1.x=v:a/l; id=abc;", "abc", ""},
		{"v=STSv1; id=" + strings.Repeat("a", 32), strings.Repeat("a", 32), ""},
		{"v=STSv1; id=" + strings.Repeat("a", 33), "", "not 1-32"},
		{"v=STSv1; id=ab-c", "", "not 1-32"},
		{"v=STSv1; id=", "", "bad field"},
		{"v=STSv1;", "", "no id"},
		{"v=STSv1", "", "no id"},
		{"v=STSv1; id=a; id=b", "", "more than one id"},
		{"v=STSv1;; id=a", "", "empty field"},
		{"v=STSv1; id=a;;", "", "empty field"},
		{"v=STSv1; junk; id=a", "", "bad field"},
		{"v=STSv1; =x; id=a", "", "bad field"},
		{"v=STSv1; -x=y; id=a", "", "bad field"},
		{"v=STSv1; x=a b; id=a", "", "bad field"},
		{"v=STSv1; x=a=b; id=a", "", "bad field"},
		{"v=stsv1; id=a", "", "does not start"},
		{"v=STSv2; id=a", "", "does not start"},
		{" v=STSv1; id=a", "", "does not start"},
		{"", "", "does not start"},
	} {
		id, err := ParseSTSRecord(tc.in)
		if tc.err == "" {
			if err != nil || id != tc.id {
				t.Errorf("ParseSTSRecord(%q) = %q, %v; want %q", tc.in, id, err, tc.id)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "deliver: ") {
			t.Errorf("ParseSTSRecord(%q) = %q, %v; want an error with %q", tc.in, id, err, tc.err)
		}
	}
}

func TestSTSRecordID(t *testing.T) {
	for _, tc := range []struct {
		txts []string
		id   string
		err  string
	}{
		{[]string{"v=spf1 -all", "v=STSv1; id=one"}, "one", ""},
		{[]string{"v=STSv1; id=one", "v=STSv1; id=two"}, "", "2 records"},
		{[]string{"v=spf1 -all"}, "", "none"},
		{nil, "", "none"},
		{[]string{"v=STSv10; id=x"}, "", "none"}, // not "v=STSv1;"
		{[]string{"v=STSv1; id=bad!"}, "", "not 1-32"},
	} {
		id, err := stsRecordID(tc.txts)
		if tc.err == "" {
			if err != nil || id != tc.id {
				t.Errorf("%q: %q, %v; want %q", tc.txts, id, err, tc.id)
			}
		} else if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %q, %v; want an error with %q", tc.txts, id, err, tc.err)
		}
	}
}

func TestParseSTSPolicy(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     *STSPolicy
		err      string
	}{
		{"rfc example", "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n",
			&STSPolicy{Mode: STSEnforce, MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}, MaxAge: 604800 * time.Second}, ""},
		{"crlf, no final newline", "version: STSv1\r\nmode: testing\r\nmx: MX.Example.COM.\r\nmax_age: 86400",
			&STSPolicy{Mode: STSTesting, MX: []string{"mx.example.com"}, MaxAge: 86400 * time.Second}, ""},
		{"spaces and blank lines", "\nversion:STSv1  \n\nmode:\tenforce\nmx:   a.test\t\nmax_age: 0\n\n",
			&STSPolicy{Mode: STSEnforce, MX: []string{"a.test"}, MaxAge: 0}, ""},
		{"none needs no mx", "version: STSv1\nmode: none\nmax_age: 31557600\n",
			&STSPolicy{Mode: STSNone, MaxAge: 31557600 * time.Second}, ""},
		{"unknown keys ignored, first wins", "version: STSv1\nmode: testing\nmode: enforce\nx-future: 1\nmx: a.test\nmax_age: 10\nmax_age: 20\n",
			&STSPolicy{Mode: STSTesting, MX: []string{"a.test"}, MaxAge: 10 * time.Second}, ""},
		{"no version", "mode: enforce\nmx: a.test\nmax_age: 1\n", nil, "version \"\""},
		{"bad version", "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n", nil, "want STSv1"},
		{"no mode", "version: STSv1\nmx: a.test\nmax_age: 1\n", nil, "no mode"},
		{"bad mode", "version: STSv1\nmode: Enforce\nmx: a.test\nmax_age: 1\n", nil, "is not enforce"},
		{"enforce without mx", "version: STSv1\nmode: enforce\nmax_age: 1\n", nil, "without mx"},
		{"testing without mx", "version: STSv1\nmode: testing\nmax_age: 1\n", nil, "without mx"},
		{"no max_age", "version: STSv1\nmode: none\n", nil, "no max_age"},
		{"max_age not a number", "version: STSv1\nmode: none\nmax_age: 1d\n", nil, "not a number"},
		{"max_age negative", "version: STSv1\nmode: none\nmax_age: -1\n", nil, "not a number"},
		{"max_age signed", "version: STSv1\nmode: none\nmax_age: +1\n", nil, "not a number"},
		{"max_age too long", "version: STSv1\nmode: none\nmax_age: 00000000001\n", nil, "not a number"},
		{"max_age over a year", "version: STSv1\nmode: none\nmax_age: 31557601\n", nil, "over a year"},
		{"bad line", "version: STSv1\nmode none\n", nil, "line 2"},
		{"space before colon", "version : STSv1\n", nil, "line 1"},
		{"bad mx", "version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1\n", nil, "line 3: mx"},
		{"mx wildcard inside", "version: STSv1\nmode: enforce\nmx: a.*.test\nmax_age: 1\n", nil, "mx"},
		{"mx bare wildcard", "version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n", nil, "mx"},
		{"mx empty", "version: STSv1\nmode: enforce\nmx:\nmax_age: 1\n", nil, "mx"},
		{"html", "<html><body>Not found</body></html>", nil, "line 1"},
		{"empty", "", nil, "version"},
	} {
		p, err := ParseSTSPolicy(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "deliver: mta-sts policy: ") {
				t.Errorf("%s: got %+v, %v; want an error with %q", tc.name, p, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if p.Mode != tc.want.Mode || p.MaxAge != tc.want.MaxAge || strings.Join(p.MX, ",") != strings.Join(tc.want.MX, ",") {
			t.Errorf("%s: got %+v, want %+v", tc.name, p, tc.want)
		}
	}
}

func TestSTSMatchMX(t *testing.T) {
	p := &STSPolicy{Mode: STSEnforce, MX: []string{"mail.example.com", "*.example.net"}}
	for host, want := range map[string]bool{
		"mail.example.com":      true,
		"MAIL.Example.Com.":     true,
		"mail.example.com..":    false,
		"other.example.com":     false,
		"example.com":           false,
		"mx1.example.net":       true,
		"MX1.EXAMPLE.NET.":      true,
		"example.net":           false,
		".example.net":          false,
		"a.b.example.net":       false,
		"mx1.example.net.evil":  false,
		"mx1example.net":        false,
		"xmail.example.com":     false,
		"mail.example.com.evil": false,
		"":                      false,
	} {
		if got := p.MatchMX(host); got != want {
			t.Errorf("MatchMX(%q) = %v, want %v", host, got, want)
		}
	}
}
