package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// config check refuses an ACME set-up whose challenge port another server
// holds (every renewal would fail) and one without a contact address, and
// passes the same set-up once the port is free.
func TestConfigCheckACME(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	write := func(email string) string {
		p := filepath.Join(dir, "latchkey.toml")
		os.WriteFile(p, []byte(fmt.Sprintf(`hostname = "mx.example.com"
data_dir = %q
[submission]
listen = ["127.0.0.1:0"]
[[domains]]
name = "example.com"
[[domains.dkim]]
selector = "s1"
algo = "ed25519"
key_file = "s1.pem"
[tls.acme]
enabled = true
email = %q
listen_host = "127.0.0.1"
http_port = %d
`, dir, email, port)), 0o600)
		return p
	}
	check := func(path string) (int, string) {
		var out, errb bytes.Buffer
		rc := run([]string{"config", "check", "-config", path}, &out, &errb)
		return rc, out.String() + errb.String()
	}
	if rc, out := check(write("ops@example.com")); rc != 1 || !strings.Contains(out, "tls.acme.http_port") || !strings.Contains(out, "cannot listen") {
		t.Errorf("port taken: exit %d\n%s", rc, out)
	}
	if rc, out := check(write("")); rc != 1 || !strings.Contains(out, ":13: tls.acme.email: required") {
		t.Errorf("no email: exit %d\n%s", rc, out)
	}
	l.Close()
	if rc, out := check(write("ops@example.com")); rc != 0 {
		t.Errorf("port free: exit %d\n%s", rc, out)
	}
}
