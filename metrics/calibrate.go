package metrics

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// DefaultMargin is the safety margin added to the observed p99.9 latency
// when StatsOptions.Margin is zero: room for the user to open the mail and
// click after it arrives, and for a tail slightly worse than the window saw.
const DefaultMargin = 5 * time.Minute

// Calibration is the expiry recommendation for a class.
type Calibration struct {
	Samples     int      `json:"samples"`
	Observed    Duration `json:"observed_p999_seconds"` // p99.9 of accept-to-delivered latency
	Margin      Duration `json:"margin_seconds"`
	Recommended Duration `json:"recommended_seconds"` // shortest safe expiry; 0 without samples
	Configured  Duration `json:"configured_seconds"`  // 0: not known
	Safe        bool     `json:"safe"`
	Advice      string   `json:"advice"`
}

// Calibrate recommends the shortest safe token expiry from observed
// delivery latencies:
//
//	Recommended = ceil_to_minute(p99.9(latencies) + margin)
//
// where p99.9 is the nearest-rank percentile (see [Percentile]): the latency
// that 99.9% of the deliveries did not exceed, with no interpolation, so it
// is always a latency that was actually observed. Rounding up to a whole
// minute keeps the advice a value an operator would write in policy.toml.
//
// Safe is false when configured is non-zero and shorter than Recommended:
// then roughly one reset in a thousand (or more) arrives with too little
// time left to be used. latencies is not modified.
func Calibrate(latencies []time.Duration, configured, margin time.Duration) Calibration {
	c := Calibration{Samples: len(latencies), Margin: Duration(margin), Configured: Duration(configured), Safe: true}
	if len(latencies) == 0 {
		c.Advice = "no deliveries in the window: nothing to calibrate the expiry against"
		return c
	}
	if !slices.IsSorted(latencies) {
		latencies = slices.Clone(latencies)
		slices.Sort(latencies)
	}
	p := Percentile(latencies, 0.999)
	c.Observed = Duration(p)
	c.Recommended = Duration(ceilMinute(p + margin))
	switch {
	case configured <= 0:
		c.Advice = fmt.Sprintf("shortest safe expiry is %s (p99.9 latency %s + margin %s); configured expiry not known",
			fmtDur(c.Recommended), fmtDur(c.Observed), fmtDur(c.Margin))
	case configured < time.Duration(c.Recommended):
		c.Safe = false
		c.Advice = fmt.Sprintf("configured expiry %s is shorter than the delivery tail makes safe: p99.9 latency is %s; "+
			"with margin %s set the expiry to at least %s", fmtDur(c.Configured), fmtDur(c.Observed), fmtDur(c.Margin), fmtDur(c.Recommended))
	default:
		c.Advice = fmt.Sprintf("configured expiry %s is safe; the shortest safe expiry is %s (p99.9 latency %s + margin %s)",
			fmtDur(c.Configured), fmtDur(c.Recommended), fmtDur(c.Observed), fmtDur(c.Margin))
	}
	return c
}

// Percentile returns the nearest-rank q-quantile (0 < q <= 1) of sorted:
// the value at rank ceil(q*n) (1-based). It is 0 for an empty slice.
// Nearest rank never interpolates, so p95 of 20 samples is the 19th.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	switch {
	case n == 0:
		return 0
	case !(q > 0): // also NaN
		return sorted[0]
	case q >= 1:
		return sorted[n-1]
	}
	// The epsilon keeps q*n that is an integer in exact arithmetic (0.95*20)
	// from rounding up to the next rank in floating point.
	r := int(math.Ceil(q*float64(n) - 1e-9))
	r = min(max(r, 1), n)
	return sorted[r-1]
}

func ceilMinute(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return (d + time.Minute - 1) / time.Minute * time.Minute
}

// Duration is a time.Duration that marshals to JSON as seconds, the unit
// of every latchkey metric.
type Duration time.Duration

// MarshalJSON writes the duration as a number of seconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("%g", time.Duration(d).Seconds())), nil
}

// UnmarshalJSON reads a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s float64
	if _, err := fmt.Sscan(string(b), &s); err != nil || math.IsNaN(s) || math.IsInf(s, 0) {
		return fmt.Errorf("metrics: duration %q: want seconds", b)
	}
	*d = Duration(s * float64(time.Second))
	return nil
}

// fmtDur prints a duration rounded for people: milliseconds below a
// second, whole seconds above.
func fmtDur(d Duration) string {
	x := time.Duration(d)
	if x < time.Second {
		return x.Round(time.Millisecond).String()
	}
	return x.Round(time.Second).String()
}
