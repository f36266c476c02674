package metrics

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/latchkey/latchkey/audit"
)

var auditKey = []byte("0123456789abcdef0123456789abcdef")

// T0 is the start of the test window.
var T0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// trail writes a synthetic audit trail the way the relay and queue do:
// each step's events in one Badger transaction, chained by audit.Log.
type trail struct {
	t   *testing.T
	db  *badger.DB
	log *audit.Log
}

func newTrail(t *testing.T) *trail {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).WithCompression(options.None))
	if err != nil {
		t.Fatalf("open badger: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	l, err := audit.Open(db, auditKey)
	if err != nil {
		t.Fatalf("audit.Open: %v", err)
	}
	return &trail{t: t, db: db, log: l}
}

func (tr *trail) commit(evs ...*audit.Event) {
	tr.t.Helper()
	m := tr.log.Mark()
	txn := tr.db.NewTransaction(true)
	defer txn.Discard()
	for _, ev := range evs {
		if err := tr.log.Append(txn, ev); err != nil {
			tr.log.Rollback(m)
			tr.t.Fatalf("Append: %v", err)
		}
	}
	if err := txn.Commit(); err != nil {
		tr.log.Rollback(m)
		tr.t.Fatalf("Commit: %v", err)
	}
}

// msg is one accepted message: its 16-character id and items.
type msg struct {
	tr       *trail
	id       string
	class    string
	at       time.Time
	deadline time.Time
}

// accept writes what the relay's submission writes for a message with n
// recipients (received, signed, then one queued event per item), with a
// 30-minute expiry. suppressed lists recipient indexes on the bounce list
// without a backup: they get a suppressed and an escalated event instead.
func (tr *trail) accept(id, class string, at time.Time, n int, suppressed ...int) *msg {
	tr.t.Helper()
	if len(id) != 16 {
		tr.t.Fatalf("message id %q: want 16 characters", id)
	}
	m := &msg{tr: tr, id: id, class: class, at: at, deadline: at.Add(30 * time.Minute)}
	dl := m.deadline.Format(time.RFC3339)
	mid := "<" + id + "@relay.example.test>"
	evs := []*audit.Event{
		{Time: at, Type: audit.Received, MessageID: mid, Class: class, Recipient: "user@example.test",
			Fields: map[string]string{"deadline": dl, "queue_id": id, "client_ip": "127.0.0.1"}},
		{Time: at, Type: audit.Signed, MessageID: mid, Class: class, Fields: map[string]string{"queue_id": id}},
	}
	for i := range n {
		if contains(suppressed, i) {
			evs = append(evs,
				&audit.Event{Time: at, Type: audit.Suppressed, QueueID: m.item(i), MessageID: mid, Class: class, Fields: map[string]string{"list": "bounce"}},
				&audit.Event{Time: at, Type: audit.Escalated, QueueID: m.item(i), MessageID: mid, Class: class, Fields: map[string]string{"trigger": "suppressed"}})
			continue
		}
		evs = append(evs, &audit.Event{Time: at, Type: audit.Queued, QueueID: m.item(i), MessageID: mid, Class: class,
			Fields: map[string]string{"deadline": dl}})
	}
	tr.commit(evs...)
	return m
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// item is the queue id of recipient i (queue.ItemID's form).
func (m *msg) item(i int) string { return m.id + "a" + string("abcdefgh"[i]) }

// ev writes one outcome's events for item i at offset d after acceptance.
func (m *msg) ev(i int, d time.Duration, types ...string) {
	m.tr.t.Helper()
	var evs []*audit.Event
	for _, typ := range types {
		evs = append(evs, m.event(i, d, typ, nil))
	}
	m.tr.commit(evs...)
}

func (m *msg) event(i int, d time.Duration, typ string, fields map[string]string) *audit.Event {
	return &audit.Event{Time: m.at.Add(d), Type: typ, QueueID: m.item(i), Class: m.class, Fields: fields}
}

// delivered writes an attempt and the delivered event with its latency_ms.
func (m *msg) delivered(i int, d time.Duration) {
	m.tr.t.Helper()
	m.tr.commit(m.event(i, d, audit.Attempt, map[string]string{"code": "250"}),
		m.event(i, d, audit.Delivered, map[string]string{"latency_ms": strconv.FormatInt(d.Milliseconds(), 10)}))
}

func (m *msg) deferred(i int, d time.Duration) {
	m.tr.t.Helper()
	m.tr.commit(m.event(i, d, audit.Attempt, map[string]string{"code": "451"}), m.event(i, d, audit.Deferred, nil))
}

// click records a click on the reset link, d after acceptance; like the
// click tracker it carries a queue id but no class.
func (m *msg) click(queueID string, d time.Duration) {
	m.tr.t.Helper()
	m.tr.commit(&audit.Event{Time: m.at.Add(d), Type: audit.Clicked, QueueID: queueID})
}

// buildTrail writes the scenario documented in TestComputeStats.
func buildTrail(t *testing.T) *trail {
	tr := newTrail(t)
	minute := time.Minute

	// M: accepted before the window, delivered inside it: not counted.
	m := tr.accept("mmmmmmmmmmmmmmmm", "reset", T0.Add(-10*minute), 1)
	m.delivered(0, 11*minute)

	// A: delivered first try in 2 s; clicked in time.
	a := tr.accept("aaaaaaaaaaaaaaaa", "reset", T0, 1)
	a.delivered(0, 2*time.Second)
	a.click(a.item(0), 5*minute)

	// B: two deferrals, delivered 50 s after acceptance (counted once);
	// clicked 40 min later, past its 30 min deadline.
	b := tr.accept("bbbbbbbbbbbbbbbb", "reset", T0.Add(1*minute), 1)
	b.deferred(0, 5*time.Second)
	b.deferred(0, 20*time.Second)
	b.delivered(0, 50*time.Second)
	b.click(b.item(0), 40*minute)

	// C: delivered in 90 s, never clicked.
	c := tr.accept("cccccccccccccccc", "reset", T0.Add(2*minute), 1)
	c.delivered(0, 90*time.Second)

	// D: hard bounce, escalated, then Salesforce opened the Case.
	d := tr.accept("dddddddddddddddd", "reset", T0.Add(3*minute), 1)
	tr.commit(d.event(0, 3*time.Second, audit.Attempt, map[string]string{"code": "550"}),
		d.event(0, 3*time.Second, audit.Bounced, map[string]string{"hard": "true", "reason": "mailboxunknown"}),
		d.event(0, 3*time.Second, audit.Escalated, map[string]string{"trigger": "hard_bounce", "via": "salesforce"}))
	tr.commit(d.event(0, 10*time.Second, audit.Escalated, map[string]string{"trigger": "hard_bounce", "case_id": "500xx0000001"}))

	// E: deferred until its deadline passed: expired and escalated.
	e := tr.accept("eeeeeeeeeeeeeeee", "reset", T0.Add(4*minute), 1)
	e.deferred(0, 10*time.Second)
	tr.commit(e.event(0, 30*minute, audit.Expired, nil),
		e.event(0, 30*minute, audit.Escalated, map[string]string{"trigger": "expired", "via": "salesforce"}))

	// F is superseded by G, a newer reset for the same user, delivered in
	// 10 s and clicked twice in time.
	f := tr.accept("ffffffffffffffff", "reset", T0.Add(5*minute), 1)
	g := tr.accept("gggggggggggggggg", "reset", T0.Add(6*minute), 1)
	tr.commit(f.event(0, 1*minute, audit.Superseded, map[string]string{"by": g.item(0)}))
	g.delivered(0, 10*time.Second)
	g.click(g.item(0), 2*minute)
	g.click(g.item(0), 3*minute)

	// H: hard bounce, sent to the backup address, delivered after 3 min.
	h := tr.accept("hhhhhhhhhhhhhhhh", "reset", T0.Add(7*minute), 1)
	h.ev(0, 5*time.Second, audit.Attempt, audit.Bounced, audit.RetriedBackup)
	h.delivered(0, 3*minute)
	h.click(h.item(0), 10*minute)

	// I: on the bounce suppression list with no backup: never queued.
	tr.accept("iiiiiiiiiiiiiiii", "reset", T0.Add(8*minute), 1, 0)

	// J: still waiting after a deferral.
	j := tr.accept("jjjjjjjjjjjjjjjj", "reset", T0.Add(9*minute), 1)
	j.deferred(0, 30*time.Second)

	// K: two recipients; the first delivered in 4 s, the second dropped by
	// an operator. The click names the message, not the recipient.
	k := tr.accept("kkkkkkkkkkkkkkkk", "reset", T0.Add(10*minute), 2)
	k.delivered(0, 4*time.Second)
	k.ev(1, 2*minute, audit.Dropped)
	k.click(k.id, 6*minute)

	// N: delivered in 20 s, then an asynchronous bounce (DSN) came back.
	n := tr.accept("nnnnnnnnnnnnnnnn", "reset", T0.Add(11*minute), 1)
	n.delivered(0, 20*time.Second)
	tr.commit(n.event(0, 5*minute, audit.Bounced, map[string]string{"reason": "mailboxfull"}))

	// P: delivered in 30 s, then a spam complaint: still delivered.
	p := tr.accept("pppppppppppppppp", "reset", T0.Add(12*minute), 1)
	p.delivered(0, 30*time.Second)
	tr.commit(p.event(0, 20*minute, audit.Bounced, map[string]string{"complaint": "abuse", "reason": "feedback"}))

	// L: a bulk message, delivered in 1 s: only in the all-classes figures.
	l := tr.accept("llllllllllllllll", "bulk", T0.Add(13*minute), 1)
	l.delivered(0, 1*time.Second)

	// R: accepted 10 min before the window ends, delivered after it.
	r := tr.accept("rrrrrrrrrrrrrrrr", "reset", T0.Add(110*minute), 1)
	r.delivered(0, 15*minute)

	// Refused at submission: a reset with a foreign From domain and one
	// over its rate limit count for the reset class, a refused bulk
	// message only for all classes, and a malformed message (no class
	// known) only for all classes.
	tr.commit(&audit.Event{Time: T0.Add(14 * minute), Type: audit.Rejected, Class: "reset", Fields: map[string]string{"reason": "from_domain"}},
		&audit.Event{Time: T0.Add(15 * minute), Type: audit.RateLimited, Class: "reset", Recipient: "user@example.test"},
		&audit.Event{Time: T0.Add(16 * minute), Type: audit.Rejected, Class: "bulk", Fields: map[string]string{"reason": "org_id"}},
		&audit.Event{Time: T0.Add(17 * minute), Type: audit.Rejected, Fields: map[string]string{"reason": "bad_header"}})

	// Q: accepted after the window.
	q := tr.accept("qqqqqqqqqqqqqqqq", "reset", T0.Add(3*time.Hour), 1)
	q.delivered(0, time.Second)
	return tr
}

// TestComputeStats checks the four figures over buildTrail's scenario.
// For the reset class in [T0, T0+2h) the messages are A B C D E F G H I J
// K/aa K/ab N P R = 15 (M began before, Q after, L is bulk).
//
//	speed: delivered latencies 2 4 10 20 30 50 90 180 s (A Kaa G N P B C H;
//	  N counts: it reached the MX before bouncing); nearest rank over 8:
//	  p50 = rank 4 = 20 s; p95 = p99 = p99.9 = rank 8 = 180 s;
//	  within 60 s: 6/8 = 0.75 → p95 target (60 s) missed.
//	success: delivered A B C G H Kaa P = 7; bounced D N = 2; expired E;
//	  suppressed I; dropped Kab; superseded F (not a failure); pending J R.
//	  7 / (7+2+1+1+1) = 7/12.
//	completion: in time A G H Kaa = 4 of 7 delivered; late B.
//	escalation: D E I = 3 of 15; one Case opened (D).
//	calibration: 180 s + 5 min margin = 8 min exactly.
func TestComputeStats(t *testing.T) {
	tr := buildTrail(t)
	rep, err := ComputeStats(tr.db, StatsOptions{Since: T0, Until: T0.Add(2 * time.Hour), Class: "reset",
		Targets: DefaultTargets(), Expiry: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	s := time.Second
	want := &Report{
		Since: T0, Until: T0.Add(2 * time.Hour), Class: "reset", Messages: 15, Pending: 2, Refused: 2,
		Speed: Speed{Samples: 8, P50: Duration(20 * s), P95: Duration(180 * s), P99: Duration(180 * s), P999: Duration(180 * s),
			Under60Share: 0.75, TargetP95: Duration(60 * s), TargetShare: 0.95, Met: false},
		Success: Success{Rate: 7.0 / 12, Delivered: 7, Finished: 12, Bounced: 2, Expired: 1, Suppressed: 1, Dropped: 1,
			Superseded: 1, Target: 0.98, Met: false},
		Completion: Completion{Available: true, Rate: 4.0 / 7, ClickedInTime: 4, ClickedLate: 1, Delivered: 7, Met: true},
		Escalation: Escalation{Rate: 0.2, Escalated: 3, CasesOpened: 1, Messages: 15, Met: true,
			ByTrigger: map[string]int{"hard_bounce": 1, "expired": 1, "suppressed": 1}},
	}
	cal := rep.Calibration
	rep.Calibration = Calibration{}
	if !reflect.DeepEqual(rep, want) {
		t.Errorf("report:\n got %+v\nwant %+v", rep, want)
	}
	if cal.Samples != 8 || cal.Observed != Duration(180*s) || cal.Margin != Duration(DefaultMargin) ||
		cal.Recommended != Duration(8*time.Minute) || cal.Configured != Duration(30*time.Minute) || !cal.Safe {
		t.Errorf("calibration = %+v", cal)
	}
	rep.Calibration = cal
	if !rep.Missed() {
		t.Error("Missed() = false with speed and success below target")
	}

	// With targets it meets, the same trail passes; the escalation
	// ceiling and completion floor are judged too.
	rep2, err := ComputeStats(tr.db, StatsOptions{Since: T0, Until: T0.Add(2 * time.Hour), Class: "reset",
		Targets: Targets{SpeedP95: 3 * time.Minute, Under60Share: 0.75, Success: 0.5, Completion: 0.5, Escalation: 0.2}})
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Missed() || !rep2.Speed.Met || !rep2.Success.Met || !rep2.Completion.Met || !rep2.Escalation.Met {
		t.Errorf("lenient targets: missed %v: %+v", rep2.Missed(), rep2)
	}
	rep3, err := ComputeStats(tr.db, StatsOptions{Since: T0, Until: T0.Add(2 * time.Hour), Class: "reset",
		Targets: Targets{Completion: 0.6, Escalation: 0.19}})
	if err != nil {
		t.Fatal(err)
	}
	if rep3.Completion.Met || rep3.Escalation.Met || !rep3.Missed() {
		t.Errorf("completion 4/7 < 0.6 and escalation 0.2 > 0.19 should miss: %+v %+v", rep3.Completion, rep3.Escalation)
	}
}

// TestComputeStatsAllClasses: without a class, the bulk message counts.
func TestComputeStatsAllClasses(t *testing.T) {
	tr := buildTrail(t)
	rep, err := ComputeStats(tr.db, StatsOptions{Since: T0, Until: T0.Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Messages != 16 || rep.Success.Delivered != 8 || rep.Speed.Samples != 9 || rep.Speed.P50 != Duration(20*time.Second) || rep.Refused != 4 {
		t.Errorf("all classes: messages %d delivered %d samples %d p50 %v refused %d; want 16 8 9 20s 4",
			rep.Messages, rep.Success.Delivered, rep.Speed.Samples, time.Duration(rep.Speed.P50), rep.Refused)
	}
	// No Until: R's delivery, 15 min later, now counts; Q too.
	rep, err = ComputeStats(tr.db, StatsOptions{Since: T0, Class: "reset"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Messages != 16 || rep.Pending != 1 || rep.Success.Delivered != 9 {
		t.Errorf("open window: messages %d pending %d delivered %d; want 16 1 9", rep.Messages, rep.Pending, rep.Success.Delivered)
	}
}

// TestComputeStatsFallbackLatency: a delivered event without latency_ms
// is timed from the received event.
func TestComputeStatsFallbackLatency(t *testing.T) {
	tr := newTrail(t)
	m := tr.accept("xxxxxxxxxxxxxxxx", "reset", T0, 1)
	m.ev(0, 75*time.Second, audit.Delivered)
	rep, err := ComputeStats(tr.db, StatsOptions{Since: T0, Class: "reset", Targets: DefaultTargets()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Speed.P95 != Duration(75*time.Second) || rep.Speed.Under60Share != 0 || rep.Speed.Met {
		t.Errorf("speed = %+v", rep.Speed)
	}
	if rep.Completion.Available {
		t.Error("completion available without click events")
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "no click events") {
		t.Errorf("text lacks 'no click events':\n%s", buf.String())
	}
}

// TestComputeStatsEmpty: an empty window misses nothing.
func TestComputeStatsEmpty(t *testing.T) {
	tr := newTrail(t)
	rep, err := ComputeStats(tr.db, StatsOptions{Since: T0, Class: "reset", Targets: DefaultTargets(), Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Missed() || rep.Messages != 0 || !rep.Calibration.Safe {
		t.Errorf("empty window: %+v", rep)
	}
	if _, err := ComputeStats(nil, StatsOptions{}); err == nil {
		t.Error("nil db: no error")
	}
}

func TestReportTextAndJSON(t *testing.T) {
	tr := buildTrail(t)
	rep, err := ComputeStats(tr.db, StatsOptions{Since: T0, Until: T0.Add(2 * time.Hour), Class: "reset",
		Targets: DefaultTargets(), Expiry: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	txt := buf.String()
	for _, want := range []string{
		"Delivery speed: MISSED", "p50 20s  p95 3m0s", "within 60s: 75.00%",
		"Delivery success: MISSED", "58.33% (7 delivered of 12 finished)", "superseded 1 (not counted as failures)",
		"Reset completion\n", "57.14% (4 clicked before the deadline of 7 delivered; 1 clicked too late)",
		"20.00% (3 escalated of 15 messages; 1 Cases opened)", "by trigger: expired 1 hard_bounce 1 suppressed 1",
		"WARNING: configured expiry 5m0s is shorter", "at least 8m0s", "RESULT: target missed",
	} {
		if !strings.Contains(txt, want) {
			t.Errorf("text lacks %q:\n%s", want, txt)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	speed := back["speed"].(map[string]any)
	if speed["p95_seconds"] != 180.0 || speed["met"] != false {
		t.Errorf("json speed = %v", speed)
	}
	if back["calibration"].(map[string]any)["recommended_seconds"] != 480.0 {
		t.Errorf("json calibration = %v", back["calibration"])
	}
	var rt Report
	if err := json.Unmarshal(b, &rt); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if rt.Speed.P95 != rep.Speed.P95 || rt.Success != rep.Success {
		t.Errorf("round trip differs: %+v", rt)
	}
}

// TestCalibrate checks the recommendation against hand computations.
func TestCalibrate(t *testing.T) {
	// 1000 deliveries taking 1 s, 2 s, …, 1000 s, given in reverse order.
	// Nearest rank of p99.9: ceil(0.999 × 1000) = 999 → 999 s = 16m39s.
	// Plus a 2 min margin: 18m39s; rounded up to the minute: 19m.
	lat := make([]time.Duration, 1000)
	for i := range lat {
		lat[i] = time.Duration(1000-i) * time.Second
	}
	c := Calibrate(lat, 15*time.Minute, 2*time.Minute)
	if c.Observed != Duration(999*time.Second) || c.Recommended != Duration(19*time.Minute) || c.Safe {
		t.Errorf("15m configured: %+v", c)
	}
	if !strings.Contains(c.Advice, "at least 19m0s") {
		t.Errorf("advice %q", c.Advice)
	}
	if lat[0] != 1000*time.Second {
		t.Error("Calibrate sorted the caller's slice")
	}
	// Exactly the recommendation is safe.
	if c := Calibrate(lat, 19*time.Minute, 2*time.Minute); !c.Safe {
		t.Errorf("19m configured: %+v", c)
	}
	// 10 samples: ceil(0.999 × 10) = 10, the slowest (2 min). With no
	// margin, 2m is already a whole minute and is not rounded further.
	ten := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 120}
	for i := range ten[:9] {
		ten[i] *= time.Second
	}
	ten[9] = 2 * time.Minute
	if c := Calibrate(ten, 0, 0); c.Recommended != Duration(2*time.Minute) || !c.Safe {
		t.Errorf("ten samples: %+v", c)
	}
	// 2m + 1 ms rounds up to 3 m.
	if c := Calibrate([]time.Duration{2*time.Minute + time.Millisecond}, 2*time.Minute, 0); c.Recommended != Duration(3*time.Minute) || c.Safe {
		t.Errorf("rounding: %+v", c)
	}
	if c := Calibrate(nil, time.Minute, time.Minute); c.Recommended != 0 || !c.Safe {
		t.Errorf("no samples: %+v", c)
	}
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 20; i++ {
		s = append(s, time.Duration(i))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 10}, {0.95, 19}, {0.99, 20}, {0.999, 20}, {0.05, 1}, {0.0001, 1}, {1, 20}} {
		if got := Percentile(s, c.q); got != c.want {
			t.Errorf("p%v of 1..20 = %d, want %d", c.q*100, got, c.want)
		}
	}
	if Percentile(nil, 0.5) != 0 {
		t.Error("empty")
	}
	if Percentile(s[:1], math.NaN()) != 1 {
		t.Error("NaN q")
	}
}

func BenchmarkComputeStats(b *testing.B) {
	db, err := badger.Open(badger.DefaultOptions(b.TempDir()).WithLogger(nil))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	l, err := audit.Open(db, auditKey)
	if err != nil {
		b.Fatal(err)
	}
	// 10 000 resets, 4 events each.
	for n := 0; n < 10000; n += 500 {
		txn := db.NewTransaction(true)
		for i := n; i < n+500; i++ {
			id := "b" + strings.Repeat("0", 15-len(strconv.Itoa(i))) + strconv.Itoa(i)
			at := T0.Add(time.Duration(i) * time.Second)
			for _, ev := range []*audit.Event{
				{Time: at, Type: audit.Received, Class: "reset", Fields: map[string]string{"queue_id": id, "deadline": at.Add(30 * time.Minute).Format(time.RFC3339)}},
				{Time: at, Type: audit.Queued, QueueID: id + "aa", Class: "reset"},
				{Time: at.Add(time.Second), Type: audit.Attempt, QueueID: id + "aa", Class: "reset"},
				{Time: at.Add(time.Second), Type: audit.Delivered, QueueID: id + "aa", Class: "reset", Fields: map[string]string{"latency_ms": strconv.Itoa(i % 90000)}},
			} {
				if err := l.Append(txn, ev); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := txn.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, err := ComputeStats(db, StatsOptions{Since: T0, Class: "reset", Targets: DefaultTargets()}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReportProm parses WriteProm's output as the textfile collector would.
func TestReportProm(t *testing.T) {
	tr := buildTrail(t)
	rep, err := ComputeStats(tr.db, StatsOptions{Since: T0, Until: T0.Add(2 * time.Hour), Class: "reset",
		Targets: DefaultTargets(), Expiry: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteProm(&buf); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(&buf)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, buf.String())
	}
	val := func(name string, labels ...string) float64 {
		t.Helper()
	next:
		for _, m := range fams[name].GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			if got["class"] != "reset" {
				t.Errorf("%s: class label %q", name, got["class"])
			}
			return m.GetGauge().GetValue()
		}
		t.Fatalf("%s%v missing:\n%s", name, labels, buf.String())
		return 0
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"latchkey_stats_messages", nil, 15},
		{"latchkey_stats_refused", nil, 2},
		{"latchkey_stats_delivery_p95_seconds", nil, 180},
		{"latchkey_stats_delivered_within_60s_ratio", nil, 0.75},
		{"latchkey_stats_success_ratio", nil, 7.0 / 12},
		{"latchkey_stats_completion_ratio", nil, 4.0 / 7},
		{"latchkey_stats_escalation_ratio", nil, 0.2},
		{"latchkey_stats_cases_opened", nil, 1},
		{"latchkey_stats_target_met", []string{"figure", "speed"}, 0},
		{"latchkey_stats_target_met", []string{"figure", "success"}, 0},
		{"latchkey_stats_target_met", []string{"figure", "completion"}, 1},
		{"latchkey_stats_recommended_expiry_seconds", nil, 480},
		{"latchkey_stats_expiry_safe", nil, 0},
		{"latchkey_stats_window_end_timestamp_seconds", nil, float64(T0.Add(2 * time.Hour).Unix())},
	} {
		if got := val(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// The console's plots come from the same report: buckets by acceptance
// time with the outcomes, and the delivered latencies binned.
func TestComputeStatsSeries(t *testing.T) {
	tr := buildTrail(t)
	rep, err := ComputeStats(tr.db, StatsOptions{Since: T0, Until: T0.Add(2 * time.Hour), Class: "reset",
		Targets: DefaultTargets(), Series: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// Hour 1: A…P but R (14: delivered A B C G H Kaa P, failed D N E I
	// Kab, escalated D E I); hour 2: R, still pending.
	want := []Bucket{
		{Start: T0, Messages: 14, Delivered: 7, Failed: 5, Escalated: 3},
		{Start: T0.Add(time.Hour), Messages: 1},
	}
	if !reflect.DeepEqual(rep.Series, want) {
		t.Errorf("series:\n got %+v\nwant %+v", rep.Series, want)
	}
	// Latencies 2 4 10 20 30 50 90 180 s.
	counts := []int{0, 1, 1, 1, 2, 1, 1, 1, 0}
	if len(rep.Latency) != len(counts) {
		t.Fatalf("histogram has %d bins, want %d", len(rep.Latency), len(counts))
	}
	total := 0
	for i, b := range rep.Latency {
		if b.Count != counts[i] {
			t.Errorf("bin %d (up to %v): %d, want %d", i, time.Duration(b.UpTo), b.Count, counts[i])
		}
		total += b.Count
	}
	if total != rep.Speed.Samples {
		t.Errorf("histogram holds %d, speed has %d samples", total, rep.Speed.Samples)
	}
	// Without Series the report stays as it was.
	plain, err := ComputeStats(tr.db, StatsOptions{Since: T0, Until: T0.Add(2 * time.Hour), Class: "reset"})
	if err != nil {
		t.Fatal(err)
	}
	if plain.Series != nil || plain.Latency != nil {
		t.Error("series without being asked for")
	}
}
