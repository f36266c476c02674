package policy

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// openFile writes src to a real policy file and opens it as the relay does.
func openFile(t *testing.T, src string) *Policy {
	t.Helper()
	f := filepath.Join(t.TempDir(), "policy.toml")
	if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(f)
	if err != nil {
		t.Fatalf("Open:\n%v", err)
	}
	return s.Get()
}

// RFC 5322 (4.3) names eight US zones; Go's time package reads any zone
// name it does not know locally as UTC, which put a token that expires at
// 15:00 UTC (10:00 EST) at 10:00 UTC: the reset expired unsent hours before
// its link did.
func TestExpiryHeaderObsoleteZones(t *testing.T) {
	p := openFile(t, testPolicy)
	reset := p.Class("reset")
	acc := time.Date(2025, 7, 1, 14, 50, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Time
	}{
		{"Tue, 01 Jul 2025 10:00:00 EST", time.Date(2025, 7, 1, 15, 0, 0, 0, time.UTC)},
		{"Tue, 01 Jul 2025 11:05:00 EDT", time.Date(2025, 7, 1, 15, 5, 0, 0, time.UTC)},
		{"Tue, 01 Jul 2025 09:10:00 CST", time.Date(2025, 7, 1, 15, 10, 0, 0, time.UTC)},
		{"Tue, 01 Jul 2025 08:00:00 PDT", time.Date(2025, 7, 1, 15, 0, 0, 0, time.UTC)},
		{"Tue, 01 Jul 2025 07:15:00 pst", time.Date(2025, 7, 1, 15, 15, 0, 0, time.UTC)},
		{"1 Jul 2025 08:12:00 MST", time.Date(2025, 7, 1, 15, 12, 0, 0, time.UTC)},
		{"Tue, 01 Jul 2025 15:05:00 GMT", time.Date(2025, 7, 1, 15, 5, 0, 0, time.UTC)},
		{"Tue, 01 Jul 2025 15:05:00 UT", time.Date(2025, 7, 1, 15, 5, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, warn := reset.Deadline(&Meta{Header: hdr("X-LK-Expires", tt.header)}, acc)
		if !got.Equal(tt.want) || warn != "" {
			t.Errorf("%q: deadline %v (warning %q), want %v", tt.header, got.UTC(), warn, tt.want)
		}
	}
}

// A Subject with any non-ASCII character arrives RFC 2047-encoded; the rule
// is written as the admin reads the subject, so it must match the decoded
// text (a French reset went to the default class).
func TestSubjectRuleMatchesEncodedSubject(t *testing.T) {
	p := openFile(t, testPolicy)
	for _, subj := range []string{
		"=?UTF-8?Q?Votre_password_reset_=C3=A0_faire?=",
		"=?utf-8?B?UGFzc3dvcmQgcmVzZXQg4oCUIEFjbWU=?=",
		"Your =?ISO-8859-1?Q?password_reset_=E9?=",
	} {
		if got := p.Classify(&Meta{Header: hdr("Subject", subj)}).Name; got != "reset" {
			t.Errorf("Subject %q: class %s, want reset", subj, got)
		}
	}
	// Plain and undecodable subjects are matched as they are.
	if got := p.Classify(&Meta{Header: hdr("Subject", "=?bogus?Q?password reset?=")}).Name; got != "reset" {
		t.Errorf("undecodable Subject: class %s, want reset", got)
	}
}
