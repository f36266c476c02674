package main

import (
	"context"
	"encoding/json"
	"io"
	"net/url"

	"github.com/latchkey/latchkey/metrics"
)

func init() {
	register("stats", "the four reset figures from the audit trail against the policy's targets (exit 1 when one is missed)", cmdStats)
}

func cmdStats(args []string, stdout, stderr io.Writer) int {
	c := newOp("stats", stdout, stderr)
	since := c.fs.String("since", "24h", "start of the window: duration ago or RFC 3339 time")
	until := c.fs.String("until", "", "end of the window (default: now)")
	class := c.fs.String("class", "reset", `policy class, or "all"`)
	asJSON := c.fs.Bool("json", false, "JSON output")
	prom := c.fs.Bool("prom", false, "Prometheus text format (for node_exporter's textfile collector)")
	if _, ok := c.parse(args, 0, "[-config FILE] [-since 24h] [-until T] [-class reset|all|C] [-json|-prom]"); !ok {
		return 2
	}
	v := url.Values{"class": {*class}}
	if !c.timeParams(v, *since, *until) {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		var rep metrics.Report
		if err := a.JSON(ctx, "GET", "/api/v1/stats?"+v.Encode(), nil, &rep); err != nil {
			return err
		}
		var err error
		switch {
		case *prom:
			err = rep.WriteProm(stdout)
		case *asJSON:
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			err = enc.Encode(&rep)
		default:
			err = rep.WriteText(stdout)
		}
		if err != nil {
			return err
		}
		if rep.Missed() {
			return errReported // the report says which target
		}
		return nil
	})
}
