package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// loadIDHeader carries "<seq> <send time in unix ns>" from the sender to
// the sink, so that the sink can compute end-to-end latency and spot
// duplicates without any shared state (the two may run in different
// processes on the same machine).
const (
	loadIDHeader    = "X-Load-ID"
	loadClassHeader = "X-Load-Class"
)

// msgSpec is what the generator needs to build one message.
type msgSpec struct {
	from, to string
	class    string // "reset" or "bulk"
	seq      int64
	sent     time.Time // the scheduled (open loop) or actual (closed loop) send time
	size     int       // approximate total size in bytes
	runID    string
}

// buildMessage returns a reset-like (or bulk-like) multipart/alternative
// message with a text and an HTML part carrying a random-token link, padded
// to about spec.size bytes. The headers are the ones the shipped policy
// classifies on: X-SFDC-EmailCategory forgotPassword (reset) or massEmail
// with List-Unsubscribe (bulk).
func buildMessage(spec msgSpec) []byte {
	var tok [24]byte
	rand.Read(tok[:])
	token := base64.RawURLEncoding.EncodeToString(tok[:])
	link := "https://login.example.com/secur/forgotpassword.jsp?r=" + token
	boundary := "=_lk_" + token[:16]
	var b bytes.Buffer
	b.Grow(spec.size + 512)
	fmt.Fprintf(&b, "From: Example Support <%s>\r\n", spec.from)
	fmt.Fprintf(&b, "To: <%s>\r\n", spec.to)
	fmt.Fprintf(&b, "Date: %s\r\n", spec.sent.UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s.%d@load.example.com>\r\n", spec.runID, spec.seq)
	fmt.Fprintf(&b, "%s: %d %d\r\n", loadIDHeader, spec.seq, spec.sent.UnixNano())
	fmt.Fprintf(&b, "%s: %s\r\n", loadClassHeader, spec.class)
	if spec.class == "bulk" {
		b.WriteString("Subject: Our November newsletter\r\n")
		b.WriteString("X-SFDC-EmailCategory: massEmail\r\n")
		b.WriteString("List-Unsubscribe: <https://example.com/unsubscribe?u=" + token[:12] + ">\r\n")
	} else {
		b.WriteString("Subject: Reset your password\r\n")
		b.WriteString("X-SFDC-EmailCategory: forgotPassword\r\n")
	}
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", boundary)
	// Split the padding between the two parts as a real template would.
	pad := max(0, spec.size-b.Len()-900) / 2
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n", boundary)
	b.WriteString("Hello,\r\n\r\nWe received a request to reset the password of your account.\r\n")
	b.WriteString("Use this link within 30 minutes:\r\n\r\n" + link + "\r\n\r\n")
	b.WriteString(filler(pad, false))
	b.WriteString("If you did not ask for this, ignore this message.\r\n\r\n")
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n", boundary)
	b.WriteString("<html><body><p>Hello,</p>\r\n<p>We received a request to reset the password of your account.</p>\r\n")
	b.WriteString("<p><a href=\"" + link + "\">Reset your password</a></p>\r\n")
	b.WriteString(filler(pad, true))
	b.WriteString("</body></html>\r\n")
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.Bytes()
}

// filler returns about n bytes of template-like prose in lines of at most
// 76 characters.
func filler(n int, html bool) string {
	const line = "Keep your account safe: never share your password, and check the address bar."
	var b strings.Builder
	for b.Len() < n {
		if html {
			b.WriteString("<p>" + line[:70] + "</p>\r\n")
		} else {
			b.WriteString(line[:74] + "\r\n")
		}
	}
	return b.String()
}

// loadKey identifies one generated message: its sequence number within its
// run and its send time, which differs between runs.
type loadKey struct {
	seq  int64
	sent int64
}

// parseLoadID reads "<seq> <unix ns>" from an X-Load-ID value.
func parseLoadID(v string) (seq int64, sent time.Time, ok bool) {
	f := strings.Fields(v)
	if len(f) != 2 {
		return 0, time.Time{}, false
	}
	s, err1 := strconv.ParseInt(f[0], 10, 64)
	ns, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, time.Time{}, false
	}
	return s, time.Unix(0, ns), true
}

// headerValue returns the first value of header name in msg's header block,
// without parsing the whole message (the sink does this per arrival).
func headerValue(msg []byte, name string) string {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(msg)
	}
	h := msg[:end]
	for len(h) > 0 {
		i := bytes.Index(h, []byte("\r\n"))
		var line []byte
		if i < 0 {
			line, h = h, nil
		} else {
			line, h = h[:i], h[i+2:]
		}
		if len(line) > len(name) && line[len(name)] == ':' && strings.EqualFold(string(line[:len(name)]), name) {
			return strings.TrimSpace(string(line[len(name)+1:]))
		}
	}
	return ""
}
