package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/acmecert"
)

// certReloader serves the certificate from files and re-reads them when their
// modification time changes, so a renewed certificate needs no restart.
type certReloader struct {
	certFile, keyFile string

	// log, if set, hears of a changed pair taken or refused, once per
	// change: a refused renewal would otherwise go unnoticed until the
	// certificate in service expires.
	log *zerolog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	modCert time.Time
	modKey  time.Time
	checked time.Time
	// refCert and refKey are the modification times of the pair last
	// refused, so that it is reported once, not at every check.
	refCert, refKey time.Time

	// acme, if set, serves the certificate it manages; the files' pair is
	// the fallback until it has one.
	acme *acmecert.Manager
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) load() error {
	cert, modCert, modKey, err := r.read()
	if err != nil {
		return err
	}
	r.cert, r.modCert, r.modKey = cert, modCert, modKey
	return nil
}

// read loads the pair from disk with the modification times seen before
// reading, so that a change during the read is seen at the next check.
func (r *certReloader) read() (*tls.Certificate, time.Time, time.Time, error) {
	ci, err := os.Stat(r.certFile)
	if err != nil {
		return nil, time.Time{}, time.Time{}, fmt.Errorf("relay: tls certificate: %w", err)
	}
	ki, err := os.Stat(r.keyFile)
	if err != nil {
		return nil, time.Time{}, time.Time{}, fmt.Errorf("relay: tls key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, time.Time{}, time.Time{}, fmt.Errorf("relay: tls certificate %s: %w", r.certFile, err)
	}
	return &cert, ci.ModTime(), ki.ModTime(), nil
}

// expired says whether c's leaf certificate is past its end of validity.
func expired(c *tls.Certificate, now time.Time) bool {
	return c != nil && c.Leaf != nil && now.After(c.Leaf.NotAfter)
}

// getCertificate is tls.Config.GetCertificate. It looks at the files at most
// once every few seconds; a broken new pair keeps the old one in service,
// and so does an expired one while the old one is still valid (an old
// backup restored over a renewal must not break every STARTTLS).
func (r *certReloader) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if r.acme != nil {
		if c, _ := r.acme.GetCertificate(hello); c != nil {
			return c, nil
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) > 5*time.Second {
		r.checked = now
		ci, err1 := os.Stat(r.certFile)
		ki, err2 := os.Stat(r.keyFile)
		if err1 == nil && err2 == nil && (!ci.ModTime().Equal(r.modCert) || !ki.ModTime().Equal(r.modKey)) {
			cert, mc, mk, err := r.read()
			switch {
			case err == nil && (!expired(cert, now) || expired(r.cert, now)):
				r.cert, r.modCert, r.modKey = cert, mc, mk
				if r.log != nil && cert.Leaf != nil {
					r.log.Info().Str("cert", r.certFile).Time("not_after", cert.Leaf.NotAfter).Msg("TLS certificate reloaded")
				}
			case !ci.ModTime().Equal(r.refCert) || !ki.ModTime().Equal(r.refKey):
				r.refCert, r.refKey = ci.ModTime(), ki.ModTime()
				if err == nil {
					err = fmt.Errorf("certificate expired on %s", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
				}
				if r.log != nil {
					r.log.Warn().Err(err).Str("cert", r.certFile).Msg("TLS certificate changed on disk but not taken; the old one stays in service")
				}
			}
		}
	}
	return r.cert, nil
}

// tlsConfig returns the server TLS configuration: TLS 1.2 or newer, as
// Salesforce no longer speaks 1.0 or 1.1.
func (r *certReloader) tlsConfig(minTLS string) *tls.Config {
	min := uint16(tls.VersionTLS12)
	if minTLS == "1.3" {
		min = tls.VersionTLS13
	}
	return &tls.Config{GetCertificate: r.getCertificate, MinVersion: min}
}

// EnsureSelfSigned writes a self-signed certificate for hostname to
// certFile/keyFile unless both exist as a pair that has not expired (the
// trial certificate lasts a year; nothing else renews it). It is for trying
// latchkey out only: Salesforce's RequiredVerify setting needs a
// certificate from a public CA.
func EnsureSelfSigned(certFile, keyFile, hostname string) (created bool, err error) {
	if c, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && !expired(&c, time.Now()) {
		return false, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hostname, Organization: []string{"latchkey trial"}},
		DNSNames:     []string{hostname},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return false, fmt.Errorf("relay: self-signed certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return false, err
	}
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return false, err
	}
	if err := writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return false, err
	}
	return true, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// EnsureSecret returns the secret in path, creating it with n random bytes
// (hex-encoded) when it does not exist.
func EnsureSecret(path string, n int) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) == 0 {
			return nil, fmt.Errorf("relay: secret file %s is empty", path)
		}
		return trimNL(b), nil
	}
	if !os.IsNotExist(err) {
		return nil, fmt.Errorf("relay: %w", err)
	}
	raw := make([]byte, n)
	rand.Read(raw)
	s := []byte(fmt.Sprintf("%x", raw))
	if err := writeFileAtomic(path, append(s, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("relay: write secret: %w", err)
	}
	return s, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
