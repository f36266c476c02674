package cluster

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Each node keeps its own audit chain; the cluster keeps, for each node, a
// stream of checkpoints (the chain's signed head every checkpointEvery),
// stored on a quorum of nodes. A node's trail rewritten afterwards, even by
// someone holding its audit key, no longer matches the checkpoints the
// other nodes hold.
const (
	streamAudit     = "LK_AUDIT"
	subjAudit       = "lk.audit."
	checkpointEvery = 30 * time.Second
)

// Checkpoint is one node's audit chain head at a time.
type Checkpoint struct {
	Node string    `json:"node"`
	Seq  uint64    `json:"seq"`
	Hash string    `json:"hash"` // hex
	Time time.Time `json:"time"`
}

// CheckpointReport is the comparison of this node's trail with its
// checkpoints in the cluster.
type CheckpointReport struct {
	Checked    int         `json:"checked"`
	Pruned     int         `json:"pruned"` // checkpoints of events since pruned by retention
	Mismatched int         `json:"mismatched"`
	First      string      `json:"first_mismatch,omitempty"`
	Last       *Checkpoint `json:"last,omitempty"`
}

// Checkpoint stores head (seq, hash) of this node's chain in the cluster.
func (n *Node) Checkpoint(ctx context.Context, seq uint64, hash []byte) error {
	b, _ := json.Marshal(Checkpoint{Node: n.cfg.Node, Seq: seq, Hash: hex.EncodeToString(hash), Time: time.Now().UTC()})
	if _, err := n.js.PublishMsg(ctx, &nats.Msg{Subject: subjAudit + n.cfg.Node, Data: b}); err != nil {
		return fmt.Errorf("cluster: audit checkpoint: %w", err)
	}
	return nil
}

// RunCheckpoints stores head() every checkpointEvery while it advances,
// until ctx ends.
func (n *Node) RunCheckpoints(ctx context.Context, head func() (uint64, []byte, error)) {
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	var last uint64
	for {
		seq, hash, err := head()
		if err == nil && seq != last && seq > 0 {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := n.Checkpoint(cctx, seq, hash); err == nil {
				last = seq
			} else if ctx.Err() == nil {
				n.log.Warn().Err(err).Msg("audit checkpoint not stored; retrying")
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// VerifyCheckpoints compares every checkpoint the cluster holds for this
// node with the trail here: hashAt(seq) must give the checkpoint's hash.
// errGone from hashAt counts the checkpoint as pruned.
func (n *Node) VerifyCheckpoints(ctx context.Context, hashAt func(seq uint64) ([]byte, error), errGone error) (*CheckpointReport, error) {
	rep := &CheckpointReport{}
	stream, err := n.js.Stream(ctx, streamAudit)
	if err != nil {
		return nil, fmt.Errorf("cluster: audit checkpoints: %w", err)
	}
	lastMsg, err := stream.GetLastMsgForSubject(ctx, subjAudit+n.cfg.Node)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return rep, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: audit checkpoints: %w", err)
	}
	cons, err := n.js.OrderedConsumer(ctx, streamAudit, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subjAudit + n.cfg.Node}})
	if err != nil {
		return nil, fmt.Errorf("cluster: audit checkpoints: %w", err)
	}
	var seen uint64
	for seen < lastMsg.Sequence {
		batch, err := cons.Fetch(512, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return nil, fmt.Errorf("cluster: audit checkpoints: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if md, err := m.Metadata(); err == nil {
				seen = md.Sequence.Stream
			}
			var c Checkpoint
			if err := json.Unmarshal(m.Data(), &c); err != nil {
				rep.Mismatched++
				continue
			}
			rep.Last = &c
			h, err := hashAt(c.Seq)
			switch {
			case errors.Is(err, errGone):
				rep.Pruned++
			case err != nil:
				return nil, err
			default:
				rep.Checked++
				if want, _ := hex.DecodeString(c.Hash); !bytes.Equal(h, want) {
					rep.Mismatched++
					if rep.First == "" {
						rep.First = fmt.Sprintf("event %d: the trail has %x, the cluster's checkpoint of %s %s", c.Seq, h, c.Time.Format(time.RFC3339), c.Hash)
					}
				}
			}
		}
		if got == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return rep, nil
}
