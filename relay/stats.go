package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/latchkey/latchkey/metrics"
	"github.com/latchkey/latchkey/policy"
)

// StatsOptions builds the four figures' options for class from the policy:
// its targets, and its expiry and margin for the calibration. class "" is
// every class, judged against the default class's targets.
func StatsOptions(pol *policy.Policy, class string, since, until time.Time) (metrics.StatsOptions, error) {
	o := metrics.StatsOptions{Since: since, Until: until, Class: class}
	c := pol.DefaultClass()
	if class != "" {
		if c = pol.Class(class); c == nil {
			return o, fmt.Errorf("no class %q in the policy", class)
		}
	}
	o.Targets = metrics.Targets{SpeedP95: c.Targets.DeliveryP95, Success: c.Targets.SuccessRate,
		Completion: c.Targets.CompletionRate, Escalation: c.Targets.MaxEscalationRate}
	if class != "" {
		o.Expiry = c.Expiry
		// The user needs the link to still work after it arrives: the
		// class's own delivery margin, or the calibration's default.
		o.Margin = c.Margin
	}
	return o, nil
}

// StatsHandler answers GET /api/v1/stats?since=24h&until=…&class=reset with
// the four figures computed from the audit trail in db (class "all" for
// every class).
func StatsHandler(db *badger.DB, pol func() *policy.Policy) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(code int, msg string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(map[string]string{"error": msg})
		}
		now := time.Now()
		since, until := now.Add(-24*time.Hour), time.Time{}
		for _, p := range []struct {
			name string
			t    *time.Time
		}{{"since", &since}, {"until", &until}} {
			v := r.URL.Query().Get(p.name)
			if v == "" {
				continue
			}
			if d, err := time.ParseDuration(v); err == nil && d >= 0 {
				*p.t = now.Add(-d)
			} else if t, err := time.Parse(time.RFC3339, v); err == nil {
				*p.t = t
			} else {
				fail(http.StatusBadRequest, fmt.Sprintf("%s: %q is neither a duration (24h) nor an RFC 3339 time", p.name, v))
				return
			}
		}
		class := r.URL.Query().Get("class")
		switch class {
		case "":
			class = "reset"
		case "all":
			class = ""
		}
		o, err := StatsOptions(pol(), class, since, until)
		if err != nil {
			fail(http.StatusBadRequest, "class: "+err.Error())
			return
		}
		if v := r.URL.Query().Get("series"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Minute {
				fail(http.StatusBadRequest, fmt.Sprintf("series: %q is not a duration of at least 1m (e.g. 1h)", v))
				return
			}
			o.Series = d
		}
		rep, err := metrics.ComputeStats(db, o)
		if err != nil {
			fail(http.StatusInternalServerError, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rep)
	})
}

// calibrate warns in the log, hourly, when a class's configured expiry is
// shorter than the last day's delivery tail makes safe.
func (s *Server) calibrate(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.now()
		for _, c := range s.Policy.Get().Classes() {
			o, err := StatsOptions(s.Policy.Get(), c.Name, now.Add(-24*time.Hour), time.Time{})
			if err != nil {
				continue
			}
			rep, err := metrics.ComputeStats(s.Store.DB, o)
			if err != nil {
				// One failed read must not end the hourly check for
				// good: try the next class, and again next hour.
				s.log.Warn().Err(err).Str("class", c.Name).Msg("expiry calibration failed")
				continue
			}
			if !rep.Calibration.Safe {
				s.log.Warn().Str("class", c.Name).Msg("expiry calibration: " + rep.Calibration.Advice)
			}
		}
	}
}
