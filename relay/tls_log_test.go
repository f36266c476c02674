package relay

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// A changed certificate that is not taken (broken, or expired) is reported
// once; one that is taken is reported too.
func TestCertReloadLogged(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	writePair(t, cert, key, "ok.test", time.Now().Add(90*24*time.Hour))
	r, err := newCertReloader(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	l := zerolog.New(&buf)
	r.log = &l
	check := func() {
		r.mu.Lock()
		r.checked = time.Time{}
		r.mu.Unlock()
		r.getCertificate(nil)
	}
	if err := os.WriteFile(cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	check()
	check()
	if n := strings.Count(buf.String(), "not taken"); n != 1 {
		t.Errorf("a broken certificate reported %d times, want once:\n%s", n, buf.String())
	}
	time.Sleep(10 * time.Millisecond) // a new modification time
	writePair(t, cert, key, "renewed.test", time.Now().Add(90*24*time.Hour))
	check()
	if !strings.Contains(buf.String(), "TLS certificate reloaded") {
		t.Errorf("the renewal was not reported:\n%s", buf.String())
	}
}
