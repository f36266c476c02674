package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The escalations a node must still send to Salesforce (the relay's
// outbox) are kept in the lk_outbox bucket, under "<node>.<escalation
// id>", from their local commit until Salesforce has them, so that the
// survivor that adopts a dead node's queue also opens the Cases the node
// died with. The value is the escalation as the relay encodes it (opaque
// here), or "adopted <node>" once a survivor took it over: the dead node,
// restarted, then hands its local copy over instead of sending it too,
// which could open the Case twice.

const adoptedPrefix = "adopted "

// escOp is an escalation change not yet stored in the cluster.
type escOp struct {
	queueID  string // the item whose final state caused it
	payload  []byte
	finished bool // sent (or dead-lettered) here: remove it
}

func escKey(node, id string) string { return node + "." + id }

// HoldDone keeps item queueID's done record back until Escalated or
// ReleaseDone: the relay calls it inside the transaction that commits an
// escalation, whose after-commit hooks may run the item's Done first.
func (n *Node) HoldDone(queueID string) {
	n.mu.Lock()
	n.holds[queueID]++
	n.mu.Unlock()
}

// ReleaseDone ends a HoldDone whose transaction was not committed.
func (n *Node) ReleaseDone(queueID string) {
	n.mu.Lock()
	n.release(queueID)
	n.mu.Unlock()
	n.kick()
}

func (n *Node) release(queueID string) {
	if n.holds[queueID] <= 1 {
		delete(n.holds, queueID)
	} else {
		n.holds[queueID]--
	}
}

// Escalated shares an escalation committed here (for the item queueID,
// held with HoldDone) with the cluster. It does not block: Run's flusher
// stores it, always before the item's done record, so that a survivor
// that finds the item done also finds the escalation.
func (n *Node) Escalated(id, queueID string, payload []byte) {
	n.mu.Lock()
	n.escs[id] = &escOp{queueID: queueID, payload: payload}
	n.release(queueID)
	n.mu.Unlock()
	n.kick()
}

// EscalationFinished removes an escalation this node has sent to
// Salesforce, or dead-lettered (an operator retries those where they are).
func (n *Node) EscalationFinished(id string) {
	n.mu.Lock()
	if op := n.escs[id]; op != nil {
		op.finished = true
	} else {
		n.escs[id] = &escOp{finished: true}
	}
	n.mu.Unlock()
	n.kick()
}

func (n *Node) kick() {
	select {
	case n.flush <- struct{}{}:
	default:
	}
}

// flushEscalations stores the escalation changes pending and returns the
// items whose escalation is not stored yet: their done records wait.
func (n *Node) flushEscalations(ctx context.Context) map[string]bool {
	held := map[string]bool{}
	n.mu.Lock()
	ops := make(map[string]escOp, len(n.escs))
	for id, op := range n.escs {
		ops[id] = *op
	}
	for q := range n.holds {
		held[q] = true
	}
	n.mu.Unlock()
	for id, op := range ops {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var err error
		if op.finished {
			err = n.outbox.Delete(cctx, escKey(n.cfg.Node, id))
		} else {
			_, err = n.outbox.Put(cctx, escKey(n.cfg.Node, id), op.payload)
		}
		cancel()
		if err != nil {
			if op.queueID != "" {
				held[op.queueID] = true
			}
			if ctx.Err() == nil {
				n.log.Warn().Err(err).Str("escalation", id).Msg("cannot share the escalation with the cluster yet; retrying")
			}
			continue
		}
		n.mu.Lock()
		if cur := n.escs[id]; cur != nil && cur.finished == op.finished {
			delete(n.escs, id)
		}
		n.mu.Unlock()
	}
	return held
}

// adoptEscalations takes over the escalations node left unsent: each is
// put in this node's outbox, re-keyed under this node, and marked adopted
// under the dead node's name.
func (n *Node) adoptEscalations(ctx context.Context, node string, local Local) (int, error) {
	keys, err := listKeys(ctx, n.js, n.outbox, node+".>")
	if err != nil {
		return 0, fmt.Errorf("cluster: %s's escalations: %w", node, err)
	}
	taken := 0
	for _, k := range keys {
		e, err := n.outbox.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return taken, fmt.Errorf("cluster: escalation %s: %w", k, err)
		}
		if strings.HasPrefix(string(e.Value()), adoptedPrefix) {
			continue
		}
		id := strings.TrimPrefix(k, node+".")
		ok, err := local.AdoptEscalation(e.Value(), node)
		if err != nil {
			return taken, err
		}
		if !ok {
			continue // this node cannot send it: left for the node's return
		}
		if _, err := n.outbox.Put(ctx, escKey(n.cfg.Node, id), e.Value()); err != nil {
			return taken, fmt.Errorf("cluster: escalation %s: %w", id, err)
		}
		if _, err := n.outbox.Put(ctx, k, []byte(adoptedPrefix+n.cfg.Node)); err != nil {
			return taken, fmt.Errorf("cluster: escalation %s: %w", id, err)
		}
		taken++
	}
	n.count(func(s *Stats) { s.EscalationsAdopted += taken })
	return taken, nil
}

// EscalationAdoptedBy returns the node that took over this node's
// escalation id, or that adopted the item queueID that caused it ("" if
// neither): the restarted relay hands such an escalation over.
func (n *Node) EscalationAdoptedBy(ctx context.Context, id, queueID string) (string, error) {
	e, err := n.outbox.Get(ctx, escKey(n.cfg.Node, id))
	switch {
	case err == nil:
		if v := string(e.Value()); strings.HasPrefix(v, adoptedPrefix) {
			return strings.TrimPrefix(v, adoptedPrefix), nil
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return "", fmt.Errorf("cluster: escalation %s: %w", id, err)
	}
	// Not shared before this node died: the survivor delivered the item
	// again and escalates it itself, under the same id, if it fails.
	return n.AdoptedBy(ctx, queueID)
}

// escalationsWaiting counts the escalations stored per node that no
// survivor took over.
func (n *Node) escalationsWaiting(ctx context.Context) (map[string]int, error) {
	keys, err := listKeys(ctx, n.js, n.outbox, "")
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, k := range keys {
		// An entry that cannot be read is an error, not one fewer: a
		// status that shows no escalation waiting must mean none.
		e, err := n.outbox.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // sent since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("escalation %s: %w", k, err)
		}
		if strings.HasPrefix(string(e.Value()), adoptedPrefix) {
			continue
		}
		node, _, _ := strings.Cut(k, ".")
		counts[node]++
	}
	return counts, nil
}
