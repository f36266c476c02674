package deliver

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/miekg/dns"
)

// An answer too big for UDP comes back truncated; the resolver asks again
// over TCP and gets every record.
func TestReviewTruncatedAnswerRetriedOverTCP(t *testing.T) {
	var zone strings.Builder
	for i := 1; i <= 150; i++ {
		fmt.Fprintf(&zone, "big.test. 300 IN A 127.0.%d.%d\n", i/250, i%250+1)
	}
	dnss := dnstest.Start(t, zone.String())
	res, err := NewResolver(dnss.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ips, err := res.LookupIP(context.Background(), "big.test")
	if err != nil || len(ips) != 150 {
		t.Fatalf("%d addresses, %v; want 150", len(ips), err)
	}
}

// A CNAME'd MX host (RFC 5321 5.1 tolerates it) resolves to its target's
// addresses; a CNAME'd domain's MX are its target's.
func TestReviewCNAMEs(t *testing.T) {
	dnss := dnstest.Start(t, `
alias.test. 300 IN CNAME real.test.
real.test. 300 IN MX 10 mx.alias.test.
mx.alias.test. 300 IN CNAME host.real.test.
host.real.test. 300 IN A 127.0.0.30
`)
	res, err := NewResolver(dnss.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mxs, err := res.LookupMX(context.Background(), "alias.test")
	if err != nil || len(mxs) != 1 || mxs[0].Host != "mx.alias.test" {
		t.Fatalf("MX %v, %v", mxs, err)
	}
	ips, err := res.LookupIP(context.Background(), "mx.alias.test")
	if err != nil || len(ips) != 1 || ips[0].String() != "127.0.0.30" {
		t.Fatalf("addresses %v, %v", ips, err)
	}
}

// A record with TTL 0 is not cached; SERVFAIL is not cached either, so the
// domain's repair is seen at once.
func TestReviewTTL0AndSERVFAILNotCached(t *testing.T) {
	dnss := dnstest.Start(t, "zero.test. 0 IN A 127.0.0.31\n")
	res, err := NewResolver(dnss.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ips, err := res.LookupIP(ctx, "zero.test"); err != nil || len(ips) != 1 {
		t.Fatalf("%v %v", ips, err)
	}
	dnss.Remove("zero.test.", dns.TypeA)
	dnss.Add("zero.test. 0 IN A 127.0.0.32\n")
	if ips, err := res.LookupIP(ctx, "zero.test"); err != nil || len(ips) != 1 || ips[0].String() != "127.0.0.32" {
		t.Fatalf("TTL 0 answer was cached: %v %v", ips, err)
	}
	dnss.Add("fail.test. 300 IN MX 10 mx.fail.test.\n")
	dnss.Fail("fail.test.", dns.RcodeServerFailure)
	if _, err := res.LookupMX(ctx, "fail.test"); err == nil {
		t.Fatal("SERVFAIL gave no error")
	}
	dnss.Fail("fail.test.", 0)
	if mxs, err := res.LookupMX(ctx, "fail.test"); err != nil || len(mxs) != 1 || mxs[0].Implicit {
		t.Fatalf("after SERVFAIL ended: %v %v", mxs, err)
	}
}
