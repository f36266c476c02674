package metrics

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/latchkey/latchkey/audit"
)

// One delivered message: every percentile is its latency; the report
// survives the JSON trip the CLI makes and its -prom form parses, also with
// a class name holding the characters the text format escapes.
func TestReviewStatsOneSample(t *testing.T) {
	for _, class := range []string{"reset", "we\"ird\\cl\nass"} {
		tr := newTrail(t)
		m := tr.accept("aaaaaaaaaaaaaaaa", class, T0, 1)
		m.delivered(0, 1500*time.Millisecond)
		// A click exactly at the deadline still counts as in time.
		m.click(m.item(0), 30*time.Minute)
		rep, err := ComputeStats(tr.db, StatsOptions{Since: T0, Class: class, Targets: DefaultTargets()})
		if err != nil {
			t.Fatal(err)
		}
		sp := rep.Speed
		for _, p := range []Duration{sp.P50, sp.P95, sp.P99, sp.P999} {
			if time.Duration(p) != 1500*time.Millisecond {
				t.Errorf("%q: percentiles of one sample: %+v", class, sp)
			}
		}
		if rep.Completion.ClickedInTime != 1 || rep.Completion.Rate != 1 || rep.Success.Rate != 1 || rep.Missed() {
			t.Errorf("%q: report %+v", class, rep)
		}
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		var back Report
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back.Missed() != rep.Missed() || back.Speed.P95 != rep.Speed.P95 || back.Completion != rep.Completion {
			t.Errorf("%q: JSON trip changed the report:\n%+v\n%+v", class, rep, back)
		}
		var buf bytes.Buffer
		if err := back.WriteProm(&buf); err != nil {
			t.Fatal(err)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(&buf)
		if err != nil {
			t.Fatalf("%q: -prom does not parse: %v\n%s", class, err, buf.String())
		}
		got := fams["latchkey_stats_delivery_p95_seconds"].GetMetric()
		if len(got) != 1 || got[0].GetGauge().GetValue() != 1.5 || got[0].GetLabel()[0].GetValue() != class {
			t.Errorf("%q: p95 series %v", class, got)
		}
	}
}

// No events at all: no division by zero, nothing missed.
func TestReviewStatsNothing(t *testing.T) {
	tr := newTrail(t)
	tr.commit(&audit.Event{Time: T0, Type: audit.Clicked, QueueID: "zzzzzzzzzzzzzzzzaa"})
	rep, err := ComputeStats(tr.db, StatsOptions{Since: T0, Targets: Targets{SpeedP95: time.Minute, Under60Share: 1, Success: 1, Completion: 1, Escalation: 0.01}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Missed() || rep.Success.Rate != 0 || rep.Completion.Rate != 0 || rep.Escalation.Rate != 0 {
		t.Errorf("empty window: %+v", rep)
	}
	var buf bytes.Buffer
	if err := rep.WriteProm(&buf); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := parser.TextToMetricFamilies(&buf); err != nil {
		t.Fatalf("-prom does not parse: %v\n%s", err, buf.String())
	}
}
