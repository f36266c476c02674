package dnscheck

import (
	"bytes"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// report renders a report for failure messages.
func report(rep *Report) string {
	var b bytes.Buffer
	rep.WriteText(&b)
	return b.String()
}

// fixRecord returns the zone line a fix ends with (after the last ": ").
func fixRecord(t *testing.T, fix string) string {
	t.Helper()
	fix, _, _ = strings.Cut(fix, "\n")
	i := strings.LastIndex(fix, ": ")
	if i < 0 || !strings.Contains(fix[i:], " IN ") {
		t.Fatalf("fix %q names no record", fix)
	}
	return fix[i+2:]
}

// An SPF record that evaluates to permerror for latchkey's addresses (here:
// more than two void look-ups before its ip4: term) must get a fix that,
// once published, makes the addresses pass. The fix used to append the
// ip4:/ip6: terms before -all, after the look-ups that cause the
// permerror, so publishing it changed nothing (and listed them twice).
func TestReviewSPFPermerrorFixWorks(t *testing.T) {
	for _, rec := range []string{
		"v=spf1 a:nx1.example.com a:nx2.example.com a:nx3.example.com ip4:127.0.0.1 ip6:::1 -all",
		"v=spf1 -ip4:127.0.0.0/8 -ip6:::1 -all",
		"v=spf1 include:nx.example.com -all",
	} {
		t.Run(rec, func(t *testing.T) {
			s, in := goodZone(t)
			set(t, s, testBounce, dns.TypeTXT, txtLine(testBounce, rec))
			rep := check(t, in)
			r := expect(t, rep, "spf", testBounce, Fail, "evaluates to", "add ")
			fixed := fixRecord(t, r.Fix)
			if strings.Count(fixed, "ip4:127.0.0.1") != 1 {
				t.Errorf("fix lists 127.0.0.1 other than once: %s", fixed)
			}
			s.Remove(testBounce, dns.TypeTXT)
			if err := s.Add(fixed); err != nil {
				t.Fatal(err)
			}
			rep = check(t, in)
			for _, r := range results(rep, "spf", testBounce) {
				if strings.Contains(r.Problem, "evaluates to") {
					t.Errorf("after publishing the fix %s, still: %s\n%s", fixed, r.Problem, report(rep))
				}
			}
		})
	}
}

// A record without an all term that ends in redirect= takes the all term of
// the record it redirects to (RFC 7208 section 6.1). "+all" there lets any
// host send as the domain, but the check passed it: it judged only the
// record at the name itself.
func TestReviewSPFRedirectAllJudged(t *testing.T) {
	const target = "_spf.example.com"
	cases := []struct {
		all     string
		status  Status
		problem string
	}{
		{"+all", Fail, "lets any host"},
		{"?all", Fail, "lets any host"},
		{"~all", Warn, "only soft-fails"},
		{"-all", Pass, ""},
	}
	for _, tc := range cases {
		t.Run(tc.all, func(t *testing.T) {
			s, in := goodZone(t)
			set(t, s, testBounce, dns.TypeTXT, txtLine(testBounce, "v=spf1 redirect="+target))
			set(t, s, target, dns.TypeTXT, txtLine(target, "v=spf1 ip4:127.0.0.1 ip6:::1 "+tc.all))
			rep := check(t, in)
			if tc.status == Pass {
				expect(t, rep, "spf", testBounce, Pass, "", "")
				return
			}
			r := expect(t, rep, "spf", testBounce, tc.status, tc.problem,
				`_spf.example.com. 3600 IN TXT "v=spf1 ip4:127.0.0.1 ip6:::1 -all"`)
			if !strings.Contains(r.Problem, target) || !strings.Contains(r.Problem, tc.all) {
				t.Errorf("problem does not say where the all term is: %s", r.Problem)
			}
		})
	}
}

// Receivers send aggregate reports only to mailto: URIs (RFC 7489 section
// 6.2); "rua=dmarc@example.com", a common mistake, gets no reports at all,
// but the check passed it as if reports were set up.
func TestReviewDMARCRuaNotMailto(t *testing.T) {
	const name = "_dmarc.example.com"
	cases := []struct{ record, fix string }{
		{"v=DMARC1; p=reject; rua=dmarc@example.com",
			`"v=DMARC1; p=reject; rua=mailto:dmarc@example.com"`},
		{"v=DMARC1; p=reject; rua=https://reports.example.com/dmarc",
			`"v=DMARC1; p=reject; rua=mailto:dmarc@example.com"`},
		{"v=DMARC1; p=reject; rua=mailto:", `"v=DMARC1; p=reject; rua=mailto:dmarc@example.com"`},
	}
	for _, tc := range cases {
		t.Run(tc.record, func(t *testing.T) {
			s, in := goodZone(t)
			set(t, s, name, dns.TypeTXT, txtLine(name, tc.record))
			rep := check(t, in)
			expect(t, rep, "dmarc", name, Warn, "rua=", name+". 3600 IN TXT "+tc.fix)
			if rep.ExitCode() != 1 {
				t.Errorf("exit code %d, want 1", rep.ExitCode())
			}
		})
	}
	// Valid forms still pass: several URIs, a size limit, upper-case scheme.
	s, in := goodZone(t)
	set(t, s, name, dns.TypeTXT, txtLine(name, "v=DMARC1; p=reject; rua=MAILTO:a@example.com,mailto:b@example.com!10m"))
	expect(t, check(t, in), "dmarc", name, Pass, "", "")
}

// An included record that ends in +all matches every address, so the
// include: passes mail from any host (RFC 7208 section 5.2): a common way
// to open a domain by mistake. The check passed it.
func TestReviewSPFIncludePlusAll(t *testing.T) {
	for _, tc := range []struct {
		inc, nested string
		status      Status
	}{
		{"v=spf1 +all", "", Fail},
		{"v=spf1 ip4:192.0.2.1 all", "", Fail},
		{"v=spf1 include:_deep.example.com -all", "v=spf1 +all", Fail},
		{"v=spf1 redirect=_deep.example.com", "v=spf1 +all", Fail},
		{"v=spf1 ip4:192.0.2.1 ?all", "", Pass}, // neutral: the include does not match
		{"v=spf1 ip4:192.0.2.1 -all", "", Pass},
	} {
		t.Run(tc.inc+" "+tc.nested, func(t *testing.T) {
			s, in := goodZone(t)
			set(t, s, testBounce, dns.TypeTXT, txtLine(testBounce, "v=spf1 ip4:127.0.0.1 ip6:::1 include:_spf.example.com -all"))
			set(t, s, "_spf.example.com", dns.TypeTXT, txtLine("_spf.example.com", tc.inc))
			if tc.nested != "" {
				set(t, s, "_deep.example.com", dns.TypeTXT, txtLine("_deep.example.com", tc.nested))
			}
			rep := check(t, in)
			if tc.status == Pass {
				expect(t, rep, "spf", testBounce, Pass, "", "")
				return
			}
			expect(t, rep, "spf", testBounce, Fail, "lets any host", "")
		})
	}
}

// A looping include tree with +all is reported once, not once per fetch.
func TestReviewSPFIncludePlusAllLoopOnce(t *testing.T) {
	s, in := goodZone(t)
	set(t, s, testBounce, dns.TypeTXT, txtLine(testBounce, "v=spf1 ip4:127.0.0.1 ip6:::1 include:_a.example.com -all"))
	set(t, s, "_a.example.com", dns.TypeTXT, txtLine("_a.example.com", "v=spf1 include:_a.example.com +all"))
	rep := check(t, in)
	r := expect(t, rep, "spf", testBounce, Fail, "lets any host", `_a.example.com. 3600 IN TXT "v=spf1 include:_a.example.com -all"`)
	n := 0
	for _, x := range results(rep, "spf", testBounce) {
		if x.Problem == r.Problem {
			n++
		}
	}
	if n != 1 {
		t.Errorf("reported %d times:\n%s", n, report(rep))
	}
}
