package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/queue"
)

// Record is an accepted message as the intake stream keeps it: what a
// survivor needs to queue it again.
type Record struct {
	Node        string        `json:"node"`
	MsgID       string        `json:"msg_id"`
	Body        []byte        `json:"body"`
	Items       []*queue.Item `json:"items"`
	LinkDigests []string      `json:"link_digests,omitempty"`
}

// Admission is what the cluster decided about a message.
type Admission struct {
	// Duplicate is the id another submission of the same message was
	// queued under (on any node): nothing more is to be queued.
	Duplicate string
	// RateLimited is the rate key over its limit: nothing is to be queued.
	RateLimited string
}

// Admit decides a message for the whole cluster and, unless it is a
// duplicate or over a rate limit, stores it in the intake stream on a
// quorum of nodes. The caller queues it locally and answers 250 only after
// Admit returned without error.
//
// Order matters for "nothing lost": the dedupe keys are written by
// Admitted, after the message is queued here, so a failure or a crash in
// between can make a resubmission a second copy (a duplicate delivery),
// never a lost message.
func (n *Node) Admit(ctx context.Context, m *queue.Message) (Admission, error) {
	var adm Admission
	now := time.Now()
	for _, k := range m.DedupeKeys {
		e, err := n.dedupe.Get(ctx, hashKey(k))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			continue
		case err != nil:
			return adm, fmt.Errorf("cluster: dedupe: %w", err)
		}
		var v dedupeValue
		if json.Unmarshal(e.Value(), &v) == nil && now.Before(v.Until) && v.MsgID != m.MsgID {
			adm.Duplicate = v.MsgID
			n.count(func(s *Stats) { s.Deduplicated++ })
			return adm, nil
		}
	}
	// A count taken for a message that is then refused (by a later
	// limit, or for want of a quorum) is given back: the sender tries
	// again, and must not find itself limited by messages never queued.
	var taken []string
	refund := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, k := range taken {
			if err := n.rateGive(rctx, k); err != nil {
				n.log.Warn().Err(err).Msg("cluster: a rate-limit count of a refused message not given back")
			}
		}
	}
	for _, rc := range m.Rate {
		k, ok, err := n.rateTake(ctx, rc, now)
		if err != nil {
			refund()
			return adm, err
		}
		if !ok {
			refund()
			adm.RateLimited = rc.Key
			return adm, nil
		}
		if k != "" {
			taken = append(taken, k)
		}
	}
	if len(m.Items) > 0 {
		rec := Record{Node: n.cfg.Node, MsgID: m.MsgID, Body: m.Body, Items: m.Items, LinkDigests: m.LinkDigests}
		b, err := json.Marshal(rec)
		if err != nil {
			return adm, fmt.Errorf("cluster: %w", err)
		}
		msg := &nats.Msg{Subject: subjIntake + n.cfg.Node, Data: b}
		if err := n.publish(ctx, msg, m.MsgID); err != nil {
			refund()
			// A publish that timed out may still have been stored. The
			// client hears 451 and sends again, so a survivor adopting
			// this node must not deliver this copy too: it is recorded
			// done, as refused.
			for _, it := range m.Items {
				n.Done(it.ID, "refused")
			}
			return adm, fmt.Errorf("%w: %v", errNoQuorum, err)
		}
		// Stored: from here on the message is queued whatever happens,
		// so a failure is logged, not returned (a 451 now would leave a
		// stored message no node delivers while this one lives).
		for _, it := range m.Items {
			if it.SupersedeKey != "" {
				if err := n.claimNewest(ctx, it); err != nil {
					n.log.Warn().Err(err).Str("queue_id", it.ID).Msg("cluster: newest reset not recorded; an older one queued on another node may still go out")
				}
			}
		}
	}
	return adm, nil
}

// Admitted records m's dedupe keys for the cluster, once m is queued here.
// Only then: a key naming a message no node queued would answer a
// resubmission "already queued" and lose it.
func (n *Node) Admitted(ctx context.Context, m *queue.Message) {
	until := time.Now().Add(m.DedupeWindow)
	for _, k := range m.DedupeKeys {
		v, _ := json.Marshal(dedupeValue{MsgID: m.MsgID, Until: until})
		if _, err := n.dedupe.Put(ctx, hashKey(k), v); err != nil {
			n.log.Warn().Err(err).Str("msg_id", m.MsgID).Msg("cluster: dedupe key not recorded; a resubmission to another node would be queued again")
			return
		}
	}
}

type dedupeValue struct {
	MsgID string    `json:"msg_id"`
	Until time.Time `json:"until"`
}

// newestValue names the newest item accepted for a supersede key.
type newestValue struct {
	Item     string    `json:"item"`
	Accepted time.Time `json:"accepted"`
	Node     string    `json:"node"`
}

// claimNewest records it as the newest item of its supersede key unless a
// newer one is recorded already, with compare-and-set: two nodes accepting
// resets for one recipient at once agree on which is the newer.
func (n *Node) claimNewest(ctx context.Context, it *queue.Item) error {
	k := hashKey(it.SupersedeKey)
	v, _ := json.Marshal(newestValue{Item: it.ID, Accepted: it.Accepted, Node: n.cfg.Node})
	for range 20 {
		e, err := n.newest.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := n.newest.Create(ctx, k, v); err == nil {
				return nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return fmt.Errorf("cluster: supersede: %w", err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("cluster: supersede: %w", err)
		}
		var cur newestValue
		if json.Unmarshal(e.Value(), &cur) == nil && cur.Accepted.After(it.Accepted) {
			return nil // a newer one was accepted meanwhile
		}
		if _, err := n.newest.Update(ctx, k, v, e.Revision()); err == nil {
			return nil
		}
		// Another node wrote first: read again.
	}
	return errors.New("cluster: supersede: no agreement after 20 tries")
}

// Newer returns the id of a reset accepted after it for the same supersede
// key, on any node, or "". The relay asks before each attempt: an item
// superseded elsewhere is ended instead of delivered.
func (n *Node) Newer(ctx context.Context, it *queue.Item) (string, error) {
	if it.SupersedeKey == "" {
		return "", nil
	}
	e, err := n.newest.Get(ctx, hashKey(it.SupersedeKey))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cluster: supersede: %w", err)
	}
	var cur newestValue
	if err := json.Unmarshal(e.Value(), &cur); err != nil {
		return "", fmt.Errorf("cluster: supersede record: %w", err)
	}
	if cur.Item != it.ID && cur.Accepted.After(it.Accepted) {
		n.count(func(s *Stats) { s.Superseded++ })
		return cur.Item, nil
	}
	return "", nil
}

// rateTake counts one message against rc's window for the whole cluster,
// refusing it (false) when the window is full.
func (n *Node) rateTake(ctx context.Context, rc queue.RateCheck, now time.Time) (key string, ok bool, err error) {
	if rc.Window <= 0 || rc.Limit <= 0 {
		return "", true, nil
	}
	win := now.UnixNano() / int64(rc.Window)
	k := hashKey(rc.Key) + "." + strconv.FormatInt(win, 10)
	for range 20 {
		e, err := n.rate.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := n.rate.Create(ctx, k, []byte("1")); err == nil {
				return k, true, nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return "", false, fmt.Errorf("cluster: rate limit: %w", err)
			}
			continue
		}
		if err != nil {
			return "", false, fmt.Errorf("cluster: rate limit: %w", err)
		}
		c, _ := strconv.Atoi(string(e.Value()))
		if c >= rc.Limit {
			return "", false, nil
		}
		if _, err := n.rate.Update(ctx, k, []byte(strconv.Itoa(c+1)), e.Revision()); err == nil {
			return k, true, nil
		}
	}
	return "", false, errors.New("cluster: rate limit: no agreement after 20 tries")
}

// rateGive takes back one count of rate bucket key k.
func (n *Node) rateGive(ctx context.Context, k string) error {
	for range 20 {
		e, err := n.rate.Get(ctx, k)
		if err != nil {
			return fmt.Errorf("cluster: rate limit: %w", err)
		}
		c, _ := strconv.Atoi(string(e.Value()))
		if c <= 0 {
			return nil
		}
		if _, err := n.rate.Update(ctx, k, []byte(strconv.Itoa(c-1)), e.Revision()); err == nil {
			return nil
		}
	}
	return errors.New("cluster: rate limit: no agreement after 20 tries")
}

func (n *Node) publish(ctx context.Context, msg *nats.Msg, msgID string) error {
	if n.publishIntake != nil {
		return n.publishIntake(ctx, msg, msgID)
	}
	_, err := n.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID))
	return err
}

// Done records that item id reached a final state here, so that no
// survivor delivers it again. It does not block (the queue calls it after
// each commit): the record is stored by Run's flusher within moments.
func (n *Node) Done(id, state string) {
	n.mu.Lock()
	n.pending[id] = state
	n.mu.Unlock()
	n.kick()
}

// doneKey is the done record of an item node accepted (or, for an item
// adopted from a dead node, that node): by node, so that an adoption
// reads the dead node's records in one listing.
func doneKey(node, id string) string { return node + "." + id }

// flushDone stores the escalations and then the done records pending,
// keeping what failed for the next flush.
func (n *Node) flushDone(ctx context.Context) {
	held := n.flushEscalations(ctx)
	n.mu.Lock()
	p := n.pending
	n.pending = map[string]string{}
	for id, state := range p {
		if held[id] {
			// Its escalation is not in the cluster yet: a survivor that
			// found the item done would not open the Case.
			n.pending[id] = state
			delete(p, id)
		}
	}
	n.mu.Unlock()
	for id, state := range p {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := n.done.Put(cctx, doneKey(n.cfg.Node, id), []byte(n.cfg.Node+" "+state))
		cancel()
		if err != nil {
			n.mu.Lock()
			if _, again := n.pending[id]; !again {
				n.pending[id] = state
			}
			n.mu.Unlock()
			if ctx.Err() == nil {
				n.log.Warn().Err(err).Str("queue_id", id).Msg("cannot record the outcome in the cluster yet; retrying")
			}
		}
	}
}
