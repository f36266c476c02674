package relay

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/queue"
)

// rawConn is an SMTP client that sends exactly the bytes it is given and
// returns every reply line, for tests of what goes over the wire.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	tc   *tls.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, addr string) (*rawConn, []string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	rc := &rawConn{t: t, conn: c, br: bufio.NewReader(c)}
	return rc, rc.reply()
}

func (rc *rawConn) w() net.Conn {
	if rc.tc != nil {
		return rc.tc
	}
	return rc.conn
}

// send writes raw bytes.
func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := rc.w().Write([]byte(s)); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// reply reads one reply, every line of it, without the CRLFs; a closed
// connection reads as "EOF".
func (rc *rawConn) reply() []string {
	var out []string
	for {
		l, err := rc.br.ReadString('\n')
		if err != nil {
			return append(out, "EOF")
		}
		l = strings.TrimSuffix(l, "\r\n")
		out = append(out, l)
		if len(l) < 4 || l[3] != '-' {
			return out
		}
	}
}

// cmd sends a command line and returns its reply's lines.
func (rc *rawConn) cmd(line string) []string {
	rc.t.Helper()
	rc.send(line + "\r\n")
	return rc.reply()
}

// last is the last line of a command's reply.
func (rc *rawConn) last(line string) string {
	rc.t.Helper()
	r := rc.cmd(line)
	return r[len(r)-1]
}

func (rc *rawConn) startTLS() {
	rc.t.Helper()
	if r := rc.last("STARTTLS"); r != "220 2.0.0 Ready to start TLS" {
		rc.t.Fatalf("STARTTLS answered %q", r)
	}
	rc.tc = tls.Client(rc.conn, &tls.Config{InsecureSkipVerify: true})
	if err := rc.tc.Handshake(); err != nil {
		rc.t.Fatal(err)
	}
	rc.br = bufio.NewReader(rc.tc)
}

// submitter is a raw connection through STARTTLS and AUTH, ready for MAIL.
func (e *env) submitter(t *testing.T) *rawConn {
	t.Helper()
	rc, _ := dialRaw(t, e.submitAddr())
	rc.cmd("EHLO client.test")
	rc.startTLS()
	rc.cmd("EHLO client.test")
	if r := rc.last("AUTH PLAIN " + plainIR(testUser, testPass)); !strings.HasPrefix(r, "235") {
		t.Fatalf("AUTH: %s", r)
	}
	return rc
}

// bdat sends one message in the given BDAT chunks (the last one LAST) and
// returns the last reply.
func (rc *rawConn) bdat(chunks ...string) string {
	rc.t.Helper()
	rc.cmd("MAIL FROM:<noreply@example.com>")
	rc.cmd("RCPT TO:<jane@dest.test>")
	var r []string
	for i, c := range chunks {
		last := ""
		if i == len(chunks)-1 {
			last = " LAST"
		}
		rc.send(fmt.Sprintf("BDAT %d%s\r\n%s", len(c), last, c))
		r = rc.reply()
	}
	return r[len(r)-1]
}

// data sends one message with DATA, body as it is (no dot-stuffing), and
// returns the reply to the end of DATA.
func (rc *rawConn) data(body string) string {
	rc.t.Helper()
	rc.cmd("MAIL FROM:<noreply@example.com>")
	rc.cmd("RCPT TO:<jane@dest.test>")
	if r := rc.last("DATA"); !strings.HasPrefix(r, "354") {
		rc.t.Fatalf("DATA answered %q", r)
	}
	rc.send(body + "\r\n.\r\n")
	r := rc.reply()
	return r[len(r)-1]
}

var queuedRe = regexp.MustCompile(`^250 2\.0\.0 OK queued as [0-9A-Za-z]{16}$`)

// Item 11: the replies Salesforce logs are plain, line for line, and the
// sender and recipient are still taken (the message is queued to them).
func TestPlainReplies(t *testing.T) {
	e := newEnv(t, envOpts{})
	rc, greet := dialRaw(t, e.submitAddr())
	if want := []string{"220 relay.test ESMTP Service Ready"}; fmt.Sprint(greet) != fmt.Sprint(want) {
		t.Errorf("greeting %q", greet)
	}
	// Before TLS: STARTTLS offered, AUTH neither offered nor taken.
	want := []string{"250-relay.test", "250-PIPELINING", "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250-CHUNKING",
		"250-STARTTLS", "250-SIZE 65536", "250 LIMITS RCPTMAX=100"}
	if got := rc.cmd("EHLO client.test"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("EHLO before TLS:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r := rc.last("AUTH PLAIN " + plainIR(testUser, testPass)); r != "523 5.7.10 TLS is required: send STARTTLS first" {
		t.Errorf("AUTH before TLS answered %q", r)
	}
	rc.startTLS()
	want = []string{"250-relay.test", "250-PIPELINING", "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250-CHUNKING",
		"250-AUTH PLAIN LOGIN", "250-SIZE 65536", "250 LIMITS RCPTMAX=100"}
	if got := rc.cmd("EHLO client.test"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("EHLO under TLS:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range []struct{ cmd, want string }{
		{"STARTTLS", "502 5.5.1 Already running in TLS"},
		{"AUTH PLAIN " + plainIR(testUser, testPass), "235 2.0.0 Authentication succeeded"},
		{"NOOP", "250 2.0.0 OK"},
		{"MAIL FROM:<noreply@example.com>", "250 2.1.0 Sender OK"},
		{"RSET", "250 2.0.0 OK"},
		{"MAIL FROM:<noreply@example.com>", "250 2.1.0 Sender OK"},
		{"RCPT TO:<jane@dest.test>", "250 2.1.5 Recipient OK"},
		{"DATA", "354 End data with <CR><LF>.<CR><LF>"},
	} {
		if got := rc.cmd(c.cmd); len(got) != 1 || got[0] != c.want {
			t.Errorf("%s answered %q, want %q", c.cmd, got, c.want)
		}
	}
	rc.send(string(resetMsg("jane@dest.test", "plain")) + "\r\n.\r\n")
	end := rc.reply()
	if len(end) != 1 || !queuedRe.MatchString(end[0]) {
		t.Fatalf("end of DATA answered %q", end)
	}
	id := end[0][len(end[0])-16:]
	it, err := e.srv.Queue.Get(queue.ItemID(id, 0))
	if err != nil || it == nil || it.Rcpt != "jane@dest.test" || it.From != "noreply@example.com" {
		t.Errorf("queued item %+v (%v): go-smtp did not take the envelope", it, err)
	}
	// The same message again is a duplicate, said as plainly.
	rc.cmd("MAIL FROM:<noreply@example.com>")
	rc.cmd("RCPT TO:<jane@dest.test>")
	rc.cmd("DATA")
	rc.send(string(resetMsg("jane@dest.test", "plain")) + "\r\n.\r\n")
	if r := rc.reply(); len(r) != 1 || r[0] != "250 2.0.0 OK already queued as "+id {
		t.Errorf("duplicate answered %q", r)
	}
	if r := rc.cmd("QUIT"); len(r) != 1 || r[0] != "221 2.0.0 Bye" {
		t.Errorf("QUIT answered %q", r)
	}
}

// Item 11 on the inbound listener, and RFC 3207 there: what was said before
// STARTTLS is forgotten, and commands sent along with STARTTLS are dropped.
func TestPlainRepliesInbound(t *testing.T) {
	e := newEnv(t, envOpts{})
	addr := e.srv.InboundAddrs[0].String()
	rc, _ := dialRaw(t, addr)
	want := []string{"250-relay.test", "250-PIPELINING", "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250-CHUNKING",
		"250-STARTTLS", "250-SIZE 10485760", "250 LIMITS RCPTMAX=10"}
	if got := rc.cmd("EHLO mx.remote.test"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("EHLO:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	verp := bounce.EncodeVERP(e.srv.verpKey, queue.ItemID(queue.NewMsgID(time.Now()), 0), "example.com")
	for _, c := range []struct{ cmd, want string }{
		{"NOOP", "250 2.0.0 OK"},
		{"MAIL FROM:<>", "250 2.1.0 Sender OK"},
		{"RCPT TO:<" + verp + ">", "250 2.1.5 Recipient OK"},
		{"RCPT TO:<nobody@example.com>", "550 5.1.1 No such bounce address"},
	} {
		if got := rc.cmd(c.cmd); len(got) != 1 || got[0] != c.want {
			t.Errorf("%s answered %q, want %q", c.cmd, got, c.want)
		}
	}
	// A MAIL sent in the same packet as STARTTLS must not count as sent
	// under TLS (CVE-2011-0411), and the envelope from before is gone.
	rc.send("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
	if r := rc.reply(); r[0] != "220 2.0.0 Ready to start TLS" {
		t.Fatalf("STARTTLS answered %q", r)
	}
	rc.tc = tls.Client(rc.conn, &tls.Config{InsecureSkipVerify: true})
	if err := rc.tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	rc.br = bufio.NewReader(rc.tc)
	got := rc.cmd("EHLO mx.remote.test")
	if strings.Contains(strings.Join(got, "\n"), "STARTTLS") {
		t.Errorf("STARTTLS offered under TLS: %q", got)
	}
	if r := rc.last("RCPT TO:<" + verp + ">"); !strings.HasPrefix(r, "502") {
		t.Errorf("RCPT after STARTTLS without a new MAIL answered %q; the old or injected envelope survived", r)
	}
	if r := rc.last("MAIL FROM:<>"); r != "250 2.1.0 Sender OK" {
		t.Errorf("MAIL under TLS answered %q", r)
	}
}

// Item 10: every smuggling-style end-of-data look-alike is refused 554 5.6.0
// under bare_line_endings = "reject", including the two that go-smtp's DATA
// reader hides (a "." + CR line start without LF), and the session stays in
// step (the NOOP after gets its own reply; nothing smuggled is queued).
func TestSmugglingAll(t *testing.T) {
	e := newEnv(t, envOpts{})
	smuggled := "MAIL FROM:<noreply@example.com>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\nFrom: <noreply@example.com>\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
	rc := e.submitter(t)
	for _, seq := range []string{"\n.\n", "\n.\r", "\r.\n", "\r.\r", "\n.\r\n", "\r.\r\n", "\r\n.\n", "\r\n.\r",
		"\r\n.\r\r\n", "\r\r\n.\r\r\n", "\r\n\x00.\r\n", "\r\n.\x00\r\n", "\r\n.\rX", "\r\n.\r.\r\n", "\r\n\r.\r\n",
		"\r\n.\n\r\n"} {
		body := string(resetMsg("jane@dest.test", "smug")) + "tail" + seq + smuggled
		if r := rc.data(body); r != "554 5.6.0 Message contains a bare CR, bare LF or NUL; send CRLF line endings only" {
			t.Errorf("DATA with %q answered %q", seq, r)
		}
		if r := rc.last("NOOP"); r != "250 2.0.0 OK" {
			t.Fatalf("NOOP after %q answered %q: out of step", seq, r)
		}
	}
	// In BDAT, content goes as it is: a bare CR anywhere, and a line that
	// is only "." (what ends DATA at a server downstream that took it).
	for _, chunks := range [][]string{
		{string(resetMsg("jane@dest.test", "b1")) + "tail\r\n.\r" + smuggled},
		{string(resetMsg("jane@dest.test", "b2")) + "tail\r", "X\r\n"},
		{string(resetMsg("jane@dest.test", "b3")), "tail\rX\r\n"},
		{string(resetMsg("jane@dest.test", "b4")) + "tail\n.\n" + smuggled},
		{string(resetMsg("jane@dest.test", "b5")) + "x\x00\r\n"},
	} {
		if r := rc.bdat(chunks...); r != "554 5.6.0 Message contains a bare CR, bare LF or NUL; send CRLF line endings only" {
			t.Errorf("BDAT %q answered %q", chunks, r)
		}
	}
	for _, chunks := range [][]string{
		{string(resetMsg("jane@dest.test", "b6")) + "tail\r\n.\r\n" + smuggled},
		{string(resetMsg("jane@dest.test", "b7")) + "tail\r\n", ".\r\n" + smuggled},
		{string(resetMsg("jane@dest.test", "b8")) + "tail\r\n.", "\r", "\n" + smuggled},
	} {
		if r := rc.bdat(chunks...); r != `554 5.6.0 Message sent with BDAT contains a line holding only "." (the end of DATA); send it with DATA, dot-stuffed` {
			t.Errorf("BDAT %q answered %q", chunks, r)
		}
	}
	if r := rc.last("NOOP"); r != "250 2.0.0 OK" {
		t.Fatalf("NOOP after BDAT answered %q", r)
	}
	// Clean messages still pass, by DATA and by BDAT, a CRLF split over
	// two chunks included, and "." lines dot-stuffed in DATA.
	if r := rc.data(string(resetMsg("jane@dest.test", "ok1")) + "..\r\n..leading dot\r\n"); !queuedRe.MatchString(r) {
		t.Errorf("clean DATA answered %q", r)
	}
	if r := rc.bdat(string(resetMsg("jane@dest.test", "ok2"))+"split\r", "\n.leading dot\r\n"); !queuedRe.MatchString(r) {
		t.Errorf("clean BDAT answered %q", r)
	}
	got := e.sink.Wait(2, 10*time.Second)
	if len(got) != 2 {
		t.Fatalf("%d delivered, want the 2 clean ones", len(got))
	}
	for _, m := range got {
		if len(m.To) != 1 || m.To[0] != "jane@dest.test" || !checkLineEndings(m.Data) {
			t.Errorf("delivered %v %q", m.To, m.Data)
		}
		if !bytes.Contains(m.Data, []byte("\r\n.leading dot\r\n")) {
			t.Errorf("a line starting with a dot was not kept:\n%s", m.Data)
		}
	}
	items, _ := e.srv.Queue.List(queue.Filter{State: "all"})
	if len(items) != 2 {
		t.Errorf("%d items queued, want 2", len(items))
	}
}

// Under bare_line_endings = "normalize" the documented behaviour holds: bare
// CR and LF become CRLF; a "." + CR line start that go-smtp drops stays
// dropped (turning it into CRLF would end the data); a "." line in BDAT is
// accepted and goes out dot-stuffed, inside the one message.
func TestSmugglingNormalize(t *testing.T) {
	e := newEnv(t, envOpts{preStart: func(s *Server) { s.cfg.Submission.BareLineEndings = "normalize" }})
	rc := e.submitter(t)
	smuggled := "MAIL FROM:<noreply@example.com>\r\nRCPT TO:<victim@dest.test>\r\n"
	if r := rc.data(string(resetMsg("jane@dest.test", "n1")) + "one\r\n.\rtwo\nthree\r\n"); !queuedRe.MatchString(r) {
		t.Errorf("DATA answered %q", r)
	}
	if r := rc.bdat(string(resetMsg("jane@dest.test", "n2")) + "tail\r\n.\r\n" + smuggled); !queuedRe.MatchString(r) {
		t.Errorf("BDAT answered %q", r)
	}
	got := e.sink.Wait(2, 10*time.Second)
	if len(got) != 2 {
		t.Fatalf("%d delivered", len(got))
	}
	for _, m := range got {
		if len(m.To) != 1 || m.To[0] != "jane@dest.test" || !checkLineEndings(m.Data) {
			t.Errorf("delivered %v %q", m.To, m.Data)
		}
		switch {
		case bytes.Contains(m.Data, []byte("n1.abc")):
			if !bytes.Contains(m.Data, []byte("\r\none\r\ntwo\r\nthree\r\n")) {
				t.Errorf("normalised DATA arrived as\n%q", m.Data)
			}
		case !bytes.Contains(m.Data, []byte("\r\ntail\r\n.\r\nMAIL FROM:<noreply@example.com>\r\n")):
			t.Errorf("BDAT message arrived as\n%q", m.Data)
		}
	}
}

// Item 8: lines over 998 octets are refused at DATA, naming the limit; 998
// is fine; a long field folded is fine; a line far over go-smtp's old limit
// gets the same reply and the session goes on.
func TestLongLines(t *testing.T) {
	e := newEnv(t, envOpts{})
	rc := e.submitter(t)
	hdrWant := "554 5.6.0 Message header line longer than 998 octets (RFC 5322 section 2.1.1); fold the field"
	bodyWant := "554 5.6.0 Message body line longer than 998 octets (RFC 5322 section 2.1.1); use quoted-printable or base64"
	field := func(n int) string { return "X-Long: " + strings.Repeat("a", n-len("X-Long: ")) }
	for _, c := range []struct {
		name, msg, want string
	}{
		{"header 999", string(resetMsg("jane@dest.test", "l1", field(999))), hdrWant},
		{"header 5000", string(resetMsg("jane@dest.test", "l2", field(5000))), hdrWant},
		{"body 999", string(resetMsg("jane@dest.test", "l3")) + strings.Repeat("b", 999) + "\r\n", bodyWant},
		{"body 3000", string(resetMsg("jane@dest.test", "l4")) + strings.Repeat("b", 3000) + "\r\n", bodyWant},
		{"last body line 999, no CRLF", string(resetMsg("jane@dest.test", "l5")) + strings.Repeat("b", 999), bodyWant},
		{"header 998", string(resetMsg("jane@dest.test", "ok1", field(998))), ""},
		{"body 998", string(resetMsg("jane@dest.test", "ok2")) + strings.Repeat("b", 998) + "\r\n", ""},
		{"folded 3000", string(resetMsg("jane@dest.test", "ok3", "X-Long: "+strings.Repeat(strings.Repeat("c", 900)+"\r\n ", 3)+"end")), ""},
	} {
		r := rc.data(strings.TrimSuffix(c.msg, "\r\n"))
		if c.want == "" && !queuedRe.MatchString(r) || c.want != "" && r != c.want {
			t.Errorf("%s: answered %q", c.name, r)
		}
		if r := rc.last("NOOP"); r != "250 2.0.0 OK" {
			t.Fatalf("%s: NOOP answered %q", c.name, r)
		}
	}
	if got := e.sink.Wait(3, 10*time.Second); len(got) != 3 {
		t.Errorf("%d delivered, want 3", len(got))
	}
}

// Item 9: a message without Date: gets one, before signing, so it is signed;
// one with a Date keeps it alone; an empty or a second Date is refused.
func TestDateAdded(t *testing.T) {
	e := newEnv(t, envOpts{})
	rc := e.submitter(t)
	noDate := strings.Replace(string(resetMsg("jane@dest.test", "nodate")), "Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n", "", 1)
	before := time.Now().Add(-time.Second)
	if r := rc.data(noDate); !queuedRe.MatchString(r) {
		t.Fatalf("answered %q", r)
	}
	if r := rc.data(string(resetMsg("jane@dest.test", "hasdate"))); !queuedRe.MatchString(r) {
		t.Fatalf("answered %q", r)
	}
	for name, msg := range map[string]string{
		"two":   string(resetMsg("jane@dest.test", "twodates", "Date: Mon, 30 Nov 2026 12:00:00 +0000")),
		"empty": strings.Replace(string(resetMsg("jane@dest.test", "emptydate")), "Date: Sun, 29 Nov 2026 12:00:00 +0000", "Date:  ", 1),
	} {
		if r := rc.data(msg); r != "554 5.6.0 Message must have at most one Date: header, not empty (RFC 5322 section 3.6)" {
			t.Errorf("%s Date: answered %q", name, r)
		}
	}
	// The other fields RFC 5322 allows once.
	for _, f := range []string{"Subject", "To", "Reply-To"} {
		msg := string(resetMsg("jane@dest.test", "twice"+f, f+": <again@dest.test>", f+": <more@dest.test>"))
		if r := rc.data(msg); r != "554 5.6.0 Message must have at most one "+f+": header (RFC 5322 section 3.6)" {
			t.Errorf("two %s: answered %q", f, r)
		}
	}
	got := e.sink.Wait(2, 10*time.Second)
	if len(got) != 2 {
		t.Fatalf("%d delivered", len(got))
	}
	for _, m := range got {
		msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatal(err)
		}
		dates := msg.Header["Date"]
		if len(dates) != 1 {
			t.Fatalf("%d Date fields", len(dates))
		}
		d, err := mail.ParseDate(dates[0])
		if err != nil {
			t.Errorf("Date %q does not parse: %v", dates[0], err)
		}
		if bytes.Contains(m.Data, []byte("nodate.abc")) {
			if d.Before(before) || d.After(time.Now().Add(time.Second)) {
				t.Errorf("added Date %v is not the time of acceptance", d)
			}
			vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(m.Data), &msgdkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
				txt, err := e.lookupTXT(name)
				return []string{txt}, err
			}})
			if err != nil || len(vs) == 0 {
				t.Fatalf("verify: %v", err)
			}
			for _, v := range vs {
				if v.Err != nil || !hasFold(v.HeaderKeys, "Date") {
					t.Errorf("signature %s: %v, h=%v", v.Domain, v.Err, v.HeaderKeys)
				}
			}
		} else if dates[0] != "Sun, 29 Nov 2026 12:00:00 +0000" {
			t.Errorf("the message's own Date became %q", dates[0])
		}
	}
}

func hasFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// A command line over the door's bound closes the connection with a reply,
// instead of being read without end.
func TestLongCommandLine(t *testing.T) {
	e := newEnv(t, envOpts{})
	rc, _ := dialRaw(t, e.submitAddr())
	rc.send("EHLO " + strings.Repeat("x", 5000))
	if r := rc.reply(); r[0] != "500 5.5.2 Line too long; closing connection" {
		t.Errorf("answered %q", r)
	}
	if r := rc.reply(); r[0] != "EOF" {
		t.Errorf("connection still open: %q", r)
	}
}

// go-smtp takes a BDAT chunk cut short by the end of the connection for a
// whole one; the door knows better, and the half message is not queued.
func TestTruncatedBDAT(t *testing.T) {
	e := newEnv(t, envOpts{})
	rc := e.submitter(t)
	rc.cmd("MAIL FROM:<noreply@example.com>")
	rc.cmd("RCPT TO:<jane@dest.test>")
	msg := string(resetMsg("jane@dest.test", "cut"))
	rc.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg)+100, msg))
	rc.tc.CloseWrite()
	waitFor(t, "the truncated message to be counted", 10*time.Second, func() bool {
		return rejections(t, e, "truncated") == 1
	})
	if items, _ := e.srv.Queue.List(queue.Filter{State: "all"}); len(items) != 0 {
		t.Errorf("%d items queued from a truncated message", len(items))
	}
}

// rejections reads latchkey_smtp_rejections_total{reason}.
func rejections(t *testing.T, e *env, reason string) float64 {
	mfs, err := e.srv.Metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "latchkey_smtp_rejections_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A From: in group syntax names one mailbox for net/mail, but RFC 5322 does
// not allow it; it is refused at DATA instead of by the recipient's server.
func TestFromGroupRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	rc := e.submitter(t)
	base := string(resetMsg("jane@dest.test", "grp"))
	for _, from := range []string{"Team: noreply@example.com;", "Team:<noreply@example.com>;"} {
		msg := strings.Replace(base, "From: Acme Support <noreply@example.com>", "From: "+from, 1)
		if r := rc.data(msg); r != "550 5.7.1 From: header must be a mailbox, not a group (RFC 5322 section 3.6.2)" {
			t.Errorf("From: %s answered %q", from, r)
		}
	}
	for i, from := range []string{`"Acme: Support" <noreply@example.com>`, "Acme (a: b) <noreply@example.com>"} {
		msg := strings.Replace(string(resetMsg("jane@dest.test", fmt.Sprint("grpok", i))),
			"From: Acme Support <noreply@example.com>", "From: "+from, 1)
		if r := rc.data(msg); !queuedRe.MatchString(r) {
			t.Errorf("From: %s answered %q", from, r)
		}
	}
}

func TestIsGroup(t *testing.T) {
	for in, want := range map[string]bool{
		"a@b": false, "A <a@b>": false, `"x:y" <a@b>`: false, "(x:y) a@b": false, "<@r:a@b>": false,
		"g: a@b;": true, "g:;": true, `"q" g: a@b;`: true, `"\\": x`: true, `"\\"": x`: false, "(a\\) b:": false,
	} {
		if got := isGroup(in); got != want {
			t.Errorf("isGroup(%q) = %v", in, got)
		}
	}
}

// FuzzIsGroup: isGroup never panics, and a value with no colon, or whose
// only colons are inside a quoted string, is never a group.
func FuzzIsGroup(f *testing.F) {
	f.Add("Team: a@example.com;")
	f.Add(`"a\\" b" (c: d) <@r:e@f>`)
	f.Fuzz(func(t *testing.T, v string) {
		g := isGroup(v)
		if !strings.Contains(v, ":") && g {
			t.Errorf("isGroup(%q) without a colon", v)
		}
		clean := strings.NewReplacer("\\", "", `"`, "", "(", "", ")", "", "<", "", ">", "").Replace(v)
		if q := `"` + clean + `" <a@b>`; isGroup(q) {
			t.Errorf("isGroup(%q): the colon is quoted", q)
		}
	})
}

// The door follows go-smtp's BDAT state: a MAIL or DATA refused in the middle
// of a BDAT message leaves it open (and what its first chunk held counts), a
// chunk go-smtp refused (no RCPT yet) opens none.
func TestBDATState(t *testing.T) {
	e := newEnv(t, envOpts{})
	rc := e.submitter(t)
	rc.cmd("MAIL FROM:<noreply@example.com>")
	rc.cmd("RCPT TO:<jane@dest.test>")
	first := string(resetMsg("jane@dest.test", "st1")) + "tail\r\n.\r\nmore\r\n"
	rc.send(fmt.Sprintf("BDAT %d\r\n%s", len(first), first))
	if r := rc.reply(); r[0] != "250 2.0.0 Continue" {
		t.Fatalf("first chunk answered %q", r)
	}
	if r := rc.last("MAIL FROM:<noreply@example.com>"); !strings.HasPrefix(r, "502") {
		t.Errorf("MAIL during BDAT answered %q", r)
	}
	if r := rc.last("DATA"); !strings.HasPrefix(r, "502") {
		t.Errorf("DATA during BDAT answered %q", r)
	}
	rc.send("BDAT 5 LAST\r\nend\r\n")
	if r := rc.reply(); r[0] != `554 5.6.0 Message sent with BDAT contains a line holding only "." (the end of DATA); send it with DATA, dot-stuffed` {
		t.Errorf("last chunk answered %q", r)
	}
	// A chunk refused for want of RCPT is discarded by go-smtp; its "."
	// line does not taint the next message.
	rc.send("BDAT 5\r\nx\r\n.\r")
	if r := rc.reply(); !strings.HasPrefix(r[0], "502") {
		t.Errorf("chunk without RCPT answered %q", r)
	}
	if r := rc.bdat(string(resetMsg("jane@dest.test", "st2"))); !queuedRe.MatchString(r) {
		t.Errorf("clean BDAT after a refused chunk answered %q", r)
	}
}
