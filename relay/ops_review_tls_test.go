package relay

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writePair writes a self-signed pair for host valid until notAfter.
func writePair(t *testing.T, certFile, keyFile, host string, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	later := time.Now().Add(time.Duration(len(host)) * time.Minute)
	os.Chtimes(certFile, later, later)
	os.Chtimes(keyFile, later, later)
}

// An expired pair put in place of a valid one (an old backup restored, a
// renewal job copying the wrong files) must not replace the certificate in
// service: Salesforce would refuse every STARTTLS.
func TestReviewCertReloadKeepsValidOverExpired(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	writePair(t, cert, key, "ok.test", time.Now().Add(90*24*time.Hour))
	r, err := newCertReloader(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := r.getCertificate(nil)
	writePair(t, cert, key, "expired.test", time.Now().Add(-time.Hour))
	r.mu.Lock()
	r.checked = time.Time{}
	r.mu.Unlock()
	second, _ := r.getCertificate(nil)
	if !bytes.Equal(first.Certificate[0], second.Certificate[0]) {
		t.Fatal("an expired certificate replaced the valid one in service")
	}
	// A valid renewal after that is still picked up.
	writePair(t, cert, key, "renewed.example.test", time.Now().Add(90*24*time.Hour))
	r.mu.Lock()
	r.checked = time.Time{}
	r.mu.Unlock()
	third, _ := r.getCertificate(nil)
	if bytes.Equal(first.Certificate[0], third.Certificate[0]) {
		t.Fatal("valid renewal not picked up")
	}
}
