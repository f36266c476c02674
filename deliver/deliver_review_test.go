package deliver

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/latchkey/latchkey/testutil/smtpsink"
	"github.com/miekg/dns"
)

// scriptedMX is a hand-driven SMTP server on loopback for dialogues the sink
// cannot produce (a refused STARTTLS, missing extensions). reply may answer a
// command line itself; "" leaves it to the defaults.
type scriptedMX struct {
	l     net.Listener
	port  int
	reply func(line string) string
	ehlo  string // extension lines after the first EHLO line
	greet string // the greeting; "" is a 220

	mu    sync.Mutex
	lines []string // commands received
	msgs  int      // messages accepted
}

func startScriptedPort(t *testing.T, ip string, port int) *scriptedMX {
	t.Helper()
	return startScriptedAt(t, net.JoinHostPort(ip, strconv.Itoa(port)), "", "scripted", nil)
}

func startScripted(t *testing.T, ip, ehlo string, reply func(string) string) *scriptedMX {
	t.Helper()
	return startScriptedAt(t, ip+":0", "", ehlo, reply)
}

func startScriptedAt(t *testing.T, addr, greet, ehlo string, reply func(string) string) *scriptedMX {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedMX{l: l, port: l.Addr().(*net.TCPAddr).Port, reply: reply, ehlo: ehlo, greet: greet}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); s.serve(c) }()
		}
	}()
	return s
}

func (s *scriptedMX) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(l string) { c.Write([]byte(l + "\r\n")) }
	if s.greet != "" {
		say(s.greet)
		if !strings.HasPrefix(s.greet, "220") {
			// RFC 5321 3.1: after a refusal only QUIT is expected.
			if line, _ := r.ReadString('\n'); line != "" {
				s.mu.Lock()
				s.lines = append(s.lines, strings.TrimRight(line, "\r\n"))
				s.mu.Unlock()
				say("221 bye")
			}
			return
		}
	}
	say("220 scripted ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		s.lines = append(s.lines, line)
		s.mu.Unlock()
		if s.reply != nil {
			if rep := s.reply(line); rep != "" {
				say(rep)
				continue
			}
		}
		verb, _, _ := strings.Cut(strings.ToUpper(line), " ")
		switch verb {
		case "EHLO":
			ext := strings.Split(s.ehlo, "\n")
			for i, e := range ext {
				if i == len(ext)-1 {
					say("250 " + e)
				} else {
					say("250-" + e)
				}
			}
		case "DATA":
			say("354 go on")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			s.mu.Lock()
			s.msgs++
			s.mu.Unlock()
			say("250 2.0.0 queued")
		case "QUIT":
			say("221 bye")
			return
		default:
			say("250 ok")
		}
	}
}

func (s *scriptedMX) saw(prefix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if strings.HasPrefix(strings.ToUpper(l), prefix) {
			return true
		}
	}
	return false
}

func (s *scriptedMX) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgs
}

// RFC 5321 4.5.3.1.10: a 552 to RCPT (too many recipients, or storage) is to
// be treated as temporary, like 452; bouncing a reset on it is wrong.
func TestReviewRcpt552IsTemporary(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{Rcpt: func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "mailbox full"}
	}}, nil)
	r := deliver1(t, d, "full@example.test")
	wantTemporary(t, r[0])
	if sink.Count() != 0 {
		t.Fatalf("sink count %d", sink.Count())
	}
}

// A 552 after DATA (message too big) stays permanent.
func TestReviewData552IsPermanent(t *testing.T) {
	_, d := domainSetup(t, smtpsink.Options{Data: func(string, []string, []byte) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "too big"}
	}}, nil)
	wantPermanent(t, deliver1(t, d, "a@example.test")[0], 552, "5.3.4")
}

func scriptedSetup(t *testing.T, ip, ehlo string, reply func(string) string, mod func(*Config)) (*scriptedMX, *Deliverer) {
	t.Helper()
	s := startScripted(t, ip, ehlo, reply)
	dnss := dnstest.Start(t, "example.test. 300 IN MX 10 mx.example.test.\nmx.example.test. 300 IN A "+ip+"\n")
	cfg := testConfig(dnss.Addr, s.port)
	if mod != nil {
		mod(&cfg)
	}
	return s, newDeliverer(t, cfg)
}

func refuseSTARTTLS(line string) string {
	if strings.EqualFold(line, "STARTTLS") {
		return "454 4.7.0 TLS not available due to temporary reason"
	}
	return ""
}

// A server that offers STARTTLS and then refuses it: under opportunistic the
// message goes in clear (the session is still usable), as Postfix does;
// otherwise every such MX defers the reset until its cut-off.
func TestReviewSTARTTLSRefusedOpportunisticSendsInClear(t *testing.T) {
	s, d := scriptedSetup(t, "127.0.0.21", "scripted\nSTARTTLS\n8BITMIME", refuseSTARTTLS, nil)
	r := deliver1(t, d, "a@example.test")
	wantDelivered(t, r[0])
	if r[0].TLS != "none" || s.count() != 1 {
		t.Fatalf("TLS %q, %d messages", r[0].TLS, s.count())
	}
}

func TestReviewSTARTTLSRefusedRequiredNeverInClear(t *testing.T) {
	for _, pol := range []string{TLSRequired, TLSVerify} {
		s, d := scriptedSetup(t, "127.0.0.22", "scripted\nSTARTTLS", refuseSTARTTLS, func(c *Config) { c.TLS = pol })
		r := deliver1(t, d, "a@example.test")
		wantTemporary(t, r[0])
		if s.saw("MAIL") || s.count() != 0 {
			t.Fatalf("%s: MAIL sent in clear after a refused STARTTLS", pol)
		}
	}
}

// maxAddrs ends the attempt: hosts past the limit are not looked up, and
// the result describes the last address tried, not a later host's DNS.
func TestReviewMaxAddrsStopsLookingUp(t *testing.T) {
	port := freePort(t, "127.0.0.23")
	var zone strings.Builder
	for i := 1; i <= maxAddrs+1; i++ {
		zone.WriteString("many.test. 300 IN MX " + strconv.Itoa(i) + " mx" + strconv.Itoa(i) + ".many.test.\n")
		zone.WriteString("mx" + strconv.Itoa(i) + ".many.test. 300 IN A 127.0.0.23\n")
	}
	dnss := dnstest.Start(t, zone.String())
	last := "mx" + strconv.Itoa(maxAddrs+1) + ".many.test"
	dnss.Fail(last+".", dns.RcodeServerFailure)
	d := newDeliverer(t, testConfig(dnss.Addr, port))
	r := deliver1(t, d, "x@many.test")
	wantTemporary(t, r[0])
	if r[0].Host == last || r[0].Enhanced == "4.4.3" {
		t.Fatalf("result after %d refused addresses describes the host past the limit: %s", maxAddrs, r[0])
	}
	if want := "mx" + strconv.Itoa(maxAddrs) + ".many.test"; r[0].Host != want {
		t.Fatalf("host %q, want %q", r[0].Host, want)
	}
}

// An MX whose target is an IP address is not a host name (RFC 5321 2.3.5,
// 5.1); Postfix and Exim refuse to use it, and it must not steer mail to an
// address of the domain owner's choosing without a name.
func TestReviewMXToIPLiteralIsNotUsed(t *testing.T) {
	sinks, port := startSinks(t, smtpsink.Options{}, "127.0.0.24")
	dnss := dnstest.Start(t, "lit.test. 300 IN MX 10 127.0.0.24.\n")
	d := newDeliverer(t, testConfig(dnss.Addr, port))
	r := deliver1(t, d, "x@lit.test")
	if r[0].Delivered || sinks[0].Count() != 0 {
		t.Fatalf("delivered to an MX given as an IP literal: %s", r[0])
	}
	wantTemporary(t, r[0])
}

// A non-ASCII address needs SMTPUTF8 (RFC 6531 3.4). An MX that does not
// offer it can never take the message: retrying until the cut-off only
// delays the bounce (and the escalation of a reset). Postfix bounces with
// 5.6.7 at once.
func TestReviewSMTPUTF8NotOfferedIsPermanent(t *testing.T) {
	s, d := scriptedSetup(t, "127.0.0.25", "scripted\n8BITMIME", nil, nil)
	r := deliver1(t, d, "jos\u00e9@example.test")
	if r[0].Delivered || !r[0].Permanent || r[0].Enhanced != "5.6.7" {
		t.Fatalf("want a permanent 5.6.7, got %s", r[0])
	}
	if s.saw("MAIL") {
		t.Fatal("MAIL sent without SMTPUTF8")
	}
	// ASCII recipients of the same MX are not affected.
	wantDelivered(t, deliver1(t, d, "jose@example.test")[0])
}

// A domain written in Unicode (IDN) is looked up by its A-label (RFC 5890);
// the raw UTF-8 name does not exist in the DNS, and the reset bounced as
// "domain does not exist". An ASCII local part needs no SMTPUTF8 then.
func TestReviewIDNDomain(t *testing.T) {
	s := startScripted(t, "127.0.0.26", "scripted\n8BITMIME", nil)
	dnss := dnstest.Start(t, "xn--bcher-kva.test. 300 IN MX 10 mx.xn--bcher-kva.test.\nmx.xn--bcher-kva.test. 300 IN A 127.0.0.26\n")
	d := newDeliverer(t, testConfig(dnss.Addr, s.port))
	r := deliver1(t, d, "jose@b\u00fccher.test")
	wantDelivered(t, r[0])
	if !s.saw("RCPT TO:<JOSE@XN--BCHER-KVA.TEST>") {
		t.Fatalf("RCPT not sent with the A-label: %q", s.lines)
	}
}

func TestReviewToASCII(t *testing.T) {
	for in, want := range map[string]string{
		"b\u00fccher.test":     "xn--bcher-kva.test",
		"M\u00fcnchen.de":      "xn--mnchen-3ya.de",
		"\u4e2d\u56fd":         "xn--fiqs8s",
		"mail.example.test":    "mail.example.test",
		"caf\u00e9.example.fr": "xn--caf-dma.example.fr",
	} {
		if got, err := toASCII(in); err != nil || got != want {
			t.Errorf("toASCII(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := toASCII("bad\xffname.test"); err == nil {
		t.Error("invalid UTF-8 accepted")
	}
}

func FuzzReviewToASCII(f *testing.F) {
	for _, s := range []string{"b\u00fccher.test", "\u4e2d\u56fd", "", ".", "a..b", "\U0010ffff", "x\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := toASCII(s)
		if err == nil && !isASCII(out) {
			t.Fatalf("toASCII(%q) = %q, not ASCII", s, out)
		}
	})
}

// A 554 greeting (RFC 5321 3.1: no SMTP service here) is temporary and the
// next MX is tried.
func TestReviewGreeting554TriesNextMX(t *testing.T) {
	bad := startScriptedAt(t, "127.0.0.27:0", "554 5.7.1 no service for you", "scripted", nil)
	good := startScriptedPort(t, "127.0.0.28", bad.port)
	dnss := dnstest.Start(t, "g.test. 300 IN MX 10 bad.g.test.\ng.test. 300 IN MX 20 good.g.test.\n"+
		"bad.g.test. 300 IN A 127.0.0.27\ngood.g.test. 300 IN A 127.0.0.28\n")
	cfg := testConfig(dnss.Addr, bad.port)
	cfg.MaxIdle = 0
	d := newDeliverer(t, cfg)
	r := deliver1(t, d, "x@g.test")
	wantDelivered(t, r[0])
	if r[0].Host != "good.g.test" || good.count() != 1 {
		t.Fatalf("via %s, good got %d", r[0].Host, good.count())
	}
	good.l.Close()
	r = deliver1(t, d, "y@g.test")
	wantTemporary(t, r[0])
	if bad.saw("EHLO") || bad.saw("MAIL") {
		t.Fatal("commands other than QUIT sent after a 554 greeting")
	}
}

// A deferral after STARTTLS (a 451 to MAIL) happened over TLS; the result,
// which the audit trail's attempt event records, said "none".
func TestReviewDeferralAfterTLSKeepsTLS(t *testing.T) {
	_, d := domainSetup(t, smtpsink.Options{TLS: true, Mail: func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "try later"}
	}}, nil)
	r := deliver1(t, d, "a@example.test")
	wantTemporary(t, r[0])
	if r[0].TLS == "none" || r[0].TLS == "" {
		t.Fatalf("TLS %q after a deferral over STARTTLS", r[0].TLS)
	}
}

// A transaction must not start once the delivery's context has ended (the
// cut-off): closing the connection from context.AfterFunc races with the
// MAIL command already being written.
func TestReviewNoTransactionAfterCutoff(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{}, nil)
	for i := 0; i < 10; i++ {
		cn, err := d.dial(context.Background(), "mx.example.test", "127.0.0.6", TLSOpportunistic)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rcpts := []string{"late@example.test"}
		results := make([]Result, 1)
		aerr, keep := d.transact(ctx, cn, "b@bounce.sender.test", rcpts, []int{0}, []byte(msg), results)
		cn.raw.Close()
		if aerr == nil || keep || results[0].Delivered {
			t.Fatalf("try %d: a transaction ran after the context ended: %v keep=%v %s", i, aerr, keep, results[0])
		}
	}
	if sink.Count() != 0 {
		t.Fatalf("%d messages delivered after the cut-off", sink.Count())
	}
}
