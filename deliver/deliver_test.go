package deliver

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/latchkey/latchkey/testutil/smtpsink"
	"github.com/miekg/dns"
	"github.com/rs/zerolog"
)

const msg = "From: a@sender.test\r\nTo: b@example.test\r\nSubject: reset\r\n\r\nHello.\r\n"

// startSinks starts one sink per address, all on the same port (the
// Deliverer has one port), and returns them with that port.
func startSinks(t testing.TB, opts smtpsink.Options, addrs ...string) ([]*smtpsink.Sink, int) {
	t.Helper()
	for try := 0; try < 20; try++ {
		o := opts
		o.Addr = addrs[0] + ":0"
		first, err := smtpsink.New(o)
		if err != nil {
			t.Fatal(err)
		}
		_, p, _ := net.SplitHostPort(first.Addr)
		port, _ := strconv.Atoi(p)
		sinks := []*smtpsink.Sink{first}
		ok := true
		for _, a := range addrs[1:] {
			o.Addr = net.JoinHostPort(a, p)
			s, err := smtpsink.New(o)
			if err != nil {
				ok = false
				break
			}
			sinks = append(sinks, s)
		}
		if !ok {
			for _, s := range sinks {
				s.Close()
			}
			continue
		}
		for _, s := range sinks {
			t.Cleanup(s.Close)
		}
		return sinks, port
	}
	t.Fatal("no port free on all of", addrs)
	return nil, 0
}

// freePort returns a port that had no listener on addr a moment ago.
func freePort(t testing.TB, addr string) int {
	t.Helper()
	l, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testConfig(dnsAddr string, port int) Config {
	cfg := DefaultConfig()
	cfg.Hostname = "relay.latchkey.test"
	cfg.Resolver = dnsAddr
	cfg.Port = port
	cfg.ConnectTimeout = 2 * time.Second
	cfg.CommandTimeout = 5 * time.Second
	cfg.DataTimeout = 5 * time.Second
	cfg.DNSTimeout = time.Second
	return cfg
}

func newDeliverer(t testing.TB, cfg Config) *Deliverer {
	t.Helper()
	d, err := New(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func deliver1(t testing.TB, d *Deliverer, rcpts ...string) []Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := d.Deliver(ctx, "b+1.x@bounce.sender.test", rcpts, []byte(msg))
	if len(res) != len(rcpts) {
		t.Fatalf("%d results for %d recipients", len(res), len(rcpts))
	}
	for i, r := range res {
		if r.Rcpt != rcpts[i] {
			t.Fatalf("result %d is for %q, want %q", i, r.Rcpt, rcpts[i])
		}
		t.Log(r)
	}
	return res
}

func wantDelivered(t *testing.T, r Result) {
	t.Helper()
	if !r.Delivered || r.Permanent || r.Code != 250 || r.Err != nil {
		t.Fatalf("want delivered, got %s", r)
	}
}

func wantTemporary(t *testing.T, r Result) {
	t.Helper()
	if r.Delivered || r.Permanent || r.Code/100 != 4 {
		t.Fatalf("want a temporary failure, got %s", r)
	}
}

func wantPermanent(t *testing.T, r Result, code int, enhanced string) {
	t.Helper()
	if r.Delivered || !r.Permanent || r.Code != code || r.Enhanced != enhanced {
		t.Fatalf("want permanent %d %s, got %s", code, enhanced, r)
	}
}

func TestMXPreferenceAndFallback(t *testing.T) {
	sinks, port := startSinks(t, smtpsink.Options{}, "127.0.0.2", "127.0.0.3")
	mx1, mx2 := sinks[0], sinks[1]
	dnss := dnstest.Start(t, `
example.test. 300 IN MX 20 mx2.example.test.
example.test. 300 IN MX 10 mx1.example.test.
mx1.example.test. 300 IN A 127.0.0.2
mx2.example.test. 300 IN A 127.0.0.3
`)
	cfg := testConfig(dnss.Addr, port)
	cfg.MaxIdle = 0 // every message makes its own choice of host
	d := newDeliverer(t, cfg)
	for i := 0; i < 5; i++ {
		r := deliver1(t, d, fmt.Sprintf("u%d@example.test", i))
		wantDelivered(t, r[0])
		if r[0].Host != "mx1.example.test" || r[0].IP != "127.0.0.2" {
			t.Fatalf("delivered via %s [%s], want mx1 (preference 10)", r[0].Host, r[0].IP)
		}
	}
	if mx1.Count() != 5 || mx2.Count() != 0 {
		t.Fatalf("mx1 got %d, mx2 got %d; want 5 and 0", mx1.Count(), mx2.Count())
	}

	mx1.Close() // connections to mx1 are now refused
	r := deliver1(t, d, "late@example.test")
	wantDelivered(t, r[0])
	if r[0].Host != "mx2.example.test" || mx2.Count() != 1 {
		t.Fatalf("after mx1 went down: via %s, mx2 count %d", r[0].Host, mx2.Count())
	}
}

func TestEqualPreferencesShuffled(t *testing.T) {
	dnss := dnstest.Start(t, `
spread.test. 300 IN MX 10 a.spread.test.
spread.test. 300 IN MX 10 b.spread.test.
spread.test. 300 IN MX 5 first.spread.test.
spread.test. 300 IN MX 20 last.spread.test.
`)
	res, err := NewResolver(dnss.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i := 0; i < 64 && len(seen) < 2; i++ {
		mxs, err := res.LookupMX(context.Background(), "spread.test")
		if err != nil {
			t.Fatal(err)
		}
		if len(mxs) != 4 || mxs[0].Host != "first.spread.test" || mxs[3].Host != "last.spread.test" {
			t.Fatalf("order %v", mxs)
		}
		seen[mxs[1].Host] = true
	}
	if len(seen) != 2 {
		t.Fatalf("equal-preference hosts never swapped in 64 look-ups: %v", seen)
	}
}

func TestImplicitMX(t *testing.T) {
	sinks, port := startSinks(t, smtpsink.Options{}, "127.0.0.4")
	dnss := dnstest.Start(t, "bare.test. 300 IN A 127.0.0.4\n")
	d := newDeliverer(t, testConfig(dnss.Addr, port))
	r := deliver1(t, d, "x@bare.test")
	wantDelivered(t, r[0])
	if r[0].Host != "bare.test" || sinks[0].Count() != 1 {
		t.Fatalf("host %q, sink count %d", r[0].Host, sinks[0].Count())
	}
	// Neither MX nor address records: no mail for that domain.
	dnss.Add("empty.test. 300 IN TXT \"v=spf1 -all\"\n")
	r = deliver1(t, d, "x@empty.test")
	wantPermanent(t, r[0], 550, "5.1.2")
}

func TestNullMX(t *testing.T) {
	dnss := dnstest.Start(t, "nomail.test. 300 IN MX 0 .\nnomail.test. 300 IN A 127.0.0.5\n")
	d := newDeliverer(t, testConfig(dnss.Addr, freePort(t, "127.0.0.5")))
	r := deliver1(t, d, "x@nomail.test", "y@nomail.test")
	wantPermanent(t, r[0], 556, "5.1.10")
	wantPermanent(t, r[1], 556, "5.1.10")
}

func TestNXDOMAIN(t *testing.T) {
	dnss := dnstest.Start(t, "other.test. 300 IN MX 10 mx.other.test.\n")
	d := newDeliverer(t, testConfig(dnss.Addr, 2525))
	r := deliver1(t, d, "x@missing.test")
	wantPermanent(t, r[0], 550, "5.1.2")
	if r[0].Err == nil {
		t.Fatal("no error for NXDOMAIN")
	}
}

func TestDNSFailuresAreTemporary(t *testing.T) {
	dnss := dnstest.Start(t, `
broken.test. 300 IN MX 10 mx.broken.test.
slow.test. 300 IN MX 10 mx.slow.test.
hostfail.test. 300 IN MX 10 mx.hostfail.test.
`)
	dnss.Fail("broken.test.", dns.RcodeServerFailure)
	dnss.Fail("mx.hostfail.test.", dns.RcodeServerFailure)
	dnss.Delay("slow.test.", 500*time.Millisecond)
	cfg := testConfig(dnss.Addr, 2525)
	cfg.DNSTimeout = 100 * time.Millisecond
	d := newDeliverer(t, cfg)
	for _, rcpt := range []string{"x@broken.test", "x@slow.test", "x@hostfail.test"} {
		r := deliver1(t, d, rcpt)
		wantTemporary(t, r[0])
		if r[0].Enhanced != "4.4.3" || r[0].Err == nil {
			t.Fatalf("%s: want 4.4.3 with an error, got %s", rcpt, r[0])
		}
	}
}

// domainSetup starts sinks for example.test with one MX and returns them and
// a Deliverer configured by mod.
func domainSetup(t *testing.T, opts smtpsink.Options, mod func(*Config)) (*smtpsink.Sink, *Deliverer) {
	t.Helper()
	sinks, port := startSinks(t, opts, "127.0.0.6")
	dnss := dnstest.Start(t, "example.test. 300 IN MX 10 mx.example.test.\nmx.example.test. 300 IN A 127.0.0.6\n")
	cfg := testConfig(dnss.Addr, port)
	if mod != nil {
		mod(&cfg)
	}
	return sinks[0], newDeliverer(t, cfg)
}

func TestRcptRejectionIsPerRecipient(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{Rcpt: func(rcpt string) *smtp.SMTPError {
		if strings.HasPrefix(rcpt, "nobody@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}}, nil)
	r := deliver1(t, d, "alice@example.test", "nobody@example.test")
	wantDelivered(t, r[0])
	wantPermanent(t, r[1], 550, "5.1.1")
	if r[1].Text != "no such user" || r[1].Err != nil {
		t.Fatalf("rejection text %q err %v", r[1].Text, r[1].Err)
	}
	msgs := sink.Wait(1, 5*time.Second)
	if len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0] != "alice@example.test" {
		t.Fatalf("sink got %+v", msgs)
	}

	// All recipients refused: nothing sent, and the connection (with an RSET)
	// still serves the next message.
	r = deliver1(t, d, "nobody@example.test")
	wantPermanent(t, r[0], 550, "5.1.1")
	wantDelivered(t, deliver1(t, d, "bob@example.test")[0])
	if sink.Count() != 2 || sink.Conns() != 1 {
		t.Fatalf("count %d conns %d, want 2 and 1", sink.Count(), sink.Conns())
	}
}

func TestRcpt452IsTemporary(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{Rcpt: func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
	}}, nil)
	r := deliver1(t, d, "full@example.test")
	wantTemporary(t, r[0])
	if r[0].Code != 452 || r[0].Enhanced != "4.2.2" || sink.Count() != 0 {
		t.Fatalf("got %s, sink count %d", r[0], sink.Count())
	}
}

func TestDataRejectionIsForAll(t *testing.T) {
	_, d := domainSetup(t, smtpsink.Options{Data: func(string, []string, []byte) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam"}
	}}, nil)
	r := deliver1(t, d, "a@example.test", "b@example.test")
	wantPermanent(t, r[0], 554, "5.7.1")
	wantPermanent(t, r[1], 554, "5.7.1")
}

func TestMailFrom5xxIsPermanent(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{Mail: func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"}
	}}, nil)
	r := deliver1(t, d, "a@example.test", "b@example.test")
	wantPermanent(t, r[0], 550, "5.7.1")
	wantPermanent(t, r[1], 550, "5.7.1")
	if sink.Count() != 0 {
		t.Fatal("a message went through a refused MAIL FROM")
	}
}

func TestMailFrom4xxTriesNextHostThenDefers(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{Mail: func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted"}
	}}, nil)
	r := deliver1(t, d, "a@example.test")
	wantTemporary(t, r[0])
	if r[0].Code != 451 || r[0].Enhanced != "4.7.1" || sink.Count() != 0 {
		t.Fatalf("got %s", r[0])
	}
}

func TestSenderWithLineBreakIsNotSent(t *testing.T) {
	// go-smtp refuses to write a command with CR/LF; that is a local error,
	// not a server's verdict, so it must not turn into a bounce.
	sink, d := domainSetup(t, smtpsink.Options{}, nil)
	res := d.Deliver(context.Background(), "evil\r\nRCPT TO:<x@y>", []string{"a@example.test"}, []byte(msg))
	wantTemporary(t, res[0])
	if sink.Count() != 0 || sink.MaxConcurrent() != 0 {
		t.Fatal("the sink saw a transaction")
	}
}

func TestSTARTTLS(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{TLS: true, CertNames: []string{"mx.example.test"}}, nil)
	r := deliver1(t, d, "a@example.test")
	wantDelivered(t, r[0])
	msgs := sink.Wait(1, 5*time.Second)
	if len(msgs) != 1 || !msgs[0].TLS {
		t.Fatalf("sink did not see TLS: %+v", msgs)
	}
	if r[0].TLS != "TLS1.3" || r[0].TLSVerified {
		t.Fatalf("TLS %q verified %v; want TLS1.3, unverified (self-signed)", r[0].TLS, r[0].TLSVerified)
	}

	// The same sink, with its certificate trusted, verifies.
	d2 := newDeliverer(t, d.cfg)
	d2.roots = sink.CertPool
	r = deliver1(t, d2, "b@example.test")
	wantDelivered(t, r[0])
	if !r[0].TLSVerified {
		t.Fatalf("certificate did not verify with its CA trusted: %s", r[0])
	}
}

func TestTLSVerifyRefusesBadCertificate(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{TLS: true}, func(c *Config) { c.TLS = TLSVerify })
	r := deliver1(t, d, "a@example.test")
	wantTemporary(t, r[0])
	if r[0].Enhanced != "4.7.5" || sink.Count() != 0 {
		t.Fatalf("got %s, sink count %d", r[0], sink.Count())
	}
}

func TestTLSRequiredWithoutSTARTTLS(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{TLS: false}, func(c *Config) { c.TLS = TLSRequired })
	r := deliver1(t, d, "a@example.test")
	wantTemporary(t, r[0])
	if r[0].Enhanced != "4.7.10" {
		t.Fatalf("got %s, want 4.7.10", r[0])
	}
	// Not even MAIL FROM went out in clear.
	if sink.Count() != 0 || sink.MaxConcurrent() != 0 {
		t.Fatalf("sink saw %d messages, %d transactions", sink.Count(), sink.MaxConcurrent())
	}
}

func TestConnectionReuse(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{TLS: true}, nil)
	for i := 0; i < 20; i++ {
		wantDelivered(t, deliver1(t, d, fmt.Sprintf("u%d@example.test", i))[0])
	}
	msgs := sink.Wait(20, 5*time.Second)
	if len(msgs) != 20 || sink.Conns() != 1 {
		t.Fatalf("%d messages over %d connections; want 20 over 1", len(msgs), sink.Conns())
	}
	for _, m := range msgs {
		if !m.TLS {
			t.Fatal("a reused connection lost TLS")
		}
	}
}

func TestMaxMessagesPerConn(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{}, func(c *Config) { c.MaxMessagesPerConn = 3 })
	for i := 0; i < 7; i++ {
		wantDelivered(t, deliver1(t, d, "u@example.test")[0])
	}
	if sink.Conns() != 3 {
		t.Fatalf("7 messages at 3 per connection used %d connections, want 3", sink.Conns())
	}
}

func TestPooledConnectionClosedByServer(t *testing.T) {
	sinks, port := startSinks(t, smtpsink.Options{}, "127.0.0.7")
	dnss := dnstest.Start(t, "example.test. 300 IN MX 10 mx.example.test.\nmx.example.test. 300 IN A 127.0.0.7\n")
	d := newDeliverer(t, testConfig(dnss.Addr, port))
	wantDelivered(t, deliver1(t, d, "a@example.test")[0])
	if d.pool.idleCount() != 1 {
		t.Fatalf("%d idle connections, want 1", d.pool.idleCount())
	}
	sinks[0].Close() // drops the pooled connection
	again, err := smtpsink.New(smtpsink.Options{Addr: sinks[0].Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	wantDelivered(t, deliver1(t, d, "b@example.test")[0])
	if again.Count() != 1 {
		t.Fatalf("restarted sink got %d messages", again.Count())
	}
}

func TestPerDomainLimit(t *testing.T) {
	const limit, n = 3, 12
	sink, d := domainSetup(t, smtpsink.Options{TLS: true, Delay: 100 * time.Millisecond},
		func(c *Config) { c.MaxPerDomain = limit })
	var wg sync.WaitGroup
	results := make([][]Result, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = d.Deliver(context.Background(), "s@sender.test", []string{fmt.Sprintf("u%d@example.test", i)}, []byte(msg))
		}()
	}
	wg.Wait()
	for _, r := range results {
		wantDelivered(t, r[0])
	}
	t.Logf("max concurrent transactions %d, max open connections %d, connections %d",
		sink.MaxConcurrent(), sink.MaxOpenConns(), sink.Conns())
	if sink.MaxConcurrent() > limit || sink.MaxOpenConns() > limit {
		t.Fatalf("limit %d exceeded: %d transactions, %d connections at once", limit, sink.MaxConcurrent(), sink.MaxOpenConns())
	}
	if sink.MaxConcurrent() < 2 {
		t.Fatalf("deliveries never overlapped (max %d): the test proves nothing", sink.MaxConcurrent())
	}
}

func TestDomainSlotWaitRespectsContext(t *testing.T) {
	entered := make(chan struct{})
	unblock := make(chan struct{})
	var once sync.Once
	sink, d := domainSetup(t, smtpsink.Options{Data: func(string, []string, []byte) *smtp.SMTPError {
		once.Do(func() { close(entered); <-unblock })
		return nil
	}}, func(c *Config) { c.MaxPerDomain = 1 })
	first := make(chan []Result)
	go func() {
		first <- d.Deliver(context.Background(), "s@sender.test", []string{"a@example.test"}, []byte(msg))
	}()
	<-entered // the only slot is now held
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	r := d.Deliver(ctx, "s@sender.test", []string{"b@example.test"}, []byte(msg))
	cancel()
	wantTemporary(t, r[0])
	if r[0].Err == nil || r[0].Enhanced != "4.4.7" {
		t.Fatalf("got %s", r[0])
	}
	close(unblock)
	wantDelivered(t, (<-first)[0])
	if sink.Count() != 1 {
		t.Fatalf("sink count %d", sink.Count())
	}
}

func TestDroppedMidData(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{DropMidData: true}, nil)
	r := deliver1(t, d, "a@example.test")
	wantTemporary(t, r[0])
	if r[0].Err == nil || sink.Count() != 0 {
		t.Fatalf("got %s, sink count %d", r[0], sink.Count())
	}
	// The broken connection was not pooled; the next message gets a new one.
	sink.SetDropMidData(false)
	wantDelivered(t, deliver1(t, d, "b@example.test")[0])
	if sink.Conns() != 2 {
		t.Fatalf("conns %d, want 2", sink.Conns())
	}
}

func TestDroppedAfterData(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{Data: func(string, []string, []byte) *smtp.SMTPError {
		return smtpsink.ErrDrop
	}}, nil)
	r := deliver1(t, d, "a@example.test")
	wantTemporary(t, r[0])
	if r[0].Enhanced != "4.4.2" || r[0].Err == nil || sink.Count() != 0 {
		t.Fatalf("got %s", r[0])
	}
}

func TestBadRecipients(t *testing.T) {
	_, d := domainSetup(t, smtpsink.Options{}, nil)
	r := deliver1(t, d, "a@example.test", "nodomain", "c@other.test")
	wantDelivered(t, r[0])
	wantPermanent(t, r[1], 553, "5.1.3")
	wantTemporary(t, r[2])
}

func TestCancelledContext(t *testing.T) {
	_, d := domainSetup(t, smtpsink.Options{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := d.Deliver(ctx, "s@sender.test", []string{"a@example.test"}, []byte(msg))
	wantTemporary(t, r[0])
	if r[0].Err == nil {
		t.Fatal("no error for a cancelled delivery")
	}
}

func TestResultString(t *testing.T) {
	r := Result{Rcpt: "a@x.test", Permanent: true, Code: 550, Enhanced: "5.1.1", Text: "no\nsuch", Host: "mx.x.test", IP: "127.0.0.2", TLS: "TLS1.3"}
	if got, want := r.String(), "a@x.test: failed: 550 5.1.1 no such (mx.x.test [127.0.0.2] TLS1.3)"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

func TestOpportunisticFallsBackToClearOnHandshakeFailure(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{BrokenTLS: true}, nil)
	r := deliver1(t, d, "a@example.test")
	wantDelivered(t, r[0])
	if r[0].TLS != "none" || sink.Conns() != 2 {
		t.Fatalf("TLS %q over %d connections; want none over 2", r[0].TLS, sink.Conns())
	}
}

func TestRequiredDefersOnHandshakeFailure(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{BrokenTLS: true}, func(c *Config) { c.TLS = TLSRequired })
	r := deliver1(t, d, "a@example.test")
	wantTemporary(t, r[0])
	if r[0].Enhanced != "4.7.5" || sink.Count() != 0 || sink.MaxConcurrent() != 0 {
		t.Fatalf("got %s, sink count %d", r[0], sink.Count())
	}
}

func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

func TestIdleTimeoutDropsOldConnections(t *testing.T) {
	sink, d := domainSetup(t, smtpsink.Options{}, nil)
	wantDelivered(t, deliver1(t, d, "a@example.test")[0])
	d.pool.mu.Lock()
	for _, list := range d.pool.idle {
		for _, cn := range list {
			cn.idleSince = time.Now().Add(-time.Hour)
		}
	}
	d.pool.mu.Unlock()
	wantDelivered(t, deliver1(t, d, "b@example.test")[0])
	if sink.Conns() != 2 {
		t.Fatalf("a connection idle past idle_timeout was reused (%d connections)", sink.Conns())
	}
}
