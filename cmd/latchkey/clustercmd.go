package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/cluster"
)

func init() {
	register("cluster", "cluster status: the nodes, the intake's replicas, adoptions, what the nodes hold differently (exit 1 when a node or replica is down or a key differs)", cmdCluster)
}

func cmdCluster(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "status" {
		fmt.Fprintln(stderr, "usage: latchkey cluster status [-config FILE] [-json]")
		return 2
	}
	c := newOp("cluster status", stdout, stderr)
	asJSON := c.fs.Bool("json", false, "JSON output")
	if _, ok := c.parse(args[1:], 0, "[-config FILE] [-json]"); !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		var st cluster.Status
		if err := a.JSON(ctx, "GET", "/api/v1/cluster", nil, &st); err != nil {
			var ae *admin.APIError
			if errors.As(err, &ae) && ae.Status == http.StatusNotFound && ae.Message == "" {
				return errors.New("no running relay answered (cluster status asks the running node through its admin API)")
			}
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(&st); err != nil {
				return err
			}
		} else {
			writeClusterStatus(stdout, &st)
		}
		if !clusterHealthy(&st) {
			return errReported
		}
		return nil
	})
}

// clusterHealthy is false when a member has no heartbeat, a replica of
// the intake is offline or behind, an audit checkpoint does not match, or
// the nodes hold a key or the policy differently.
func clusterHealthy(st *cluster.Status) bool {
	for _, m := range st.Members {
		if !m.Alive {
			return false
		}
	}
	if st.Intake == nil || st.Intake.Err != "" || (st.Audit != nil && st.Audit.Mismatched > 0) || len(st.Differs) > 0 {
		return false
	}
	for _, r := range st.Intake.Replicas {
		if r.Offline || !r.Current {
			return false
		}
	}
	return true
}

func writeClusterStatus(w io.Writer, st *cluster.Status) {
	fmt.Fprintf(w, "node %s (run %s)\n\nmembers:\n", st.Node, st.Incarnation)
	for _, m := range st.Members {
		state := "alive"
		if !m.Alive {
			state = "NO HEARTBEAT"
		}
		fmt.Fprintf(w, "  %-16s %-13s run %s, last heartbeat %s ago\n", m.Name, state, m.Incarnation, m.LastBeat)
	}
	if in := st.Intake; in != nil {
		if in.Err != "" {
			fmt.Fprintf(w, "\nintake: %s\n", in.Err)
		} else {
			fmt.Fprintf(w, "\nintake: %d messages, leader %s\n", in.Messages, in.Leader)
			for _, r := range in.Replicas {
				state := "current"
				switch {
				case r.Offline:
					state = "OFFLINE"
				case !r.Current:
					state = fmt.Sprintf("BEHIND by %d", r.Lag)
				}
				fmt.Fprintf(w, "  replica %-16s %s\n", r.Name, state)
			}
		}
	}
	if len(st.Differs) > 0 {
		fmt.Fprintln(w, "\nDIFFERENT ON THE NODES (copy the same file to every node; fingerprints, no secret):")
		for _, d := range st.Differs {
			nodes := make([]string, 0, len(d.Values))
			for node := range d.Values {
				nodes = append(nodes, node)
			}
			sort.Strings(nodes)
			fmt.Fprintf(w, "  %s\n", d.Name)
			for _, node := range nodes {
				v := d.Values[node]
				if v == "" {
					v = "(none)"
				}
				fmt.Fprintf(w, "    %-16s %s\n", node, v)
			}
		}
	}
	if len(st.Adoptions) > 0 {
		fmt.Fprintln(w, "\nadoptions (node.run: state adopter):")
		for _, a := range st.Adoptions {
			fmt.Fprintf(w, "  %-30s %s\n", a.Node, a.State)
		}
	}
	if len(st.Escalations) > 0 {
		fmt.Fprintln(w, "\nSalesforce escalations not sent yet, by node:")
		names := make([]string, 0, len(st.Escalations))
		for name := range st.Escalations {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			fmt.Fprintf(w, "  %-16s %d\n", name, st.Escalations[name])
		}
	}
	if a := st.Audit; a != nil {
		fmt.Fprintf(w, "\naudit trail here against the cluster's checkpoints of it: %d checked, %d mismatched, %d pruned since\n", a.Checked, a.Mismatched, a.Pruned)
		if a.First != "" {
			fmt.Fprintf(w, "  FIRST MISMATCH: %s\n", a.First)
		}
	}
	s := st.Stats
	fmt.Fprintf(w, "\nthis node: adopted %d items and %d escalations, handed over %d, superseded by other nodes' resets %d, duplicates of other nodes' %d\n",
		s.Adopted, s.EscalationsAdopted, s.HandedOver, s.Superseded, s.Deduplicated)
}
