package dnstest

import (
	"testing"

	"github.com/miekg/dns"
)

func TestServe(t *testing.T) {
	s := Start(t, `
example.test. 300 IN MX 10 mx.example.test.
mx.example.test. 300 IN A 127.0.0.2
alias.example.test. 300 IN CNAME mx.example.test.
big.example.test. 300 IN TXT "`+string(make([]byte, 0))+`v=spf1 -all"
`)
	c := new(dns.Client)
	ask := func(name string, qt uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, qt)
		r, _, err := c.Exchange(m, s.Addr)
		if err != nil {
			t.Fatalf("exchange %s: %v", name, err)
		}
		return r
	}
	if r := ask("example.test.", dns.TypeMX); len(r.Answer) != 1 || r.Answer[0].(*dns.MX).Mx != "mx.example.test." {
		t.Errorf("MX answer = %v", r.Answer)
	}
	if r := ask("alias.example.test.", dns.TypeA); len(r.Answer) != 2 {
		t.Errorf("CNAME chase = %v", r.Answer)
	}
	if r := ask("nope.example.test.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("rcode for missing name = %d, want NXDOMAIN", r.Rcode)
	}
	if r := ask("mx.example.test.", dns.TypeMX); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("NODATA = %v rcode %d", r.Answer, r.Rcode)
	}
	s.Fail("example.test", dns.RcodeServerFailure)
	if r := ask("example.test.", dns.TypeMX); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode after Fail = %d", r.Rcode)
	}
}
