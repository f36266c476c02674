package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/queue"
)

// Local is the node's own queue, as adoption needs it.
type Local interface {
	// Has reports whether item id is in the local queue, in any state.
	Has(id string) (bool, error)
	// Adopt queues items (of rec, not recorded done anywhere) here,
	// recording that they come from node from.
	Adopt(rec *Record, items []*queue.Item, from string) error
	// AdoptEscalation puts a dead node's unsent Salesforce escalation
	// (as the relay encoded it) in the outbox here; false when this node
	// cannot send it (no Salesforce configured).
	AdoptEscalation(payload []byte, from string) (bool, error)
	// ApplySuppression writes another node's suppression change here.
	ApplySuppression(s queue.Suppression, removed bool, from string) error
}

// Run keeps this node's heartbeat and adopts the queue of a node whose
// heartbeat stopped, until ctx ends. The heartbeat has its own goroutine:
// an adoption, which may take a while, must not silence it.
func (n *Node) Run(ctx context.Context, local Local) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); n.beat(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); n.watchSuppressions(ctx, local.ApplySuppression) }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(n.cfg.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				// What is left is stored on the way out, if it can be.
				fctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				n.flushDone(fctx)
				cancel()
				return
			case <-n.flush:
			case <-t.C:
			}
			n.flushDone(ctx)
		}
	}()
	defer wg.Wait()
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	peers := map[string]*peerBeat{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n.adoptedAlive(ctx) {
			// A survivor took this node for dead (a pause longer than
			// dead_after) and is delivering its queue: stop, and let
			// the restart hand the adopted items over.
			n.log.Error().Msg("this node's queue was adopted while it was running; exiting so that the restart hands it over")
			n.exit()
			return
		}
		n.adoptDead(ctx, local, peers)
	}
}

// beat stores this node's heartbeat every cfg.Heartbeat and counts the
// ones stored.
func (n *Node) beat(ctx context.Context) {
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, n.cfg.Heartbeat)
		_, err := n.alive.Put(cctx, n.cfg.Node, []byte(n.incarnation))
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn().Err(err).Msg("heartbeat not stored")
			}
			continue
		}
		n.beats.Add(1)
	}
}

// peerBeat is what this node saw of another's heartbeats.
type peerBeat struct {
	incarnation string
	rev         uint64
	// at is the count of this node's own stored heartbeats when the
	// peer's last advanced. Silence is measured in this node's stored
	// heartbeats, not in time: during a stall of the whole cluster (a
	// leader election) no heartbeat is stored, so nobody looks dead.
	at int64
	// fails counts adoption attempts failed in a row: while the streams
	// the dead node led elect a new leader, every read fails, once per
	// heartbeat, for seconds or more; only every 20th is logged.
	fails int
}

// exitProcess is how Run stops the process (75, EX_TEMPFAIL: a service
// manager restarts it); tests replace it.
var exitProcess = func() { os.Exit(75) }

func (n *Node) exit() { exitProcess() }

// adoptedAlive reports whether this incarnation was adopted by another node.
func (n *Node) adoptedAlive(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, n.cfg.Heartbeat)
	defer cancel()
	e, err := n.adopt.Get(cctx, adoptKey(n.cfg.Node, n.incarnation))
	if err != nil {
		return false
	}
	return string(e.Value()) != "self"
}

// adoptDead looks for members whose heartbeat stopped and adopts each one
// no other survivor has claimed.
func (n *Node) adoptDead(ctx context.Context, local Local, peers map[string]*peerBeat) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	names, err := listKeys(cctx, n.js, n.members, "")
	if err != nil {
		n.log.Warn().Err(err).Msg("cannot list cluster members")
		return
	}
	for _, name := range names {
		if name == n.cfg.Node {
			continue
		}
		m, err := n.members.Get(cctx, name)
		if err != nil {
			continue
		}
		inc := string(m.Value())
		beats := n.beats.Load()
		p := peers[name]
		if p == nil || p.incarnation != inc {
			p = &peerBeat{incarnation: inc, at: beats}
			peers[name] = p
		}
		a, err := n.alive.Get(cctx, name)
		switch {
		case err == nil && string(a.Value()) == inc && a.Revision() != p.rev:
			p.rev, p.at = a.Revision(), beats
			continue
		case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
			continue // no answer is not a missing heartbeat
		}
		if time.Duration(beats-p.at)*n.cfg.Heartbeat < n.cfg.DeadAfter {
			continue
		}
		k := adoptKey(name, inc)
		if _, err := n.adopt.Create(cctx, k, n.claim()); err != nil && !n.takeOverClaim(cctx, k, name) {
			continue // adopted already, by this node or another, or claimed back
		}
		if p.fails == 0 {
			n.log.Warn().Str("node", name).Str("incarnation", inc).Msg("no heartbeat: adopting the node's queue")
		}
		count, err := n.adoptNode(ctx, name, local)
		var escs int
		if err == nil {
			escs, err = n.adoptEscalations(ctx, name, local)
		}
		if err != nil {
			// Released, so that this node or another tries again.
			if p.fails%20 == 0 {
				n.log.Error().Err(err).Str("node", name).Int("attempt", p.fails+1).Msg("adoption failed; will retry each heartbeat")
			}
			p.fails++
			dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
			n.adopt.Delete(dctx, k)
			dcancel()
			continue
		}
		// Recorded even when this node is stopping: the adopted node's
		// restart waits for it.
		fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = n.adopt.Put(fctx, k, []byte("done "+n.cfg.Node))
		fcancel()
		if err != nil {
			n.log.Error().Err(err).Str("node", name).Msg("cannot record the adoption as finished")
		}
		n.log.Warn().Str("node", name).Int("items", count).Int("escalations", escs).Int("attempts", p.fails+1).Msg("adopted the node's queue")
		p.fails = 0
	}
}

// claim is the adoption record of an adoption this run is working on.
func (n *Node) claim() []byte { return []byte("started " + n.cfg.Node + " " + n.incarnation) }

// takeOverClaim takes over the adoption record k of node when the
// adoption it names was started by a run that is gone (it died, or
// restarted, before finishing): without that, the rest of node's queue
// would wait for node's return, and node, back, for an adoption nobody
// finishes.
func (n *Node) takeOverClaim(ctx context.Context, k, node string) bool {
	e, err := n.adopt.Get(ctx, k)
	if err != nil {
		return false
	}
	who, inc, ok := startedBy(string(e.Value()))
	if !ok {
		return false
	}
	if who == n.cfg.Node && inc == n.incarnation {
		return true // this run's own claim, left by a failed release
	}
	if !n.runGone(ctx, who, inc) {
		return false
	}
	if _, err := n.adopt.Update(ctx, k, n.claim(), e.Revision()); err != nil {
		return false // another survivor took it over first
	}
	n.log.Warn().Str("node", node).Str("started_by", who).Msg("taking over an adoption its survivor did not finish")
	return true
}

// startedBy parses "started <node> <incarnation>" (the incarnation is
// missing in records of older versions).
func startedBy(v string) (node, inc string, ok bool) {
	rest, ok := strings.CutPrefix(v, "started ")
	if !ok {
		return "", "", false
	}
	node, inc, _ = strings.Cut(rest, " ")
	return node, inc, node != ""
}

// runGone reports whether incarnation inc of node has stopped: the node
// runs another incarnation now, or its heartbeat is older than twice
// dead_after (twice: a live node's stall must not be taken for a death;
// two survivors adopting at once cost duplicates, not losses).
func (n *Node) runGone(ctx context.Context, node, inc string) bool {
	m, err := n.members.Get(ctx, node)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return true
	case err != nil:
		return false
	case inc != "" && string(m.Value()) != inc:
		return true
	}
	a, err := n.alive.Get(ctx, node)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return true
	case err != nil:
		return false
	}
	return string(a.Value()) != string(m.Value()) || time.Since(a.Created()) > 2*n.cfg.DeadAfter
}

// adoptNode queues here every item of node's intake, and of the items it
// had adopted itself, that is recorded done nowhere and not queued here
// already, and marks each one adopted.
func (n *Node) adoptNode(ctx context.Context, node string, local Local) (int, error) {
	// The node's done records, in one listing: a look-up per item would
	// cost a round trip for each message of the intake's retention.
	started := time.Now()
	done, err := n.doneOf(ctx, node)
	if err != nil {
		return 0, err
	}
	listed := time.Since(started)
	total := 0
	for _, src := range []struct{ stream, subject string }{
		{streamIntake, subjIntake + node},
		{streamAdopted, subjAdopted + node},
	} {
		count, seen, err := n.adoptFrom(ctx, src.stream, src.subject, node, done, local)
		total += count
		if err != nil {
			return total, err
		}
		n.log.Info().Str("node", node).Str("subject", src.subject).Uint64("records", seen).Int("done_records", len(done)).
			Int("adopted", count).Dur("listing_took", listed).Dur("took", time.Since(started)).Msg("read the node's intake")
	}
	return total, nil
}

// adoptFrom reads subject (node's intake, or the items node adopted) up to
// its last record, and adopts what is not done.
func (n *Node) adoptFrom(ctx context.Context, streamName, subject, node string, done map[string]bool, local Local) (int, uint64, error) {
	fail := func(err error) error { return fmt.Errorf("cluster: read %s: %w", subject, err) }
	// The last message stored, asked of the stream's leader: reading
	// stops there, not at the first empty fetch, which a stream still
	// electing a leader after the node's death also gives.
	stream, err := n.js.Stream(ctx, streamName)
	if err != nil {
		return 0, 0, fail(err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fail(err)
	}
	cons, err := n.js.OrderedConsumer(ctx, streamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return 0, 0, fail(err)
	}
	total := 0
	var seen uint64
	deadline := time.Now().Add(2 * time.Minute)
	for seen < last.Sequence {
		if time.Now().After(deadline) {
			return total, seen, fail(fmt.Errorf("at sequence %d of %d after 2 minutes", seen, last.Sequence))
		}
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return total, seen, fail(err)
		}
		var work []adoptWork
		for msg := range batch.Messages() {
			if md, err := msg.Metadata(); err == nil {
				seen = md.Sequence.Stream
			}
			var rec Record
			if err := json.Unmarshal(msg.Data(), &rec); err != nil {
				n.log.Error().Err(err).Str("subject", subject).Msg("unreadable intake record skipped")
				continue
			}
			w := adoptWork{rec: &rec}
			for _, it := range rec.Items {
				if done[it.ID] {
					continue
				}
				if has, err := local.Has(it.ID); err != nil {
					return total, seen, err
				} else if has {
					// Queued here by an attempt that failed before
					// marking it: mark it now, or the node, back,
					// would deliver it too.
					w.had = append(w.had, it)
					continue
				}
				w.todo = append(w.todo, it)
			}
			if len(w.todo)+len(w.had) > 0 {
				work = append(work, w)
			}
		}
		// Stored as adopted here first: should this node die too before
		// delivering them, a third node adopts them from there.
		if err := n.storeAdopted(ctx, work); err != nil {
			return total, seen, err
		}
		for _, w := range work {
			if len(w.todo) > 0 {
				if err := local.Adopt(w.rec, w.todo, node); err != nil {
					return total, seen, err
				}
			}
			for _, it := range append(w.had, w.todo...) {
				if _, err := n.done.Put(ctx, doneKey(node, it.ID), []byte(n.cfg.Node+" adopted")); err != nil {
					return total, seen, fmt.Errorf("cluster: mark %s adopted: %w", it.ID, err)
				}
			}
			total += len(w.todo)
			n.count(func(s *Stats) { s.Adopted += len(w.todo) })
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return total, seen, fail(err)
		}
	}
	return total, seen, nil
}

// adoptWork is what an adoption does with one intake record: queue todo
// here, and mark todo and had (queued by an earlier attempt) adopted.
type adoptWork struct {
	rec       *Record
	todo, had []*queue.Item
}

// storeAdopted stores the items to adopt in stream LK_ADOPTED under this
// node, a batch of records at a time. Not in the intake: writing there
// while its stream, which the dead node may have led, elects a leader
// made adoptions minutes slower.
func (n *Node) storeAdopted(ctx context.Context, work []adoptWork) error {
	var acks []jetstream.PubAckFuture
	for _, w := range work {
		if len(w.todo) == 0 {
			continue
		}
		b, err := json.Marshal(Record{Node: n.cfg.Node, MsgID: w.rec.MsgID, Body: w.rec.Body, Items: w.todo, LinkDigests: w.rec.LinkDigests})
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		f, err := n.js.PublishMsgAsync(&nats.Msg{Subject: subjAdopted + n.cfg.Node, Data: b},
			jetstream.WithMsgID(n.cfg.Node+"."+w.rec.MsgID))
		if err != nil {
			return fmt.Errorf("cluster: store adopted %s as adopted here: %w", w.rec.MsgID, err)
		}
		acks = append(acks, f)
	}
	// An ack that never comes (a stream without a leader) must fail the
	// attempt, which the next heartbeat retries.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("cluster: store adopted items: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("cluster: store adopted items: %w", ctx.Err())
		}
	}
	return nil
}

// doneOf returns the items node (or its adopter) recorded done.
func (n *Node) doneOf(ctx context.Context, node string) (map[string]bool, error) {
	keys, err := listKeys(ctx, n.js, n.done, node+".>")
	if err != nil {
		return nil, fmt.Errorf("cluster: %s's done records: %w", node, err)
	}
	done := make(map[string]bool, len(keys))
	for _, k := range keys {
		done[strings.TrimPrefix(k, node+".")] = true
	}
	return done, nil
}

// AdoptedBy returns the node that adopted item id ("" if none): the
// relay hands such an item over instead of delivering it.
func (n *Node) AdoptedBy(ctx context.Context, id string) (string, error) {
	e, err := n.done.Get(ctx, doneKey(n.cfg.Node, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cluster: done record of %s: %w", id, err)
	}
	// "<node> adopted" while the adopter works on it, "<node> <state>"
	// once it finished it there: either way it is the other node's now.
	node, _, _ := strings.Cut(string(e.Value()), " ")
	if node != n.cfg.Node {
		return node, nil
	}
	return "", nil
}

// HandedOver counts items of this node handed over to their adopter.
func (n *Node) HandedOver(k int) { n.count(func(s *Stats) { s.HandedOver += k }) }

// Status is what `latchkey cluster status` shows.
type Status struct {
	Node        string          `json:"node"`
	Incarnation string          `json:"incarnation"`
	Members     []MemberStatus  `json:"members"`
	Intake      *ReplicaStatus  `json:"intake,omitempty"`
	Adoptions   []AdoptedStatus `json:"adoptions,omitempty"`
	Stats       Stats           `json:"stats"`
	// Escalations counts, per node, the Salesforce escalations not sent
	// yet (none taken over: those count for their adopter).
	Escalations map[string]int `json:"escalations_waiting,omitempty"`
	// Differs lists what the nodes with a heartbeat must hold the same
	// and do not (keys, policy), from their shared fingerprints.
	Differs []ConfigDiff `json:"config_differs,omitempty"`
	// Audit compares this node's trail with its checkpoints in the
	// cluster (nil when not asked for).
	Audit *CheckpointReport `json:"audit,omitempty"`
}

// MemberStatus is one node as the cluster knows it.
type MemberStatus struct {
	Name        string `json:"name"`
	Incarnation string `json:"incarnation"`
	Alive       bool   `json:"alive"`
	// LastBeat is how long ago its last heartbeat was stored.
	LastBeat string `json:"last_heartbeat,omitempty"`
}

// ReplicaStatus is the intake stream's replication.
type ReplicaStatus struct {
	Messages uint64       `json:"messages"`
	Leader   string       `json:"leader"`
	Replicas []PeerStatus `json:"replicas"`
	Err      string       `json:"error,omitempty"`
}

// PeerStatus is one replica of the intake stream.
type PeerStatus struct {
	Name    string `json:"name"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline"`
	Lag     uint64 `json:"lag"`
}

// AdoptedStatus is one adoption record.
type AdoptedStatus struct {
	Node  string `json:"node"` // node.incarnation adopted
	State string `json:"state"`
}

// Status reads the cluster's state.
func (n *Node) Status(ctx context.Context) (*Status, error) {
	st := &Status{Node: n.cfg.Node, Incarnation: n.incarnation, Stats: n.Stats()}
	var err error
	if st.Members, err = n.memberStatus(ctx); err != nil {
		return nil, err
	}
	if st.Differs, err = n.configDiffers(ctx, st.Members); err != nil {
		return nil, err
	}
	if s, err := n.js.Stream(ctx, streamIntake); err == nil {
		if info, err := s.Info(ctx); err == nil {
			rs := &ReplicaStatus{Messages: info.State.Msgs}
			if c := info.Cluster; c != nil {
				rs.Leader = c.Leader
				rs.Replicas = append(rs.Replicas, PeerStatus{Name: c.Leader, Current: true})
				for _, p := range c.Replicas {
					rs.Replicas = append(rs.Replicas, PeerStatus{Name: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag})
				}
			}
			st.Intake = rs
		} else {
			st.Intake = &ReplicaStatus{Err: err.Error()}
		}
	}
	keys, err := listKeys(ctx, n.js, n.adopt, "")
	if err != nil {
		return nil, fmt.Errorf("cluster: adoptions: %w", err)
	}
	for _, k := range keys {
		// As in the listings: an entry that cannot be read fails the
		// status rather than going missing from it.
		e, err := n.adopt.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: adoption %s: %w", k, err)
		}
		if string(e.Value()) != "self" {
			st.Adoptions = append(st.Adoptions, AdoptedStatus{Node: k, State: string(e.Value())})
		}
	}
	if st.Escalations, err = n.escalationsWaiting(ctx); err != nil {
		return nil, fmt.Errorf("cluster: escalations: %w", err)
	}
	return st, nil
}

// memberStatus lists the nodes the cluster knows and whether each beats.
func (n *Node) memberStatus(ctx context.Context) ([]MemberStatus, error) {
	names, err := listKeys(ctx, n.js, n.members, "")
	if err != nil {
		return nil, fmt.Errorf("cluster: members: %w", err)
	}
	var out []MemberStatus
	for _, name := range names {
		m, err := n.members.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: member %s: %w", name, err)
		}
		ms := MemberStatus{Name: name, Incarnation: string(m.Value())}
		a, err := n.alive.Get(ctx, name)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// No heartbeat within the bucket's TTL: not alive.
		case err != nil:
			return nil, fmt.Errorf("cluster: heartbeat of %s: %w", name, err)
		case string(a.Value()) == ms.Incarnation:
			ms.LastBeat = time.Since(a.Created()).Round(time.Millisecond).String()
			ms.Alive = time.Since(a.Created()) < n.cfg.DeadAfter
		}
		out = append(out, ms)
	}
	return out, nil
}
