package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// pyAuthScript has Debian's dkimpy, pyspf and authheaders judge a message
// as a receiving MX would, with dnspython pointed at the test DNS server.
const pyAuthScript = `
import sys
import dns.resolver
import dkim, spf, authheaders
host, port, msgfile, ip, mail_from, helo = sys.argv[1:7]
r = dns.resolver.Resolver(configure=False)
r.nameservers = [host]
r.port = int(port)
r.lifetime = 5
dns.resolver.default_resolver = r
msg = open(msgfile, 'rb').read()
print("dkim.verify:", dkim.verify(msg))
print("spf.check2:", spf.check2(i=ip, s=mail_from, h=helo)[0])
print(authheaders.authenticate_message(msg, "mx.dest.test", spf=True, dkim=True, dmarc=True,
      ip=ip, mail_from=mail_from, helo=helo))
`

// The records `latchkey dns records` prints, once published, make `latchkey
// dns check` pass, and make a message the relay signed and delivered pass
// DKIM, SPF and DMARC in independent checkers.
func TestDNSRecordsMakeCheckPass(t *testing.T) {
	e := newDurEnv(t, smtpsink.Options{})
	e.start() // generates the DKIM key
	cli := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		rc := run(args, &out, &errb)
		if errb.Len() > 0 {
			t.Logf("latchkey %s: stderr:\n%s", strings.Join(args[:2], " "), errb.String())
		}
		return out.String(), rc
	}
	out, rc := cli("dns", "check", "-config", e.cfgPath, "-ip", "127.0.0.1")
	if rc != 2 {
		t.Fatalf("dns check before publishing: exit %d, want 2 (failures)\n%s", rc, out)
	}
	records, rc := cli("dns", "records", "-config", e.cfgPath, "-ip", "127.0.0.1", "-rua", "dmarc@example.com")
	if rc != 0 {
		t.Fatalf("dns records: exit %d\n%s", rc, records)
	}
	// Publish exactly what was printed, the PTR included: in a real
	// deployment the hosting provider sets that one.
	var zone []string
	for _, l := range strings.Split(records, "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), ";"))
		if strings.Contains(l, " IN ") {
			zone = append(zone, l)
		}
	}
	if err := e.dns.Add(strings.Join(zone, "\n")); err != nil {
		t.Fatalf("publishing the printed records: %v\n%s", err, records)
	}
	out, rc = cli("dns", "check", "-config", e.cfgPath, "-ip", "127.0.0.1")
	if rc != 0 {
		t.Fatalf("dns check after publishing `dns records`: exit %d\n%s\nrecords:\n%s", rc, out, records)
	}
	for _, check := range []string{"spf", "dkim", "dmarc", "mx", "ptr"} {
		if !strings.Contains(strings.ToLower(out), check) {
			t.Errorf("dns check output does not mention %s:\n%s", check, out)
		}
	}

	// A message signed and delivered by the relay, judged independently.
	e.submitOne("user@dest.test", "dnsrecords-1@example.com")
	if !waitFor(20*time.Second, func() bool { return len(e.sink.Messages()) == 1 }) {
		t.Fatal("message not delivered")
	}
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("independent check needs %s with python3-dkim, python3-spf, python3-authheaders", py)
		}
		t.Skip("skipping independent check: no " + py)
	}
	m := e.sink.Messages()[0]
	dir := t.TempDir()
	script, msgFile := filepath.Join(dir, "auth.py"), filepath.Join(dir, "msg.eml")
	os.WriteFile(script, []byte(pyAuthScript), 0o600)
	os.WriteFile(msgFile, m.Data, 0o600)
	host, port, _ := strings.Cut(e.dns.Addr, ":")
	cmd := exec.Command(py, script, host, port, msgFile, "127.0.0.1", m.From, "relay.test")
	cmd.Dir = dir // no repo folder (e.g. dkim/) may shadow a Python module
	res, err := cmd.CombinedOutput()
	if err != nil {
		if os.Getenv("CI") != "true" && bytes.Contains(res, []byte("ModuleNotFoundError")) {
			t.Skipf("skipping independent check: %s", res)
		}
		t.Fatalf("python: %v\n%s", err, res)
	}
	for _, want := range []string{"dkim.verify: True", "spf.check2: pass", "dkim=pass", "spf=pass", "dmarc=pass"} {
		if !strings.Contains(string(res), want) {
			t.Errorf("independent verifiers: want %q in\n%s", want, res)
		}
	}
}
