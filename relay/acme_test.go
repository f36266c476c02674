package relay

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/textproto"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/latchkey/latchkey/testutil/acmetest"
	"github.com/latchkey/latchkey/testutil/dnstest"
)

// acmeEnv is a relay whose [tls.acme] points at an in-process Pebble whose
// validation authority finds relay.test at 127.0.0.1.
func acmeEnv(t *testing.T, tune ACMETuning, ca string) (*env, *acmetest.Server) {
	t.Helper()
	vaDNS := dnstest.Start(t, "relay.test. 60 IN A 127.0.0.1")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	p := acmetest.Start(t, acmetest.Options{DNS: vaDNS.Addr, HTTPPort: httpPort, TLSPort: 1, Validity: 600})
	if ca == "" {
		ca = p.Directory
	}
	e := newEnv(t, envOpts{
		extra: fmt.Sprintf(`
[tls.acme]
enabled = true
email = "ops@relay.test"
ca = %q
challenge = "http-01"
listen_host = "127.0.0.1"
http_port = %d
ca_root = %q
`, ca, httpPort, p.ServerRootFile),
		preStart: func(s *Server) { s.ACME = tune },
	})
	return e, p
}

// starttlsVerified connects as Salesforce Email Relay set to RequiredVerify:
// STARTTLS, and a certificate that must verify for the relay's host name
// against the roots the client trusts (here Pebble's).
func starttlsVerified(t *testing.T, e *env, roots *x509.CertPool) (*x509.Certificate, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", e.submitAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	tp.PrintfLine("EHLO client.test")
	if _, _, err := tp.ReadResponse(250); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	tp.PrintfLine("STARTTLS")
	if _, _, err := tp.ReadResponse(220); err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	tc := tls.Client(conn, &tls.Config{RootCAs: roots, ServerName: "relay.test"})
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc.ConnectionState().PeerCertificates[0], nil
}

func counter(t *testing.T, e *env, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := e.srv.Metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.Metric {
			for _, lp := range m.Label {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// The relay obtains its certificate from the ACME CA before it listens,
// serves it on STARTTLS to a client that verifies it, renews it in the
// background and serves the new one without a restart, and exports the
// attempts and the expiry.
func TestACMECertificateOnSTARTTLS(t *testing.T) {
	e, p := acmeEnv(t, ACMETuning{RenewCheckEvery: 100 * time.Millisecond, RenewWindow: 0.99, NoARI: true}, "")
	first, err := starttlsVerified(t, e, p.Roots)
	if err != nil {
		t.Fatalf("STARTTLS with verification against the ACME CA's root: %v", err)
	}
	if err := first.VerifyHostname("relay.test"); err != nil {
		t.Error(err)
	}
	// Mail still flows over the new certificate.
	c := e.client("PLAIN")
	if _, err := send(c, "noreply@example.com", []string{"user@dest.test"}, resetMsg("user@dest.test", "acme-1")); err != nil {
		t.Fatalf("submit: %v", err)
	}
	var renewed *x509.Certificate
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if renewed, err = starttlsVerified(t, e, p.Roots); err == nil && !renewed.Equal(first) {
			break
		}
	}
	if renewed == nil || renewed.Equal(first) {
		t.Fatalf("no renewed certificate served within 30s (serial %s)", first.SerialNumber)
	}
	if n := counter(t, e, "latchkey_acme_attempts_total", map[string]string{"kind": "obtain", "result": "ok"}); n != 1 {
		t.Errorf("obtain ok = %v, want 1", n)
	}
	if n := counter(t, e, "latchkey_acme_attempts_total", map[string]string{"kind": "renew", "result": "ok"}); n < 1 {
		t.Errorf("renew ok = %v, want ≥ 1", n)
	}
	exp := counter(t, e, "latchkey_tls_certificate_expiry_timestamp_seconds", nil)
	if got := time.Unix(int64(exp), 0); got.Before(first.NotAfter.Add(-time.Second)) || got.After(time.Now().Add(11*time.Minute)) {
		t.Errorf("expiry gauge %v; certificates end at %v, %v", got, first.NotAfter, renewed.NotAfter)
	}
}

// A CA that cannot be reached at start does not stop the relay: it listens
// with the fallback certificate (which a verifying client refuses), says why
// in the log, and keeps trying.
func TestACMEUnreachableFallsBack(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + l.Addr().String() + "/dir"
	l.Close()
	e, p := acmeEnv(t, ACMETuning{}, dead)
	if _, err := starttlsVerified(t, e, p.Roots); err == nil {
		t.Fatal("a fallback certificate verified against the ACME CA's root")
	}
	// Salesforce's other TLS settings still get a session.
	c := e.client("PLAIN")
	if _, err := send(c, "noreply@example.com", []string{"user@dest.test"}, resetMsg("user@dest.test", "acme-2")); err != nil {
		t.Fatalf("submit over the fallback certificate: %v", err)
	}
}
