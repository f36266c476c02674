package deliver

import (
	"context"
	"testing"
	"time"

	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/miekg/dns"
)

func TestResolverCachesAnswersAndNODATA(t *testing.T) {
	s := dnstest.Start(t, "c.test. 300 IN MX 10 mx.c.test.\nmx.c.test. 300 IN A 127.0.0.9\n")
	r, err := NewResolver(s.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.LookupMX(ctx, "c.test"); err != nil {
		t.Fatal(err)
	}
	if ips, err := r.LookupIP(ctx, "mx.c.test"); err != nil || len(ips) != 1 {
		t.Fatalf("%v %v", ips, err)
	}
	// With the server failing every name, cached answers still come back,
	// the NODATA for AAAA included (else LookupIP would fail).
	s.Fail("c.test.", dns.RcodeServerFailure)
	s.Fail("mx.c.test.", dns.RcodeServerFailure)
	if mxs, err := r.LookupMX(ctx, "c.test"); err != nil || mxs[0].Host != "mx.c.test" {
		t.Fatalf("%v %v", mxs, err)
	}
	if ips, err := r.LookupIP(ctx, "mx.c.test"); err != nil || len(ips) != 1 || ips[0].String() != "127.0.0.9" {
		t.Fatalf("%v %v", ips, err)
	}
	// Failures are not cached.
	s.Fail("other.test.", dns.RcodeServerFailure)
	if _, err := r.LookupMX(ctx, "other.test"); err == nil {
		t.Fatal("no error for SERVFAIL")
	}
	s.Fail("other.test.", 0)
	s.Add("other.test. 300 IN MX 10 mx.c.test.\n")
	if _, err := r.LookupMX(ctx, "other.test"); err != nil {
		t.Fatalf("SERVFAIL was cached: %v", err)
	}
}

// NXDOMAIN is cached like NODATA (the usual answer for _mta-sts names), and
// still reported as not found from the cache.
func TestResolverCachesNXDOMAIN(t *testing.T) {
	s := dnstest.Start(t, "c.test. 300 IN MX 10 mx.c.test.\n")
	r, err := NewResolver(s.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 2 {
		_, err := r.query(ctx, "_mta-sts.c.test.", dns.TypeTXT)
		if de, ok := err.(*DNSError); !ok || !de.NotFound {
			t.Fatalf("look-up %d: %v, want NXDOMAIN", i, err)
		}
		// Published after the first answer: not seen while that is cached.
		s.Add(`_mta-sts.c.test. 300 IN TXT "v=STSv1; id=1;"` + "\n")
	}
	r.mu.Lock()
	e := r.cache[cacheKey{"_mta-sts.c.test.", dns.TypeTXT}]
	r.mu.Unlock()
	if !e.nxdomain || time.Until(e.expires) > negativeTTL {
		t.Errorf("cache entry %+v, want NXDOMAIN kept at most %v", e, negativeTTL)
	}
}
