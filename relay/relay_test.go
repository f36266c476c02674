package relay

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/dkim/dkimtest"
	"github.com/latchkey/latchkey/queue"
)

func TestEndToEnd(t *testing.T) {
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		t.Run(mech, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			c := e.client(mech)
			msg := resetMsg("jane@dest.test", "tok"+mech)
			id := e.sendID(c, "noreply@example.com", []string{"jane@dest.test"}, msg)
			if !queue.ValidID(id) {
				t.Fatalf("queue id %q is not an id", id)
			}
			got := e.sink.Wait(1, 10*time.Second)
			if len(got) != 1 {
				t.Fatalf("sink got %d messages, want 1", len(got))
			}
			m := got[0]
			// The envelope sender is the signed VERP address on the bounce subdomain.
			qid, dom, err := bounce.DecodeVERP(e.srv.verpKey, m.From)
			if err != nil || dom != "example.com" || queue.MsgIDOf(qid) != id {
				t.Errorf("envelope sender %q: id %q domain %q err %v; want VERP for %s", m.From, qid, dom, err, id)
			}
			if !m.TLS {
				t.Error("delivery did not use STARTTLS")
			}
			// Every original byte is still there, at the end, unchanged.
			if !bytes.HasSuffix(m.Data, msg) {
				t.Errorf("original message not byte-identical at the end of the delivered one:\n%s", m.Data)
			}
			pre := string(m.Data[:len(m.Data)-len(msg)])
			if !strings.Contains(pre, "Received: from localhost") || strings.Count(pre, "DKIM-Signature:") != 2 {
				t.Errorf("prepended headers:\n%s", pre)
			}
			// go-msgauth verifies both signatures with the keys from the test DNS.
			vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(m.Data), &msgdkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
				v, err := e.lookupTXT(name)
				return []string{v}, err
			}})
			if err != nil || len(vs) != 2 {
				t.Fatalf("verify: %v, %d signatures", err, len(vs))
			}
			for _, v := range vs {
				if v.Err != nil || v.Domain != "example.com" {
					t.Errorf("go-msgauth: signature d=%s: %v", v.Domain, v.Err)
				}
			}
			// And so does an independent verifier, with the keys from the test DNS.
			recs := map[string]string{}
			for name := range e.records {
				v, err := e.lookupTXT(name)
				if err != nil {
					t.Fatal(err)
				}
				recs[name] = v
			}
			res := dkimtest.PyVerify(t, m.Data, recs)
			algos := map[string]bool{}
			for _, r := range res {
				if !r.OK {
					t.Errorf("python3-dkim: s=%s a=%s: %s", r.Selector, r.Algorithm, r.Error)
				}
				algos[r.Algorithm] = r.OK
			}
			if res != nil && (!algos["rsa-sha256"] || !algos["ed25519-sha256"]) {
				t.Errorf("python3-dkim results %+v, want rsa-sha256 and ed25519-sha256 passing", res)
			}
			// Delivered once, recorded on the item.
			waitFor(t, "delivered state", 5*time.Second, func() bool {
				it, _ := e.srv.Queue.Get(queue.ItemID(id, 0))
				return it != nil && it.State == queue.StateDelivered
			})
			it, _ := e.srv.Queue.Get(queue.ItemID(id, 0))
			if it.Class != "reset" || it.Last == nil || it.Last.Code != 250 || it.Last.Host != "mx.dest.test" {
				t.Errorf("item = %+v, last %+v", it, it.Last)
			}
			time.Sleep(100 * time.Millisecond)
			if n := e.sink.Count(); n != 1 {
				t.Errorf("sink count %d, want exactly 1", n)
			}
		})
	}
}

// A message Salesforce signed with its own key still verifies after latchkey
// added its headers and signatures.
func TestSalesforceSignatureSurvives(t *testing.T) {
	e := newEnv(t, envOpts{})
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sfRec, _ := dkim.PublicRecord(pub)
	e.dns.Add(dkim.ZoneLine("sf2026", "example.com", sfRec))
	var signed bytes.Buffer
	msg := resetMsg("jane@dest.test", "sfsigned")
	if err := msgdkim.Sign(&signed, bytes.NewReader(msg), &msgdkim.SignOptions{Domain: "example.com", Selector: "sf2026", Signer: priv,
		HeaderCanonicalization: msgdkim.CanonicalizationRelaxed, BodyCanonicalization: msgdkim.CanonicalizationRelaxed}); err != nil {
		t.Fatal(err)
	}
	e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, signed.Bytes())
	got := e.sink.Wait(1, 10*time.Second)
	if len(got) != 1 {
		t.Fatal("not delivered")
	}
	vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(got[0].Data), &msgdkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		v, err := e.lookupTXT(name)
		return []string{v}, err
	}})
	if err != nil || len(vs) != 3 {
		t.Fatalf("verify: %v, %d signatures, want 3", err, len(vs))
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("signature %s: %v", v.Domain, v.Err)
		}
	}
	recs := map[string]string{"sf2026._domainkey.example.com.": sfRec}
	for k, v := range e.records {
		recs[k] = v
	}
	for _, r := range dkimtest.PyVerify(t, got[0].Data, recs) {
		if !r.OK {
			t.Errorf("python3-dkim s=%s: %s", r.Selector, r.Error)
		}
	}
}

func smtpCode(err error) (int, string) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return 0, ""
}

func TestRejections(t *testing.T) {
	e := newEnv(t, envOpts{})
	msg := resetMsg("jane@dest.test", "neg")
	cases := []struct {
		name     string
		run      func() error
		code     int
		enhanced string
	}{
		{"no AUTH", func() error {
			_, err := send(e.client(""), "noreply@example.com", []string{"jane@dest.test"}, msg)
			return err
		}, 530, "5.7.0"},
		{"AUTH before TLS", func() error {
			c, err := smtp.Dial(e.submitAddr())
			if err != nil {
				return err
			}
			defer c.Close()
			c.Hello("x.test")
			return c.Auth(sasl.NewPlainClient("", testUser, testPass))
		}, 0, ""}, // go-smtp's client refuses PLAIN in clear; checked raw below
		{"wrong password", func() error {
			c := e.client("")
			return c.Auth(sasl.NewPlainClient("", testUser, "wrong"))
		}, 535, "5.7.8"},
		{"foreign envelope sender", func() error {
			_, err := send(e.client("PLAIN"), "someone@evil.test", []string{"jane@dest.test"}, msg)
			return err
		}, 550, "5.7.1"},
		{"foreign From header", func() error {
			bad := bytes.Replace(msg, []byte("From: Acme Support <noreply@example.com>"), []byte("From: <ceo@evil.test>"), 1)
			_, err := send(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, bad)
			return err
		}, 550, "5.7.1"},
		{"two From headers", func() error {
			bad := append([]byte("From: <x@example.com>\r\n"), msg...)
			_, err := send(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, bad)
			return err
		}, 550, "5.7.1"},
		{"oversize", func() error {
			big := append(append([]byte{}, msg...), bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"), 2000)...)
			_, err := send(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, big)
			return err
		}, 552, "5.3.4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if tc.code == 0 {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			code, enh := smtpCode(err)
			if code != tc.code || enh != tc.enhanced {
				t.Fatalf("reply %v, want %d %s", err, tc.code, tc.enhanced)
			}
		})
	}
	// Raw AUTH before STARTTLS: the server itself refuses.
	if r := rawDialog(t, e.submitAddr(), "EHLO x.test", "AUTH PLAIN "+plainIR(testUser, testPass)); !strings.HasPrefix(r[len(r)-1], "523 5.7.10") && !strings.HasPrefix(r[len(r)-1], "502") {
		t.Errorf("AUTH in clear answered %q", r[len(r)-1])
	}
	// Malformed commands get syntax errors and the session goes on.
	r := rawDialog(t, e.submitAddr(), "EHLO x.test", "MAIL FROM:bogus", "RCPT TO:<a@b>", "FOO BAR", "DATA extra")
	want := []string{"501", "502", "50", "501"}
	for i, w := range want {
		if !strings.HasPrefix(r[len(r)-len(want)+i], w) {
			t.Errorf("malformed command %d answered %q, want %s", i, r[len(r)-len(want)+i], w)
		}
	}
	items, _ := e.srv.Queue.List(queue.Filter{State: "all"})
	if len(items) != 0 {
		t.Errorf("%d items queued by rejected sessions", len(items))
	}
	// Messages refused after DATA are in the audit trail, as the class
	// they would have been; sessions refused before DATA are not.
	evs, err := audit.Query(e.srv.Store.DB, audit.Filter{Type: audit.Rejected})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]audit.Event{}
	for _, ev := range evs {
		got[ev.Fields["reason"]] = ev
		if strings.Contains(fmt.Sprint(ev), "token=") {
			t.Errorf("rejected event holds the link: %+v", ev)
		}
	}
	if len(evs) != 3 || len(got) != 3 {
		t.Errorf("rejected events %+v, want from_domain, from_header and too_large", evs)
	}
	fd := got["from_domain"]
	if fd.Class != "reset" || fd.MessageID != "<neg.abc@sfdc.net>" || fd.Recipient != "jane@dest.test" ||
		fd.Sender != "noreply@example.com" || fd.Fields["code"] != "550" || fd.Fields["enhanced"] != "5.7.1" ||
		fd.Fields["from"] != "ceo@evil.test" || fd.Fields["auth_user"] != testUser || fd.Fields["sfdc_user"] != "0055g00000ABCDEAAB" ||
		len(fd.Fields["body_sha256"]) != 64 || !strings.Contains(fd.Fields["reply"], "evil.test") {
		t.Errorf("from_domain refusal recorded as %+v", fd)
	}
	if tl := got["too_large"]; tl.Class != "" || tl.Recipient != "jane@dest.test" || tl.Fields["code"] != "" {
		t.Errorf("oversize refusal recorded as %+v", tl)
	}
	if e.sink.Count() != 0 {
		t.Errorf("sink got %d messages", e.sink.Count())
	}
}

func plainIR(user, pass string) string {
	return base64Std("\x00" + user + "\x00" + pass)
}

// rawDialog sends lines one by one and returns the last line of each reply
// (the greeting first).
func rawDialog(t *testing.T, addr string, lines ...string) []string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	read := func() string { return readReply(tp) }
	out := []string{read()}
	for _, l := range lines {
		tp.PrintfLine("%s", l)
		out = append(out, read())
	}
	return out
}

func TestAuthFailureLimit(t *testing.T) {
	e := newEnv(t, envOpts{}) // max_auth_failures = 3
	c := e.client("")
	var last error
	for i := 0; i < 3; i++ {
		last = c.Auth(sasl.NewPlainClient("", testUser, "wrong"))
	}
	if code, _ := smtpCode(last); code != 421 {
		t.Fatalf("third failure answered %v, want 421", last)
	}
	if err := c.Noop(); err == nil {
		t.Error("connection still open after 421")
	}
	// A new connection from the same address is turned away at once, even
	// with the right password.
	c2, err := smtp.Dial(e.submitAddr())
	if err == nil {
		err = c2.Hello("x.test")
		c2.Close()
	}
	if code, _ := smtpCode(err); code != 421 {
		t.Errorf("new connection answered %v, want 421", err)
	}
}

// SMTP smuggling: a body with a bare CR/LF/NUL end-of-data look-alike is
// refused whole, and nothing after the look-alike is taken as a command.
func TestSmuggling(t *testing.T) {
	e := newEnv(t, envOpts{})
	seqs := []string{"\n.\n", "\n.\r", "\r.\n", "\r.\r", "\n.\r\n", "\r.\r\n", "\r\n.\n", "\r\n.\r",
		"\r\n.\r\r\n", "\r\r\n.\r\r\n", "\r\n\x00.\r\n", "\r\n.\x00\r\n"}
	for _, seq := range seqs {
		t.Run(fmt.Sprintf("%q", seq), func(t *testing.T) {
			// go-smtp's client would repair bare line endings, so the bytes
			// go out raw, as an attacker would send them.
			smuggled := "MAIL FROM:<noreply@example.com>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\nFrom: <noreply@example.com>\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
			body := string(resetMsg("jane@dest.test", "smug")) + "tail" + seq + smuggled
			replies := e.rawSubmit(t, body, "NOOP")
			// Every one, the "." + CR line starts that go-smtp's DATA
			// reader drops included: the door saw them as sent.
			if !strings.HasPrefix(replies[0], "554 5.6.0") {
				t.Fatalf("end of DATA answered %q, want 554 5.6.0", replies[0])
			}
			// The session is still in step: the NOOP gets its own 250, and
			// no reply for a smuggled command came in between.
			if !strings.HasPrefix(replies[1], "250") {
				t.Errorf("NOOP after rejection answered %q", replies[1])
			}
		})
	}
	items, _ := e.srv.Queue.List(queue.Filter{State: "all"})
	for _, it := range items {
		if it.Rcpt != "jane@dest.test" {
			t.Errorf("smuggled recipient %s queued", it.Rcpt)
		}
	}
	time.Sleep(300 * time.Millisecond)
	for _, m := range e.sink.Messages() {
		if !checkLineEndings(m.Data) {
			t.Errorf("delivered message has bare CR/LF/NUL:\n%q", m.Data)
		}
		if len(m.To) != 1 || m.To[0] != "jane@dest.test" {
			t.Errorf("delivered to %v", m.To)
		}
	}
}

func TestNormalizeLineEndings(t *testing.T) {
	e := newEnv(t, envOpts{extra: "", preStart: func(s *Server) { s.cfg.Submission.BareLineEndings = "normalize" }})
	body := string(resetMsg("jane@dest.test", "norm")) + "bare\nlf\x00\r\n"
	e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, []byte(body))
	got := e.sink.Wait(1, 10*time.Second)
	if len(got) != 1 || !checkLineEndings(got[0].Data) || !bytes.Contains(got[0].Data, []byte("bare\r\nlf\r\n")) {
		t.Fatalf("normalised delivery = %+v", got)
	}
}

func TestCheckLineEndings(t *testing.T) {
	for in, want := range map[string]bool{"a\r\nb\r\n": true, "a\nb": false, "a\rb": false, "a\x00": false, "\r": false, "": true} {
		if got := checkLineEndings([]byte(in)); got != want {
			t.Errorf("checkLineEndings(%q) = %v", in, got)
		}
	}
}

func FuzzLineEndings(f *testing.F) {
	f.Add([]byte("a\r\nb\n.\r\n"))
	f.Add([]byte("\r\r\n\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := normalizeLineEndings(b)
		if !checkLineEndings(n) {
			t.Fatalf("normalize(%q) = %q still has bare line endings", b, n)
		}
		if checkLineEndings(b) && !bytes.Equal(n, b) {
			t.Fatalf("normalize changed a clean message %q → %q", b, n)
		}
	})
}

// The queue answers 250 only after the commit: once acknowledged, the item
// is on disk even if the relay stops before delivering.
func TestAcceptedSurvivesRestart(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sink.SetRcpt(func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	})
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "restart"))
	waitFor(t, "first attempt", 10*time.Second, func() bool {
		it, _ := e.srv.Queue.Get(queue.ItemID(id, 0))
		return it != nil && it.Attempts >= 1
	})
	e.stop()
	e.sink.SetRcpt(nil)
	e.start(nil)
	e.srv.Queue.Retry(queue.ItemID(id, 0), "test")
	if got := e.sink.Wait(1, 10*time.Second); len(got) != 1 {
		t.Fatal("not delivered after restart")
	}
}
