package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// "dkim keygen -bits 1024" wrote a key that "dns check" then fails forever
// ("receivers distrust keys under 2048 bits"); it now refuses, and writes
// nothing. 2048 and larger still work, and an existing file is kept.
func TestReviewKeygenSizes(t *testing.T) {
	dir := t.TempDir()
	gen := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		rc := run(append([]string{"dkim", "keygen", "-domain", "example.com", "-selector", "lk1"}, args...), &out, &errb)
		return rc, out.String(), errb.String()
	}
	small := filepath.Join(dir, "small.pem")
	if rc, out, errs := gen("-bits", "1024", "-out", small); rc == 0 || out != "" {
		t.Errorf("-bits 1024: exit %d, stdout %q, stderr %q; want a refusal", rc, out, errs)
	} else if !strings.Contains(errs, "2048") {
		t.Errorf("-bits 1024: the refusal does not say what is needed: %q", errs)
	}
	if _, err := os.Stat(small); err == nil {
		t.Error("-bits 1024 wrote a key file")
	}
	good := filepath.Join(dir, "good.pem")
	rc, out, errs := gen("-bits", "2048", "-out", good)
	if rc != 0 || !strings.HasPrefix(out, "lk1._domainkey.example.com. 3600 IN TXT \"v=DKIM1; k=rsa; p=") {
		t.Fatalf("-bits 2048: exit %d, stdout %q, stderr %q", rc, out, errs)
	}
	fi, err := os.Stat(good)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	before, _ := os.ReadFile(good)
	if rc, _, _ := gen("-out", good); rc == 0 {
		t.Error("keygen over an existing key file succeeded")
	}
	if after, _ := os.ReadFile(good); !bytes.Equal(before, after) {
		t.Error("keygen overwrote an existing key file")
	}
}
