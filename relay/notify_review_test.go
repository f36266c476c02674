package relay

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/latchkey/latchkey/bounce"
)

// The DSN to the sender survives odd original headers: a folded field, an
// 8-bit one and one of 1,500 octets (folded: a line over 998 octets is
// refused at the door) come back in the text/rfc822-headers
// part as they were, while the DSN itself keeps to 7-bit lines of at most
// 998 octets (relays cut or refuse longer ones), is signed, comes from the
// null sender and holds no part of the body.
func TestNotifySenderOddHeaders(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink_opts(userUnknown("odd@dest.test")),
		preStart: func(s *Server) { s.cfg.Inbound.NotifySender = true }})
	if err := e.dns.Add("example.com. 300 IN MX 10 mx.dest.test."); err != nil {
		t.Fatal(err)
	}
	long := strings.TrimSpace(strings.Repeat("abcdefghi ", 150))
	folded := strings.TrimSuffix(strings.Repeat("abcdefghi abcdefghi abcdefghi abcdefghi abcdefghi\r\n ", 30), "\r\n ")
	e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"odd@dest.test"}, resetMsg("odd@dest.test", "od1",
		"X-Folded: first\r\n\tsecond", "X-Name: J\xc3\xb6rg M\xc3\xbcller", "X-Long: "+folded))
	got := e.sink.Wait(1, 10*time.Second)
	if len(got) != 1 {
		t.Fatalf("no DSN arrived")
	}
	dsn := got[0]
	if dsn.From != "" {
		t.Errorf("DSN envelope from %q, want the null sender", dsn.From)
	}
	if bytes.Contains(dsn.Data, []byte("reset?token=")) || bytes.Contains(dsn.Data, []byte("expires in 30")) {
		t.Errorf("the DSN holds the body:\n%s", dsn.Data)
	}
	if !bytes.HasPrefix(dsn.Data, []byte("DKIM-Signature:")) {
		t.Error("the DSN is not DKIM-signed")
	}
	for i, l := range bytes.Split(dsn.Data, []byte("\r\n")) {
		if len(l) > 998 || bytes.ContainsFunc(l, func(r rune) bool { return r >= 0x80 }) {
			t.Errorf("line %d (%d octets) is too long or 8-bit: %.60q", i+1, len(l), l)
		}
	}
	rep, err := bounce.Parse(bytes.NewReader(dsn.Data))
	if err != nil || !rep.IsBounce || len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "odd@dest.test" ||
		rep.OriginalMessageID != "od1.abc@sfdc.net" {
		t.Fatalf("our DSN does not parse back: %v %+v", err, rep)
	}
	ent, err := message.Read(bytes.NewReader(dsn.Data))
	if err != nil {
		t.Fatal(err)
	}
	mr := ent.MultipartReader()
	var orig *textproto.Header
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if mt, _, _ := p.Header.ContentType(); mt == "text/rfc822-headers" {
			h, err := textproto.ReadHeader(bufio.NewReader(p.Body))
			if err != nil {
				t.Fatal(err)
			}
			orig = &h
		}
	}
	if orig == nil {
		t.Fatal("no text/rfc822-headers part")
	}
	if got := orig.Get("X-Name"); got != "J\xc3\xb6rg M\xc3\xbcller" {
		t.Errorf("X-Name = %q", got)
	}
	if got := strings.Join(strings.Fields(orig.Get("X-Folded")), " "); got != "first second" {
		t.Errorf("X-Folded = %q", got)
	}
	if got := strings.Join(strings.Fields(orig.Get("X-Long")), " "); got != long {
		t.Errorf("X-Long = %.40q..., %d octets", got, len(got))
	}
}
