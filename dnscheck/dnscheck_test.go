package dnscheck

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/miekg/dns"
)

const (
	testHost   = "mx.latchkey.example.net"
	testDomain = "example.com"
	testBounce = "bounce.example.com"
	testRUA    = "dmarc@example.com"
)

var (
	keysOnce         sync.Once
	rsaKey, otherKey *rsa.PrivateKey
	edPub            ed25519.PublicKey
	edPriv           ed25519.PrivateKey
	errKeys          error
)

// keys generates the test keys once: RSA generation dominates test time.
func keys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		if rsaKey, errKeys = rsa.GenerateKey(rand.Reader, 2048); errKeys != nil {
			return
		}
		if otherKey, errKeys = rsa.GenerateKey(rand.Reader, 2048); errKeys != nil {
			return
		}
		edPub, edPriv, errKeys = ed25519.GenerateKey(rand.Reader)
	})
	if errKeys != nil {
		t.Fatal(errKeys)
	}
}

func testInput(t testing.TB) Input {
	keys(t)
	return Input{
		Hostname:    testHost,
		OutboundIPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		Timeout:     2 * time.Second,
		Domains: []Domain{{
			Name:         testDomain,
			BounceDomain: testBounce,
			Selectors: []Selector{
				{Name: "lk1", PublicKey: &rsaKey.PublicKey},
				{Name: "lk2", PublicKey: edPub},
			},
		}},
	}
}

// goodZone starts a DNS server holding exactly what Records says to publish.
func goodZone(t *testing.T) (*dnstest.Server, Input) {
	in := testInput(t)
	in.RUA = testRUA // check's fixes then name the same report address
	s := dnstest.Start(t, strings.Join(Records(in), "\n"))
	in.Resolver = s.Addr
	return s, in
}

// set replaces the records of one name and type.
func set(t *testing.T, s *dnstest.Server, name string, qtype uint16, lines ...string) {
	t.Helper()
	s.Remove(name, qtype)
	if err := s.Add(strings.Join(lines, "\n")); err != nil {
		t.Fatal(err)
	}
}

func results(rep *Report, check, name string) []Result {
	var out []Result
	for _, r := range rep.Checks {
		if r.Check == check && r.Name == name {
			out = append(out, r)
		}
	}
	return out
}

// expect asserts that the check on name has a result with status whose
// problem and fix contain the given texts.
func expect(t *testing.T, rep *Report, check, name string, status Status, problem, fix string) Result {
	t.Helper()
	rs := results(rep, check, name)
	for _, r := range rs {
		if r.Status == status && strings.Contains(r.Problem, problem) && strings.Contains(r.Fix, fix) {
			return r
		}
	}
	var buf bytes.Buffer
	rep.WriteText(&buf)
	t.Fatalf("no %s %s result for %s with problem %q and fix %q; report:\n%s", status, check, name, problem, fix, buf.String())
	return Result{}
}

func check(t *testing.T, in Input) *Report {
	t.Helper()
	return Check(context.Background(), in)
}

func TestCorrectZonePasses(t *testing.T) {
	_, in := goodZone(t)
	rep := check(t, in)
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Checks {
		if r.Status != Pass {
			t.Errorf("not PASS: %+v\n%s", r, buf.String())
		}
	}
	want := map[string]int{"spf": 2, "dkim": 2, "dmarc": 1, "mx": 1, "ptr": 2, "hostname": 1}
	got := map[string]int{}
	for _, r := range rep.Checks {
		got[r.Check]++
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("checks run: %v, want %v", got, want)
	}
	if rep.ExitCode() != 0 {
		t.Errorf("exit code %d, want 0", rep.ExitCode())
	}
	r := results(rep, "dkim", "lk1._domainkey.example.com")[0]
	if r.Observed != "k=rsa "+fingerprint(&rsaKey.PublicKey) {
		t.Errorf("dkim observed %q", r.Observed)
	}
	if !strings.Contains(buf.String(), "PASS  spf      bounce.example.com  v=spf1 ip4:127.0.0.1 ip6:::1 -all") {
		t.Errorf("text report:\n%s", buf.String())
	}
}

func TestRecords(t *testing.T) {
	in := testInput(t)
	lines := recordsWith(in, testRUA)
	for _, want := range []string{
		`bounce.example.com. 3600 IN TXT "v=spf1 ip4:127.0.0.1 ip6:::1 -all"`,
		`example.com. 3600 IN TXT "v=spf1 ip4:127.0.0.1 ip6:::1 -all"`,
		`_dmarc.example.com. 3600 IN TXT "v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:dmarc@example.com"`,
		`bounce.example.com. 3600 IN MX 10 mx.latchkey.example.net.`,
		`mx.latchkey.example.net. 3600 IN A 127.0.0.1`,
		`mx.latchkey.example.net. 3600 IN AAAA ::1`,
		`1.0.0.127.in-addr.arpa. 3600 IN PTR mx.latchkey.example.net.`,
	} {
		if !containsLine(lines, want) {
			t.Errorf("missing %s in\n%s", want, strings.Join(lines, "\n"))
		}
	}
	// DKIM lines parse as TXT records of strings of at most 255 bytes that
	// join to a record carrying the key.
	for _, sel := range in.Domains[0].Selectors {
		var rr dns.RR
		for _, l := range lines {
			if strings.HasPrefix(l, sel.Name+"._domainkey.example.com. ") {
				var err error
				if rr, err = dns.NewRR(l); err != nil {
					t.Fatal(err)
				}
			}
		}
		if rr == nil {
			t.Fatalf("no DKIM line for %s", sel.Name)
		}
		var joined string
		for _, s := range rr.(*dns.TXT).Txt {
			if len(s) > 255 {
				t.Errorf("string of %d bytes", len(s))
			}
			joined += s
		}
		k, err := parseDKIMRecord(joined)
		if err != nil {
			t.Fatal(err)
		}
		if fingerprint(k.key) != fingerprint(sel.PublicKey) {
			t.Errorf("%s: record carries another key", sel.Name)
		}
	}
	if n := len(rrOf(t, lines, "lk1._domainkey.example.com.").(*dns.TXT).Txt); n < 2 {
		t.Errorf("2048-bit RSA record in %d strings, want it split", n)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "k=ed25519; p=") {
		t.Error("no ed25519 record")
	}
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func rrOf(t *testing.T, lines []string, prefix string) dns.RR {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix+" ") {
			rr, err := dns.NewRR(l)
			if err != nil {
				t.Fatal(err)
			}
			return rr
		}
	}
	t.Fatalf("no line for %s", prefix)
	return nil
}

func TestSPFProblems(t *testing.T) {
	const good = "v=spf1 ip4:127.0.0.1 ip6:::1 -all"
	txt := func(name, v string) string { return name + `. 300 IN TXT "` + v + `"` }
	cases := []struct {
		name    string
		records []string
		status  Status
		problem string
		fix     string
	}{
		{"missing", nil, Fail, "no SPF record", `bounce.example.com. 3600 IN TXT "v=spf1 ip4:127.0.0.1 ip6:::1 -all"`},
		{"two records", []string{txt(testBounce, good), txt(testBounce, "v=spf1 ip4:127.0.0.1 -all")},
			Fail, "2 SPF records", `replace them with one record: bounce.example.com. 3600 IN TXT "v=spf1 ip4:127.0.0.1 ip6:::1 -all"`},
		{"ip not covered", []string{txt(testBounce, "v=spf1 ip4:192.0.2.1 ip6:::1 -all")},
			Fail, "127.0.0.1 evaluates to fail", `add ip4:127.0.0.1: bounce.example.com. 3600 IN TXT "v=spf1 ip4:192.0.2.1 ip6:::1 ip4:127.0.0.1 -all"`},
		{"+all", []string{txt(testBounce, "v=spf1 ip4:127.0.0.1 ip6:::1 +all")},
			Fail, `"+all" lets any host`, `"v=spf1 ip4:127.0.0.1 ip6:::1 -all"`},
		{"?all", []string{txt(testBounce, "v=spf1 ip4:127.0.0.1 ip6:::1 ?all")},
			Fail, `"?all" lets any host`, `"v=spf1 ip4:127.0.0.1 ip6:::1 -all"`},
		{"~all", []string{txt(testBounce, "v=spf1 ip4:127.0.0.1 ip6:::1 ~all")},
			Warn, "~all only soft-fails", `"v=spf1 ip4:127.0.0.1 ip6:::1 -all"`},
		{"bad syntax", []string{txt(testBounce, "v=spf1 ip4:300.0.0.1 -all")},
			Fail, "invalid SPF record", good},
		{"too many lookups", []string{
			txt(testBounce, "v=spf1 ip4:127.0.0.1 ip6:::1 include:s1.example.com include:s2.example.com include:s3.example.com mx -all"),
			txt("s1.example.com", "v=spf1 a mx include:s4.example.com -all"),
			txt("s2.example.com", "v=spf1 a mx -all"),
			txt("s3.example.com", "v=spf1 a -all"),
			txt("s4.example.com", "v=spf1 exists:%{i}.x.example.com ptr -all"),
		}, Fail, "12 DNS-querying terms", `"v=spf1 ip4:127.0.0.1 ip6:::1 -all"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, in := goodZone(t)
			set(t, s, testBounce, dns.TypeTXT, tc.records...)
			rep := check(t, in)
			expect(t, rep, "spf", testBounce, tc.status, tc.problem, tc.fix)
			if want := map[Status]int{Warn: 1, Fail: 2}[tc.status]; rep.ExitCode() != want {
				t.Errorf("exit code %d, want %d", rep.ExitCode(), want)
			}
			// The From domain's record is untouched and still passes.
			expect(t, rep, "spf", testDomain, Pass, "", "")
		})
	}
}

func TestSPFOnFromDomain(t *testing.T) {
	s, in := goodZone(t)
	s.Remove(testDomain, dns.TypeTXT)
	rep := check(t, in)
	expect(t, rep, "spf", testDomain, Fail, "no SPF record", `example.com. 3600 IN TXT "v=spf1 ip4:127.0.0.1 ip6:::1 -all"`)
	expect(t, rep, "spf", testBounce, Pass, "", "")
}

func TestDKIMProblems(t *testing.T) {
	const name = "lk1._domainkey.example.com"
	t.Run("missing", func(t *testing.T) {
		s, in := goodZone(t)
		s.Remove(name, dns.TypeTXT)
		rep := check(t, in)
		want, _ := publicRecord(&rsaKey.PublicKey)
		expect(t, rep, "dkim", name, Fail, "no DKIM key record", "publish: "+txtLine(name, want))
		expect(t, rep, "dkim", "lk2._domainkey.example.com", Pass, "", "")
	})
	t.Run("different key", func(t *testing.T) {
		s, in := goodZone(t)
		other, _ := publicRecord(&otherKey.PublicKey)
		set(t, s, name, dns.TypeTXT, txtLine(name, other))
		rep := check(t, in)
		r := expect(t, rep, "dkim", name, Fail, "not latchkey's", "replace it")
		for _, fp := range []string{fingerprint(&rsaKey.PublicKey), fingerprint(&otherKey.PublicKey)} {
			if !strings.Contains(r.Problem, fp) {
				t.Errorf("problem %q lacks fingerprint %s", r.Problem, fp)
			}
		}
	})
	t.Run("rsa 1024", func(t *testing.T) {
		small, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		in := testInput(t)
		in.Domains[0].Selectors[0].PublicKey = &small.PublicKey
		s := dnstest.Start(t, strings.Join(recordsWith(in, testRUA), "\n"))
		in.Resolver = s.Addr
		rep := check(t, in)
		expect(t, rep, "dkim", name, Fail, "RSA key of 1024 bits", "2048-bit key")
	})
	t.Run("testing flag", func(t *testing.T) {
		s, in := goodZone(t)
		rec, _ := publicRecord(&rsaKey.PublicKey)
		set(t, s, name, dns.TypeTXT, txtLine(name, strings.Replace(rec, "k=rsa;", "k=rsa; t=y;", 1)))
		rep := check(t, in)
		expect(t, rep, "dkim", name, Warn, "t=y", "remove t=y: "+txtLine(name, rec))
		if rep.ExitCode() != 1 {
			t.Errorf("exit code %d, want 1", rep.ExitCode())
		}
	})
	t.Run("cname delegation", func(t *testing.T) {
		s, in := goodZone(t)
		rec, _ := publicRecord(&rsaKey.PublicKey)
		s.Remove(name, dns.TypeTXT)
		set(t, s, name, dns.TypeCNAME, name+". 300 IN CNAME lk1.keys.esp.example.org.",
			txtLine("lk1.keys.esp.example.org", rec))
		rep := check(t, in)
		expect(t, rep, "dkim", name, Pass, "", "")
	})
	t.Run("garbage", func(t *testing.T) {
		s, in := goodZone(t)
		set(t, s, name, dns.TypeTXT, txtLine(name, "v=DKIM1; k=rsa; p=!!!"))
		expect(t, check(t, in), "dkim", name, Fail, "invalid DKIM record", "replace it")
	})
}

func TestDMARCProblems(t *testing.T) {
	const name = "_dmarc.example.com"
	t.Run("missing", func(t *testing.T) {
		s, in := goodZone(t)
		s.Remove(name, dns.TypeTXT)
		expect(t, check(t, in), "dmarc", name, Fail, "no DMARC record",
			`publish: _dmarc.example.com. 3600 IN TXT "v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:dmarc@example.com"`)
	})
	t.Run("at organisational domain", func(t *testing.T) {
		in := testInput(t)
		in.Domains[0].Name = "tx.example.com"
		in.Domains[0].BounceDomain = "bounce.tx.example.com"
		s := dnstest.Start(t, strings.Join(recordsWith(in, testRUA), "\n"))
		in.Resolver = s.Addr
		s.Remove("_dmarc.tx.example.com", dns.TypeTXT)
		set(t, s, name, dns.TypeTXT, txtLine(name, "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.com"))
		rep := check(t, in)
		r := expect(t, rep, "dmarc", name, Pass, "", "")
		if !strings.Contains(r.Observed, "organisational") {
			t.Errorf("observed %q", r.Observed)
		}
		if rep.ExitCode() != 0 {
			t.Errorf("exit code %d", rep.ExitCode())
		}
	})
	t.Run("org domain sp=none", func(t *testing.T) {
		in := testInput(t)
		in.Domains[0].Name = "tx.example.com"
		in.Domains[0].BounceDomain = "bounce.tx.example.com"
		s := dnstest.Start(t, strings.Join(recordsWith(in, testRUA), "\n"))
		in.Resolver = s.Addr
		s.Remove("_dmarc.tx.example.com", dns.TypeTXT)
		set(t, s, name, dns.TypeTXT, txtLine(name, "v=DMARC1; p=reject; sp=none; rua=mailto:d@example.com"))
		expect(t, check(t, in), "dmarc", name, Warn, "sp=none", "sp=quarantine")
	})
	cases := []struct {
		name, record string
		status       Status
		problem, fix string
	}{
		{"p=none", "v=DMARC1; p=none; rua=mailto:d@example.com", Warn, "p=none",
			`_dmarc.example.com. 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:d@example.com"`},
		{"pct", "v=DMARC1; p=reject; pct=50; rua=mailto:d@example.com", Warn, "pct=50",
			`"v=DMARC1; p=reject; rua=mailto:d@example.com"`},
		{"no rua", "v=DMARC1; p=reject", Warn, "no rua=", `"v=DMARC1; p=reject; rua=mailto:dmarc@example.com"`},
		{"aspf=s", "v=DMARC1; p=reject; aspf=s; rua=mailto:d@example.com", Fail,
			"envelope domain bounce.example.com does not align with From example.com",
			`set aspf=r: _dmarc.example.com. 3600 IN TXT "v=DMARC1; p=reject; aspf=r; rua=mailto:d@example.com"` +
				"\nor configure example.com itself as the bounce (envelope) domain"},
		{"adkim=s is fine", "v=DMARC1; p=reject; adkim=s; rua=mailto:d@example.com", Pass, "", ""},
		{"invalid", "v=DMARC1; p=maybe", Fail, "invalid DMARC record", "replace it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, in := goodZone(t)
			set(t, s, name, dns.TypeTXT, txtLine(name, tc.record))
			expect(t, check(t, in), "dmarc", name, tc.status, tc.problem, tc.fix)
		})
	}
	t.Run("two records", func(t *testing.T) {
		s, in := goodZone(t)
		set(t, s, name, dns.TypeTXT, txtLine(name, "v=DMARC1; p=reject"), txtLine(name, "v=DMARC1; p=none"))
		expect(t, check(t, in), "dmarc", name, Fail, "2 DMARC records", "keep only one")
	})
}

func TestMXProblems(t *testing.T) {
	want := "bounce.example.com. 3600 IN MX 10 mx.latchkey.example.net."
	t.Run("missing", func(t *testing.T) {
		s, in := goodZone(t)
		s.Remove(testBounce, dns.TypeMX)
		expect(t, check(t, in), "mx", testBounce, Fail, "no MX record", "publish: "+want)
	})
	t.Run("wrong", func(t *testing.T) {
		s, in := goodZone(t)
		set(t, s, testBounce, dns.TypeMX, testBounce+". 300 IN MX 10 mail.example.com.")
		r := expect(t, check(t, in), "mx", testBounce, Fail, "does not point at latchkey", "replace it with: "+want)
		if r.Observed != "10 mail.example.com" {
			t.Errorf("observed %q", r.Observed)
		}
	})
	t.Run("not preferred", func(t *testing.T) {
		s, in := goodZone(t)
		set(t, s, testBounce, dns.TypeMX, testBounce+". 300 IN MX 5 mail.example.com.", testBounce+". 300 IN MX 10 "+testHost+".")
		expect(t, check(t, in), "mx", testBounce, Warn, "another MX is preferred", want)
	})
}

func TestPTRProblems(t *testing.T) {
	const rev = "1.0.0.127.in-addr.arpa."
	t.Run("missing", func(t *testing.T) {
		s, in := goodZone(t)
		s.Remove(rev, dns.TypePTR)
		expect(t, check(t, in), "ptr", rev, Fail, "no PTR record for 127.0.0.1",
			"1.0.0.127.in-addr.arpa. 3600 IN PTR mx.latchkey.example.net.")
	})
	t.Run("not forward-confirmed", func(t *testing.T) {
		s, in := goodZone(t)
		set(t, s, rev, dns.TypePTR, rev+" 300 IN PTR host.isp.example.net.", "host.isp.example.net. 300 IN A 192.0.2.9")
		expect(t, check(t, in), "ptr", rev, Fail, "not forward-confirmed", "host.isp.example.net. 3600 IN A 127.0.0.1")
	})
	t.Run("other name", func(t *testing.T) {
		s, in := goodZone(t)
		set(t, s, rev, dns.TypePTR, rev+" 300 IN PTR host.isp.example.net.", "host.isp.example.net. 300 IN A 127.0.0.1")
		expect(t, check(t, in), "ptr", rev, Warn, "not latchkey's hostname", "PTR mx.latchkey.example.net.")
	})
	t.Run("hostname does not resolve", func(t *testing.T) {
		s, in := goodZone(t)
		s.Remove(testHost, dns.TypeANY)
		rep := check(t, in)
		expect(t, rep, "hostname", testHost, Fail, "does not resolve", "mx.latchkey.example.net. 3600 IN A 127.0.0.1")
		// Without the hostname's addresses the PTR can no longer be confirmed.
		expect(t, rep, "ptr", rev, Fail, "not forward-confirmed", "")
	})
}

func TestCouldNotCheck(t *testing.T) {
	t.Run("servfail", func(t *testing.T) {
		s, in := goodZone(t)
		s.Fail(testBounce, dns.RcodeServerFailure)
		rep := check(t, in)
		for _, c := range []string{"spf", "mx"} {
			r := expect(t, rep, c, testBounce, Error, "could not check", "")
			if !strings.Contains(r.Problem, "SERVFAIL") {
				t.Errorf("%s problem %q", c, r.Problem)
			}
		}
		if rep.ExitCode() != 2 {
			t.Errorf("exit code %d, want 2", rep.ExitCode())
		}
		var buf bytes.Buffer
		rep.WriteText(&buf)
		if !strings.Contains(buf.String(), "ERROR (could not check) spf") {
			t.Errorf("text:\n%s", buf.String())
		}
		for _, r := range rep.Checks {
			if r.Status == Fail {
				t.Errorf("a failure to get an answer reported as a broken record: %+v", r)
			}
		}
	})
	t.Run("timeout", func(t *testing.T) {
		s, in := goodZone(t)
		in.Timeout = 100 * time.Millisecond
		s.Delay("_dmarc."+testDomain, 300*time.Millisecond)
		s.Delay("lk2._domainkey."+testDomain, 300*time.Millisecond)
		rep := check(t, in)
		expect(t, rep, "dmarc", "_dmarc.example.com", Error, "timed out", "")
		expect(t, rep, "dkim", "lk2._domainkey.example.com", Error, "timed out", "")
		expect(t, rep, "dkim", "lk1._domainkey.example.com", Pass, "", "")
	})
	t.Run("cancelled", func(t *testing.T) {
		_, in := goodZone(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rep := Check(ctx, in)
		for _, r := range rep.Checks {
			if r.Status != Error {
				t.Errorf("with a cancelled context: %+v", r)
			}
		}
	})
	t.Run("bad resolver address", func(t *testing.T) {
		in := testInput(t)
		in.Resolver = "nonsense"
		rep := check(t, in)
		if len(rep.Checks) != 1 || rep.Checks[0].Status != Error || rep.ExitCode() != 2 {
			t.Errorf("%+v", rep.Checks)
		}
	})
}

func TestReportJSONAndExitCode(t *testing.T) {
	rep := &Report{Checks: []Result{{Domain: "d", Check: "spf", Name: "d", Status: Warn, Problem: "p", Fix: "f"}}}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(back) != fmt.Sprint(*rep) {
		t.Errorf("round trip %+v", back)
	}
	for _, tc := range []struct {
		statuses []Status
		want     int
	}{
		{nil, 0}, {[]Status{Pass}, 0}, {[]Status{Pass, Warn}, 1},
		{[]Status{Warn, Fail, Warn}, 2}, {[]Status{Pass, Error}, 2},
	} {
		r := &Report{}
		for _, s := range tc.statuses {
			r.Checks = append(r.Checks, Result{Status: s})
		}
		if got := r.ExitCode(); got != tc.want {
			t.Errorf("%v: exit code %d, want %d", tc.statuses, got, tc.want)
		}
	}
}

func TestResolver(t *testing.T) {
	var zone []string
	for i := 0; i < 12; i++ {
		zone = append(zone, fmt.Sprintf(`big.example.com. 300 IN TXT "%d-%s"`, i, strings.Repeat("x", 200)))
	}
	zone = append(zone,
		"alias.example.com. 300 IN CNAME big.example.com.",
		"out.example.com. 300 IN CNAME elsewhere.example.org.",
		"a.example.com. 300 IN A 127.0.0.5",
		"a.example.com. 300 IN AAAA ::5",
		"mx.example.com. 300 IN MX 10 a.example.com.",
		"5.0.0.127.in-addr.arpa. 300 IN PTR a.example.com.")
	s := dnstest.Start(t, strings.Join(zone, "\n"))
	r, err := NewResolver(s.Addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// 12 × 200 bytes does not fit a UDP answer: the client must retry on TCP.
	txts, err := r.LookupTXT(ctx, "big.example.com")
	if err != nil || len(txts) != 12 {
		t.Fatalf("LookupTXT: %d records, %v", len(txts), err)
	}
	if txts, err := r.LookupTXT(ctx, "alias.example.com"); err != nil || len(txts) != 12 {
		t.Errorf("through CNAME: %d records, %v", len(txts), err)
	}
	if _, err := r.LookupTXT(ctx, "nothing.example.com"); !IsNotFound(err) {
		t.Errorf("NXDOMAIN: %v", err)
	}
	if txts, err := r.LookupTXT(ctx, "a.example.com"); err != nil || len(txts) != 0 {
		t.Errorf("NODATA: %v %v", txts, err)
	}
	// A CNAME whose target the server does not hold: asked again, NXDOMAIN.
	if _, err := r.LookupTXT(ctx, "out.example.com"); !IsNotFound(err) {
		t.Errorf("dangling CNAME: %v", err)
	}
	ips, err := r.LookupIP(ctx, "a.example.com")
	if err != nil || len(ips) != 2 || !ips[0].Equal(net.ParseIP("127.0.0.5")) || !ips[1].Equal(net.ParseIP("::5")) {
		t.Errorf("LookupIP: %v %v", ips, err)
	}
	mxs, err := r.LookupMX(ctx, "mx.example.com")
	if err != nil || len(mxs) != 1 || mxs[0].Host != "a.example.com." || mxs[0].Pref != 10 {
		t.Errorf("LookupMX: %v %v", mxs, err)
	}
	names, err := r.LookupAddr(ctx, "127.0.0.5")
	if err != nil || len(names) != 1 || names[0] != "a.example.com." {
		t.Errorf("LookupAddr: %v %v", names, err)
	}
	s.Fail("a.example.com", dns.RcodeServerFailure)
	if _, err := r.LookupA(ctx, "a.example.com"); !IsTemporary(err) || IsNotFound(err) {
		t.Errorf("SERVFAIL: %v", err)
	}
}

func TestParsers(t *testing.T) {
	for _, tc := range []struct {
		rec string
		ok  bool
		n   int // DNS-querying terms, not recursing
	}{
		{"v=spf1 -all", true, 0},
		{"v=spf1", true, 0},
		{"V=SPF1 a mx/24 a:x.example.com/24//64 ptr exists:%{i}.e.example.com include:i.example.com redirect=r.example.com", true, 7},
		{"v=spf1 ip6:2001:db8::/32 ip4:192.0.2.0/24 exp=x.example.com ~all", true, 0},
		{"v=spf1 foo", false, 0},
		{"v=spf1 ip4:2001:db8::1", false, 0},
		{"v=spf1 ip6:192.0.2.1", false, 0},
		{"v=spf1 ip4:192.0.2.0/33", false, 0},
		{"v=spf1 include:", false, 0},
		{"v=spf1 redirect=a.example.com redirect=b.example.com", false, 0},
		{"v=spf1 exists:%{z", false, 0},
		{"v=spf10", false, 0},
	} {
		terms, err := parseSPF(tc.rec)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v", tc.rec, err)
			continue
		}
		n := 0
		for _, term := range terms {
			if term.querying() {
				n++
			}
		}
		if n != tc.n {
			t.Errorf("%q: %d querying terms, want %d", tc.rec, n, tc.n)
		}
	}
	for _, tc := range []struct {
		rec string
		ok  bool
	}{
		{"v=DMARC1; p=reject", true},
		{"v=DMARC1;p=none;pct=0;adkim=s;aspf=r;rua=mailto:a@b.c,mailto:d@e.f", true},
		{"p=reject; v=DMARC1", false},
		{"v=DMARC1", false},
		{"v=DMARC1; p=reject; pct=101", false},
		{"v=DMARC1; p=reject; aspf=x", false},
		{"v=DMARC1; p=reject; p=none", false},
		{"v=DMARC1; p", false},
	} {
		if _, err := parseDMARC(tc.rec); (err == nil) != tc.ok {
			t.Errorf("%q: err %v", tc.rec, err)
		}
	}
	keys(t)
	rec, _ := publicRecord(edPub)
	for _, tc := range []struct {
		rec     string
		ok      bool
		testing bool
	}{
		{rec, true, false},
		{strings.Replace(rec, "v=DKIM1; ", "", 1) + "; t=s:y", true, true},
		{"v=DKIM1; p=", true, false},
		{"k=rsa; v=DKIM1; p=", false, false},
		{"v=DKIM1; k=dsa; p=", false, false},
		{"v=DKIM1; h=sha1; p=", false, false},
		{"v=DKIM1; k=ed25519; p=AAAA", false, false},
		{"v=DKIM1", false, false},
	} {
		k, err := parseDKIMRecord(tc.rec)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v", tc.rec, err)
			continue
		}
		if err == nil && k.testing != tc.testing {
			t.Errorf("%q: testing %v", tc.rec, k.testing)
		}
	}
}

// Several problems in one record: every fix shows the record with all the
// changes, so that applying one fix does not undo another.
func TestFixesCombine(t *testing.T) {
	s, in := goodZone(t)
	set(t, s, testBounce, dns.TypeTXT, testBounce+`. 300 IN TXT "v=spf1 ip4:192.0.2.1 ~all"`)
	set(t, s, "_dmarc.example.com", dns.TypeTXT, txtLine("_dmarc.example.com", "v=DMARC1; p=none; aspf=s"))
	rep := check(t, in)
	spfFixed := `bounce.example.com. 3600 IN TXT "v=spf1 ip4:192.0.2.1 ip4:127.0.0.1 ip6:::1 -all"`
	expect(t, rep, "spf", testBounce, Fail, "127.0.0.1 evaluates to softfail", "add ip4:127.0.0.1 ip6:::1: "+spfFixed)
	expect(t, rep, "spf", testBounce, Warn, "~all", spfFixed)
	dmarcFixed := `_dmarc.example.com. 3600 IN TXT "v=DMARC1; p=quarantine; aspf=r; rua=mailto:dmarc@example.com"`
	expect(t, rep, "dmarc", "_dmarc.example.com", Warn, "p=none", dmarcFixed)
	expect(t, rep, "dmarc", "_dmarc.example.com", Warn, "no rua=", dmarcFixed)
	expect(t, rep, "dmarc", "_dmarc.example.com", Fail, "aspf=s", dmarcFixed)
	if n := len(results(rep, "dmarc", "_dmarc.example.com")); n != 3 {
		t.Errorf("%d dmarc results, want one per problem (3)", n)
	}
}

func TestInputProblems(t *testing.T) {
	t.Run("no outbound IPs", func(t *testing.T) {
		_, in := goodZone(t)
		in.OutboundIPs = nil
		rep := check(t, in)
		expect(t, rep, "ptr", "", Error, "no outbound IP addresses", "")
		if rep.ExitCode() != 2 {
			t.Errorf("exit code %d", rep.ExitCode())
		}
	})
	t.Run("unsupported key", func(t *testing.T) {
		_, in := goodZone(t)
		in.Domains[0].Selectors[0].PublicKey = "not a key"
		expect(t, check(t, in), "dkim", "lk1._domainkey.example.com", Fail, "unsupported public key type", "latchkey dkim keygen")
		if lines := strings.Join(recordsWith(in, ""), "\n"); !strings.Contains(lines, "; selector lk1: dnscheck: dkim: unsupported public key type") {
			t.Errorf("records:\n%s", lines)
		}
	})
	t.Run("rua forms and default bounce domain", func(t *testing.T) {
		in := testInput(t)
		in.Domains[0].BounceDomain = ""
		lines := recordsWith(in, "mailto:r@example.com")
		for _, want := range []string{
			`_dmarc.example.com. 3600 IN TXT "v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:r@example.com"`,
			`bounce.example.com. 3600 IN MX 10 mx.latchkey.example.net.`,
		} {
			if !containsLine(lines, want) {
				t.Errorf("missing %s", want)
			}
		}
		if !containsLine(recordsWith(in, ""), `_dmarc.example.com. 3600 IN TXT "v=DMARC1; p=quarantine; adkim=r; aspf=r"`) {
			t.Error("without rua")
		}
	})
}

// BenchmarkCheck measures a full check of one correct domain (two SPF
// records, two selectors, DMARC, MX, two PTRs, hostname) over loopback DNS.
func BenchmarkCheck(b *testing.B) {
	in := testInput(b)
	s := dnstest.Start(b, strings.Join(recordsWith(in, testRUA), "\n"))
	in.Resolver = s.Addr
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if rep := Check(context.Background(), in); rep.ExitCode() != 0 {
			b.Fatalf("%+v", rep.Checks)
		}
	}
}

func TestNamesNormalised(t *testing.T) {
	_, in := goodZone(t)
	in.Domains[0].Name = "Example.COM."
	in.Domains[0].BounceDomain = "BOUNCE.example.com."
	in.Hostname = "MX.latchkey.example.net."
	rep := check(t, in)
	if rep.ExitCode() != 0 {
		var buf bytes.Buffer
		rep.WriteText(&buf)
		t.Fatalf("exit code %d:\n%s", rep.ExitCode(), buf.String())
	}
	expect(t, rep, "spf", testBounce, Pass, "", "")
	expect(t, rep, "dkim", "lk1._domainkey.example.com", Pass, "", "")
}

// recordsWith is Records for in with the report address rua.
func recordsWith(in Input, rua string) []string {
	in.RUA = rua
	return Records(in)
}

// Without -rua, check and records print the same DMARC record (no rua=), and
// the missing report address is a fix in words: an invented mailbox would
// send the domain's reports where no one reads them.
func TestDMARCWithoutReportAddressAgreesWithRecords(t *testing.T) {
	const name = "_dmarc.example.com"
	s, in := goodZone(t)
	in.RUA = ""
	var published string
	for _, l := range Records(in) {
		if strings.HasPrefix(l, name+".") {
			published = l
		}
	}
	if published == "" || strings.Contains(published, "rua=") {
		t.Fatalf("records without a report address: DMARC line %q", published)
	}
	s.Remove(name, dns.TypeTXT)
	expect(t, check(t, in), "dmarc", name, Fail, "no DMARC record", "publish: "+published)

	set(t, s, name, dns.TypeTXT, txtLine(name, "v=DMARC1; p=reject"))
	rep := check(t, in)
	expect(t, rep, "dmarc", name, Warn, "no rua=", "add rua=mailto:<a mailbox you read> (run with -rua ADDRESS for the whole record)")
	for _, r := range results(rep, "dmarc", name) {
		if strings.Contains(r.Fix, "@example.com") {
			t.Errorf("fix invents a report address: %q", r.Fix)
		}
	}
}
