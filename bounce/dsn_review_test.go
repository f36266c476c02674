package bounce

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// A DSN is mail: no line may pass 998 octets (RFC 5322 2.1.1), and with no
// transfer encoding stated every byte must be 7-bit. A long remote reply
// (a multi-line 550 joined into one) and an original header block with a
// very long or 8-bit field were written as they came, so that relays cut
// or refused the DSN. What is written must still read back the same.
func TestBuildDSNLongAnd8bit(t *testing.T) {
	diag := "550 5.1.1 " + strings.Repeat("The email account that you tried to reach does not exist. ", 30) + strings.Repeat("x", 1500)
	orig := "From: App <noreply@example.com>\r\nTo: user@example.org\r\nX-Long: " + strings.Repeat("abcdefghi ", 150) +
		"\r\nX-Folded: a\r\n b\r\nSubject: J\xc3\xb6rg M\xc3\xbcller\r\nMessage-Id: <m1@example.com>\r\n"
	b, err := BuildDSN(DSNOptions{ReportingMTA: "relay.example.com", From: "Mail Delivery System <mailer-daemon@example.com>",
		To: "noreply@example.com", Date: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Recipients: []DSNRecipient{{Recipient: "user@example.org", Action: "failed", Status: "5.1.1",
			RemoteMTA: "mx.example.org", Diagnostic: diag}},
		OriginalHeaders: []byte(orig)})
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range bytes.Split(b, []byte("\r\n")) {
		if len(l) > 998 {
			t.Errorf("line %d is %d octets: %.60q", i+1, len(l), l)
		}
		if bytes.ContainsFunc(l, func(r rune) bool { return r >= 0x80 }) {
			t.Errorf("line %d is not 7-bit: %.60q", i+1, l)
		}
	}
	rep, err := Parse(bytes.NewReader(b))
	if err != nil || len(rep.Recipients) != 1 {
		t.Fatalf("Parse = %+v, %v", rep, err)
	}
	// The diagnostic reads back whole, but for a space where a word longer
	// than a line had to be broken.
	if got := strings.ReplaceAll(rep.Recipients[0].Diagnostic, " ", ""); got != strings.ReplaceAll(diag, " ", "") {
		t.Errorf("diagnostic read back as %q", rep.Recipients[0].Diagnostic)
	}
	if rep.OriginalMessageID != "m1@example.com" {
		t.Errorf("original message id = %q", rep.OriginalMessageID)
	}
	e, err := message.Read(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	mr := e.MultipartReader()
	found := false
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if mt, _, _ := p.Header.ContentType(); mt != "text/rfc822-headers" {
			continue
		}
		found = true
		h, err := textproto.ReadHeader(bufio.NewReader(p.Body))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := h.Get("Subject"), "J\xc3\xb6rg M\xc3\xbcller"; got != want {
			t.Errorf("original Subject = %q, want %q", got, want)
		}
		if got, want := strings.Join(strings.Fields(h.Get("X-Long")), " "), strings.TrimSpace(strings.Repeat("abcdefghi ", 150)); got != want {
			t.Errorf("original X-Long = %q", got)
		}
	}
	if !found {
		t.Error("no text/rfc822-headers part")
	}
}

// A DSN about a non-ASCII address (delivered over SMTPUTF8) wrote it raw
// after "rfc822;", 8-bit in a part that must be 7-bit and under the wrong
// address type; RFC 6533 writes it "utf-8; j\x{F6}e@...". A remote reply
// in UTF-8 went into Diagnostic-Code raw as well.
func TestBuildDSNUTF8Address(t *testing.T) {
	b, err := BuildDSN(DSNOptions{ReportingMTA: "relay.example.com", To: "noreply@example.com",
		Recipients: []DSNRecipient{{Recipient: "j\u00f6e@example.com", OriginalRecipient: "J\u00d6E@example.com", Action: "failed",
			Status: "5.1.1", Diagnostic: "550 5.1.1 Empf\u00e4nger unbekannt"}}})
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range bytes.Split(b, []byte("\r\n")) {
		if bytes.ContainsFunc(l, func(r rune) bool { return r >= 0x80 }) {
			t.Errorf("line %d is not 7-bit: %q", i+1, l)
		}
	}
	if !bytes.Contains(b, []byte("Final-Recipient: utf-8; j\\x{F6}e@example.com")) {
		t.Errorf("no RFC 6533 Final-Recipient in\n%s", b)
	}
	rep, err := Parse(bytes.NewReader(b))
	if err != nil || len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "j\u00f6e@example.com" || !rep.Recipients[0].Hard {
		t.Fatalf("Parse = %+v, %v", rep, err)
	}
}
