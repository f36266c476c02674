package console

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strings"
	"time"

	"github.com/latchkey/latchkey/metrics"
)

// plots are the overview's charts, drawn here as SVG so the page needs no
// script and no chart library.
type plots struct {
	Latency    template.HTML
	Outcomes   template.HTML
	Escalation template.HTML
}

func makePlots(r *metrics.Report, bucket time.Duration) plots {
	var p plots
	if r == nil {
		return p
	}
	labels := make([]string, len(r.Latency))
	vals := make([][]float64, len(r.Latency))
	for i, b := range r.Latency {
		if b.UpTo == 0 {
			labels[i] = ">" + shortDur(time.Duration(r.Latency[i-1].UpTo))
		} else {
			labels[i] = "≤" + shortDur(time.Duration(b.UpTo))
		}
		vals[i] = []float64{float64(b.Count)}
	}
	p.Latency = bars("Delivered resets by accept-to-delivered latency", labels, vals, []string{"lat"})

	labels = make([]string, len(r.Series))
	out := make([][]float64, len(r.Series))
	esc := make([][]float64, len(r.Series))
	every := len(r.Series)/8 + 1
	for i, b := range r.Series {
		if i%every == 0 {
			if bucket >= time.Hour {
				labels[i] = b.Start.UTC().Format("02 15h")
			} else {
				labels[i] = b.Start.UTC().Format("15:04")
			}
		}
		out[i] = []float64{float64(b.Delivered), float64(b.Failed)}
		esc[i] = []float64{float64(b.Escalated)}
	}
	per := "per " + shortDur(bucket)
	p.Outcomes = bars("Resets delivered and failed "+per+" (by acceptance time, UTC)", labels, out, []string{"ok", "fail"})
	p.Escalation = bars("Support escalations "+per, labels, esc, []string{"esc"})
	return p
}

func shortDur(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	default:
		return fmt.Sprintf("%gs", d.Seconds())
	}
}

// bars draws a bar chart: one group per label, the values of a group
// stacked, each series with its CSS class. Every bar has a <title>, so the
// numbers are there on hover and for a screen reader.
func bars(title string, labels []string, vals [][]float64, classes []string) template.HTML {
	const w, h, left, bottom, top = 640.0, 180.0, 36.0, 22.0, 8.0
	max := 0.0
	for _, g := range vals {
		s := 0.0
		for _, v := range g {
			s += v
		}
		max = math.Max(max, s)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="plot" viewBox="0 0 %g %g" role="img" aria-label="%s"><title>%s</title>`, w, h, html.EscapeString(title), html.EscapeString(title))
	plotH := h - bottom - top
	fmt.Fprintf(&b, `<line class="axis" x1="%g" y1="%g" x2="%g" y2="%g"/>`, left, h-bottom, w, h-bottom)
	scale := 0.0
	if max > 0 {
		scale = plotH / niceCeil(max)
		for _, f := range []float64{0.5, 1} {
			y := h - bottom - f*niceCeil(max)*scale
			fmt.Fprintf(&b, `<line class="grid" x1="%g" y1="%.1f" x2="%g" y2="%.1f"/><text class="tick" x="%g" y="%.1f">%s</text>`,
				left, y, w, y, left-4, y+4, fmtCount(f*niceCeil(max)))
		}
	} else {
		fmt.Fprintf(&b, `<text class="empty" x="%g" y="%g">no data in this window</text>`, w/2, h/2)
	}
	n := len(labels)
	if n == 0 {
		b.WriteString(`</svg>`)
		return template.HTML(b.String())
	}
	slot := (w - left) / float64(n)
	bw := math.Max(1, slot*0.8)
	for i, g := range vals {
		x := left + float64(i)*slot + (slot-bw)/2
		y := h - bottom
		parts := make([]string, len(g))
		for j, v := range g {
			parts[j] = fmtCount(v)
			if v <= 0 {
				continue
			}
			bh := v * scale
			y -= bh
			fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %s</title></rect>`,
				classes[j%len(classes)], x, y, bw, bh, html.EscapeString(labels[i]), fmtCount(v))
		}
		if labels[i] != "" {
			fmt.Fprintf(&b, `<text class="label" x="%.1f" y="%g">%s</text>`, x+bw/2, h-6, html.EscapeString(labels[i]))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// niceCeil rounds a maximum up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func fmtCount(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

var funcs = template.FuncMap{
	"pct": func(f float64) string { return fmt.Sprintf("%.1f %%", f*100) },
	"secs": func(d metrics.Duration) string {
		s := time.Duration(d).Seconds()
		if s < 10 {
			return fmt.Sprintf("%.2f s", s)
		}
		return fmt.Sprintf("%.0f s", s)
	},
	"raw": func(d metrics.Duration) string { return fmt.Sprintf("%g", time.Duration(d).Seconds()) },
	"num": func(f float64) string { return fmt.Sprintf("%g", f) },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return now.Sub(t).Round(time.Second).String()
	},
	"until": func(now, t time.Time) string { return t.Sub(now).Round(time.Hour).String() },
	"days":  func(now, t time.Time) int { return int(t.Sub(now).Hours() / 24) },
	"verdict": func(met bool) string {
		if met {
			return "met"
		}
		return "missed"
	},
	"final": func(state string) bool { return state != "queued" && state != "" },
}
