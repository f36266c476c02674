package bounce

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestBuildDSNParseRoundTrip(t *testing.T) {
	orig := "From: App <noreply@example.com>\r\nTo: user@example.org\r\nSubject: Reset your password\r\nMessage-Id: <m1@example.com>\r\n"
	opts := DSNOptions{
		ReportingMTA:       "relay.example.com",
		From:               "Mail Delivery System <mailer-daemon@relay.example.com>",
		To:                 "noreply@example.com",
		Date:               time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		OriginalEnvelopeID: "env-42",
		ArrivalDate:        time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC),
		Recipients: []DSNRecipient{
			{Recipient: "user@example.org", OriginalRecipient: "User@Example.org", Action: "failed", Status: "5.1.1",
				RemoteMTA: "mx.example.org", Diagnostic: "550 5.1.1 <user@example.org>: Recipient address rejected: User unknown"},
			{Recipient: "other@example.net", Action: "delayed", Status: "4.2.2",
				RemoteMTA: "mx.example.net", Diagnostic: "452 4.2.2 Mailbox full"},
		},
		OriginalHeaders: []byte(orig),
	}
	b, err := BuildDSN(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"multipart/report", "report-type=delivery-status", "message/delivery-status",
		"text/rfc822-headers", "Auto-Submitted: auto-replied"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("DSN lacks %q", want)
		}
	}
	rep, err := Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.IsBounce || rep.Format != "rfc3464" || rep.ReportingMTA != "relay.example.com" ||
		rep.OriginalEnvelopeID != "env-42" || rep.OriginalMessageID != "m1@example.com" {
		t.Errorf("report = %+v", rep)
	}
	want := []Recipient{
		{Recipient: "user@example.org", Action: "failed", Status: "5.1.1", Permanent: true, Hard: true, Reason: UserUnknown,
			RemoteMTA: "mx.example.org", Diagnostic: opts.Recipients[0].Diagnostic},
		{Recipient: "other@example.net", Action: "delayed", Status: "4.2.2", Reason: MailboxFull,
			RemoteMTA: "mx.example.net", Diagnostic: "452 4.2.2 Mailbox full"},
	}
	if len(rep.Recipients) != len(want) {
		t.Fatalf("recipients = %+v, want %+v", rep.Recipients, want)
	}
	for i := range want {
		if rep.Recipients[i] != want[i] {
			t.Errorf("recipient %d = %+v, want %+v", i, rep.Recipients[i], want[i])
		}
	}
	if bytes.Contains(b, []byte("Reset your password\r\n\r\n")) {
		t.Error("the original body must not be returned")
	}
}

func TestBuildDSNErrors(t *testing.T) {
	ok := DSNRecipient{Recipient: "a@example.org", Action: "failed", Status: "5.1.1"}
	tests := []struct {
		name string
		opts DSNOptions
	}{
		{"no to", DSNOptions{Recipients: []DSNRecipient{ok}}},
		{"no recipients", DSNOptions{To: "s@example.com"}},
		{"bad action", DSNOptions{To: "s@example.com", Recipients: []DSNRecipient{{Recipient: "a@b", Action: "exploded", Status: "5.0.0"}}}},
		{"bad status", DSNOptions{To: "s@example.com", Recipients: []DSNRecipient{{Recipient: "a@b", Action: "failed", Status: "550"}}}},
		{"newline in address", DSNOptions{To: "s@example.com", Recipients: []DSNRecipient{{Recipient: "a@b\r\nBcc: x@y", Action: "failed", Status: "5.0.0"}}}},
	}
	for _, tt := range tests {
		if _, err := BuildDSN(tt.opts); err == nil || !strings.HasPrefix(err.Error(), "bounce: ") {
			t.Errorf("%s: error = %v, want a bounce: error", tt.name, err)
		}
	}
}

// Caller text with line breaks must not become header fields of its own.
func TestBuildDSNNoInjection(t *testing.T) {
	b, err := BuildDSN(DSNOptions{To: "s@example.com", Subject: "x\r\nBcc: evil@example.net",
		Recipients: []DSNRecipient{{Recipient: "a@example.org", Action: "failed", Status: "5.0.0",
			Diagnostic: "550 no\r\nAction: delivered"}}})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("\nBcc:")) || bytes.Contains(b, []byte("\nAction: delivered")) {
		t.Errorf("injected line in DSN:\n%s", b)
	}
	rep, err := Parse(bytes.NewReader(b))
	if err != nil || len(rep.Recipients) != 1 || rep.Recipients[0].Action != "failed" {
		t.Errorf("Parse = %+v, %v", rep, err)
	}
}
