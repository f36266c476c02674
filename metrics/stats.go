package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/latchkey/latchkey/audit"
)

// Targets are the service objectives the four figures are judged against.
// A zero value means "no target": the figure is reported but cannot miss.
type Targets struct {
	SpeedP95     time.Duration `json:"speed_p95_seconds"` // p95 accept-to-delivered latency at most this
	Under60Share float64       `json:"under_60s_share"`   // share delivered within 60 s at least this
	Success      float64       `json:"success"`           // delivered / finished at least this
	Completion   float64       `json:"completion"`        // clicked before deadline / delivered at least this
	Escalation   float64       `json:"escalation"`        // escalated / messages at most this
}

// DefaultTargets are the reset class's objectives: 95% of resets delivered
// within 60 s, at least 98% delivered; completion and escalation are
// reported without a target until operations sets one.
func DefaultTargets() Targets {
	return Targets{SpeedP95: 60 * time.Second, Under60Share: 0.95, Success: 0.98}
}

// StatsOptions select the window and class of [ComputeStats].
type StatsOptions struct {
	// Since and Until bound the window: a message belongs to it when it was
	// queued at or after Since and before Until (zero Until: no end). Its
	// later events count up to Until, so a report for a past window is
	// what could have been seen at its end.
	Since, Until time.Time
	// Class restricts the figures to one class ("" = all; usually "reset").
	Class   string
	Targets Targets
	// Expiry is the class's configured expiry, checked by the calibration;
	// 0 when not known.
	Expiry time.Duration
	// Margin is added to the p99.9 latency for the recommended expiry;
	// 0 means DefaultMargin.
	Margin time.Duration
	// Series, when not 0, adds the window cut into buckets of this length
	// (by acceptance time) and the latency histogram: the console's plots.
	Series time.Duration
}

// Report holds the four figures of a window.
type Report struct {
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until,omitzero"`
	Class    string    `json:"class,omitempty"`
	Messages int       `json:"messages"` // items (message × recipient) queued in the window
	Pending  int       `json:"pending"`  // not finished at the end of the window
	// Refused counts submissions refused at acceptance in the window
	// (rejected and rate_limited events): Salesforce was answered with an
	// error at once and nothing was queued, so they are in no rate.
	Refused int `json:"refused"`

	Speed       Speed       `json:"speed"`
	Success     Success     `json:"success"`
	Completion  Completion  `json:"completion"`
	Escalation  Escalation  `json:"escalation"`
	Calibration Calibration `json:"calibration"`

	// Series and Latency are there when StatsOptions.Series was set.
	Series  []Bucket `json:"series,omitempty"`
	Latency []Bin    `json:"latency_histogram,omitempty"`
}

// Bucket is one slice of the window's messages, by acceptance time, with
// the outcomes they had by the end of the window.
type Bucket struct {
	Start     time.Time `json:"start"`
	Messages  int       `json:"messages"`
	Delivered int       `json:"delivered"`
	Failed    int       `json:"failed"` // bounced, expired, suppressed, dropped
	Escalated int       `json:"escalated"`
}

// Bin counts delivered messages whose latency was at most UpTo (and more
// than the previous bin's); the last bin, UpTo 0, holds the rest.
type Bin struct {
	UpTo  Duration `json:"up_to_seconds"`
	Count int      `json:"count"`
}

// latencyBins are the histogram's upper bounds, around the 60 s target.
var latencyBins = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second,
	30 * time.Second, 60 * time.Second, 2 * time.Minute, 5 * time.Minute}

// Speed is the delivery-speed figure: accept-to-delivered latency of each
// delivered message, counted once however many attempts it took.
type Speed struct {
	Samples      int      `json:"samples"`
	P50          Duration `json:"p50_seconds"`
	P95          Duration `json:"p95_seconds"`
	P99          Duration `json:"p99_seconds"`
	P999         Duration `json:"p999_seconds"`
	Under60Share float64  `json:"under_60s_share"` // share delivered in at most 60 s
	TargetP95    Duration `json:"target_p95_seconds,omitempty"`
	TargetShare  float64  `json:"target_under_60s_share,omitempty"`
	Met          bool     `json:"met"`
}

// Success is the delivery-success figure: delivered / finished, where
// finished excludes superseded messages (a newer reset replaced them; that
// is the system working, not failing to deliver) and those still pending.
type Success struct {
	Rate       float64 `json:"rate"`
	Delivered  int     `json:"delivered"`
	Finished   int     `json:"finished"` // the denominator
	Bounced    int     `json:"bounced"`
	Expired    int     `json:"expired"`
	Suppressed int     `json:"suppressed"`
	Dropped    int     `json:"dropped"`
	Superseded int     `json:"superseded"` // shown, not in Finished
	Target     float64 `json:"target,omitempty"`
	Met        bool    `json:"met"`
}

// Completion is the reset-completion figure: delivered messages whose link
// was clicked (or whose reset was reported completed) before the deadline,
// over delivered messages. It exists only where click or completion events
// are recorded (Available).
type Completion struct {
	Available     bool    `json:"available"` // any click event in the window
	Rate          float64 `json:"rate"`
	ClickedInTime int     `json:"clicked_in_time"`
	ClickedLate   int     `json:"clicked_late"` // after the deadline: the link no longer worked
	Delivered     int     `json:"delivered"`
	Target        float64 `json:"target,omitempty"`
	Met           bool    `json:"met"`
}

// Escalation is the support-escalation figure: distinct messages escalated
// (hard bounce, expiry, suppression) over the messages of the window, with
// the Cases Salesforce actually opened counted separately.
type Escalation struct {
	Rate        float64        `json:"rate"`
	Escalated   int            `json:"escalated"`
	CasesOpened int            `json:"cases_opened"`
	ByTrigger   map[string]int `json:"by_trigger,omitempty"`
	Messages    int            `json:"messages"`
	Target      float64        `json:"target,omitempty"` // maximum rate
	Met         bool           `json:"met"`
}

// Missed reports whether any figure with a target and data missed it; the
// `latchkey stats` command exits 1 when it does. A figure without data
// (no deliveries, no click events) cannot miss.
func (r *Report) Missed() bool {
	return !r.Speed.Met || !r.Success.Met || !r.Completion.Met || !r.Escalation.Met
}

// item is what ComputeStats keeps per queue item of the window: a few words,
// so memory is bounded by the number of messages, not of events.
type item struct {
	accepted  time.Time
	deadline  time.Time
	state     string // "" while pending
	latency   time.Duration
	delivered bool // a delivered event was seen (a late bounce may follow)
	clicked   int8 // 0 none, 1 in time, 2 late only
	escalated bool
	caseOpen  bool
	trigger   string
}

// ComputeStats computes the four figures over the audit trail in db. It
// streams the trail with [audit.Scan] and keeps one small record per
// message of the window.
func ComputeStats(db *badger.DB, o StatsOptions) (*Report, error) {
	if db == nil {
		return nil, errors.New("metrics: stats: nil database")
	}
	items := map[string]*item{}
	type recv struct{ at, deadline time.Time }
	received := map[string]recv{} // message id → its received event
	var order []string            // queue ids in queueing order, for stable output
	clicks, refused := 0, 0
	class := []byte(o.Class)
	ofClass := func(v *audit.View) bool { return o.Class == "" || bytes.Equal(v.Class, class) }
	get := func(v *audit.View) *item {
		if it := items[string(v.QueueID)]; it != nil {
			return it
		}
		// A click may be recorded against the message rather than the
		// recipient: credit the message's first recipient.
		if len(v.QueueID) == msgIDLen {
			return items[string(v.QueueID)+firstItemSuffix]
		}
		return nil
	}
	start := func(v *audit.View) *item {
		if len(v.QueueID) == 0 || !ofClass(v) {
			return nil
		}
		if it := items[string(v.QueueID)]; it != nil {
			return it
		}
		// The received event is the acceptance; the queued event, written in
		// the same transaction, stands in when it is outside the window.
		id := string(v.QueueID)
		rv, ok := received[msgIDOf(id)]
		if !ok {
			rv.at = v.Time
		}
		it := &item{accepted: rv.at, deadline: rv.deadline}
		if d, ok := parseTime(v.Field("deadline")); ok {
			it.deadline = d
		}
		items[id] = it
		order = append(order, id)
		return it
	}
	// The trail is read in place (audit.ScanViews): decoding 400,000 events
	// into maps and strings was most of the time a console page waited.
	err := audit.ScanViews(db, o.Since, func(v *audit.View) error {
		if (!o.Since.IsZero() && v.Time.Before(o.Since)) || (!o.Until.IsZero() && !v.Time.Before(o.Until)) {
			return nil
		}
		typ := string(v.Type) // no allocation: compared, never kept
		switch typ {
		case audit.Received:
			if id := v.Field("queue_id"); len(id) > 0 && ofClass(v) {
				d, _ := parseTime(v.Field("deadline"))
				received[string(id)] = recv{at: v.Time, deadline: d}
			}
			return nil
		case audit.Queued:
			it := start(v)
			if it != nil && it.state == audit.Suppressed {
				it.state = "" // suppressed, then queued for its backup address
			}
			return nil
		case audit.Suppressed:
			// A suppressed recipient without a backup is never queued: this
			// is its first and last event.
			if it := start(v); it != nil && it.state == "" {
				it.state = audit.Suppressed
			}
			return nil
		case audit.Rejected, audit.RateLimited:
			if ofClass(v) {
				refused++
			}
			return nil
		case audit.Clicked, audit.Completed:
			clicks++
		case audit.Delivered, audit.Bounced, audit.RetriedBackup, audit.Expired, audit.Superseded,
			audit.Dropped, audit.Escalated:
		default:
			return nil // attempts and the rest change no figure
		}
		it := get(v)
		if it == nil {
			return nil // begun before the window, or another class
		}
		switch typ {
		case audit.Delivered:
			it.state, it.delivered = audit.Delivered, true
			// The relay's own measure, from it.Accepted, is exact; the event
			// times are the fallback for a trail written without it.
			it.latency = nonNeg(v.Time.Sub(it.accepted))
			if ms, err := strconv.ParseInt(string(v.Field("latency_ms")), 10, 64); err == nil && ms >= 0 {
				it.latency = time.Duration(ms) * time.Millisecond
			}
		case audit.Bounced:
			// A complaint (feedback report) is about a delivered message
			// the user disliked, not a failed delivery.
			if len(v.Field("complaint")) == 0 {
				it.state = audit.Bounced
			}
		case audit.RetriedBackup:
			// The bounce or suppression just recorded is not final: the
			// message goes on to the backup address.
			if it.state == audit.Bounced || it.state == audit.Suppressed {
				it.state = ""
			}
		case audit.Expired:
			it.state = audit.Expired
		case audit.Superseded:
			it.state = audit.Superseded
		case audit.Dropped:
			it.state = audit.Dropped
		case audit.Escalated:
			it.escalated = true
			if it.trigger == "" {
				it.trigger = string(v.Field("trigger"))
			}
			if len(v.Field("case_id")) > 0 {
				it.caseOpen = true
			}
		case audit.Clicked, audit.Completed:
			if !it.deadline.IsZero() && v.Time.After(it.deadline) {
				if it.clicked == 0 {
					it.clicked = 2
				}
			} else {
				it.clicked = 1
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("metrics: stats: %w", err)
	}
	r := buildReport(o, items, order, clicks)
	r.Refused = refused
	return r, nil
}

// Item ids are the 16-character message id plus two characters for the
// recipient's index (see queue.ItemID); the first recipient's are "aa".
const (
	msgIDLen        = 16
	firstItemSuffix = "aa"
)

// parseTime reads an RFC 3339 field; absent or malformed gives false.
func parseTime(b []byte) (time.Time, bool) {
	if len(b) == 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, string(b))
	return t, err == nil
}

func msgIDOf(itemID string) string {
	if len(itemID) == msgIDLen+2 {
		return itemID[:msgIDLen]
	}
	return itemID
}

func buildReport(o StatsOptions, items map[string]*item, order []string, clicks int) *Report {
	r := &Report{Since: o.Since, Until: o.Until, Class: o.Class, Messages: len(items)}
	t := o.Targets
	var lat []time.Duration
	s := &r.Success
	c := &r.Completion
	e := &r.Escalation
	for _, id := range order {
		it := items[id]
		if it.delivered {
			lat = append(lat, it.latency)
		}
		switch it.state {
		case audit.Delivered:
			s.Delivered++
			c.Delivered++
			switch it.clicked {
			case 1:
				c.ClickedInTime++
			case 2:
				c.ClickedLate++
			}
		case audit.Bounced:
			s.Bounced++
		case audit.Expired:
			s.Expired++
		case audit.Suppressed:
			s.Suppressed++
		case audit.Dropped:
			s.Dropped++
		case audit.Superseded:
			s.Superseded++
		default:
			r.Pending++
		}
		if it.escalated {
			e.Escalated++
			if e.ByTrigger == nil {
				e.ByTrigger = map[string]int{}
			}
			e.ByTrigger[cmpOr(it.trigger, "unknown")]++
		}
		if it.caseOpen {
			e.CasesOpened++
		}
	}
	slices.Sort(lat)

	sp := &r.Speed
	sp.Samples = len(lat)
	sp.TargetP95, sp.TargetShare, sp.Met = Duration(t.SpeedP95), t.Under60Share, true
	if len(lat) > 0 {
		sp.P50, sp.P95 = Duration(Percentile(lat, 0.50)), Duration(Percentile(lat, 0.95))
		sp.P99, sp.P999 = Duration(Percentile(lat, 0.99)), Duration(Percentile(lat, 0.999))
		under, _ := slices.BinarySearch(lat, 60*time.Second+1)
		sp.Under60Share = float64(under) / float64(len(lat))
		if t.SpeedP95 > 0 && time.Duration(sp.P95) > t.SpeedP95 {
			sp.Met = false
		}
		if t.Under60Share > 0 && sp.Under60Share < t.Under60Share {
			sp.Met = false
		}
	}

	s.Finished = s.Delivered + s.Bounced + s.Expired + s.Suppressed + s.Dropped
	s.Target, s.Met = t.Success, true
	if s.Finished > 0 {
		s.Rate = float64(s.Delivered) / float64(s.Finished)
		s.Met = t.Success <= 0 || s.Rate >= t.Success
	}

	c.Available = clicks > 0
	c.Target, c.Met = t.Completion, true
	if c.Available && c.Delivered > 0 {
		c.Rate = float64(c.ClickedInTime) / float64(c.Delivered)
		c.Met = t.Completion <= 0 || c.Rate >= t.Completion
	}

	e.Messages = r.Messages
	e.Target, e.Met = t.Escalation, true
	if e.Messages > 0 {
		e.Rate = float64(e.Escalated) / float64(e.Messages)
		e.Met = t.Escalation <= 0 || e.Rate <= t.Escalation
	}

	margin := o.Margin
	if margin == 0 {
		margin = DefaultMargin
	}
	r.Calibration = Calibrate(lat, o.Expiry, margin)
	if o.Series > 0 {
		r.Series, r.Latency = series(o, items, order), histogram(lat)
	}
	return r
}

// maxBuckets bounds a series: a year of hours would be a page nobody reads.
const maxBuckets = 2000

func series(o StatsOptions, items map[string]*item, order []string) []Bucket {
	end := o.Until
	if end.IsZero() {
		end = time.Now()
	}
	start := o.Since.Truncate(o.Series)
	n := int((end.Sub(start) + o.Series - 1) / o.Series)
	if n < 1 || n > maxBuckets || o.Since.IsZero() {
		return nil
	}
	out := make([]Bucket, n)
	for i := range out {
		out[i].Start = start.Add(time.Duration(i) * o.Series)
	}
	for _, id := range order {
		it := items[id]
		i := int(it.accepted.Sub(start) / o.Series)
		if i < 0 || i >= n {
			continue
		}
		b := &out[i]
		b.Messages++
		switch it.state {
		case audit.Delivered:
			b.Delivered++
		case audit.Bounced, audit.Expired, audit.Suppressed, audit.Dropped:
			b.Failed++
		}
		if it.escalated {
			b.Escalated++
		}
	}
	return out
}

func histogram(sorted []time.Duration) []Bin {
	out := make([]Bin, len(latencyBins)+1)
	for i, b := range latencyBins {
		out[i].UpTo = Duration(b)
	}
	i := 0
	for _, d := range sorted {
		for i < len(latencyBins) && d > latencyBins[i] {
			i++
		}
		out[i].Count++
	}
	return out
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// WriteText writes the report for people, one figure per paragraph, each
// with its target and MET or MISSED.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	class := r.Class
	if class == "" {
		class = "all classes"
	}
	until := "now"
	if !r.Until.IsZero() {
		until = r.Until.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(&b, "latchkey stats: %s, %s to %s\n", class, r.Since.UTC().Format(time.RFC3339), until)
	fmt.Fprintf(&b, "messages: %d (pending %d); refused at submission: %d\n\n", r.Messages, r.Pending, r.Refused)

	sp := r.Speed
	fmt.Fprintf(&b, "Delivery speed%s\n", verdict(sp.Met, sp.Samples > 0 && (sp.TargetP95 > 0 || sp.TargetShare > 0)))
	if sp.Samples == 0 {
		b.WriteString("  no deliveries\n")
	} else {
		fmt.Fprintf(&b, "  p50 %s  p95 %s  p99 %s  p99.9 %s  (%d delivered)\n",
			fmtDur(sp.P50), fmtDur(sp.P95), fmtDur(sp.P99), fmtDur(sp.P999), sp.Samples)
		fmt.Fprintf(&b, "  within 60s: %s\n", pct(sp.Under60Share))
	}
	if sp.TargetP95 > 0 || sp.TargetShare > 0 {
		b.WriteString("  target:")
		if sp.TargetP95 > 0 {
			fmt.Fprintf(&b, " p95 <= %s", fmtDur(sp.TargetP95))
		}
		if sp.TargetShare > 0 {
			fmt.Fprintf(&b, " within 60s >= %s", pct(sp.TargetShare))
		}
		b.WriteByte('\n')
	}

	s := r.Success
	fmt.Fprintf(&b, "\nDelivery success%s\n", verdict(s.Met, s.Finished > 0 && s.Target > 0))
	if s.Finished == 0 {
		b.WriteString("  no finished messages\n")
	} else {
		fmt.Fprintf(&b, "  %s (%d delivered of %d finished)\n", pct(s.Rate), s.Delivered, s.Finished)
	}
	fmt.Fprintf(&b, "  bounced %d, expired %d, suppressed %d, dropped %d; superseded %d (not counted as failures)\n",
		s.Bounced, s.Expired, s.Suppressed, s.Dropped, s.Superseded)
	if s.Target > 0 {
		fmt.Fprintf(&b, "  target: >= %s\n", pct(s.Target))
	}

	c := r.Completion
	fmt.Fprintf(&b, "\nReset completion%s\n", verdict(c.Met, c.Available && c.Delivered > 0 && c.Target > 0))
	if !c.Available {
		b.WriteString("  no click events\n")
	} else {
		fmt.Fprintf(&b, "  %s (%d clicked before the deadline of %d delivered; %d clicked too late)\n",
			pct(c.Rate), c.ClickedInTime, c.Delivered, c.ClickedLate)
	}
	if c.Target > 0 {
		fmt.Fprintf(&b, "  target: >= %s\n", pct(c.Target))
	}

	e := r.Escalation
	fmt.Fprintf(&b, "\nSupport escalations%s\n", verdict(e.Met, e.Messages > 0 && e.Target > 0))
	fmt.Fprintf(&b, "  %s (%d escalated of %d messages; %d Cases opened)\n", pct(e.Rate), e.Escalated, e.Messages, e.CasesOpened)
	if len(e.ByTrigger) > 0 {
		keys := make([]string, 0, len(e.ByTrigger))
		for k := range e.ByTrigger {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteString("  by trigger:")
		for _, k := range keys {
			fmt.Fprintf(&b, " %s %d", k, e.ByTrigger[k])
		}
		b.WriteByte('\n')
	}
	if e.Target > 0 {
		fmt.Fprintf(&b, "  target: <= %s\n", pct(e.Target))
	}

	cal := r.Calibration
	b.WriteString("\nExpiry calibration\n")
	if !cal.Safe {
		b.WriteString("  WARNING: ")
	} else {
		b.WriteString("  ")
	}
	b.WriteString(cal.Advice)
	b.WriteByte('\n')
	if r.Missed() {
		b.WriteString("\nRESULT: target missed\n")
	} else {
		b.WriteString("\nRESULT: all targets met\n")
	}
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("metrics: write report: %w", err)
	}
	return nil
}

func verdict(met, judged bool) string {
	switch {
	case !judged:
		return ""
	case met:
		return ": MET"
	default:
		return ": MISSED"
	}
}

func pct(f float64) string {
	return strconv.FormatFloat(f*100, 'f', 2, 64) + "%"
}

// WriteProm writes the report as Prometheus text exposition gauges, for
// node_exporter's textfile collector (cron: `latchkey stats -prom` or the
// JSON through a script): the four figures have no live counterpart for
// completion, and alerting on the audit-based figures needs them as series.
// Completion gauges appear only where click events exist.
func (r *Report) WriteProm(w io.Writer) error {
	var b strings.Builder
	class := quoteLabel(r.Class)
	gauge := func(name, help string, v float64, extra ...string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		labels := "class=" + class
		for i := 0; i+1 < len(extra); i += 2 {
			labels += "," + extra[i] + "=" + quoteLabel(extra[i+1])
		}
		fmt.Fprintf(&b, "%s{%s} %s\n", name, labels, strconv.FormatFloat(v, 'g', -1, 64))
	}
	b01 := func(x bool) float64 {
		if x {
			return 1
		}
		return 0
	}
	end := r.Until
	if end.IsZero() {
		end = time.Now()
	}
	gauge("latchkey_stats_window_end_timestamp_seconds", "End of the window the figures cover.", float64(end.Unix()))
	gauge("latchkey_stats_messages", "Messages (items) queued in the window.", float64(r.Messages))
	gauge("latchkey_stats_delivered", "Messages delivered in the window.", float64(r.Success.Delivered))
	gauge("latchkey_stats_refused", "Submissions refused at acceptance in the window (nothing queued).", float64(r.Refused))
	if r.Speed.Samples > 0 {
		gauge("latchkey_stats_delivery_p95_seconds", "p95 accept-to-delivered latency (nearest rank).", time.Duration(r.Speed.P95).Seconds())
		gauge("latchkey_stats_delivery_p999_seconds", "p99.9 accept-to-delivered latency (nearest rank).", time.Duration(r.Speed.P999).Seconds())
		gauge("latchkey_stats_delivered_within_60s_ratio", "Share of deliveries within 60 s.", r.Speed.Under60Share)
	}
	if r.Success.Finished > 0 {
		gauge("latchkey_stats_success_ratio", "Delivered / finished (superseded excluded).", r.Success.Rate)
	}
	if r.Completion.Available && r.Completion.Delivered > 0 {
		gauge("latchkey_stats_completion_ratio", "Delivered resets clicked before the deadline / delivered.", r.Completion.Rate)
	}
	if r.Messages > 0 {
		gauge("latchkey_stats_escalation_ratio", "Messages escalated / messages.", r.Escalation.Rate)
	}
	gauge("latchkey_stats_cases_opened", "Salesforce Cases opened for messages of the window.", float64(r.Escalation.CasesOpened))
	fmt.Fprintf(&b, "# HELP latchkey_stats_target_met 1 when the figure meets its target (or has none, or no data).\n# TYPE latchkey_stats_target_met gauge\n")
	for _, f := range []struct {
		name string
		met  bool
	}{{"speed", r.Speed.Met}, {"success", r.Success.Met}, {"completion", r.Completion.Met}, {"escalation", r.Escalation.Met}} {
		fmt.Fprintf(&b, "latchkey_stats_target_met{class=%s,figure=%s} %g\n", class, quoteLabel(f.name), b01(f.met))
	}
	if r.Calibration.Samples > 0 {
		gauge("latchkey_stats_recommended_expiry_seconds", "Shortest safe token expiry: p99.9 latency plus margin, rounded up to a minute.",
			time.Duration(r.Calibration.Recommended).Seconds())
		gauge("latchkey_stats_expiry_safe", "1 when the configured expiry is at least the recommended one.", b01(r.Calibration.Safe))
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("metrics: write report: %w", err)
	}
	return nil
}

// labelEscaper escapes a label value as the text exposition format wants
// (only backslash, double quote and newline; Go's %q would differ).
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func quoteLabel(s string) string {
	return `"` + labelEscaper.Replace(strings.ToValidUTF8(s, "\uFFFD")) + `"`
}
