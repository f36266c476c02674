package salesforce

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseAPIError(t *testing.T) {
	for _, tc := range []struct {
		body              string
		code, msg, fields string
	}{
		{`[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`, "INVALID_SESSION_ID", "Session expired or invalid", ""},
		{`[{"message":"Required fields are missing: [Subject]","errorCode":"REQUIRED_FIELD_MISSING","fields":["Subject"]},{"message":"x","errorCode":"Y"}]`, "REQUIRED_FIELD_MISSING", "Required fields are missing: [Subject]", "Subject"},
		{`{"errorCode":"NOT_FOUND","message":"gone"}`, "NOT_FOUND", "gone", ""},
		{"<html><body>Service\n Unavailable</body></html>", "", "<html><body>Service Unavailable</body></html>", ""},
		{`[]`, "", "[]", ""},
	} {
		e := parseAPIError(400, []byte(tc.body))
		if e.Code != tc.code || e.Message != tc.msg || strings.Join(e.Fields, ",") != tc.fields {
			t.Errorf("parseAPIError(%s) = %+v", tc.body, e)
		}
	}
}

func TestParseLimitInfo(t *testing.T) {
	for _, tc := range []struct {
		h           string
		used, limit int
		ok          bool
	}{
		{"api-usage=10018/100000", 10018, 100000, true},
		{"per-app-api-usage=17/250(appName=x), api-usage=18/5000", 18, 5000, true},
		{"api-usage=18", 0, 0, false},
		{"api-usage=-1/5", 0, 0, false},
		{"", 0, 0, false},
	} {
		u, l, ok := parseLimitInfo(tc.h)
		if u != tc.used || l != tc.limit || ok != tc.ok {
			t.Errorf("parseLimitInfo(%q) = %d, %d, %v", tc.h, u, l, ok)
		}
	}
}

func TestSOQLQuote(t *testing.T) {
	if got := soqlQuote(`o'b\r`); got != `o\'b\\r` {
		t.Errorf("soqlQuote = %s", got)
	}
	if got := soqlLike(`a_b%c'`); got != `a\_b\%c\'` {
		t.Errorf("soqlLike = %s", got)
	}
}

func FuzzParseAPIError(f *testing.F) {
	for _, s := range []string{
		`[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`,
		`[{"message":"m","errorCode":"C","fields":["A","B"]}]`, `{"errorCode":"X"}`, `<html>`, `[null]`, `[{"fields":null}]`, "\xff\xfe",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		e := parseAPIError(500, []byte(body))
		s := e.Error()
		if !utf8.ValidString(s) || len(e.Message) > 1000 || len(e.Fields) > 20 {
			t.Errorf("parseAPIError(%q) = %+v", body, e)
		}
		te := parseTokenError(400, []byte(body))
		if !utf8.ValidString(te.Error()) {
			t.Errorf("parseTokenError(%q) = %q", body, te.Error())
		}
	})
}

func FuzzParseLimitInfo(f *testing.F) {
	for _, s := range []string{"api-usage=10018/100000", "per-app-api-usage=1/2(appName=a), api-usage=3/4", "api-usage=/", "api-usage=99999999999999999999/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		u, l, ok := parseLimitInfo(h)
		if ok && (u < 0 || l < 0) {
			t.Errorf("parseLimitInfo(%q) = %d, %d", h, u, l)
		}
		if !ok && (u != 0 || l != 0) {
			t.Errorf("parseLimitInfo(%q) not ok but %d, %d", h, u, l)
		}
	})
}
