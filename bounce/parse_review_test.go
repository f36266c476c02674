package bounce

import (
	"fmt"
	"strings"
	"testing"
)

// hostileReview are inputs found in review that cost the parser time in
// the product of two sizes: many recipients times a long report text. On
// the code before the fix the first took about 40 s for 255 KB and the
// second more than ten minutes; both are now a fraction of a second, so
// this test fails by the package timeout if the product comes back.
func hostileReview() map[string]string {
	var xf []string
	for i := range maxRecipients {
		xf = append(xf, fmt.Sprintf("u%d@example.com", i))
	}
	xFailed := "X-Failed-Recipients: " + strings.Join(xf, ",\n ") + "\n"
	return map[string]string{
		// Every X-Failed-Recipients address was looked for in each line
		// of the text, and each recipient's status was searched for in
		// the whole text again.
		"x-failed-recipients, many short lines": "From: MAILER-DAEMON@x.example\nSubject: Undelivered\n" + xFailed +
			"\ncould not be delivered 550\n" + strings.Repeat("x\n", 120<<10),
		// The same through a DSN whose recipient is not a mailbox, which
		// names it from the text: there the text was not even cut.
		"unnamed DSN recipient, long text": "From: MAILER-DAEMON@x.example\n" + xFailed +
			"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: text/plain\n\n" +
			strings.Repeat("x\n", 2<<20) + "\n--b\nContent-Type: message/delivery-status\n\n" +
			"Final-Recipient: rfc822; @example.org\nAction: failed\nStatus: 5.1.1\n\n--b--\n",
	}
}

func TestParseHostileReview(t *testing.T) {
	for name, msg := range hostileReview() {
		rep := parseString(t, msg)
		if len(rep.Recipients) == 0 || len(rep.Recipients) > maxRecipients {
			t.Errorf("%s: %d recipients", name, len(rep.Recipients))
		}
	}
}

func BenchmarkParseHostileReview(b *testing.B) {
	for name, msg := range hostileReview() {
		b.Run(strings.ReplaceAll(name, " ", "-"), func(b *testing.B) {
			for b.Loop() {
				if _, err := Parse(strings.NewReader(msg)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// One malformed line in a bounce's header (a stray text line, a quoted
// mbox ">From " line, a first line that looks folded) made go-message
// refuse the message, and Parse returned ErrNotMessage: the inbound
// listener then dropped the bounce as unreadable, though its report was
// intact. The stray lines are now skipped.
func TestParseMalformedHeaderLine(t *testing.T) {
	body := "\nThis is the mail system at host x.example.\n\nI'm sorry to have to inform you that your message could not\n" +
		"be delivered to one or more recipients.\n\n<a@example.com>: host mx.example.com said: 550 5.1.1 User unknown\n"
	for name, h := range map[string]string{
		"text line":       "From: MAILER-DAEMON@x.example\nSubject: Undelivered Mail\nthis is not a header\n",
		"folded first":    " folded: x\nFrom: MAILER-DAEMON@x.example\nSubject: Undelivered Mail\n",
		"quoted mbox":     ">From MAILER-DAEMON Mon Jan 1 00:00:00 2024\nFrom: MAILER-DAEMON@x.example\nSubject: Undelivered Mail\n",
		"bad key, crlf":   "From: MAILER-DAEMON@x.example\r\nX Bad Key: 1\r\nSubject: Undelivered Mail\r\n",
		"continued stray": "From: MAILER-DAEMON@x.example\nstray\n continued\nSubject: Undelivered Mail\n",
	} {
		rep, err := Parse(strings.NewReader(h + body))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !rep.IsBounce || len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "a@example.com" || !rep.Recipients[0].Hard {
			t.Errorf("%s: %+v", name, rep)
		}
	}
	// Still no message: nothing that is a header at all.
	if _, err := Parse(strings.NewReader("no header here\nnor here\n")); err == nil {
		t.Error("text without any header field parsed as a message")
	}
}

// A recipient with a non-ASCII address (latchkey delivers to them over
// SMTPUTF8) is named in a DSN as "utf-8; j\x{00F6}e@..." (RFC 6533 xtext)
// or in raw UTF-8. The ASCII address pattern took a piece of it instead
// ("x{00F6}e@example.com", "e@example.com"), or let the text of the report
// rename it, so the report spoke of another address: a repeat DSN about
// the original address of a redirected reset then read as one about its
// backup.
func TestParseUTF8Recipient(t *testing.T) {
	const want = "j\u00f6e@example.com"
	text := "Delivery to the following recipient failed permanently:\n\n    other@example.net\n"
	for name, f := range map[string]string{
		"xtext":          "Final-Recipient: utf-8; j\\x{00F6}e@example.com\nAction: failed\nStatus: 5.1.1\n",
		"raw":            "Final-Recipient: utf-8; j\u00f6e@example.com\nAction: failed\nStatus: 5.1.1\n",
		"raw, rfc822":    "Final-Recipient: rfc822; <j\u00f6e@example.com>\nAction: failed\nStatus: 5.1.1\n",
		"original xtext": "Original-Recipient: utf-8; j\\x{F6}e@example.com\nFinal-Recipient: rfc822; @mx.example.com:x@y\nAction: failed\nStatus: 5.1.1\n",
	} {
		rep := parseString(t, dsn(text, f))
		if len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != want {
			t.Errorf("%s: recipients %+v, want %s", name, rep.Recipients, want)
		}
	}
	arf := "From: fbl@isp.example\nSubject: complaint\nContent-Type: multipart/report; report-type=feedback-report; boundary=b\n\n--b\nContent-Type: text/plain\n\nabuse\n--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: x/1\nVersion: 1\nOriginal-Rcpt-To: <j\u00f6e@example.com>\n--b--\n"
	if rep := parseString(t, arf); len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != want {
		t.Errorf("ARF: recipients %+v, want %s", rep.Recipients, want)
	}
}
