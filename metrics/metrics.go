// Package metrics measures what operations needs to know about latchkey,
// in two complementary ways:
//
//  1. Live Prometheus metrics ([Metrics]): the relay reports sessions,
//     rejections, DKIM signing time, delivery attempts and outcomes as they
//     happen (it implements the relay's Observer), and gauges such as queue
//     depth, Salesforce outbox depth and API usage are read from their
//     sources at scrape time. Everything lives in the Metrics' own registry,
//     never the process-global one, so tests and embedders get a clean set.
//  2. The four password-reset figures ([ComputeStats]): delivery speed,
//     delivery success, reset completion and support escalations, computed
//     from the hash-chained audit trail rather than from in-memory counters,
//     so they survive restarts and agree with what an auditor sees. Each is
//     judged against its target ([Targets]); [Report.Missed] drives the exit
//     status of `latchkey stats`.
//
// [Calibrate] turns the observed delivery-latency tail into the shortest
// safe token expiry for a class, and says when the configured one is shorter.
package metrics

import (
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// LatencyBuckets are the upper bounds (seconds) of the accept-to-delivered
// histogram: 100 ms to one hour, dense around the 60 s reset target so that
// histogram_quantile is accurate where the alert fires.
var LatencyBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// SignBuckets are the upper bounds (seconds) of the DKIM signing histogram:
// an RSA-2048 or Ed25519 signature takes well under a few milliseconds.
var SignBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25}

// maxLabelValues caps how many distinct values one free-form label (a
// rejection or outcome reason) may take; later newcomers become "other".
// A reason is meant to be a short code, and this keeps a misbehaving caller
// from growing the series set without bound.
const maxLabelValues = 64

// Attempt results accepted by [Metrics.Attempt].
const (
	ResultDelivered = "delivered"
	ResultTemporary = "temporary"
	ResultPermanent = "permanent"
	ResultError     = "error"
)

// Outcome states recorded by latchkey_outcomes_total. "escalated" is not a
// final state but an event of one: it is counted here so the escalation
// rate can be alerted on beside the outcomes it is a share of.
var knownOutcomes = map[string]bool{
	"delivered": true, "bounced": true, "expired": true, "superseded": true, "dropped": true,
	"suppressed": true, "escalated": true, "deduplicated": true, "rate_limited": true,
}

var knownResults = map[string]bool{ResultDelivered: true, ResultTemporary: true, ResultPermanent: true, ResultError: true}

// DNS check statuses; each check exports one series per status.
var dnsStatuses = []string{"PASS", "WARN", "FAIL", "UNKNOWN"}

// QueueDepth is the live queue content of one class and state, as read by
// the source set with [Metrics.SetQueueSource].
type QueueDepth struct {
	Class, State string
	Count        int
	// OldestAge is how long the oldest item of this class and state has
	// been waiting since acceptance.
	OldestAge time.Duration
}

// DNSResult is one DNS check's latest result.
type DNSResult struct {
	Domain, Check, Status string // Status: PASS, WARN, FAIL or UNKNOWN (ERROR is read as UNKNOWN)
}

// Metrics holds latchkey's Prometheus metrics. Its methods are safe for
// concurrent use; a nil *Metrics is not.
type Metrics struct {
	reg *prometheus.Registry

	sessions     prometheus.Counter
	rejections   *prometheus.CounterVec
	authFailures prometheus.Counter
	signSeconds  prometheus.Histogram
	latency      *prometheus.HistogramVec
	outcomes     *prometheus.CounterVec
	attempts     *prometheus.CounterVec
	acme         *prometheus.CounterVec
	held         *prometheus.HistogramVec

	rejectReasons  *labelGuard
	outcomeReasons *labelGuard
	classes        *labelGuard

	mu      sync.Mutex
	queue   func() []QueueDepth
	outbox  func() (pending, dead int)
	lc      func() Lifecycle
	apiUse  func() (used, limit int)
	dns     []DNSResult
	dnsTime time.Time
	cert    func() time.Time
}

// New creates the metrics in a registry of their own, with the Go runtime
// and process collectors beside them.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		sessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "latchkey_smtp_sessions_total", Help: "SMTP submission sessions opened."}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "latchkey_smtp_rejections_total", Help: "Submissions refused, by reason code."}, []string{"reason"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "latchkey_smtp_auth_failures_total", Help: "Failed SMTP AUTH attempts."}),
		signSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "latchkey_dkim_sign_seconds", Help: "Time to DKIM-sign one message.", Buckets: SignBuckets}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "latchkey_delivery_latency_seconds",
			Help:    "Time from acceptance to delivery at the recipient's MX, per class; a retried message counts once.",
			Buckets: LatencyBuckets}, []string{"class"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "latchkey_outcomes_total", Help: "Message outcomes (and escalations) per class, outcome and reason code."},
			[]string{"class", "outcome", "reason"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "latchkey_delivery_attempts_total", Help: "Delivery attempts per class and result (delivered, temporary, permanent, error)."},
			[]string{"class", "result"}),
		acme: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "latchkey_acme_attempts_total", Help: "ACME attempts to obtain or renew the TLS certificate, by kind (obtain, renew) and result (ok, failed)."},
			[]string{"kind", "result"}),
		held: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "latchkey_submission_held_seconds",
			Help: "Time a 250 was held back because the class's delivery backlog was full (back-pressure), per class; " +
				"late=\"true\" when the backlog was still full when the reply went.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"class", "late"}),
		rejectReasons:  newLabelGuard(maxLabelValues),
		outcomeReasons: newLabelGuard(maxLabelValues),
		classes:        newLabelGuard(maxLabelValues),
	}
	m.reg.MustRegister(m.sessions, m.rejections, m.authFailures, m.signSeconds, m.latency, m.outcomes, m.attempts, m.acme, m.held,
		sourceCollector{m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry holding the metrics, for adding others.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats. It does
// no authentication: the admin server wraps it.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// Session counts one SMTP submission session.
func (m *Metrics) Session() { m.sessions.Inc() }

// Rejected counts one refused submission; reason is a short code such as
// "org_id" or "rate_limited".
func (m *Metrics) Rejected(reason string) {
	m.rejections.WithLabelValues(m.rejectReasons.value(reason)).Inc()
}

// AuthFailed counts one failed AUTH.
func (m *Metrics) AuthFailed() { m.authFailures.Inc() }

// Signed records the time one DKIM signature took.
func (m *Metrics) Signed(d time.Duration) { m.signSeconds.Observe(nonNeg(d).Seconds()) }

// Held records a reply held back by the delivery backlog.
func (m *Metrics) Held(class string, d time.Duration, late bool) {
	m.held.WithLabelValues(m.classes.value(class), strconv.FormatBool(late)).Observe(nonNeg(d).Seconds())
}

// Outcome records what happened to a message. For state "delivered" the
// latency (acceptance to delivery, retries included) goes into the class's
// latency histogram. The states "attempt_permanent" and "attempt_temporary",
// which the relay reports after a failed attempt, are attempts and not
// outcomes: they are counted as [Metrics.Attempt] with result "permanent"
// or "temporary", so that no outcome is counted twice.
func (m *Metrics) Outcome(class, state, reason string, latency time.Duration) {
	class = m.classes.value(class)
	switch state {
	case "attempt_permanent":
		m.attempts.WithLabelValues(class, ResultPermanent).Inc()
		return
	case "attempt_temporary":
		m.attempts.WithLabelValues(class, ResultTemporary).Inc()
		return
	case "delivered":
		m.latency.WithLabelValues(class).Observe(nonNeg(latency).Seconds())
	}
	if !knownOutcomes[state] {
		state = "other"
	}
	m.outcomes.WithLabelValues(class, state, m.outcomeReasons.value(reason)).Inc()
}

// Attempt counts one delivery attempt by its result: delivered, temporary
// (4xx), permanent (5xx) or error (no SMTP reply: DNS or connection
// failure). Any other result is counted as "other".
func (m *Metrics) Attempt(class, result string) {
	if !knownResults[result] {
		result = "other"
	}
	m.attempts.WithLabelValues(m.classes.value(class), result).Inc()
}

// SetQueueSource sets the function read at each scrape for the queue's
// depth and oldest item per class and state; nil removes it.
func (m *Metrics) SetQueueSource(f func() []QueueDepth) {
	m.mu.Lock()
	m.queue = f
	m.mu.Unlock()
}

// SetOutboxSource sets the function read at each scrape for the Salesforce
// outbox: escalations pending delivery and dead-lettered ones.
func (m *Metrics) SetOutboxSource(f func() (pending, dead int)) {
	m.mu.Lock()
	m.outbox = f
	m.mu.Unlock()
}

// Lifecycle is the state of the reset-record reporter to Salesforce.
type Lifecycle struct {
	Pending, Dead int   // resets with unsent changes; records refused for good
	Calls, Sent   int64 // upsert calls made; record writes accepted
	Throttled     bool  // slowed down near the org's daily API limit
}

// SetLifecycleSource sets the function read at each scrape for the
// Salesforce lifecycle reporter.
func (m *Metrics) SetLifecycleSource(f func() Lifecycle) {
	m.mu.Lock()
	m.lc = f
	m.mu.Unlock()
}

// SetAPIUsageSource sets the function read at each scrape for the
// Salesforce API usage (from the Sforce-Limit-Info header, api-usage=used/limit).
// A limit of 0 means not known yet, and neither gauge is exported.
func (m *Metrics) SetAPIUsageSource(f func() (used, limit int)) {
	m.mu.Lock()
	m.apiUse = f
	m.mu.Unlock()
}

// ACMEAttempt counts one attempt to obtain (renewal false) or renew the TLS
// certificate; err nil is success.
func (m *Metrics) ACMEAttempt(renewal bool, err error) {
	kind, result := "obtain", "ok"
	if renewal {
		kind = "renew"
	}
	if err != nil {
		result = "failed"
	}
	m.acme.WithLabelValues(kind, result).Inc()
}

// SetCertSource sets the function read at each scrape for the end of
// validity of the TLS certificate in service (zero: none).
func (m *Metrics) SetCertSource(f func() time.Time) {
	m.mu.Lock()
	m.cert = f
	m.mu.Unlock()
}

// SetDNSResults replaces the DNS check results exported, after each check
// run. Checks absent from rs disappear from the metrics; several results
// for one domain and check (DKIM selectors) are exported as the worst.
func (m *Metrics) SetDNSResults(rs []DNSResult) {
	m.mu.Lock()
	m.dns = append([]DNSResult(nil), rs...)
	m.dnsTime = time.Now()
	m.mu.Unlock()
}

var (
	descQueueItems = prometheus.NewDesc("latchkey_queue_items",
		"Items in the queue per class and state.", []string{"class", "state"}, nil)
	descQueueOldest = prometheus.NewDesc("latchkey_queue_oldest_age_seconds",
		"Age since acceptance of the oldest undelivered item of the class (any live state).", []string{"class"}, nil)
	descOutbox = prometheus.NewDesc("latchkey_salesforce_outbox_items",
		"Escalations in the Salesforce outbox: pending delivery, or dead-lettered.", []string{"state"}, nil)
	descLCRecords = prometheus.NewDesc("latchkey_salesforce_lifecycle_records",
		"Reset records for Salesforce: pending (changes not yet sent) or dead (refused by Salesforce for good).", []string{"state"}, nil)
	descLCCalls = prometheus.NewDesc("latchkey_salesforce_lifecycle_calls_total",
		"sObject Collections upsert calls made for reset records.", nil, nil)
	descLCSent = prometheus.NewDesc("latchkey_salesforce_lifecycle_writes_total",
		"Reset record writes Salesforce accepted.", nil, nil)
	descLCThrottled = prometheus.NewDesc("latchkey_salesforce_lifecycle_throttled",
		"1 while reset records are sent slowly because the org is near its daily API limit.", nil, nil)
	descRSS = prometheus.NewDesc("latchkey_process_resident_memory_kind_bytes",
		"Resident memory by kind (Linux /proc/self/status): anon is the Go heap and Badger's buffers, file the mapped value log and tables (clean pages the kernel can drop), shmem shared memory.", []string{"kind"}, nil)
	descCertExpiry = prometheus.NewDesc("latchkey_tls_certificate_expiry_timestamp_seconds",
		"End of validity (Unix time) of the TLS certificate the listeners serve.", nil, nil)
	descAPIUsed = prometheus.NewDesc("latchkey_salesforce_api_requests_used",
		"Salesforce API requests used in the org's 24-hour window (Sforce-Limit-Info).", nil, nil)
	descAPILimit = prometheus.NewDesc("latchkey_salesforce_api_requests_limit",
		"Salesforce API request limit of the org's 24-hour window (Sforce-Limit-Info).", nil, nil)
	descDNS = prometheus.NewDesc("latchkey_dns_check_status",
		"Latest DNS check result: 1 for the current status, 0 for the others.", []string{"domain", "check", "status"}, nil)
	descDNSTime = prometheus.NewDesc("latchkey_dns_check_last_run_timestamp_seconds",
		"Unix time of the latest DNS check run.", nil, nil)
)

// sourceCollector exports the gauges whose values live elsewhere (queue,
// outbox, DNS checker) by reading them at scrape time, so they are never
// stale and cost nothing between scrapes.
type sourceCollector struct{ m *Metrics }

func (c sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueItems, descQueueOldest, descOutbox, descAPIUsed, descAPILimit, descDNS, descDNSTime, descCertExpiry,
		descLCRecords, descLCCalls, descLCSent, descLCThrottled, descRSS} {
		ch <- d
	}
}

func (c sourceCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.Lock()
	queue, outbox, apiUse, dns, dnsTime, cert, lc := m.queue, m.outbox, m.apiUse, m.dns, m.dnsTime, m.cert, m.lc
	m.mu.Unlock()
	for kind, n := range residentByKind() {
		ch <- prometheus.MustNewConstMetric(descRSS, prometheus.GaugeValue, float64(n), kind)
	}
	if lc != nil {
		l := lc()
		ch <- prometheus.MustNewConstMetric(descLCRecords, prometheus.GaugeValue, float64(l.Pending), "pending")
		ch <- prometheus.MustNewConstMetric(descLCRecords, prometheus.GaugeValue, float64(l.Dead), "dead")
		ch <- prometheus.MustNewConstMetric(descLCCalls, prometheus.CounterValue, float64(l.Calls))
		ch <- prometheus.MustNewConstMetric(descLCSent, prometheus.CounterValue, float64(l.Sent))
		throttled := 0.0
		if l.Throttled {
			throttled = 1
		}
		ch <- prometheus.MustNewConstMetric(descLCThrottled, prometheus.GaugeValue, throttled)
	}
	if cert != nil {
		if t := cert(); !t.IsZero() {
			ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(t.Unix()))
		}
	}
	if queue != nil {
		collectQueue(ch, queue(), m.classes)
	}
	if outbox != nil {
		pending, dead := outbox()
		ch <- prometheus.MustNewConstMetric(descOutbox, prometheus.GaugeValue, float64(pending), "pending")
		ch <- prometheus.MustNewConstMetric(descOutbox, prometheus.GaugeValue, float64(dead), "dead")
	}
	if apiUse != nil {
		if used, limit := apiUse(); limit > 0 {
			ch <- prometheus.MustNewConstMetric(descAPIUsed, prometheus.GaugeValue, float64(used))
			ch <- prometheus.MustNewConstMetric(descAPILimit, prometheus.GaugeValue, float64(limit))
		}
	}
	if !dnsTime.IsZero() {
		ch <- prometheus.MustNewConstMetric(descDNSTime, prometheus.GaugeValue, float64(dnsTime.UnixNano())/1e9)
	}
	// One series set per domain and check: several results for the same
	// pair (one per DKIM selector) fold into the worst status.
	worst := map[[2]string]string{}
	var keys [][2]string
	for _, r := range dns {
		k := [2]string{clip(r.Domain, 253), label(r.Check)}
		st := dnsStatus(r.Status)
		prev, ok := worst[k]
		if !ok {
			keys = append(keys, k)
		}
		if !ok || dnsSeverity[st] > dnsSeverity[prev] {
			worst[k] = st
		}
	}
	for _, k := range keys {
		for _, s := range dnsStatuses {
			v := 0.0
			if s == worst[k] {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descDNS, prometheus.GaugeValue, v, k[0], k[1], s)
		}
	}
}

// dnsSeverity orders statuses for folding: a check that could not be made
// (UNKNOWN) is worse than a warning, better than a failure.
var dnsSeverity = map[string]int{"PASS": 0, "WARN": 1, "UNKNOWN": 2, "FAIL": 3}

// dnsStatus maps a check status to an exported one; dnscheck's ERROR (no
// answer from DNS) and anything unexpected are UNKNOWN.
func dnsStatus(s string) string {
	if slices.Contains(dnsStatuses, s) {
		return s
	}
	return "UNKNOWN"
}

// collectQueue merges the source's rows by normalised labels, so that two
// rows that normalise alike cannot produce a duplicate series.
func collectQueue(ch chan<- prometheus.Metric, rows []QueueDepth, classes *labelGuard) {
	counts := map[[2]string]int{}
	oldest := map[string]time.Duration{}
	var order [][2]string
	for _, r := range rows {
		k := [2]string{classes.value(r.Class), label(r.State)}
		if _, ok := counts[k]; !ok {
			order = append(order, k)
		}
		counts[k] += r.Count
		if a, ok := oldest[k[0]]; !ok || r.OldestAge > a {
			oldest[k[0]] = r.OldestAge
		}
	}
	for _, k := range order {
		ch <- prometheus.MustNewConstMetric(descQueueItems, prometheus.GaugeValue, float64(counts[k]), k[0], k[1])
	}
	for class, a := range oldest {
		ch <- prometheus.MustNewConstMetric(descQueueOldest, prometheus.GaugeValue, nonNeg(a).Seconds(), class)
	}
}

func nonNeg(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}

// codeRE is what a label value from a caller must look like: a short code.
var codeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,31}$`)

// label returns s if it is a short code, "" for empty, else "other": free
// text (an SMTP reply, a hostname with a token in it) must never become a
// label, both for cardinality and because labels are scraped in clear.
func label(s string) string {
	if s == "" || codeRE.MatchString(s) {
		return s
	}
	return "other"
}

// clip shortens s to n bytes; used for domain names, which are operator
// configuration and bounded in number, but not short codes.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// labelGuard normalises a free-form label with [label] and caps the number
// of distinct values it lets through.
type labelGuard struct {
	mu   sync.Mutex
	max  int
	seen map[string]bool
}

func newLabelGuard(max int) *labelGuard { return &labelGuard{max: max, seen: map[string]bool{}} }

func (g *labelGuard) value(s string) string {
	s = label(s)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen[s] {
		return s
	}
	if len(g.seen) >= g.max {
		return "other"
	}
	g.seen[s] = true
	return s
}

// residentByKind reads RssAnon, RssFile and RssShmem from /proc/self/status
// (empty where there is no such file): the RSS a budget is about is mostly
// the anonymous part, since Badger maps its value log and the kernel counts
// those pages as the process's too.
func residentByKind() map[string]int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		for key, kind := range map[string]string{"RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"} {
			if rest, ok := strings.CutPrefix(line, key); ok {
				f := strings.Fields(rest) // "1234 kB"
				if len(f) == 2 && f[1] == "kB" {
					if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
						out[kind] = n << 10
					}
				}
			}
		}
	}
	return out
}
