package acmecert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/testutil/acmetest"
	"github.com/latchkey/latchkey/testutil/dnstest"
)

// hostSeq gives each test its own host name: certmagic keeps a renewal
// back-off per name for the whole process.
var hostSeq atomic.Int64

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuf is a log that tests read while the manager writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type env struct {
	host   string
	dns    *dnstest.Server
	pebble *acmetest.Server
	cfg    Config
	log    *syncBuf
	// onFirst, if set, runs when a certificate is obtained.
	onFirst func()
}

func newEnv(t *testing.T, challenge string, validity uint64) *env {
	host := fmt.Sprintf("relay%d.latchkey.test", hostSeq.Add(1))
	dns := dnstest.Start(t, host+". 60 IN A 127.0.0.1")
	httpPort, tlsPort := freePort(t), freePort(t)
	p := acmetest.Start(t, acmetest.Options{DNS: dns.Addr, HTTPPort: httpPort, TLSPort: tlsPort, Validity: validity})
	return &env{host: host, dns: dns, pebble: p, log: &syncBuf{}, cfg: Config{
		Enabled: true, Email: "ops@latchkey.test", CA: p.Directory, Challenge: challenge,
		ListenHost: "127.0.0.1", HTTPPort: httpPort, TLSALPNPort: tlsPort, CARoot: p.ServerRootFile,
	}}
}

func (e *env) manager(t *testing.T, dir string, renewWindow float64, results chan<- error) *Manager {
	t.Helper()
	m, err := New(e.cfg, Options{
		Hostname: e.host, Dir: dir, Log: zerolog.New(e.log), RenewCheckEvery: 100 * time.Millisecond, RenewWindow: renewWindow, NoARI: true,
		OnRenewal: func(_ bool, err error) {
			if e.onFirst != nil && err == nil {
				e.onFirst()
			}
			if results != nil {
				results <- err
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

// served does a TLS handshake without SNI, as an SMTP client does, and
// verifies the certificate for the host name against Pebble's root, as
// Salesforce's RequiredVerify does against the public roots.
func served(t *testing.T, m *Manager, roots *x509.CertPool) *x509.Certificate {
	host := m.Names()[0]
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: m.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: roots, ServerName: host})
	if err != nil {
		t.Fatalf("TLS with verification for %s: %v", host, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

func TestObtainServeAndRenew(t *testing.T) {
	for _, ch := range []string{HTTP01, TLSALPN01} {
		t.Run(ch, func(t *testing.T) {
			e := newEnv(t, ch, 3600)
			dir := t.TempDir()
			results := make(chan error, 100)
			// A renewal window of 0 stands for certmagic's default: the
			// first certificate is not renewed during the test.
			m := e.manager(t, dir, 0, results)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := m.Start(ctx); err != nil {
				t.Fatalf("start: %v\n%s", err, e.log)
			}
			first := served(t, m, e.pebble.Roots)
			host := e.host
			if first.Subject.CommonName != host && (len(first.DNSNames) == 0 || first.DNSNames[0] != host) {
				t.Errorf("served certificate names %v", first.DNSNames)
			}
			if got, _ := filepath.Glob(filepath.Join(dir, "certificates", "*", host, host+".crt")); len(got) != 1 {
				t.Errorf("certificate not stored under %s: %v", dir, got)
			}
			// A restart reads the stored certificate: no new order.
			orders := e.pebble.Orders.Load()
			m.Stop()
			m2 := e.manager(t, dir, 0, nil)
			if err := m2.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if again := served(t, m2, e.pebble.Roots); !again.Equal(first) || e.pebble.Orders.Load() != orders {
				t.Errorf("restart: served serial %s (first %s), orders %d → %d", again.SerialNumber, first.SerialNumber, orders, e.pebble.Orders.Load())
			}
		})
	}
}

// startDue starts a manager whose certificate is due for renewal seconds
// after issuance (less than 99% of its lifetime left), and returns the first
// certificate it serves.
func startDue(t *testing.T, e *env, afterFirst func()) (*Manager, chan error, *x509.Certificate) {
	t.Helper()
	results := make(chan error, 100)
	relay := results
	if afterFirst != nil {
		// Run afterFirst inside the first certificate's event, before
		// the renewal loop can see the certificate due.
		relay = make(chan error, 100)
		var once sync.Once
		go func() {
			for err := range relay {
				results <- err
			}
		}()
		e.onFirst = func() { once.Do(afterFirst) }
	}
	m := e.manager(t, t.TempDir(), 0.99, relay)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatalf("start: %v\n%s", err, e.log)
	}
	if err := waitResult(t, results, e.log); err != nil {
		t.Fatalf("first certificate: %v", err)
	}
	return m, results, served(t, m, e.pebble.Roots)
}

// A certificate due for renewal is renewed in the background and served at
// once, with no restart.
func TestRenewalServedWithoutRestart(t *testing.T) {
	e := newEnv(t, HTTP01, 600)
	m, results, first := startDue(t, e, nil)
	if err := waitResult(t, results, e.log); err != nil {
		t.Fatalf("renewal failed: %v", err)
	}
	var second *x509.Certificate
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if second = served(t, m, e.pebble.Roots); !second.Equal(first) {
			break
		}
	}
	if second.Equal(first) {
		t.Fatalf("renewed certificate not served without restart (serial %s)", first.SerialNumber)
	}
}

// When the CA refuses a renewal (rate limit) or its challenge fails, the
// certificate in service stays and the failure is logged with the CA's
// reason.
func TestRefusedRenewalKeepsCertificate(t *testing.T) {
	for _, tc := range []struct {
		name        string
		fail        func(*env)
		wantInError string
	}{
		{"rate limit", func(e *env) { e.pebble.Refuse(true) }, "rateLimited"},
		{"challenge fails", func(e *env) {
			e.dns.Remove(e.host+".", 1)
			e.dns.Add(e.host + ". 60 IN A 127.0.0.2") // nothing answers the challenge there
		}, "urn:ietf:params:acme:error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, HTTP01, 600)
			m, results, first := startDue(t, e, func() { tc.fail(e) })
			err := waitResult(t, results, e.log)
			if err == nil {
				t.Fatal("renewal succeeded against a refusing CA")
			}
			if !strings.Contains(err.Error(), tc.wantInError) {
				t.Errorf("failure %q does not carry the CA's reason %q", err, tc.wantInError)
			}
			if m.LastError() == nil {
				t.Error("LastError is nil after a failed renewal")
			}
			if !strings.Contains(e.log.String(), "could not renew the certificate; the one in service stays") {
				t.Errorf("no log line for the failure:\n%s", e.log)
			}
			if again := served(t, m, e.pebble.Roots); !again.Equal(first) {
				t.Errorf("certificate in service changed after a refused renewal")
			}
		})
	}
}

func waitResult(t *testing.T, results <-chan error, log *syncBuf) error {
	t.Helper()
	select {
	case err := <-results:
		return err
	case <-time.After(90 * time.Second):
		t.Fatalf("no ACME attempt within 90s\n%s", log)
	}
	return nil
}

func TestValidate(t *testing.T) {
	good := DefaultConfig()
	good.Enabled, good.Email = true, "ops@example.com"
	if err := good.Validate("mx.example.com"); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range []struct {
		name, hostname string
		mod            func(*Config)
		want           string
	}{
		{"no email", "mx.example.com", func(c *Config) { c.Email = "" }, "email: required"},
		{"bad email", "mx.example.com", func(c *Config) { c.Email = "ops at example" }, "email:"},
		{"http ca", "mx.example.com", func(c *Config) { c.CA = "http://ca.example.com/dir" }, "ca:"},
		{"dns-01", "mx.example.com", func(c *Config) { c.Challenge = "dns-01" }, "challenge:"},
		{"localhost", "localhost", func(*Config) {}, `names: hostname "localhost"`},
		{"ip name", "mx.example.com", func(c *Config) { c.Names = []string{"192.0.2.1"} }, "names:"},
		{"wildcard", "mx.example.com", func(c *Config) { c.Names = []string{"*.example.com"} }, "wildcard"},
		{"port", "mx.example.com", func(c *Config) { c.HTTPPort = 0 }, "http_port:"},
		{"missing root", "mx.example.com", func(c *Config) { c.CARoot = "/nonexistent/root.pem" }, "ca_root:"},
	} {
		c := good
		tc.mod(&c)
		if err := c.Validate(tc.hostname); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

// A challenge port another server holds is refused before the relay starts.
func TestCheckPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := DefaultConfig()
	c.Enabled, c.ListenHost = true, "127.0.0.1"
	c.HTTPPort, _ = strconv.Atoi(strings.Split(l.Addr().String(), ":")[1])
	if err := c.CheckPort(); err == nil || !strings.Contains(err.Error(), "http_port") {
		t.Errorf("taken port: %v", err)
	}
	l.Close()
	if err := c.CheckPort(); err != nil {
		t.Errorf("free port: %v", err)
	}
}
