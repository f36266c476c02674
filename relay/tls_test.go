package relay

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A renewed certificate is served without a restart; a broken renewal keeps
// the old one in service.
func TestCertReload(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if _, err := EnsureSelfSigned(cert, key, "one.test"); err != nil {
		t.Fatal(err)
	}
	r, err := newCertReloader(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := r.getCertificate(nil)
	os.Remove(cert)
	os.Remove(key)
	if _, err := EnsureSelfSigned(cert, key, "two.test"); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(cert, later, later)
	r.mu.Lock()
	r.checked = time.Time{}
	r.mu.Unlock()
	second, _ := r.getCertificate(nil)
	if bytes.Equal(first.Certificate[0], second.Certificate[0]) {
		t.Fatal("renewed certificate not picked up")
	}
	os.WriteFile(cert, []byte("garbage"), 0o600)
	later = later.Add(time.Minute)
	os.Chtimes(cert, later, later)
	r.mu.Lock()
	r.checked = time.Time{}
	r.mu.Unlock()
	third, _ := r.getCertificate(nil)
	if !bytes.Equal(third.Certificate[0], second.Certificate[0]) {
		t.Error("broken renewal replaced the served certificate")
	}
}
