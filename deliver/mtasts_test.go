package deliver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/latchkey/latchkey/testutil/smtpsink"
	"github.com/miekg/dns"
)

func TestParseSTSRecord(t *testing.T) {
	for _, tc := range []struct {
		in, id, err string
	}{
		{"v=STSv1; id=20160831085700Z;", "20160831085700Z", ""},
		{"v=STSv1;id=abc", "abc", ""},
		{"v=STSv1 ;\tid=abc ; ", "abc", ""},
		{"v=STSv1; ext_1.x=v:a/l; id=abc;", "abc", ""},
		{"v=STSv1; id=" + strings.Repeat("a", 32), strings.Repeat("a", 32), ""},
		{"v=STSv1; id=" + strings.Repeat("a", 33), "", "not 1-32"},
		{"v=STSv1; id=ab-c", "", "not 1-32"},
		{"v=STSv1; id=", "", "bad field"},
		{"v=STSv1;", "", "no id"},
		{"v=STSv1", "", "no id"},
		{"v=STSv1; id=a; id=b", "", "more than one id"},
		{"v=STSv1;; id=a", "", "empty field"},
		{"v=STSv1; id=a;;", "", "empty field"},
		{"v=STSv1; junk; id=a", "", "bad field"},
		{"v=STSv1; =x; id=a", "", "bad field"},
		{"v=STSv1; -x=y; id=a", "", "bad field"},
		{"v=STSv1; x=a b; id=a", "", "bad field"},
		{"v=STSv1; x=a=b; id=a", "", "bad field"},
		{"v=stsv1; id=a", "", "does not start"},
		{"v=STSv2; id=a", "", "does not start"},
		{" v=STSv1; id=a", "", "does not start"},
		{"", "", "does not start"},
	} {
		id, err := ParseSTSRecord(tc.in)
		if tc.err == "" {
			if err != nil || id != tc.id {
				t.Errorf("ParseSTSRecord(%q) = %q, %v; want %q", tc.in, id, err, tc.id)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "deliver: ") {
			t.Errorf("ParseSTSRecord(%q) = %q, %v; want an error with %q", tc.in, id, err, tc.err)
		}
	}
}

func TestSTSRecordID(t *testing.T) {
	for _, tc := range []struct {
		txts []string
		id   string
		err  string
	}{
		{[]string{"v=spf1 -all", "v=STSv1; id=one"}, "one", ""},
		{[]string{"v=STSv1; id=one", "v=STSv1; id=two"}, "", "2 records"},
		{[]string{"v=spf1 -all"}, "", "none"},
		{nil, "", "none"},
		{[]string{"v=STSv10; id=x"}, "", "none"}, // not "v=STSv1;"
		{[]string{"v=STSv1; id=bad!"}, "", "not 1-32"},
	} {
		id, err := stsRecordID(tc.txts)
		if tc.err == "" {
			if err != nil || id != tc.id {
				t.Errorf("%q: %q, %v; want %q", tc.txts, id, err, tc.id)
			}
		} else if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %q, %v; want an error with %q", tc.txts, id, err, tc.err)
		}
	}
}

func TestParseSTSPolicy(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     *STSPolicy
		err      string
	}{
		{"rfc example", "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n",
			&STSPolicy{Mode: STSEnforce, MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}, MaxAge: 604800 * time.Second}, ""},
		{"crlf, no final newline", "version: STSv1\r\nmode: testing\r\nmx: MX.Example.COM.\r\nmax_age: 86400",
			&STSPolicy{Mode: STSTesting, MX: []string{"mx.example.com"}, MaxAge: 86400 * time.Second}, ""},
		{"spaces and blank lines", "\nversion:STSv1  \n\nmode:\tenforce\nmx:   a.test\t\nmax_age: 0\n\n",
			&STSPolicy{Mode: STSEnforce, MX: []string{"a.test"}, MaxAge: 0}, ""},
		{"none needs no mx", "version: STSv1\nmode: none\nmax_age: 31557600\n",
			&STSPolicy{Mode: STSNone, MaxAge: 31557600 * time.Second}, ""},
		{"unknown keys ignored, first wins", "version: STSv1\nmode: testing\nmode: enforce\nx-future: 1\nmx: a.test\nmax_age: 10\nmax_age: 20\n",
			&STSPolicy{Mode: STSTesting, MX: []string{"a.test"}, MaxAge: 10 * time.Second}, ""},
		{"no version", "mode: enforce\nmx: a.test\nmax_age: 1\n", nil, "version \"\""},
		{"bad version", "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n", nil, "want STSv1"},
		{"no mode", "version: STSv1\nmx: a.test\nmax_age: 1\n", nil, "no mode"},
		{"bad mode", "version: STSv1\nmode: Enforce\nmx: a.test\nmax_age: 1\n", nil, "is not enforce"},
		{"enforce without mx", "version: STSv1\nmode: enforce\nmax_age: 1\n", nil, "without mx"},
		{"testing without mx", "version: STSv1\nmode: testing\nmax_age: 1\n", nil, "without mx"},
		{"no max_age", "version: STSv1\nmode: none\n", nil, "no max_age"},
		{"max_age not a number", "version: STSv1\nmode: none\nmax_age: 1d\n", nil, "not a number"},
		{"max_age negative", "version: STSv1\nmode: none\nmax_age: -1\n", nil, "not a number"},
		{"max_age signed", "version: STSv1\nmode: none\nmax_age: +1\n", nil, "not a number"},
		{"max_age too long", "version: STSv1\nmode: none\nmax_age: 00000000001\n", nil, "not a number"},
		{"max_age over a year", "version: STSv1\nmode: none\nmax_age: 31557601\n", nil, "over a year"},
		{"bad line", "version: STSv1\nmode none\n", nil, "line 2"},
		{"space before colon", "version : STSv1\n", nil, "line 1"},
		{"bad mx", "version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1\n", nil, "line 3: mx"},
		{"mx wildcard inside", "version: STSv1\nmode: enforce\nmx: a.*.test\nmax_age: 1\n", nil, "mx"},
		{"mx bare wildcard", "version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n", nil, "mx"},
		{"mx empty", "version: STSv1\nmode: enforce\nmx:\nmax_age: 1\n", nil, "mx"},
		{"html", "<html><body>Not found</body></html>", nil, "line 1"},
		{"empty", "", nil, "version"},
	} {
		p, err := ParseSTSPolicy(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "deliver: mta-sts policy: ") {
				t.Errorf("%s: got %+v, %v; want an error with %q", tc.name, p, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if p.Mode != tc.want.Mode || p.MaxAge != tc.want.MaxAge || strings.Join(p.MX, ",") != strings.Join(tc.want.MX, ",") {
			t.Errorf("%s: got %+v, want %+v", tc.name, p, tc.want)
		}
	}
}

func TestSTSMatchMX(t *testing.T) {
	p := &STSPolicy{Mode: STSEnforce, MX: []string{"mail.example.com", "*.example.net"}}
	for host, want := range map[string]bool{
		"mail.example.com":      true,
		"MAIL.Example.Com.":     true,
		"mail.example.com..":    false,
		"other.example.com":     false,
		"example.com":           false,
		"mx1.example.net":       true,
		"MX1.EXAMPLE.NET.":      true,
		"example.net":           false,
		".example.net":          false,
		"a.b.example.net":       false,
		"mx1.example.net.evil":  false,
		"mx1example.net":        false,
		"xmail.example.com":     false,
		"mail.example.com.evil": false,
		"":                      false,
	} {
		if got := p.MatchMX(host); got != want {
			t.Errorf("MatchMX(%q) = %v, want %v", host, got, want)
		}
	}
}

// stsServer is a real HTTPS server on loopback serving an MTA-STS policy with
// a certificate from its own test CA.
type stsServer struct {
	port    int
	ca      *x509.Certificate
	fetches atomic.Int32

	mu     sync.Mutex
	status int
	body   string
	hold   chan struct{} // when set, requests wait for it to close
}

func (s *stsServer) set(status int, body string) {
	s.mu.Lock()
	s.status, s.body = status, body
	s.mu.Unlock()
}

func (s *stsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	status, body, hold := s.status, s.body, s.hold
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if r.URL.Path != "/.well-known/mta-sts.txt" {
		http.NotFound(w, r)
		return
	}
	if status == http.StatusFound {
		http.Redirect(w, r, "https://elsewhere.test/.well-known/mta-sts.txt", status)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// startSTSServer listens on ip with a certificate for names, signed by a CA
// made for the test.
func startSTSServer(t testing.TB, ip string, names ...string) *stsServer {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "latchkey test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stsServer{port: l.Addr().(*net.TCPAddr).Port, ca: ca, status: http.StatusOK}
	srv := &http.Server{Handler: s, ErrorLog: log.New(io.Discard, "", 0), TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	}}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() {
		s.mu.Lock()
		if s.hold != nil {
			select {
			case <-s.hold:
			default:
				close(s.hold)
			}
		}
		s.mu.Unlock()
		srv.Close()
	})
	return s
}

const (
	policyEnforce = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"
	policyTesting = "version: STSv1\nmode: testing\nmx: *.example.test\nmax_age: 86400\n"
	stsZone       = `
example.test. 300 IN MX 10 mx.example.test.
mx.example.test. 300 IN A 127.0.0.21
mta-sts.example.test. 300 IN A 127.0.0.22
`
	// TTL 0: the Resolver does not cache it, so that tests can change it.
	stsTXT = "_mta-sts.example.test. 0 IN TXT \"v=STSv1; id=%s;\"\n"
)

type stsFixture struct {
	sink *smtpsink.Sink
	dns  *dnstest.Server
	web  *stsServer
	d    *Deliverer
}

// stsSetup starts an MX sink for example.test on 127.0.0.21, its policy host
// mta-sts.example.test on 127.0.0.22 serving policy, and a Deliverer that
// trusts both (the sink's certificate is for localhost and opts.CertNames).
// txtID "" publishes no _mta-sts record.
func stsSetup(t testing.TB, opts smtpsink.Options, policy, txtID string, mod func(*Config)) *stsFixture {
	t.Helper()
	sinks, port := startSinks(t, opts, "127.0.0.21")
	f := &stsFixture{sink: sinks[0], web: startSTSServer(t, "127.0.0.22", "mta-sts.example.test")}
	f.web.set(http.StatusOK, policy)
	zone := stsZone
	if txtID != "" {
		zone += fmt.Sprintf(stsTXT, txtID)
	}
	f.dns = dnstest.Start(t, zone)
	cfg := testConfig(f.dns.Addr, port)
	if mod != nil {
		mod(&cfg)
	}
	f.d = newDeliverer(t, cfg)
	roots := x509.NewCertPool()
	if f.sink.CertPool != nil {
		roots = f.sink.CertPool.Clone()
	}
	roots.AddCert(f.web.ca)
	f.d.roots = roots
	f.d.stsPort = f.web.port
	return f
}

func (f *stsFixture) setTXT(t *testing.T, id string) {
	t.Helper()
	f.dns.Remove("_mta-sts.example.test.", dns.TypeTXT)
	if err := f.dns.Add(fmt.Sprintf(stsTXT, id)); err != nil {
		t.Fatal(err)
	}
	// A record newly published after an NXDOMAIN is seen once the
	// negative answer expires (up to a minute); the test does not wait.
	f.d.res.mu.Lock()
	delete(f.d.res.cache, cacheKey{"_mta-sts.example.test.", dns.TypeTXT})
	f.d.res.mu.Unlock()
}

var goodMX = smtpsink.Options{TLS: true, CertNames: []string{"mx.example.test"}}

func TestMTASTSEnforceDelivers(t *testing.T) {
	f := stsSetup(t, goodMX, policyEnforce, "1", nil)
	for i := range 2 {
		r := deliver1(t, f.d, fmt.Sprintf("u%d@example.test", i))[0]
		wantDelivered(t, r)
		if r.MTASTS != STSEnforce || !r.TLSVerified || r.TLS != "TLS1.3" {
			t.Fatalf("mode %q, TLS %s verified %v", r.MTASTS, r.TLS, r.TLSVerified)
		}
	}
	msgs := f.sink.Wait(2, 5*time.Second)
	if len(msgs) != 2 || !msgs[0].TLS || !msgs[1].TLS {
		t.Fatalf("sink got %d messages (TLS: %+v)", len(msgs), msgs)
	}
	// The verified connection was pooled and reused; the policy was fetched once.
	if f.sink.Conns() != 1 || f.web.fetches.Load() != 1 {
		t.Fatalf("%d connections, %d fetches; want 1 and 1", f.sink.Conns(), f.web.fetches.Load())
	}
}

func TestMTASTSEnforceRefusesUnverifiedTLS(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     smtpsink.Options
		enhanced string
	}{
		{"certificate for another name", smtpsink.Options{TLS: true}, "4.7.5"},
		{"handshake fails", smtpsink.Options{BrokenTLS: true}, "4.7.5"},
		{"no STARTTLS", smtpsink.Options{}, "4.7.10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := stsSetup(t, tc.opts, policyEnforce, "1", nil)
			r := deliver1(t, f.d, "a@example.test")[0]
			wantTemporary(t, r)
			if r.Enhanced != tc.enhanced || !strings.Contains(r.Text, "MTA-STS") || r.MTASTS != STSEnforce {
				t.Fatalf("got %s (text %q, mode %q); want %s naming MTA-STS", r, r.Text, r.MTASTS, tc.enhanced)
			}
			if f.sink.Count() != 0 || f.sink.MaxConcurrent() != 0 {
				t.Fatalf("sink saw %d messages, %d transactions", f.sink.Count(), f.sink.MaxConcurrent())
			}
		})
	}
}

func TestMTASTSEnforceSkipsMXNotInPolicy(t *testing.T) {
	f := stsSetup(t, goodMX, "version: STSv1\nmode: enforce\nmx: *.elsewhere.test\nmax_age: 600\n", "1", nil)
	r := deliver1(t, f.d, "a@example.test")[0]
	wantTemporary(t, r)
	if r.Enhanced != "4.7.5" || !strings.Contains(r.Text, "MTA-STS") || r.Host != "mx.example.test" || r.MTASTS != STSEnforce {
		t.Fatalf("got %s", r)
	}
	if f.sink.Conns() != 0 {
		t.Fatalf("connected %d times to an MX the policy does not list", f.sink.Conns())
	}
}

func TestMTASTSTestingDeliversDespiteBadCertificate(t *testing.T) {
	f := stsSetup(t, smtpsink.Options{TLS: true}, policyTesting, "1", nil)
	r := deliver1(t, f.d, "a@example.test")[0]
	wantDelivered(t, r)
	if r.MTASTS != STSTesting || r.TLSVerified || f.sink.Count() != 1 {
		t.Fatalf("got %s, verified %v, sink count %d", r, r.TLSVerified, f.sink.Count())
	}
}

func TestMTASTSConfiguredVerifyStaysUnderTesting(t *testing.T) {
	f := stsSetup(t, smtpsink.Options{TLS: true}, policyTesting, "1", func(c *Config) { c.TLS = TLSVerify })
	r := deliver1(t, f.d, "a@example.test")[0]
	wantTemporary(t, r)
	if r.Enhanced != "4.7.5" || r.MTASTS != STSTesting || f.sink.Count() != 0 {
		t.Fatalf("got %s", r)
	}
}

func TestMTASTSNoRecordDeliversAsBefore(t *testing.T) {
	f := stsSetup(t, smtpsink.Options{TLS: true}, policyEnforce, "", nil)
	r := deliver1(t, f.d, "a@example.test")[0]
	wantDelivered(t, r)
	if r.MTASTS != "" || f.web.fetches.Load() != 0 {
		t.Fatalf("mode %q, %d fetches without a record", r.MTASTS, f.web.fetches.Load())
	}
}

func TestMTASTSModeNone(t *testing.T) {
	f := stsSetup(t, smtpsink.Options{TLS: true}, "version: STSv1\nmode: none\nmax_age: 600\n", "1", nil)
	r := deliver1(t, f.d, "a@example.test")[0]
	wantDelivered(t, r)
	if r.MTASTS != "" || f.web.fetches.Load() != 1 {
		t.Fatalf("mode %q, %d fetches", r.MTASTS, f.web.fetches.Load())
	}
}

func TestMTASTSCachedPolicyOutlivesRecord(t *testing.T) {
	// The MX certificate does not verify: each delivery that honours the
	// enforce policy fails, each that does not gets through.
	f := stsSetup(t, smtpsink.Options{TLS: true}, policyEnforce, "1", nil)
	wantTemporary(t, deliver1(t, f.d, "a@example.test")[0])

	f.dns.Remove("_mta-sts.example.test.", dns.TypeTXT) // an attacker's NODATA
	r := deliver1(t, f.d, "a@example.test")[0]
	wantTemporary(t, r)
	if r.MTASTS != STSEnforce {
		t.Fatalf("mode %q after the record went", r.MTASTS)
	}
	f.dns.Fail("_mta-sts.example.test.", dns.RcodeServerFailure)
	r = deliver1(t, f.d, "a@example.test")[0]
	wantTemporary(t, r)
	if r.MTASTS != STSEnforce || f.sink.Count() != 0 || f.web.fetches.Load() != 1 {
		t.Fatalf("mode %q, sink count %d, fetches %d", r.MTASTS, f.sink.Count(), f.web.fetches.Load())
	}

	// Once max_age has passed, no record means no policy.
	f.d.sts.mu.Lock()
	f.d.sts.entries["example.test"].expires = time.Now().Add(-time.Second)
	f.d.sts.mu.Unlock()
	r = deliver1(t, f.d, "a@example.test")[0]
	wantDelivered(t, r)
	if r.MTASTS != "" {
		t.Fatalf("mode %q with an expired policy", r.MTASTS)
	}
}

func TestMTASTSNewIDRefetches(t *testing.T) {
	f := stsSetup(t, goodMX, policyEnforce, "1", nil)
	for range 2 {
		wantDelivered(t, deliver1(t, f.d, "a@example.test")[0])
	}
	if n := f.web.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for one id", n)
	}

	// A new id: the policy in hand (enforce) stays in force while the new
	// one is fetched in the background, then the new one (testing) applies.
	f.web.set(http.StatusOK, policyTesting)
	f.setTXT(t, "2")
	r := deliver1(t, f.d, "a@example.test")[0]
	wantDelivered(t, r)
	if r.MTASTS != STSEnforce && r.MTASTS != STSTesting {
		t.Fatalf("mode %q while the new policy is fetched", r.MTASTS)
	}
	waitFetches(t, f, 2)
	if r = deliver1(t, f.d, "a@example.test")[0]; r.MTASTS != STSTesting {
		t.Fatalf("mode %q after the refetch; want testing", r.MTASTS)
	}

	// A new id whose fetch fails keeps the policy in hand, and is not
	// fetched again on every message.
	f.web.set(http.StatusInternalServerError, "")
	f.setTXT(t, "3")
	r = deliver1(t, f.d, "a@example.test")[0]
	waitFetches(t, f, 3)
	for range 2 {
		r = deliver1(t, f.d, "a@example.test")[0]
		wantDelivered(t, r)
		if r.MTASTS != STSTesting {
			t.Fatalf("mode %q after a failed refetch", r.MTASTS)
		}
	}
	if n := f.web.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches, want 3", n)
	}
}

// waitFetches waits until the policy server has answered n fetches and
// the Deliverer has taken the last one in.
func waitFetches(t *testing.T, f *stsFixture, n int32) {
	t.Helper()
	for i := 0; ; i++ {
		f.d.sts.mu.Lock()
		busy := f.d.sts.entries["example.test"] != nil && f.d.sts.entries["example.test"].fetching != nil
		f.d.sts.mu.Unlock()
		if f.web.fetches.Load() >= n && !busy {
			return
		}
		if i > 500 {
			t.Fatalf("%d fetches, want %d", f.web.fetches.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMTASTSFetchFailureWithoutCache(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
	}{
		{"not found", http.StatusNotFound, policyEnforce},
		{"bad policy", http.StatusOK, "mode: enforce\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := stsSetup(t, smtpsink.Options{TLS: true}, tc.body, "1", nil)
			f.web.set(tc.status, tc.body)
			r := deliver1(t, f.d, "a@example.test")[0]
			wantDelivered(t, r)
			if r.MTASTS != "" || f.web.fetches.Load() != 1 {
				t.Fatalf("mode %q, %d fetches", r.MTASTS, f.web.fetches.Load())
			}
		})
	}
}

func TestMTASTSOff(t *testing.T) {
	f := stsSetup(t, smtpsink.Options{TLS: true}, policyEnforce, "", func(c *Config) { c.MTASTS = false })
	// A TTL the Resolver caches, so that a look-up would leave a trace.
	f.dns.Add("_mta-sts.example.test. 300 IN TXT \"v=STSv1; id=1;\"\n")
	r := deliver1(t, f.d, "a@example.test")[0]
	wantDelivered(t, r)
	f.d.res.mu.Lock()
	_, looked := f.d.res.cache[cacheKey{"_mta-sts.example.test.", dns.TypeTXT}]
	f.d.res.mu.Unlock()
	if r.MTASTS != "" || f.web.fetches.Load() != 0 || looked || len(f.d.sts.entries) != 0 {
		t.Fatalf("mode %q, %d fetches, TXT looked up %v, with mta_sts off", r.MTASTS, f.web.fetches.Load(), looked)
	}
	// The same set-up with it on does look the record up (the check above can fail).
	f.d.cfg.MTASTS = true
	wantTemporary(t, deliver1(t, f.d, "a@example.test")[0])
	f.d.res.mu.Lock()
	_, looked = f.d.res.cache[cacheKey{"_mta-sts.example.test.", dns.TypeTXT}]
	f.d.res.mu.Unlock()
	if !looked {
		t.Fatal("the TXT look-up left no trace in the resolver's cache")
	}
}

func TestMTASTSUnverifiedPooledConnectionNotReused(t *testing.T) {
	f := stsSetup(t, smtpsink.Options{TLS: true}, policyEnforce, "", nil)
	// No policy yet: opportunistic TLS, certificate not verified, pooled.
	r := deliver1(t, f.d, "a@example.test")[0]
	wantDelivered(t, r)
	if r.TLSVerified || f.d.pool.idleCount() != 1 {
		t.Fatalf("verified %v, %d idle", r.TLSVerified, f.d.pool.idleCount())
	}
	f.setTXT(t, "1")
	r = deliver1(t, f.d, "b@example.test")[0]
	wantTemporary(t, r)
	if f.sink.Count() != 1 || f.sink.Conns() != 2 {
		t.Fatalf("enforce went over the unverified pooled connection: %d messages, %d connections", f.sink.Count(), f.sink.Conns())
	}
	// The unverified connection stays for deliveries without the policy.
	if f.d.pool.idleCount() != 1 {
		t.Fatalf("%d idle connections, want 1", f.d.pool.idleCount())
	}
}

func TestFetchSTSPolicy(t *testing.T) {
	web := startSTSServer(t, "127.0.0.23", "mta-sts.example.test")
	wrong := startSTSServer(t, "127.0.0.24", "mta-sts.other.test")
	dnss := dnstest.Start(t, `
mta-sts.example.test. 300 IN A 127.0.0.23
mta-sts.wrongcert.test. 300 IN A 127.0.0.24
`)
	d := newDeliverer(t, testConfig(dnss.Addr, 25))
	d.roots = x509.NewCertPool()
	d.roots.AddCert(web.ca)
	d.roots.AddCert(wrong.ca)
	ctx := context.Background()
	fetch := func(domain string, port int) (*STSPolicy, error) {
		d.stsPort = port
		return d.fetchSTSPolicy(ctx, domain)
	}

	web.set(http.StatusOK, policyEnforce)
	p, err := fetch("example.test", web.port)
	if err != nil || p.Mode != STSEnforce || !p.MatchMX("mx.example.test") {
		t.Fatalf("got %+v, %v", p, err)
	}
	for _, tc := range []struct {
		name, domain string
		port         int
		status       int
		body, err    string
	}{
		{"redirect", "example.test", web.port, http.StatusFound, "", "302"},
		{"server error", "example.test", web.port, http.StatusServiceUnavailable, "", "503"},
		{"too big", "example.test", web.port, http.StatusOK, policyEnforce + strings.Repeat("x-pad: y\n", 8000), "larger than"},
		{"not a policy", "example.test", web.port, http.StatusOK, "<html></html>", "mta-sts policy"},
		{"certificate for another name", "wrongcert.test", wrong.port, http.StatusOK, policyEnforce, "certificate"},
		{"no address", "nowhere.test", web.port, http.StatusOK, policyEnforce, "no such domain"},
	} {
		web.set(tc.status, tc.body)
		wrong.set(tc.status, tc.body)
		p, err := fetch(tc.domain, tc.port)
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "deliver: ") {
			t.Errorf("%s: got %+v, %v; want an error with %q", tc.name, p, err, tc.err)
		}
	}
	// Trusted only through the system roots, the test CA's certificate fails.
	web.set(http.StatusOK, policyEnforce)
	d.roots = nil
	if _, err := fetch("example.test", web.port); err == nil {
		t.Error("a certificate from an untrusted CA was accepted")
	}
}

func TestMTASTSOneFetchPerDomain(t *testing.T) {
	f := stsSetup(t, goodMX, policyEnforce, "1", nil)
	hold := make(chan struct{})
	f.web.mu.Lock()
	f.web.hold = hold
	f.web.mu.Unlock()
	const n = 8
	var wg sync.WaitGroup
	got := make([]*STSPolicy, n)
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = f.d.stsPolicy(context.Background(), "example.test") }()
	}
	// Let the first request in, then give the others every chance to start
	// their own before releasing it.
	for f.web.fetches.Load() == 0 {
		runtime.Gosched()
	}
	for range 1000 {
		runtime.Gosched()
	}
	f.web.mu.Lock()
	close(hold)
	f.web.hold = nil
	f.web.mu.Unlock()
	wg.Wait()
	for i, p := range got {
		if p == nil || p.Mode != STSEnforce {
			t.Fatalf("caller %d got %+v", i, p)
		}
	}
	if n := f.web.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for one domain at once", n)
	}

	// A waiter whose context ends stops waiting; the fetch goes on.
	f.d.sts.mu.Lock()
	delete(f.d.sts.entries, "example.test")
	f.d.sts.mu.Unlock()
	hold = make(chan struct{})
	f.web.mu.Lock()
	f.web.hold = hold
	f.web.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *STSPolicy)
	go func() { done <- f.d.stsPolicy(ctx, "example.test") }()
	for f.web.fetches.Load() == 1 {
		runtime.Gosched()
	}
	cancel()
	if p := <-done; p != nil {
		t.Fatalf("a cancelled wait returned %+v", p)
	}
	f.web.mu.Lock()
	close(hold)
	f.web.hold = nil
	f.web.mu.Unlock()
	if p := f.d.stsPolicy(context.Background(), "example.test"); p == nil || f.web.fetches.Load() != 2 {
		t.Fatalf("after the fetch ended: %+v, %d fetches", p, f.web.fetches.Load())
	}
}

// BenchmarkDeliverPooledMTASTS measures what MTA-STS adds to a pooled
// delivery: "off" is mta_sts = false; "no-record" pays an uncached NXDOMAIN
// query per message; "enforce" has the record cached by the Resolver (TTL 300)
// and the policy cached, so it costs map look-ups only.
func BenchmarkDeliverPooledMTASTS(b *testing.B) {
	for _, bc := range []struct {
		name, txt string
		on        bool
	}{
		{"off", "", false},
		{"no-record", "", true},
		{"enforce", "_mta-sts.example.test. 300 IN TXT \"v=STSv1; id=1;\"\n", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := stsSetup(b, smtpsink.Options{TLS: true, CertNames: []string{"mx.example.test"}, Discard: true}, policyEnforce, "",
				func(c *Config) { c.MTASTS, c.MaxMessagesPerConn = bc.on, 0 })
			if bc.txt != "" {
				f.dns.Add(bc.txt)
			}
			ctx := context.Background()
			for b.Loop() {
				r := f.d.Deliver(ctx, "s@sender.test", []string{"u@example.test"}, []byte(msg))
				if !r[0].Delivered || (bc.txt != "") != (r[0].MTASTS == STSEnforce) {
					b.Fatal(r[0])
				}
			}
			b.StopTimer()
			if f.sink.Conns() != 1 {
				b.Fatalf("%d connections for a pooled run", f.sink.Conns())
			}
		})
	}
}

func TestResultStringNamesMTASTS(t *testing.T) {
	r := Result{Rcpt: "a@x.test", Code: 451, Enhanced: "4.7.5", Text: "MTA-STS: tls failed", Host: "mx.x.test", IP: "127.0.0.2", TLS: "none", MTASTS: STSEnforce}
	if got, want := r.String(), "a@x.test: deferred: 451 4.7.5 MTA-STS: tls failed (mx.x.test [127.0.0.2] none) MTA-STS enforce"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

// memSTSStore is an STSStore in a map, standing in for the relay's
// database (relay/sts.go keeps the same records in Badger).
type memSTSStore struct {
	mu sync.Mutex
	m  map[string]StoredSTS
}

func (s *memSTSStore) LoadSTS(domain string) (*StoredSTS, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.m[domain]; ok {
		return &p, nil
	}
	return nil, nil
}

func (s *memSTSStore) SaveSTS(domain string, p StoredSTS) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[domain] = p
	return nil
}

func (s *memSTSStore) get(domain string) (StoredSTS, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.m[domain]
	return p, ok
}

// A policy seen before a restart still applies after it, with the record
// hidden and the policy server down: the downgrade a forgetful sender
// would allow.
func TestMTASTSStoredPolicySurvivesRestart(t *testing.T) {
	f := stsSetup(t, goodMX, policyEnforce, "1", nil)
	store := &memSTSStore{m: map[string]StoredSTS{}}
	f.d.SetSTSStore(store)
	if r := deliver1(t, f.d, "a@example.test")[0]; r.MTASTS != STSEnforce {
		t.Fatalf("mode %q before the restart", r.MTASTS)
	}
	var stored StoredSTS
	for i := 0; ; i++ {
		var ok bool
		if stored, ok = store.get("example.test"); ok {
			break
		}
		if i > 500 {
			t.Fatal("the fetched policy was never stored")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if stored.ID != "1" || !strings.Contains(stored.Policy, "mode: enforce") || time.Until(stored.Expires) < time.Hour {
		t.Errorf("stored %+v", stored)
	}

	// "Restart": a new Deliverer on the same store; the attacker hides the
	// record and the policy server is unreachable.
	f.dns.Remove("_mta-sts.example.test.", dns.TypeTXT)
	f.web.set(http.StatusServiceUnavailable, "")
	d2 := newDeliverer(t, f.d.cfg)
	d2.roots, d2.stsPort = f.d.roots, f.d.stsPort
	d2.SetSTSStore(store)
	r := deliver1(t, d2, "b@example.test")[0]
	wantDelivered(t, r)
	if r.MTASTS != STSEnforce || !r.TLSVerified {
		t.Fatalf("after the restart: mode %q, verified %v; want the stored enforce policy", r.MTASTS, r.TLSVerified)
	}
	if n := f.web.fetches.Load(); n != 1 {
		t.Errorf("%d fetches; the stored policy needed none", n)
	}

	// An expired stored policy is not used.
	store.SaveSTS("example.test", StoredSTS{ID: "1", Policy: stored.Policy, Expires: time.Now().Add(-time.Second)})
	d3 := newDeliverer(t, f.d.cfg)
	d3.roots, d3.stsPort = f.d.roots, f.d.stsPort
	d3.SetSTSStore(store)
	if r := deliver1(t, d3, "c@example.test")[0]; r.MTASTS != "" {
		t.Errorf("mode %q from an expired stored policy", r.MTASTS)
	}
}

func TestSTSPolicyStringRoundTrip(t *testing.T) {
	for _, body := range []string{policyEnforce, policyTesting, "version: STSv1\nmode: none\nmax_age: 0\n"} {
		p, err := ParseSTSPolicy(body)
		if err != nil {
			t.Fatal(err)
		}
		q, err := ParseSTSPolicy(p.String())
		if err != nil || q.Mode != p.Mode || strings.Join(q.MX, ",") != strings.Join(p.MX, ",") || q.MaxAge != p.MaxAge {
			t.Errorf("%q: round trip gave %+v, %v; want %+v", body, q, err, p)
		}
	}
}
