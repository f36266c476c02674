package cluster

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/queue"
)

// suppressValue is one suppression change as the lk_suppress bucket keeps
// it: the latest change of one address on one list, removals included
// (kept as a value, so a node that was down learns of them too).
type suppressValue struct {
	Node        string            `json:"node"`
	Suppression queue.Suppression `json:"suppression"`
	Removed     bool              `json:"removed,omitempty"`
}

// Suppressed shares a change of this node's suppression lists with the
// other nodes. It does not block (the queue calls it after a commit); a
// change the cluster cannot store is logged.
func (n *Node) Suppressed(s queue.Suppression, removed bool) {
	v, err := json.Marshal(suppressValue{Node: n.cfg.Node, Suppression: s, Removed: removed})
	if err != nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := n.suppress.Put(ctx, hashKey(s.List+"/"+s.Address), v); err != nil {
			n.log.Warn().Err(err).Str("list", s.List).Msg("cluster: suppression change not shared; the other nodes do not know of it")
		}
	}()
}

// watchSuppressions applies the other nodes' suppression changes here,
// first every change stored (what happened while this node was down),
// then each one as it comes, until ctx ends.
func (n *Node) watchSuppressions(ctx context.Context, apply func(s queue.Suppression, removed bool, from string) error) {
	for ctx.Err() == nil {
		w, err := n.suppress.WatchAll(ctx)
		if err != nil {
			n.log.Warn().Err(err).Msg("cluster: cannot watch suppression changes; retrying")
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
			continue
		}
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // nil marks the end of the stored changes
			}
			var v suppressValue
			if err := json.Unmarshal(e.Value(), &v); err != nil || v.Node == n.cfg.Node {
				continue
			}
			if err := apply(v.Suppression, v.Removed, v.Node); err != nil {
				n.log.Error().Err(err).Str("list", v.Suppression.List).Msg("cluster: cannot apply another node's suppression change")
			}
		}
		w.Stop()
	}
}
