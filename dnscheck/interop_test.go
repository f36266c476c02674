package dnscheck

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/miekg/dns"
)

// verifyScript points dnspython's default resolver (which dkimpy, pyspf and
// authheaders all use) at a test DNS server, so that the three Debian modules
// judge the message against the very zone Records produced. It judges once
// per server given, in one process, because importing authheaders alone
// takes seconds.
const verifyScript = `
import sys
import dns.resolver
import dkim, spf, authheaders
host, msgfile, ip, mail_from, helo = sys.argv[1:6]
msg = open(msgfile, 'rb').read()
for port in sys.argv[6:]:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [host]
    r.port = int(port)
    r.lifetime = 5
    dns.resolver.default_resolver = r
    print("=== server", port)
    print("dkim.verify:", dkim.verify(msg))
    print("spf.check2:", spf.check2(i=ip, s=mail_from, h=helo)[0])
    print(authheaders.authenticate_message(msg, "interop.test", spf=True, dkim=True, dmarc=True,
          ip=ip, mail_from=mail_from, helo=helo))
`

// pythonModules returns the Python interpreter to use, or skips (fails under
// CI=true) when it or the modules are missing.
func pythonModules(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	missing := func(why string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("independent check needs %s (Debian python3-dkim, python3-spf, python3-authheaders): %s", py, why)
		}
		t.Skipf("skipping independent check: %s (install Debian python3-dkim, python3-spf, python3-authheaders)", why)
	}
	if _, err := os.Stat(py); err != nil {
		missing(err.Error())
	}
	// find_spec, not import: authheaders takes seconds to import.
	cmd := exec.Command(py, "-c", `import importlib.util as u, sys
missing = [m for m in ("dkim", "spf", "authheaders", "dns") if u.find_spec(m) is None]
print("missing Python modules:", *missing)
sys.exit(1 if missing else 0)`)
	cmd.Dir = t.TempDir() // so that no folder of this repo (e.g. dkim/) shadows a module
	if out, err := cmd.CombinedOutput(); err != nil {
		missing(strings.TrimSpace(string(out)))
	}
	return py
}

// TestIndependentVerifiers signs a message as latchkey does and has
// independent implementations check DKIM, SPF and DMARC against the records
// that Records says to publish.
func TestIndependentVerifiers(t *testing.T) {
	py := pythonModules(t)
	s, in := goodZone(t)
	if rep := check(t, in); rep.ExitCode() != 0 {
		t.Fatalf("dnscheck does not pass the zone itself: %+v", rep.Checks)
	}

	msg := "From: Latchkey <no-reply@example.com>\r\n" +
		"To: user@example.org\r\n" +
		"Subject: Reset your password\r\n" +
		"Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n" +
		"Message-ID: <interop-1@example.com>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n" +
		"Someone asked to reset your password.\r\n"
	var signed bytes.Buffer
	err := dkim.Sign(&signed, strings.NewReader(msg), &dkim.SignOptions{
		Domain:                 testDomain,
		Selector:               "lk1",
		Signer:                 rsaKey,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             []string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script, msgFile := filepath.Join(dir, "verify.py"), filepath.Join(dir, "msg.eml")
	if err := os.WriteFile(script, []byte(verifyScript), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(msgFile, signed.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// A second server holds the zone without the DKIM key and the bounce
	// domain's SPF: the same verifiers must fail there, or passing proves
	// nothing.
	broken := dnstest.Start(t, strings.Join(recordsWith(in, testRUA), "\n"))
	broken.Remove("lk1._domainkey."+testDomain, dns.TypeTXT)
	broken.Remove(testBounce, dns.TypeTXT)

	host, port, _ := strings.Cut(s.Addr, ":")
	_, brokenPort, _ := strings.Cut(broken.Addr, ":")
	cmd := exec.Command(py, script, host, msgFile, "127.0.0.1", "b+x.y@"+testBounce, testHost, port, brokenPort)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	t.Logf("verifiers said:\n%s", out)
	good, bad, ok := strings.Cut(string(out), "=== server "+brokenPort)
	if !ok {
		t.Fatalf("no verdict for the broken zone:\n%s", out)
	}
	for _, want := range []string{"dkim.verify: True", "spf.check2: pass", "dkim=pass", "spf=pass", "dmarc=pass"} {
		if !strings.Contains(good, want) {
			t.Errorf("independent verifiers: want %q in\n%s", want, good)
		}
	}
	for _, unwanted := range []string{"dkim.verify: True", "spf.check2: pass", "dkim=pass", "spf=pass", "dmarc=pass"} {
		if strings.Contains(bad, unwanted) {
			t.Errorf("with the records removed, still %q:\n%s", unwanted, bad)
		}
	}
}
