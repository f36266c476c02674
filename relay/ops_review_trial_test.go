package relay

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The trial certificate is valid for a year; a trial relay restarted after
// that must not keep serving the expired one.
func TestReviewTrialCertRenewedWhenExpired(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls", "trial-cert.pem"), filepath.Join(dir, "tls", "trial-key.pem")
	os.MkdirAll(filepath.Dir(cert), 0o700)
	writePair(t, cert, key, "relay.test", time.Now().Add(-time.Hour))
	created, err := EnsureSelfSigned(cert, key, "relay.test")
	if err != nil {
		t.Fatal(err)
	}
	r, err := newCertReloader(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := r.getCertificate(nil)
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !created || time.Now().After(leaf.NotAfter) {
		t.Fatalf("expired trial certificate kept (created=%v, not after %v)", created, leaf.NotAfter)
	}
}
