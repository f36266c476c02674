package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/cluster"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce"
)

// joinCluster joins [cluster] and, if a survivor adopted this node's
// queue while it was down, hands the adopted items over: each ends here
// as dropped, naming the node that delivers it, so that it is not sent
// twice.
func (s *Server) joinCluster(ctx context.Context) error {
	c := s.cfg.Cluster
	node, err := cluster.Start(ctx, c, s.cfg.Path("cluster"), s.log)
	if err != nil {
		return err
	}
	s.Cluster = node
	by, err := node.PreviousAdopted(ctx)
	if err != nil {
		return err
	}
	s.shareConfig(ctx)
	if err := s.shareEscalations(ctx, by != ""); err != nil {
		return err
	}
	if by == "" {
		return nil
	}
	items, err := s.Queue.List(queue.Filter{})
	if err != nil {
		return fmt.Errorf("relay: hand-over: %w", err)
	}
	handed := 0
	for _, it := range items {
		adopter, err := node.AdoptedBy(ctx, it.ID)
		if err != nil {
			return fmt.Errorf("relay: hand-over: %w", err)
		}
		if adopter == "" {
			continue // accepted after the adoption read the intake: still ours
		}
		if err := s.Queue.Drop(it.ID, "cluster", "adopted by node "+adopter+" while this node was down; delivered there"); err != nil {
			return fmt.Errorf("relay: hand-over of %s: %w", it.ID, err)
		}
		handed++
	}
	node.HandedOver(handed)
	s.log.Warn().Str("adopted_by", by).Int("items", handed).Msg("cluster: this node's queue was adopted while it was down; handed those items over")
	return nil
}

// shareEscalations goes over the escalations this node still has to
// send. After an adoption (adopted true), one a survivor took over, or
// whose item it adopted, is handed over: sending it here too could open
// its Case twice. The rest are shared again, since this node may have
// died before sharing them.
func (s *Server) shareEscalations(ctx context.Context, adopted bool) error {
	if s.Outbox == nil {
		return nil
	}
	items, err := s.Outbox.List(salesforce.StatePending)
	if err != nil {
		return fmt.Errorf("relay: hand-over of escalations: %w", err)
	}
	for _, it := range items {
		if adopted {
			by, err := s.Cluster.EscalationAdoptedBy(ctx, it.ID, it.QueueID)
			if err != nil {
				return fmt.Errorf("relay: hand-over of escalation %s: %w", it.ID, err)
			}
			if by != "" {
				if err := s.Outbox.HandOver(it.ID, by); err != nil {
					return err
				}
				s.Cluster.EscalationFinished(it.ID) // the cluster's record of it goes
				s.log.Warn().Str("escalation", it.ID).Str("queue_id", it.QueueID).Str("adopted_by", by).
					Msg("cluster: escalation handed over to the node that took it over while this one was down")
				continue
			}
		}
		payload, err := json.Marshal(it.Escalation)
		if err != nil {
			return fmt.Errorf("relay: escalation %s: %w", it.ID, err)
		}
		s.Cluster.Escalated(it.ID, it.QueueID, payload)
	}
	return nil
}

// admitCluster asks the cluster about m before it is queued here. It
// returns the reply to give instead of queueing (a duplicate or a rate
// limit decided on another node), or nil to queue.
func (s *Server) admitCluster(m *queue.Message, className string) (stop error, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm, err := s.Cluster.Admit(ctx, m)
	if err != nil {
		return nil, err
	}
	switch {
	case adm.Duplicate != "":
		now := s.now()
		if err := s.Store.Update(func(tx *queue.Tx) error {
			for _, it := range m.Items {
				if err := tx.Audit(&audit.Event{Time: now, Type: audit.Deduplicated, QueueID: adm.Duplicate, MessageID: it.MessageID,
					Class: it.Class, Recipient: it.Rcpt, Fields: map[string]string{"key": "cluster"}}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return nil, err
		}
		s.outcome(className, "deduplicated", "")
		return smtpErr(250, [3]int{2, 0, 0}, "OK already queued as "+adm.Duplicate), nil
	case adm.RateLimited != "":
		s.reject("rate_limited")
		return errRateLimited, nil
	}
	return nil, nil
}

// supersededElsewhere ends it, before an attempt, when a newer reset for
// its supersede key was accepted on another node. A cluster that does not
// answer lets the delivery go ahead: an extra reset mail is better than
// none.
func (s *Server) supersededElsewhere(ctx context.Context, it *queue.Item) (queue.Outcome, bool) {
	if s.Cluster == nil || it.SupersedeKey == "" {
		return queue.Outcome{}, false
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	newer, err := s.Cluster.Newer(cctx, it)
	if err != nil {
		s.log.Warn().Err(err).Str("queue_id", it.ID).Msg("cluster: supersede check failed; delivering")
		return queue.Outcome{}, false
	}
	if newer == "" {
		return queue.Outcome{}, false
	}
	now := s.now()
	s.log.Info().Str("queue_id", it.ID).Str("by", newer).Msg("superseded by a newer reset accepted on another node")
	return queue.Outcome{State: queue.StateSuperseded, Reason: "superseded by " + newer, Label: "superseded",
		Events: []*audit.Event{{Time: now, Type: audit.Superseded, Recipient: it.Rcpt, Fields: map[string]string{"by": newer, "where": "cluster"}}}}, true
}

// clusterLocal is this node's queue as the cluster's adoption sees it.
type clusterLocal struct{ s *Server }

func (l clusterLocal) Has(id string) (bool, error) {
	it, err := l.s.Queue.Get(id)
	return it != nil, err
}

// Adopt queues a dead node's items here, fresh (due now, no attempts),
// with an "adopted" audit event naming the node.
func (l clusterLocal) Adopt(rec *cluster.Record, items []*queue.Item, from string) error {
	now := l.s.now()
	m := &queue.Message{MsgID: rec.MsgID, Body: rec.Body, LinkDigests: rec.LinkDigests}
	for _, old := range items {
		it := *old
		it.State, it.Attempts, it.Last, it.History, it.Due = "", 0, nil, nil, now
		m.Items = append(m.Items, &it)
		m.Events = append(m.Events, &audit.Event{Time: now, Type: audit.Adopted, QueueID: it.ID, MessageID: it.MessageID,
			Class: it.Class, Recipient: it.Rcpt, Fields: map[string]string{"from_node": from,
				"accepted": it.Accepted.UTC().Format(time.RFC3339Nano), "deadline": it.Deadline.UTC().Format(time.RFC3339)}})
	}
	if _, err := l.s.Queue.Enqueue(m); err != nil {
		return fmt.Errorf("relay: adopt %s: %w", rec.MsgID, err)
	}
	return nil
}

// serveClusterStatus answers GET /api/v1/cluster: the members, the intake
// stream's replicas, the adoptions and this node's counters.
func (s *Server) serveClusterStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if s.Cluster == nil {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"error": "cluster mode is off ([cluster] enabled = false)"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	st, err := s.Cluster.Status(ctx)
	if err == nil {
		st.Audit, err = s.Cluster.VerifyCheckpoints(ctx, func(seq uint64) ([]byte, error) { return audit.HashAt(s.Store.DB, seq) }, audit.ErrNotFound)
	}
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(w).Encode(st)
}

// AdoptEscalation puts a dead node's unsent escalation in this node's
// outbox, with an "adopted" audit event naming the node; false when this
// node has no Salesforce to send it to.
func (l clusterLocal) AdoptEscalation(payload []byte, from string) (bool, error) {
	s := l.s
	if s.Outbox == nil {
		s.log.Warn().Str("from_node", from).Msg("cluster: a dead node's Salesforce escalation left for it: [salesforce] is off on this node")
		return false, nil
	}
	var esc salesforce.Escalation
	if err := json.Unmarshal(payload, &esc); err != nil {
		// Not retried: the same bytes would fail again.
		s.log.Error().Err(err).Str("from_node", from).Msg("cluster: unreadable escalation of a dead node left for it")
		return false, nil
	}
	now := s.now()
	err := s.Store.Update(func(tx *queue.Tx) error {
		added, err := s.Outbox.Add(tx.Txn, esc)
		if err != nil || !added {
			return err
		}
		tx.After(s.Outbox.Wake)
		return tx.Audit(&audit.Event{Time: now, Type: audit.Adopted, QueueID: esc.QueueID, MessageID: esc.MessageID,
			Class: esc.Class, Recipient: esc.Recipient, Fields: map[string]string{"from_node": from, "escalation": esc.ID, "trigger": esc.Trigger}})
	})
	if err != nil {
		return false, fmt.Errorf("relay: adopt escalation %s: %w", esc.ID, err)
	}
	return true, nil
}

func (l clusterLocal) ApplySuppression(s queue.Suppression, removed bool, from string) error {
	return l.s.Queue.ApplySuppression(s, removed, from)
}

// fingerprints names what every node must hold the same, each with a
// fingerprint that reveals no secret: the VERP key's is a hash of it with
// a label of its own, the others are of public data.
func (s *Server) fingerprints() map[string]string {
	short := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:8]) }
	fp := map[string]string{
		"verp key": short(append([]byte("latchkey verp key fingerprint\x00"), s.verpKey...)),
		"policy":   s.Policy.Get().Digest()[:16],
	}
	var domains []string
	for _, d := range s.cfg.Domains {
		domains = append(domains, d.Name)
	}
	sort.Strings(domains)
	fp["domains"] = strings.Join(domains, " ")
	for _, k := range s.Keys.Keys() {
		fp["dkim key "+strings.ToLower(strings.TrimSuffix(k.Domain, "."))+"/"+k.Selector] = k.Algo + " " + k.Fingerprint[:16]
	}
	fp["salesforce"] = "off"
	if s.Outbox != nil {
		fp["salesforce"] = "on"
	}
	return fp
}

// shareConfig stores this node's fingerprints in the cluster and logs,
// once each time the set changes, what the nodes hold differently. It
// only logs: a node that refused to start on a difference would stop
// the resets it would have sent, and a rolling change (a new policy, a
// DKIM rotation) differs between nodes for a while anyway.
func (s *Server) shareConfig(ctx context.Context) {
	fp := s.fingerprints()
	if !maps.Equal(fp, s.sharedFP) {
		if err := s.Cluster.ShareConfig(ctx, fp); err != nil {
			s.log.Warn().Err(err).Msg("cluster: cannot share this node's key and policy fingerprints yet; retrying")
			return
		}
		s.sharedFP = fp
	}
	diffs, err := s.Cluster.ConfigDiffers(ctx)
	if err != nil {
		s.log.Warn().Err(err).Msg("cluster: cannot compare the nodes' key and policy fingerprints yet; retrying")
		return
	}
	seen, _ := json.Marshal(diffs)
	if string(seen) == s.loggedDiffs {
		return
	}
	s.loggedDiffs = string(seen)
	for _, d := range diffs {
		s.log.Error().Str("what", d.Name).Any("by_node", d.Values).
			Msg("cluster: the nodes hold this differently; copy the same file to every node (docs/operations.md, \"Several nodes\")")
	}
	if len(diffs) == 0 {
		s.log.Info().Msg("cluster: the nodes hold the same keys and policy")
	}
}

// shareConfigEvery runs shareConfig until ctx ends: the policy and the
// DKIM keys reload while the relay runs, and other nodes change theirs.
func (s *Server) shareConfigEvery(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s.shareConfig(cctx)
		cancel()
	}
}
