package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"
)

// Percentiles summarises a set of latencies, in milliseconds so that the
// JSON is readable without unit conversions.
type Percentiles struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

// summarize sorts d in place and returns its percentiles (nearest rank).
func summarize(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	at := func(q float64) float64 {
		i := int(q*float64(len(d))+0.999999) - 1
		i = max(0, min(i, len(d)-1))
		return ms(d[i])
	}
	return Percentiles{N: len(d), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ms(d[len(d)-1]),
		Mean: ms(sum / time.Duration(len(d)))}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (p Percentiles) String() string {
	if p.N == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  (n=%d)", p.P50, p.P90, p.P99, p.Max, p.N)
}

// SendReport is what the sender measured: submission (client → 250) only.
type SendReport struct {
	Attempted int         `json:"attempted"`
	Accepted  int         `json:"accepted"`
	Failed    int         `json:"failed"`
	FirstErr  string      `json:"first_error,omitempty"`
	Seconds   float64     `json:"seconds"`
	MsgPerSec float64     `json:"accepted_per_sec"`
	Submit    Percentiles `json:"submit_latency"`
	// Lag is how far behind its schedule the open-loop sender fell at the
	// end (0 in closed loop): a large lag means the relay could not keep up.
	LagMs float64 `json:"schedule_lag_ms"`
}

// SinkReport is what the receiving MX measured: arrival, latency since the
// send time carried in X-Load-ID, and DKIM results.
type SinkReport struct {
	Arrived    int         `json:"arrived"`
	Duplicates int         `json:"duplicates"`
	NoID       int         `json:"without_id"`
	DKIMFail   int         `json:"dkim_failures"`
	DKIMOK     int         `json:"dkim_verified"`
	FirstFail  string      `json:"first_dkim_failure,omitempty"`
	Seconds    float64     `json:"seconds"`
	MsgPerSec  float64     `json:"arrivals_per_sec"`
	E2E        Percentiles `json:"e2e_latency"`
	// Classes splits the end-to-end latency by the X-Load-Class header.
	Classes map[string]Percentiles `json:"e2e_by_class,omitempty"`
}

// RelayUsage is the relay's resource use over a run.
type RelayUsage struct {
	PID            int     `json:"pid,omitempty"`
	CPUSeconds     float64 `json:"relay_cpu_s"`
	CPUPerMsgMs    float64 `json:"relay_cpu_per_msg_ms"`
	MachineCPUSecs float64 `json:"machine_cpu_s_excluding_load_tool"`
	MachinePerMsg  float64 `json:"machine_cpu_per_msg_ms"`
	// ToolPerMsg is the load tool's own CPU (sender, sink, DNS, DKIM
	// checks): what the harness takes from the machine.
	ToolPerMsg float64 `json:"load_tool_cpu_per_msg_ms"`
	RSSMB      float64 `json:"relay_rss_mb"`
	MaxRSSMB   float64 `json:"relay_max_rss_mb"`
	AnonMB     float64 `json:"relay_rss_anon_mb"` // of RSSMB: anonymous
	FileMB     float64 `json:"relay_rss_file_mb"` // of RSSMB: file-backed (mapped Badger files)
	// MaxAnonMB is the largest anonymous resident set seen, sampled every
	// second from the start of the run to the report (the kernel keeps a
	// peak only for the whole resident set, VmHWM).
	MaxAnonMB float64 `json:"relay_max_rss_anon_mb"`
}

// RunReport is the whole of `latchkey-load run`.
type RunReport struct {
	Label string      `json:"label,omitempty"`
	Mode  string      `json:"mode"`
	Send  SendReport  `json:"send"`
	Sink  SinkReport  `json:"sink"`
	Relay *RelayUsage `json:"relay,omitempty"`
	// E2EMsgPerSec is delivered messages over the time from the first send to
	// the last arrival: the relay's sustained throughput, queue included.
	E2EMsgPerSec float64 `json:"e2e_msg_per_sec"`
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (r SendReport) text(w io.Writer) {
	fmt.Fprintf(w, "submitted: %d accepted, %d failed of %d in %.2fs = %.1f msg/s\n", r.Accepted, r.Failed, r.Attempted, r.Seconds, r.MsgPerSec)
	if r.FirstErr != "" {
		fmt.Fprintf(w, "  first error: %s\n", r.FirstErr)
	}
	fmt.Fprintf(w, "  submit latency: %s\n", r.Submit)
	if r.LagMs > 0 {
		fmt.Fprintf(w, "  open-loop schedule lag at the end: %.1f ms\n", r.LagMs)
	}
}

func (r SinkReport) text(w io.Writer) {
	fmt.Fprintf(w, "arrived: %d in %.2fs = %.1f msg/s (duplicates %d, without id %d)\n", r.Arrived, r.Seconds, r.MsgPerSec, r.Duplicates, r.NoID)
	fmt.Fprintf(w, "  DKIM: %d verified, %d failed", r.DKIMOK, r.DKIMFail)
	if r.FirstFail != "" {
		fmt.Fprintf(w, " (first: %s)", r.FirstFail)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  e2e latency since send: %s\n", r.E2E)
	for c, p := range r.Classes {
		fmt.Fprintf(w, "    %s: %s\n", c, p)
	}
}

func (r RunReport) text(w io.Writer) {
	if r.Label != "" {
		fmt.Fprintf(w, "== %s (%s)\n", r.Label, r.Mode)
	} else {
		fmt.Fprintf(w, "== %s\n", r.Mode)
	}
	r.Send.text(w)
	r.Sink.text(w)
	fmt.Fprintf(w, "e2e throughput: %.1f msg/s\n", r.E2EMsgPerSec)
	if u := r.Relay; u != nil {
		if u.PID != 0 {
			fmt.Fprintf(w, "relay pid %d: CPU %.2fs = %.3f ms/msg; RSS %.1f MB (anonymous %.1f, file-backed %.1f; max %.1f MB, anonymous max %.1f MB)\n",
				u.PID, u.CPUSeconds, u.CPUPerMsgMs, u.RSSMB, u.AnonMB, u.FileMB, u.MaxRSSMB, u.MaxAnonMB)
		}
		fmt.Fprintf(w, "machine CPU excluding the load tool: %.2fs = %.3f ms/msg (load tool: %.3f ms/msg)\n", u.MachineCPUSecs, u.MachinePerMsg, u.ToolPerMsg)
	}
}
