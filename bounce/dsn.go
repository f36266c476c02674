package bounce

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message"
)

// DSNOptions describe a delivery status notification to write.
type DSNOptions struct {
	// ReportingMTA is this relay's host name (Reporting-MTA: dns; ...).
	ReportingMTA string
	// From is the notification's author, e.g. "Mail Delivery System
	// <mailer-daemon@relay.example.com>"; To is the original sender.
	From, To string
	// Subject defaults to "Undelivered Mail Returned to Sender" (or
	// "Delayed Mail" when every recipient is delayed).
	Subject string
	// Date defaults to now; MessageID is generated if empty.
	Date      time.Time
	MessageID string
	// OriginalEnvelopeID is the RFC 3461 ENVID, if the sender gave one.
	OriginalEnvelopeID string
	// ArrivalDate is when the original message was received.
	ArrivalDate time.Time
	// Text is the human-readable explanation; a plain one is written if
	// empty.
	Text string
	// Recipients are the per-recipient results; at least one is needed.
	Recipients []DSNRecipient
	// OriginalHeaders is the header block of the original message, returned
	// as text/rfc822-headers (RET=HDRS: never the body, which may hold a
	// reset link).
	OriginalHeaders []byte
}

// DSNRecipient is one recipient's entry in a DSN.
type DSNRecipient struct {
	Recipient         string // final recipient address
	OriginalRecipient string // ORCPT, if given
	Action            string // failed, delayed, delivered, relayed, expanded
	Status            string // RFC 3463 status
	RemoteMTA         string // host name of the remote MTA, if any
	Diagnostic        string // the remote server's reply, if any
	LastAttempt       time.Time
}

var validActions = map[string]bool{"failed": true, "delayed": true, "delivered": true, "relayed": true, "expanded": true}

// clean keeps caller-supplied text from adding header lines.
func clean(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// BuildDSN writes an RFC 3464 multipart/report delivery status notification.
func BuildDSN(opts DSNOptions) ([]byte, error) {
	if clean(opts.To) == "" {
		return nil, errors.New("bounce: DSN needs a To address")
	}
	if len(opts.Recipients) == 0 {
		return nil, errors.New("bounce: DSN needs at least one recipient")
	}
	delayedOnly := true
	for i, r := range opts.Recipients {
		if !validActions[r.Action] {
			return nil, fmt.Errorf("bounce: DSN recipient %d: invalid action %q", i+1, r.Action)
		}
		if normStatus(r.Status) == "" {
			return nil, fmt.Errorf("bounce: DSN recipient %d: invalid status %q", i+1, r.Status)
		}
		if clean(r.Recipient) == "" || strings.ContainsAny(r.Recipient, "\r\n") {
			return nil, fmt.Errorf("bounce: DSN recipient %d: invalid address %q", i+1, r.Recipient)
		}
		delayedOnly = delayedOnly && r.Action == "delayed"
	}
	date := opts.Date
	if date.IsZero() {
		date = time.Now()
	}
	msgID := clean(opts.MessageID)
	if msgID == "" {
		var b [12]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("bounce: message id: %w", err)
		}
		host := clean(opts.ReportingMTA)
		if host == "" {
			host = "localhost"
		}
		msgID = "<" + hex.EncodeToString(b[:]) + "@" + host + ">"
	}
	subject := clean(opts.Subject)
	if subject == "" {
		subject = "Undelivered Mail Returned to Sender"
		if delayedOnly {
			subject = "Delayed Mail (still being retried)"
		}
	}

	var h message.Header
	h.Set("Date", date.Format(time.RFC1123Z))
	if f := clean(opts.From); f != "" {
		h.Set("From", f)
	}
	h.Set("To", clean(opts.To))
	h.Set("Subject", subject)
	h.Set("Message-Id", msgID)
	h.Set("Auto-Submitted", "auto-replied")
	h.Set("MIME-Version", "1.0")
	h.SetContentType("multipart/report", map[string]string{"report-type": "delivery-status"})

	var buf bytes.Buffer
	w, err := message.CreateWriter(&buf, h)
	if err != nil {
		return nil, fmt.Errorf("bounce: writing DSN: %w", err)
	}
	text := opts.Text
	if text == "" {
		text = defaultDSNText(opts.Recipients, delayedOnly)
	}
	if err := writePart(w, "text/plain", map[string]string{"charset": "utf-8"}, []byte(text)); err != nil {
		return nil, err
	}
	if err := writePart(w, "message/delivery-status", nil, statusBody(opts)); err != nil {
		return nil, err
	}
	if len(opts.OriginalHeaders) > 0 {
		hdr := bytes.TrimRight(opts.OriginalHeaders, "\r\n")
		if err := writePart(w, "text/rfc822-headers", nil, append(hdr, '\r', '\n')); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("bounce: writing DSN: %w", err)
	}
	return buf.Bytes(), nil
}

func writePart(w *message.Writer, ct string, params map[string]string, body []byte) error {
	var h message.Header
	h.SetContentType(ct, params)
	if ct == "text/plain" || ct == "text/rfc822-headers" {
		// The original's header block may hold 8-bit text and lines
		// longer than mail allows; quoted-printable carries both intact.
		h.Set("Content-Transfer-Encoding", "quoted-printable")
	}
	pw, err := w.CreatePart(h)
	if err != nil {
		return fmt.Errorf("bounce: writing DSN part %s: %w", ct, err)
	}
	if _, err := pw.Write(body); err != nil {
		return fmt.Errorf("bounce: writing DSN part %s: %w", ct, err)
	}
	if err := pw.Close(); err != nil {
		return fmt.Errorf("bounce: writing DSN part %s: %w", ct, err)
	}
	return nil
}

// statusBody writes the per-message and per-recipient fields.
func statusBody(opts DSNOptions) []byte {
	var b strings.Builder
	field := func(name, value string) {
		if v := clean(value); v != "" {
			b.WriteString(fold(name+": "+v) + "\r\n")
		}
	}
	if opts.ReportingMTA != "" {
		field("Reporting-MTA", "dns; "+clean(opts.ReportingMTA))
	}
	field("Original-Envelope-Id", opts.OriginalEnvelopeID)
	if !opts.ArrivalDate.IsZero() {
		field("Arrival-Date", opts.ArrivalDate.Format(time.RFC1123Z))
	}
	for _, r := range opts.Recipients {
		b.WriteString("\r\n")
		if r.OriginalRecipient != "" {
			field("Original-Recipient", typedAddr(r.OriginalRecipient))
		}
		field("Final-Recipient", typedAddr(r.Recipient))
		field("Action", r.Action)
		field("Status", r.Status)
		if r.RemoteMTA != "" {
			field("Remote-MTA", "dns; "+r.RemoteMTA)
		}
		if r.Diagnostic != "" {
			field("Diagnostic-Code", "smtp; "+utf8Xtext(r.Diagnostic, false))
		}
		if !r.LastAttempt.IsZero() {
			field("Last-Attempt-Date", r.LastAttempt.Format(time.RFC1123Z))
		}
	}
	return []byte(b.String())
}

// typedAddr writes an address with its RFC 3464 type: "rfc822; a@b", or
// for a non-ASCII address (sent over SMTPUTF8) RFC 6533's "utf-8;" with
// escapes, since a delivery-status part is 7-bit.
func typedAddr(a string) string {
	if strings.ContainsFunc(a, func(r rune) bool { return r > '~' }) {
		return "utf-8; " + utf8Xtext(a, true)
	}
	return "rfc822; " + a
}

// utf8Xtext escapes what may not be written in a delivery-status field as
// \x{HEX} (RFC 6533 utf-8-addr-xtext): non-ASCII characters, and in an
// address also spaces and controls, "+", "=" and "\".
func utf8Xtext(s string, addr bool) string {
	var b strings.Builder
	for _, r := range s {
		if r > '~' || addr && (r <= ' ' || r == '+' || r == '=' || r == '\\') {
			fmt.Fprintf(&b, "\\x{%02X}", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// foldAt is where fold breaks a field's line; maxWord bounds a word that
// cannot be broken at a space, since no line may pass 998 octets.
const (
	foldAt  = 78
	maxWord = 900
)

// fold breaks a one-line field (single spaces only, as clean leaves it) at
// spaces into lines of about foldAt octets. A reply quoted in a
// Diagnostic-Code can run to kilobytes, and a relay cuts or refuses a line
// longer than RFC 5322 allows. Unfolding gives the field back, but for a
// space put into a word longer than maxWord.
func fold(line string) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Split(line, " ") {
		for len(w) > 0 {
			part := w
			if len(part) > maxWord {
				part = w[:maxWord]
			}
			w = w[len(part):]
			switch {
			case i == 0 && n == 0:
			case n+1+len(part) > foldAt && n > 0:
				b.WriteString("\r\n")
				n = 0
				fallthrough
			default:
				b.WriteByte(' ')
				n++
			}
			b.WriteString(part)
			n += len(part)
		}
	}
	return b.String()
}

func defaultDSNText(rs []DSNRecipient, delayedOnly bool) string {
	var b strings.Builder
	if delayedOnly {
		b.WriteString("Your message has not been delivered yet to the recipients below. Delivery will be retried.\r\n\r\n")
	} else {
		b.WriteString("Your message could not be delivered to the recipients below.\r\n\r\n")
	}
	for _, r := range rs {
		fmt.Fprintf(&b, "<%s>: %s %s\r\n", clean(r.Recipient), r.Action, r.Status)
		if d := clean(r.Diagnostic); d != "" {
			fmt.Fprintf(&b, "    %s\r\n", d)
		}
	}
	return b.String()
}
