package relay

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A resolver answering SERVFAIL makes the checks "could not check": ERROR
// in /api/v1/dns, UNKNOWN in the metrics, never FAIL, which would page
// someone about records that may be fine. (The metric's spf series folds
// the bounce domain's check, a real FAIL here, into the same domain label.)
func TestReviewDNSCheckServfailIsUnknown(t *testing.T) {
	e := newEnv(t, envOpts{admin: true, preStart: func(s *Server) { s.DNSCheckEvery = 0 }})
	e.dns.Fail("example.com.", dns.RcodeServerFailure)
	e.dns.Fail("_dmarc.example.com.", dns.RcodeServerFailure)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.srv.watchDNS(ctx, time.Hour) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the DNS check", 30*time.Second, func() bool { r, _ := e.srv.DNS.Last(); return r != nil })
	code, body := adminGet(t, e, "/api/v1/dns", true)
	if code != 200 || !strings.Contains(body, `"check":"spf","name":"example.com","status":"ERROR"`) {
		t.Fatalf("/api/v1/dns = %d %s", code, body)
	}
	_, text := adminGet(t, e, "/metrics", true)
	for _, check := range []string{"dmarc"} {
		if v, _ := metricValue(text, "latchkey_dns_check_status", `domain="example.com"`, `check="`+check+`"`, `status="UNKNOWN"`); v != "1" {
			t.Errorf("%s UNKNOWN = %q\n%s", check, v, grepLines(text, "latchkey_dns"))
		}
		if v, _ := metricValue(text, "latchkey_dns_check_status", `domain="example.com"`, `check="`+check+`"`, `status="FAIL"`); v != "0" {
			t.Errorf("%s FAIL = %q", check, v)
		}
	}
}
