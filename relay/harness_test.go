package relay

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

const (
	testUser = "sfrelay"
	testPass = "correct horse battery staple"
)

// env is a relay under test with its world: a DNS server serving the
// recipients' MX and our DKIM keys, and a recipient MX on 127.0.0.2.
type env struct {
	t      testing.TB
	dir    string
	dns    *dnstest.Server
	sink   *smtpsink.Sink
	srv    *Server
	cfg    *conf.Config
	cancel context.CancelFunc
	// records holds the DKIM TXT records published in dns.
	records map[string]string
	cfgText string
	quiet   bool
}

type envOpts struct {
	policy   string // policy.toml text; "" = shipped
	sink     smtpsink.Options
	extra    string // appended to latchkey.toml
	noSink   bool
	preStart func(*Server)
	admin    bool // serve the admin API on a free loopback port
	quiet    bool // no log (benchmarks: the test log would hold every line)
}

var userHash = func() string {
	h, _ := bcrypt.GenerateFromPassword([]byte(testPass), bcrypt.MinCost)
	return string(h)
}()

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), records: map[string]string{}, quiet: o.quiet}
	e.dns = dnstest.Start(t, "")
	port := 0
	if !o.noSink {
		so := o.sink
		if so.Addr == "" {
			so.Addr = "127.0.0.2:0"
		}
		so.TLS = true
		e.sink = smtpsink.Start(t, so)
		_, p, _ := net.SplitHostPort(e.sink.Addr)
		fmt.Sscan(p, &port)
	} else {
		port = 1
	}
	if err := e.dns.Add(`
dest.test. 300 IN MX 10 mx.dest.test.
mx.dest.test. 300 IN A 127.0.0.2
backup.test. 300 IN MX 10 mx.dest.test.
`); err != nil {
		t.Fatal(err)
	}
	policyLine := ""
	if o.policy != "" {
		pf := filepath.Join(e.dir, "policy.toml")
		if err := os.WriteFile(pf, []byte(o.policy), 0o600); err != nil {
			t.Fatal(err)
		}
		policyLine = fmt.Sprintf("policy_file = %q\n", pf)
	}
	adminListen := ""
	if o.admin {
		adminListen = "127.0.0.1:0"
	}
	e.cfgText = fmt.Sprintf(`hostname = "relay.test"
data_dir = %q
log_level = "debug"
log_format = "json"
%s
[submission]
listen = ["127.0.0.1:0"]
max_message_bytes = 65536
max_auth_failures = 3
[[submission.users]]
name = %q
password_hash = %q

[inbound]
listen = ["127.0.0.1:0"]

[[domains]]
name = "example.com"
[[domains.dkim]]
selector = "rsa1"
algo = "rsa"
key_file = "dkim/rsa1.pem"
[[domains.dkim]]
selector = "ed1"
algo = "ed25519"
key_file = "dkim/ed1.pem"

[delivery]
resolver = %q
port = %d
insecure_skip_verify = true
connect_timeout = "2s"
command_timeout = "5s"
dns_timeout = "2s"

[admin]
listen = %q
%s`, e.dir, policyLine, testUser, userHash, e.dns.Addr, port, adminListen, o.extra)
	e.start(o.preStart)
	// Publish the keys the relay generated, as an admin would.
	for _, k := range e.srv.cfg.KeyEntries() {
		key, err := dkim.LoadKeyFile(k.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := dkim.PublicRecord(key.Public())
		if err != nil {
			t.Fatal(err)
		}
		if err := e.dns.Add(dkim.ZoneLine(k.Selector, k.Domain, rec)); err != nil {
			t.Fatal(err)
		}
		e.records[k.Selector+"._domainkey."+k.Domain+"."] = rec
	}
	return e
}

// start boots the relay on the env's configuration (again, after stop).
func (e *env) start(pre func(*Server)) {
	t := e.t
	cfg, err := conf.Parse("test.toml", []byte(e.cfgText), false)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	e.cfg = cfg
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	if testing.Verbose() {
		log = log.Level(zerolog.DebugLevel)
	}
	if e.quiet {
		log = zerolog.Nop()
	}
	srv, err := Boot(cfg, log)
	if err != nil {
		t.Fatalf("boot: %v", err)
	}
	if pre != nil {
		pre(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		t.Fatalf("start: %v", err)
	}
	e.srv, e.cancel = srv, cancel
	t.Cleanup(e.stop)
}

func (e *env) stop() {
	if e.srv == nil {
		return
	}
	e.cancel()
	e.srv.Shutdown()
	e.srv = nil
}

func (e *env) submitAddr() string { return e.srv.SubmissionAddrs[0].String() }

// client connects the way Salesforce Email Relay does: plain, EHLO,
// STARTTLS, AUTH (PLAIN or LOGIN).
func (e *env) client(mech string) *smtp.Client {
	e.t.Helper()
	conn, err := net.Dial("tcp", e.submitAddr())
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	var a sasl.Client
	switch mech {
	case "PLAIN":
		a = sasl.NewPlainClient("", testUser, testPass)
	case "LOGIN":
		a = sasl.NewLoginClient(testUser, testPass)
	case "":
		return c
	}
	if err := c.Auth(a); err != nil {
		e.t.Fatalf("auth %s: %v", mech, err)
	}
	return c
}

// send submits msg and returns the reply's error (nil for 250) and text.
func send(c *smtp.Client, from string, to []string, msg []byte) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(msg); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return "", nil
}

// sendID submits msg and returns the queue id from "250 … queued as ID".
func (e *env) sendID(c *smtp.Client, from string, to []string, msg []byte) string {
	e.t.Helper()
	if err := c.Mail(from, nil); err != nil {
		e.t.Fatalf("MAIL: %v", err)
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			e.t.Fatalf("RCPT: %v", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		e.t.Fatalf("DATA: %v", err)
	}
	w.Write(msg)
	resp, err := w.CloseWithResponse()
	if err != nil {
		e.t.Fatalf("end of DATA: %v", err)
	}
	i := strings.LastIndex(resp.StatusText, " as ")
	if i < 0 {
		e.t.Fatalf("reply = %s", resp.StatusText)
	}
	return resp.StatusText[i+4:]
}

// resetMsg is a Salesforce-like password reset.
func resetMsg(to, token string, extra ...string) []byte {
	h := []string{
		"From: Acme Support <noreply@example.com>",
		"To: <" + to + ">",
		"Subject: Reset your password",
		"Date: Sun, 29 Nov 2026 12:00:00 +0000",
		"Message-ID: <" + token + ".abc@sfdc.net>",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"X-SFDC-LK: 00D5g000004ABCDEAA",
		"X-SFDC-User: 0055g00000ABCDEAAB",
		"X-SFDC-EmailCategory: forgotPassword",
		"X-LK-Class: reset",
	}
	h = append(h, extra...)
	body := "Hello,\r\n\r\nReset your password here:\r\nhttps://acme.my.site.com/s/reset?token=" + token + "\r\n\r\nThe link expires in 30 minutes.\r\n"
	return []byte(strings.Join(h, "\r\n") + "\r\n\r\n" + body)
}

// lookupTXT asks the test DNS server, as an independent verifier would.
func (e *env) lookupTXT(name string) (string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	r, err := dns.Exchange(m, e.dns.Addr)
	if err != nil {
		return "", err
	}
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			return strings.Join(txt.Txt, ""), nil
		}
	}
	return "", fmt.Errorf("no TXT at %s", name)
}

// waitFor polls cond until it holds or the time runs out.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// rawSubmit submits body byte for byte (no dot-stuffing, no line-ending
// repair) over STARTTLS + AUTH PLAIN, then sends more commands, and returns
// the reply to the end of DATA followed by the replies to more.
func (e *env) rawSubmit(t *testing.T, body string, more ...string) []string {
	t.Helper()
	conn, err := net.Dial("tcp", e.submitAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	read := func() string { return readReply(tp) }
	cmd := func(l string) string {
		tp.PrintfLine("%s", l)
		return read()
	}
	read()
	cmd("EHLO attacker.test")
	if r := cmd("STARTTLS"); !strings.HasPrefix(r, "220") {
		t.Fatalf("STARTTLS: %s", r)
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tp = textproto.NewConn(tc)
	cmd("EHLO attacker.test")
	if r := cmd("AUTH PLAIN " + plainIR(testUser, testPass)); !strings.HasPrefix(r, "235") {
		t.Fatalf("AUTH: %s", r)
	}
	cmd("MAIL FROM:<noreply@example.com>")
	cmd("RCPT TO:<jane@dest.test>")
	if r := cmd("DATA"); !strings.HasPrefix(r, "354") {
		t.Fatalf("DATA: %s", r)
	}
	tc.Write([]byte(body + "\r\n.\r\n"))
	out := []string{read()}
	for _, m := range more {
		out = append(out, cmd(m))
	}
	return out
}

// readReply reads one (possibly multi-line) SMTP reply and returns its last line.
func readReply(tp *textproto.Conn) string {
	for {
		l, err := tp.ReadLine()
		if err != nil {
			return "EOF: " + err.Error()
		}
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}
