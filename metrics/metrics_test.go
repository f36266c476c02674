package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// observer is relay.Observer, copied so that this package's tests do not
// depend on the relay's; the lead's wiring (s.Observe = m) checks the real one.
type observer interface {
	Session()
	Rejected(reason string)
	AuthFailed()
	Signed(d time.Duration)
	Outcome(class, state, reason string, latency time.Duration)
}

var _ observer = (*Metrics)(nil)

// serve exposes m's handler on a real loopback HTTP server.
func serve(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// scrape fetches url and parses the text exposition.
func scrape(t *testing.T, url string) map[string][]sample {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	out := map[string][]sample{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			s := sample{labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.value = m.Counter.GetValue()
			case m.Gauge != nil:
				s.value = m.Gauge.GetValue()
			case m.Histogram != nil:
				s.value = float64(m.Histogram.GetSampleCount())
				s.sum = m.Histogram.GetSampleSum()
				s.buckets = map[float64]uint64{}
				for _, b := range m.Histogram.GetBucket() {
					s.buckets[b.GetUpperBound()] = b.GetCumulativeCount()
				}
			}
			out[name] = append(out[name], s)
		}
	}
	return out
}

// scrapeLines fetches url as text and returns the sample lines of the named
// families (with a histogram's _bucket, _sum and _count), sorted.
func scrapeLines(t *testing.T, url string, names ...string) []string {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	var out []string
	for _, l := range sampleLines(string(b)) {
		name := l[:strings.IndexAny(l, "{ ")]
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if slices.Contains(names, name) || slices.Contains(names, base) {
			out = append(out, l)
		}
	}
	return out
}

// sampleLines returns the non-comment, non-empty lines of an exposition, sorted.
func sampleLines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

type sample struct {
	labels  map[string]string
	value   float64 // counter/gauge value, histogram count
	sum     float64
	buckets map[float64]uint64
}

// find returns the sample of family name whose labels include want.
func find(t *testing.T, fams map[string][]sample, name string, want map[string]string) sample {
	t.Helper()
next:
	for _, s := range fams[name] {
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		return s
	}
	t.Fatalf("no %s%v in the scrape; have %v", name, want, fams[name])
	return sample{}
}

// TestScrapeAfterRun plays what the relay reports for one session with a
// reset delivered after a retry, a bounced message, an expired one and an
// escalation, then checks the scraped exposition exactly.
func TestScrapeAfterRun(t *testing.T) {
	m := New()
	url := serve(t, m)

	m.Session()
	m.Session()
	m.AuthFailed()
	m.Rejected("org_id")
	m.Rejected("org_id")
	m.Rejected("rate_limited")
	m.Signed(800 * time.Microsecond)

	// A reset: a temporary failure, then delivered 42 s after acceptance.
	m.Outcome("reset", "attempt_temporary", "", 0)
	m.Outcome("reset", "delivered", "", 42*time.Second)
	m.Attempt("reset", ResultDelivered)
	// Another reset bounced hard and was escalated; a bulk message expired.
	m.Outcome("reset", "attempt_permanent", "", 0)
	m.Outcome("reset", "bounced", "mailboxunknown", 0)
	m.Outcome("reset", "escalated", "hard_bounce", 0)
	m.Outcome("bulk", "expired", "deadline", 0)
	m.Attempt("bulk", ResultError)

	expected := `
# HELP latchkey_delivery_latency_seconds Time from acceptance to delivery at the recipient's MX, per class; a retried message counts once.
# TYPE latchkey_delivery_latency_seconds histogram
latchkey_delivery_latency_seconds_bucket{class="reset",le="0.1"} 0
latchkey_delivery_latency_seconds_bucket{class="reset",le="0.25"} 0
latchkey_delivery_latency_seconds_bucket{class="reset",le="0.5"} 0
latchkey_delivery_latency_seconds_bucket{class="reset",le="1"} 0
latchkey_delivery_latency_seconds_bucket{class="reset",le="2.5"} 0
latchkey_delivery_latency_seconds_bucket{class="reset",le="5"} 0
latchkey_delivery_latency_seconds_bucket{class="reset",le="10"} 0
latchkey_delivery_latency_seconds_bucket{class="reset",le="30"} 0
latchkey_delivery_latency_seconds_bucket{class="reset",le="60"} 1
latchkey_delivery_latency_seconds_bucket{class="reset",le="120"} 1
latchkey_delivery_latency_seconds_bucket{class="reset",le="300"} 1
latchkey_delivery_latency_seconds_bucket{class="reset",le="600"} 1
latchkey_delivery_latency_seconds_bucket{class="reset",le="1800"} 1
latchkey_delivery_latency_seconds_bucket{class="reset",le="3600"} 1
latchkey_delivery_latency_seconds_bucket{class="reset",le="+Inf"} 1
latchkey_delivery_latency_seconds_sum{class="reset"} 42
latchkey_delivery_latency_seconds_count{class="reset"} 1
# HELP latchkey_outcomes_total Message outcomes (and escalations) per class, outcome and reason code.
# TYPE latchkey_outcomes_total counter
latchkey_outcomes_total{class="bulk",outcome="expired",reason="deadline"} 1
latchkey_outcomes_total{class="reset",outcome="bounced",reason="mailboxunknown"} 1
latchkey_outcomes_total{class="reset",outcome="delivered",reason=""} 1
latchkey_outcomes_total{class="reset",outcome="escalated",reason="hard_bounce"} 1
# HELP latchkey_delivery_attempts_total Delivery attempts per class and result (delivered, temporary, permanent, error).
# TYPE latchkey_delivery_attempts_total counter
latchkey_delivery_attempts_total{class="bulk",result="error"} 1
latchkey_delivery_attempts_total{class="reset",result="delivered"} 1
latchkey_delivery_attempts_total{class="reset",result="permanent"} 1
latchkey_delivery_attempts_total{class="reset",result="temporary"} 1
# HELP latchkey_smtp_sessions_total SMTP submission sessions opened.
# TYPE latchkey_smtp_sessions_total counter
latchkey_smtp_sessions_total 2
# HELP latchkey_smtp_auth_failures_total Failed SMTP AUTH attempts.
# TYPE latchkey_smtp_auth_failures_total counter
latchkey_smtp_auth_failures_total 1
# HELP latchkey_smtp_rejections_total Submissions refused, by reason code.
# TYPE latchkey_smtp_rejections_total counter
latchkey_smtp_rejections_total{reason="org_id"} 2
latchkey_smtp_rejections_total{reason="rate_limited"} 1
`
	got := scrapeLines(t, url, "latchkey_delivery_latency_seconds", "latchkey_outcomes_total", "latchkey_delivery_attempts_total",
		"latchkey_smtp_sessions_total", "latchkey_smtp_auth_failures_total", "latchkey_smtp_rejections_total")
	if want := sampleLines(expected); !slices.Equal(got, want) {
		t.Errorf("scraped samples:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	fams := scrape(t, url)
	sign := find(t, fams, "latchkey_dkim_sign_seconds", nil)
	if sign.value != 1 || sign.buckets[0.0005] != 0 || sign.buckets[0.001] != 1 {
		t.Errorf("dkim_sign_seconds: count %v buckets %v, want one sample in (0.5ms, 1ms]", sign.value, sign.buckets)
	}
	// The Go and process collectors are registered beside latchkey's own.
	if len(fams["go_goroutines"]) != 1 {
		t.Errorf("go_goroutines missing from the scrape")
	}
}

// TestLabelsBounded checks that free text never becomes a label value and
// that a flood of distinct codes stops at the cap.
func TestLabelsBounded(t *testing.T) {
	m := New()
	url := serve(t, m)
	m.Rejected("550 5.1.1 <user@example.test>: Recipient address rejected: https://x.test/reset?token=abc")
	m.Rejected(strings.Repeat("a", 40))
	m.Rejected("UPPER")
	m.Outcome("Reset Class!", "weird_state", "", 0)
	m.Attempt("reset", "exploded")
	for i := range maxLabelValues + 10 {
		m.Outcome("bulk", "bounced", fmt.Sprintf("r%d", i), 0)
	}
	fams := scrape(t, url)
	if s := find(t, fams, "latchkey_smtp_rejections_total", map[string]string{"reason": "other"}); s.value != 3 {
		t.Errorf("rejections{reason=other} = %v, want 3", s.value)
	}
	if n := len(fams["latchkey_smtp_rejections_total"]); n != 1 {
		t.Errorf("rejections series = %d, want 1", n)
	}
	find(t, fams, "latchkey_outcomes_total", map[string]string{"class": "other", "outcome": "other", "reason": ""})
	find(t, fams, "latchkey_delivery_attempts_total", map[string]string{"class": "reset", "result": "other"})
	reasons := map[string]bool{}
	for _, s := range fams["latchkey_outcomes_total"] {
		if s.labels["class"] == "bulk" {
			reasons[s.labels["reason"]] = true
		}
	}
	// The guard saw "" (from the "other" outcome) first, then r0…: the
	// cap admits maxLabelValues distinct values, then folds into "other".
	if !reasons["other"] || len(reasons) != maxLabelValues {
		t.Errorf("bulk outcome reasons: %d distinct (other: %v), want %d including other", len(reasons), reasons["other"], maxLabelValues)
	}
	if s := find(t, fams, "latchkey_outcomes_total", map[string]string{"class": "bulk", "reason": "other"}); s.value != 11 {
		t.Errorf("bulk reason=other = %v, want 11", s.value)
	}
}

// TestSources checks the gauges read at scrape time.
func TestSources(t *testing.T) {
	m := New()
	url := serve(t, m)

	// Before any source is set, none of their metrics appear.
	fams := scrape(t, url)
	for _, name := range []string{"latchkey_queue_items", "latchkey_salesforce_outbox_items", "latchkey_salesforce_api_requests_used", "latchkey_dns_check_status"} {
		if len(fams[name]) != 0 {
			t.Errorf("%s present without a source", name)
		}
	}

	depth := []QueueDepth{
		{Class: "reset", State: "queued", Count: 3, OldestAge: 75 * time.Second},
		{Class: "reset", State: "in_flight", Count: 1, OldestAge: 90 * time.Second},
		{Class: "bulk", State: "queued", Count: 120, OldestAge: 2 * time.Hour},
	}
	m.SetQueueSource(func() []QueueDepth { return depth })
	m.SetOutboxSource(func() (int, int) { return 4, 1 })
	used, limit := 0, 0
	m.SetAPIUsageSource(func() (int, int) { return used, limit })
	m.SetDNSResults([]DNSResult{
		{Domain: "mail.example.test", Check: "spf", Status: "PASS"},
		{Domain: "mail.example.test", Check: "dmarc", Status: "WARN"},
		{Domain: "mail.example.test", Check: "dmarc", Status: "FAIL"}, // same check: the worst wins
		{Domain: "mail.example.test", Check: "dmarc", Status: "PASS"},
		{Domain: "", Check: "ptr", Status: "ERROR"},
	})

	fams = scrape(t, url)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"latchkey_queue_items", map[string]string{"class": "reset", "state": "queued"}, 3},
		{"latchkey_queue_items", map[string]string{"class": "reset", "state": "in_flight"}, 1},
		{"latchkey_queue_items", map[string]string{"class": "bulk", "state": "queued"}, 120},
		{"latchkey_queue_oldest_age_seconds", map[string]string{"class": "reset"}, 90},
		{"latchkey_queue_oldest_age_seconds", map[string]string{"class": "bulk"}, 7200},
		{"latchkey_salesforce_outbox_items", map[string]string{"state": "pending"}, 4},
		{"latchkey_salesforce_outbox_items", map[string]string{"state": "dead"}, 1},
		{"latchkey_dns_check_status", map[string]string{"check": "spf", "status": "PASS"}, 1},
		{"latchkey_dns_check_status", map[string]string{"check": "spf", "status": "FAIL"}, 0},
		{"latchkey_dns_check_status", map[string]string{"check": "dmarc", "status": "WARN"}, 0},
		{"latchkey_dns_check_status", map[string]string{"check": "dmarc", "status": "FAIL"}, 1},
		{"latchkey_dns_check_status", map[string]string{"check": "ptr", "status": "UNKNOWN"}, 1},
	} {
		if s := find(t, fams, c.name, c.labels); s.value != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, s.value, c.want)
		}
	}
	if n := len(fams["latchkey_dns_check_status"]); n != 12 {
		t.Errorf("dns_check_status series = %d, want 3 checks × 4 statuses", n)
	}
	if len(fams["latchkey_dns_check_last_run_timestamp_seconds"]) != 1 {
		t.Error("dns last-run timestamp missing")
	}
	// API usage appears only once the limit is known, and is read live.
	if len(fams["latchkey_salesforce_api_requests_limit"]) != 0 {
		t.Error("API limit exported before it is known")
	}
	used, limit = 1234, 15000
	fams = scrape(t, url)
	if s := find(t, fams, "latchkey_salesforce_api_requests_used", nil); s.value != 1234 {
		t.Errorf("api used = %v", s.value)
	}
	if s := find(t, fams, "latchkey_salesforce_api_requests_limit", nil); s.value != 15000 {
		t.Errorf("api limit = %v", s.value)
	}
	// A new check run replaces the old results.
	m.SetDNSResults([]DNSResult{{Domain: "mail.example.test", Check: "spf", Status: "FAIL"}})
	fams = scrape(t, url)
	if n := len(fams["latchkey_dns_check_status"]); n != 4 {
		t.Errorf("after a new run: %d dns series, want 4", n)
	}
	if s := find(t, fams, "latchkey_dns_check_status", map[string]string{"check": "spf", "status": "FAIL"}); s.value != 1 {
		t.Errorf("spf FAIL = %v, want 1", s.value)
	}
}

// TestRegistryIsOwn checks that two Metrics do not share series (the
// global registry would make the second New panic or mix counts).
func TestRegistryIsOwn(t *testing.T) {
	a, b := New(), New()
	a.Session()
	if got := find(t, scrape(t, serve(t, a)), "latchkey_smtp_sessions_total", nil).value; got != 1 {
		t.Errorf("a sessions = %v", got)
	}
	if got := find(t, scrape(t, serve(t, b)), "latchkey_smtp_sessions_total", nil).value; got != 0 {
		t.Errorf("b sessions = %v, want 0", got)
	}
	if a.Registry() == b.Registry() {
		t.Error("registries shared")
	}
}

func FuzzLabel(f *testing.F) {
	for _, s := range []string{"", "org_id", "other", "550 5.1.1 user unknown", "a\x00b", strings.Repeat("z", 100), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := label(s)
		if v != "" && v != "other" && !codeRE.MatchString(v) {
			t.Fatalf("label(%q) = %q: not a short code", s, v)
		}
		if len(v) > 32 {
			t.Fatalf("label(%q) = %q: too long", s, v)
		}
	})
}

func BenchmarkOutcome(b *testing.B) {
	m := New()
	for b.Loop() {
		m.Outcome("reset", "delivered", "", 1500*time.Millisecond)
	}
}

// On Linux the resident memory is split into anonymous and file-backed
// pages, and the anonymous part is at least the live Go heap's size order.
func TestResidentByKind(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc here")
	}
	got := scrape(t, serve(t, New()))["latchkey_process_resident_memory_kind_bytes"]
	kinds := map[string]float64{}
	for _, s := range got {
		kinds[s.labels["kind"]] = s.value
	}
	if kinds["anon"] < 1<<20 || len(kinds) < 2 {
		t.Errorf("resident memory by kind = %v, want anon (over 1 MiB) and file", kinds)
	}
}
