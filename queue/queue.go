package queue

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/audit"
)

// Handler delivers items and decides what an attempt means. The relay
// implements it with deliver/, bounce/ and policy/.
type Handler interface {
	// Deliver tries item it once. body is the signed message.
	Deliver(ctx context.Context, it *Item, body []byte) Outcome
	// Expire is called for an item whose cut-off passed before it could be
	// delivered; it returns the final outcome (state expired, escalation).
	Expire(it *Item, now time.Time) Outcome
}

// Outcome is what one attempt (or an expiry) leads to. With State empty the
// item stays queued and is tried again at Retry; otherwise State is final.
type Outcome struct {
	Attempt *Attempt // nil when no attempt was made (expiry)
	State   string
	Retry   time.Time
	Reason  string
	// Redirect sends the item to another recipient (a backup address): it
	// stays queued, due at Retry, and OrigRcpt keeps the first address.
	Redirect string
	// Label is a short reason from a small set (user_unknown, deadline…)
	// for metrics; Reason is the full text for people.
	Label  string
	Events []*audit.Event
	// Extra runs in the same transaction (suppression, Salesforce outbox).
	Extra func(tx *Tx, it *Item) error
}

// Queue is the durable queue with its class lanes and delivery workers.
type Queue struct {
	store *Store
	lanes *lanes
	log   zerolog.Logger
	now   func() time.Time

	// OnFinal, when set before Start, is called after the commit that puts
	// an item in a final state, with the time from acceptance to that
	// state (the metrics' outcome counters and latency histogram).
	OnFinal func(class, state, label string, sinceAccepted time.Duration)
	// OnFinish, when set before Start, is called after the commit that
	// puts item id in a final state (the cluster's done record). It must
	// not block.
	OnFinish func(id, state string)

	wg     sync.WaitGroup
	cancel context.CancelFunc

	// startMu guards ctx, handler and starting workers (Start, AddWorkers,
	// Stop), so that no worker is added while Stop waits for them.
	startMu sync.Mutex
	ctx     context.Context
	handler Handler
}

// New returns the queue over store and rebuilds the in-memory lanes from the
// live index.
func New(store *Store, log zerolog.Logger) (*Queue, error) {
	q := &Queue{store: store, lanes: newLanes(), log: log, now: time.Now}
	n := 0
	err := store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pLive})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			id := string(it.Item().Key()[len(pLive):])
			var sc schedule
			err := it.Item().Value(func(v []byte) error {
				var err error
				sc, err = decodeSchedule(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
			q.lanes.put(sc.Class, id, sc.Due)
			n++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("queue: rebuild schedule: %w", err)
	}
	if err := q.buildTimeIndex(); err != nil {
		return nil, err
	}
	log.Info().Int("items", n).Msg("queue loaded")
	return q, nil
}

// Store returns the underlying store.
func (q *Queue) Store() *Store { return q.store }

// SetClock replaces the clock (tests).
func (q *Queue) SetClock(now func() time.Time) { q.now = now }

// RateCheck limits how many messages one key (a recipient) may receive in a
// window; checked and counted atomically with the enqueue.
type RateCheck struct {
	Key    string
	Limit  int
	Window time.Duration
}

// Message is an accepted message ready to be queued.
type Message struct {
	MsgID        string
	Body         []byte
	Items        []*Item
	DedupeKeys   []string
	DedupeWindow time.Duration
	Rate         []RateCheck
	Events       []*audit.Event // received, signed, …; queued events are added per item
	// LinkDigests are the SHA-256 (hex) of the links in the message, so
	// that a click can be reported by the hash of its link.
	LinkDigests []string
	// Extra runs in the enqueue transaction (e.g. an escalation for a
	// recipient on the suppression list).
	Extra func(tx *Tx) error
}

// Result tells the relay what Enqueue did.
type Result struct {
	MsgID       string   // the new id, or the original one for a duplicate
	Duplicate   bool     // already queued under MsgID: nothing was written but an audit event
	RateLimited string   // the key over its limit: nothing was queued
	Superseded  []string // older items this message replaced
}

// ErrRateLimited is returned (with a Result naming the key) when a rate check fails.
var ErrRateLimited = errors.New("queue: rate limit exceeded")

// Enqueue writes m durably and schedules its items. It returns once the
// message is on disk.
func (q *Queue) Enqueue(m *Message) (*Result, error) {
	var res *Result
	err := q.store.Update(func(tx *Tx) error {
		res = &Result{MsgID: m.MsgID}
		now := q.now()
		// A resubmission (Salesforce retries after a dropped connection)
		// gets the original id and is not queued twice.
		for _, k := range m.DedupeKeys {
			v, err := getValue(tx.Txn, key(pDedupe, k))
			if err != nil {
				return err
			}
			if v != nil {
				res.MsgID, res.Duplicate = string(v), true
				for _, it := range m.Items {
					if err := tx.Audit(&audit.Event{Time: now, Type: audit.Deduplicated, QueueID: string(v), MessageID: it.MessageID,
						Class: it.Class, Recipient: it.Rcpt, Fields: map[string]string{"key": dedupeKind(k)}}); err != nil {
						return err
					}
				}
				return nil
			}
		}
		// Every window is checked before any is counted: a message refused
		// for one recipient is queued for nobody, so it must count against
		// nobody (else each retry of it would use up the others' limits).
		var takes []*badger.Entry
		for _, rc := range m.Rate {
			e, ok, err := rateTake(tx, rc, now)
			if err != nil {
				return err
			}
			if e != nil {
				takes = append(takes, e)
			}
			if !ok {
				res.RateLimited = rc.Key
				for _, it := range m.Items {
					if err := tx.Audit(&audit.Event{Time: now, Type: audit.RateLimited, MessageID: it.MessageID,
						Class: it.Class, Recipient: it.Rcpt, Sender: it.From,
						Fields: map[string]string{"limit": fmt.Sprint(rc.Limit), "window": rc.Window.String()}}); err != nil {
						return err
					}
				}
				return nil
			}
		}
		for _, e := range takes {
			if err := tx.SetEntry(e); err != nil {
				return err
			}
		}
		for _, ev := range m.Events {
			if err := tx.Audit(ev); err != nil {
				return err
			}
		}
		if len(m.Items) > 0 {
			// The body outlives a delivery until the deadline, so that an
			// asynchronous bounce can still send it to a backup address;
			// Badger drops it by TTL after that.
			ttl := bodyTTL(m.Items, now)
			if err := tx.SetEntry(entry(key(pBody, m.MsgID), m.Body, ttl)); err != nil {
				return err
			}
			if err := tx.Set(key(pRefs, m.MsgID), u32(uint32(len(m.Items)))); err != nil {
				return err
			}
			// Salesforce's email log and the recipient's copy show the
			// Message-ID, not our id: index it so operators can start there.
			if mid := headerIDKey(m.Items[0].MessageID); mid != "" {
				if err := tx.Set(key(pHeaderID, mid, m.MsgID), nil); err != nil {
					return err
				}
			}
			for _, d := range m.LinkDigests {
				// A click may come well after the deadline (a late one is
				// still recorded, as late): kept a month beyond the body.
				if err := tx.SetEntry(entry(key(pLink, d), []byte(m.MsgID), ttl+linkRetention)); err != nil {
					return err
				}
			}
		}
		for _, it := range m.Items {
			if it.SupersedeKey != "" {
				ids, err := q.supersede(tx, it, now)
				if err != nil {
					return err
				}
				res.Superseded = append(res.Superseded, ids...)
				if err := tx.Set(key(pSupersede, it.SupersedeKey, it.ID), nil); err != nil {
					return err
				}
				// Remembered after the newer item is finished too: an older
				// one being delivered right now is ended when its attempt
				// comes back deferred (see Complete).
				if err := tx.SetEntry(entry(key(pNewest, it.SupersedeKey), []byte(it.ID), it.Deadline.Sub(now)+time.Hour)); err != nil {
					return err
				}
			}
			it.State = StateQueued
			it.Size = len(m.Body)
			if err := q.writeLive(tx, it); err != nil {
				return err
			}
			if err := tx.Set(timeKey(it.ID), nil); err != nil {
				return err
			}
			if err := tx.Audit(&audit.Event{Time: now, Type: audit.Queued, QueueID: it.ID, MessageID: it.MessageID,
				Class: it.Class, Recipient: it.Rcpt, Sender: it.From,
				Fields: map[string]string{"deadline": it.Deadline.UTC().Format(time.RFC3339), "envelope_sender": it.Sender}}); err != nil {
				return err
			}
			it := it
			tx.After(func() { q.lanes.put(it.Class, it.ID, it.Due) })
		}
		for _, k := range m.DedupeKeys {
			if err := tx.SetEntry(entry(key(pDedupe, k), []byte(m.MsgID), m.DedupeWindow)); err != nil {
				return err
			}
		}
		if m.Extra != nil {
			return m.Extra(tx)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if res.RateLimited != "" {
		return res, ErrRateLimited
	}
	return res, nil
}

// bodyTTL is how long a message body is kept at most: until the latest
// deadline of its items, plus an hour for late bounces.
func bodyTTL(items []*Item, now time.Time) time.Duration {
	var last time.Time
	for _, it := range items {
		if it.Deadline.After(last) {
			last = it.Deadline
		}
	}
	return last.Sub(now) + time.Hour
}

func dedupeKind(k string) string {
	kind, _, _ := strings.Cut(k, ":")
	return kind
}

// supersede ends every queued item with newer's supersede key that is not
// being delivered right now (one in flight is allowed to finish).
func (q *Queue) supersede(tx *Tx, newer *Item, now time.Time) ([]string, error) {
	prefix := key(pSupersede, newer.SupersedeKey, "")
	var olders []string
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	for it.Rewind(); it.Valid(); it.Next() {
		olders = append(olders, string(it.Item().Key()[len(prefix):]))
	}
	it.Close()
	var done []string
	for _, id := range olders {
		if !q.lanes.claim(id) {
			continue
		}
		id := id
		tx.OnAbort(func() { q.lanes.unclaim(id) })
		old, err := q.getItem(tx.Txn, id)
		if err != nil {
			return nil, err
		}
		if old == nil || Final(old.State) {
			tx.After(func() { q.lanes.forget(id) })
			continue
		}
		old.SupersededBy = newer.ID
		if err := q.finish(tx, old, StateSuperseded, "superseded by "+newer.ID, "superseded", now); err != nil {
			return nil, err
		}
		if err := tx.Audit(&audit.Event{Time: now, Type: audit.Superseded, QueueID: old.ID, MessageID: old.MessageID,
			Class: old.Class, Recipient: old.Rcpt, Fields: map[string]string{"by": newer.ID}}); err != nil {
			return nil, err
		}
		done = append(done, id)
	}
	return done, nil
}

// writeLive stores it and its schedule entry.
func (q *Queue) writeLive(tx *Tx, it *Item) error {
	b, err := encodeItem(it)
	if err != nil {
		return err
	}
	if err := tx.Set(key(pItem, it.ID), b); err != nil {
		return err
	}
	return tx.Set(key(pLive, it.ID), schedule{Class: it.Class, Due: it.Due, Cutoff: it.Cutoff}.encode())
}

// finish moves it to a final state: off the live index, its body released
// when it was the message's last live item.
func (q *Queue) finish(tx *Tx, it *Item, state, reason, label string, now time.Time) error {
	it.State, it.Finished = state, now
	if reason != "" {
		it.Reason = reason
	}
	id, class, lat := it.ID, it.Class, now.Sub(it.Accepted)
	tx.After(func() {
		q.lanes.forget(id)
		if q.OnFinal != nil {
			q.OnFinal(class, state, label, lat)
		}
		if q.OnFinish != nil {
			q.OnFinish(id, state)
		}
	})
	b, err := encodeItem(it)
	if err != nil {
		return err
	}
	if err := tx.Set(key(pItem, it.ID), b); err != nil {
		return err
	}
	if err := tx.Delete(key(pLive, it.ID)); err != nil {
		return err
	}
	if it.SupersedeKey != "" {
		if err := tx.Delete(key(pSupersede, it.SupersedeKey, it.ID)); err != nil {
			return err
		}
	}
	refs, err := getValue(tx.Txn, key(pRefs, it.MsgID))
	if err != nil {
		return err
	}
	if len(refs) == 4 {
		if n := binary.BigEndian.Uint32(refs); n > 1 {
			return tx.Set(key(pRefs, it.MsgID), u32(n-1))
		}
	}
	if err := tx.Delete(key(pRefs, it.MsgID)); err != nil {
		return err
	}
	if now.Before(it.Deadline) {
		if state == StateDelivered {
			return nil // kept for a late bounce until its TTL
		}
		// The last recipient failed, but an earlier one may have been
		// delivered and still get an asynchronous bounce that needs the
		// body for its backup address.
		delivered, err := q.siblingDelivered(tx.Txn, it)
		if err != nil || delivered {
			return err
		}
	}
	return tx.Delete(key(pBody, it.MsgID))
}

// siblingDelivered reports whether another recipient of it's message was
// delivered.
func (q *Queue) siblingDelivered(txn *badger.Txn, it *Item) (bool, error) {
	prefix := key(pItem, it.MsgID)
	iter := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	defer iter.Close()
	for iter.Rewind(); iter.Valid(); iter.Next() {
		if string(iter.Item().Key()) == string(key(pItem, it.ID)) {
			continue
		}
		var sib *Item
		err := iter.Item().Value(func(v []byte) error {
			var err error
			sib, err = decodeItem(v)
			return err
		})
		if err != nil {
			return false, fmt.Errorf("queue: sibling of %s: %w", it.ID, err)
		}
		if sib.State == StateDelivered {
			return true, nil
		}
	}
	return false, nil
}

// ErrTooLate is returned by Reopen for a redirect that can no longer be
// made: the item's cut-off has passed, its body is gone, or a newer message
// with its supersede key was accepted (its link is dead). Nothing was
// written; the caller decides the outcome without the backup address.
var ErrTooLate = errors.New("queue: too late to redirect: cut-off passed, body deleted or superseded")

// ErrNotDelivered is returned by Reopen for an item that ended in a state
// other than delivered: it already has its outcome (a bounce recorded and
// escalated, an expiry, …), and a late report (often a repeated DSN) must
// not record or escalate it again. Nothing was written.
var ErrNotDelivered = errors.New("queue: item did not end delivered; a late outcome does not apply")

// Reopen applies a late outcome (an asynchronous bounce) to an item that
// was delivered (else ErrNotDelivered). With out.Redirect the item is queued
// again for the new recipient if its body is still kept, its cut-off has not
// passed and no newer message superseded it (else ErrTooLate); otherwise
// out.State (if set) replaces the final state.
func (q *Queue) Reopen(id string, out Outcome) (requeued bool, err error) {
	err = q.store.Update(func(tx *Tx) error {
		requeued = false
		it, err := q.getItem(tx.Txn, id)
		if err != nil {
			return err
		}
		if it == nil {
			return ErrNotFound
		}
		if !Final(it.State) {
			return ErrInFlight // still live: the caller uses Complete
		}
		if it.State != StateDelivered {
			return ErrNotDelivered
		}
		now := q.now()
		if out.Redirect != "" {
			// Checked before anything is written: the outcome the caller
			// built says "retried at the backup address", which must not
			// be recorded for a retry that cannot happen.
			body, err := getValue(tx.Txn, key(pBody, it.MsgID))
			if err != nil {
				return err
			}
			if body == nil || !now.Before(it.Cutoff) {
				return ErrTooLate
			}
			// A newer reset replaced this one: sending the dead link to
			// the backup address (perhaps after the newer one) would
			// only confuse the user.
			if newer, err := Newer(tx, it); err != nil {
				return err
			} else if newer != "" {
				return ErrTooLate
			}
		}
		if err := record(tx, it, out); err != nil {
			return err
		}
		if out.Redirect != "" {
			if it.OrigRcpt == "" {
				it.OrigRcpt = it.Rcpt
			}
			it.Rcpt, it.BackupTried = out.Redirect, true
			it.State, it.Finished, it.Due, it.Reason = StateQueued, time.Time{}, out.Retry, out.Reason
			refs, err := getValue(tx.Txn, key(pRefs, it.MsgID))
			if err != nil {
				return err
			}
			n := uint32(0)
			if len(refs) == 4 {
				n = binary.BigEndian.Uint32(refs)
			}
			if err := tx.Set(key(pRefs, it.MsgID), u32(n+1)); err != nil {
				return err
			}
			// finish removed it from the supersede index; live again, it
			// must be found (and ended) by a newer reset like any queued
			// item, or its dead link goes out after the newer one.
			if it.SupersedeKey != "" {
				if err := tx.Set(key(pSupersede, it.SupersedeKey, it.ID), nil); err != nil {
					return err
				}
			}
			if err := q.writeLive(tx, it); err != nil {
				return err
			}
			class, due := it.Class, it.Due
			tx.After(func() { q.lanes.put(class, id, due) })
			requeued = true
			return nil
		}
		if out.State != "" {
			it.State, it.Reason, it.Finished = out.State, out.Reason, now
			// Counted as an outcome of its own: the live counters see
			// the delivery and then the late bounce.
			class, state, label, lat := it.Class, out.State, out.Label, now.Sub(it.Accepted)
			tx.After(func() {
				if q.OnFinal != nil {
					q.OnFinal(class, state, label, lat)
				}
			})
		}
		b, err := encodeItem(it)
		if err != nil {
			return err
		}
		return tx.Set(key(pItem, it.ID), b)
	})
	return requeued, err
}

// record writes an outcome's audit events and extra changes for it.
func record(tx *Tx, it *Item, out Outcome) error {
	for _, ev := range out.Events {
		fillEvent(ev, it)
		if err := tx.Audit(ev); err != nil {
			return err
		}
	}
	if out.Extra != nil {
		return out.Extra(tx, it)
	}
	return nil
}

func fillEvent(ev *audit.Event, it *Item) {
	if ev.QueueID == "" {
		ev.QueueID = it.ID
	}
	if ev.MessageID == "" {
		ev.MessageID = it.MessageID
	}
	if ev.Class == "" {
		ev.Class = it.Class
	}
	if ev.Recipient == "" {
		ev.Recipient = it.Rcpt
	}
}

// Start runs workers delivery workers for each class in workers.
func (q *Queue) Start(ctx context.Context, h Handler, workers map[string]int) {
	q.startMu.Lock()
	defer q.startMu.Unlock()
	q.ctx, q.cancel = context.WithCancel(ctx)
	q.handler = h
	for class, n := range workers {
		q.addWorkers(class, n)
	}
}

// AddWorkers starts n workers for a class that had none: one a policy
// reload added. Without them its items would wait forever, past their
// deadline, never expired nor escalated. It does nothing before Start or
// after Stop.
func (q *Queue) AddWorkers(class string, n int) {
	q.startMu.Lock()
	defer q.startMu.Unlock()
	if q.ctx == nil || q.ctx.Err() != nil {
		return
	}
	q.addWorkers(class, n)
}

// addWorkers starts n workers for class; q.startMu is held.
func (q *Queue) addWorkers(class string, n int) {
	for i := 0; i < n; i++ {
		q.wg.Add(1)
		go func() {
			defer q.wg.Done()
			q.work(q.ctx, q.handler, class)
		}()
	}
}

// Stop stops the workers and waits for deliveries in progress to end.
func (q *Queue) Stop() {
	q.startMu.Lock()
	if q.cancel != nil {
		q.cancel()
	}
	q.startMu.Unlock()
	q.wg.Wait()
}

func (q *Queue) work(ctx context.Context, h Handler, class string) {
	for {
		id, err := q.lanes.next(ctx, class, q.now)
		if err != nil {
			return
		}
		q.handle(ctx, h, id)
	}
}

// handle delivers one leased item and commits the outcome.
func (q *Queue) handle(ctx context.Context, h Handler, id string) {
	log := q.log.With().Str("queue_id", id).Logger()
	var it *Item
	var body []byte
	err := q.store.View(func(txn *badger.Txn) error {
		var err error
		if it, err = q.getItem(txn, id); err != nil || it == nil {
			return err
		}
		body, err = getValue(txn, key(pBody, it.MsgID))
		return err
	})
	if err != nil || it == nil || Final(it.State) {
		if err != nil {
			log.Error().Err(err).Msg("cannot load item; retrying in a minute")
			q.lanes.put(q.classOf(id), id, q.now().Add(time.Minute))
		} else {
			q.lanes.forget(id)
		}
		return
	}
	now := q.now()
	expiring := !now.Before(it.Cutoff)
	out, p := guard(func() Outcome {
		if expiring {
			return h.Expire(it, now)
		}
		return h.Deliver(ctx, it, body)
	})
	switch {
	case p != nil:
		log.Error().Str("panic", fmt.Sprint(p.value)).Str("stack", p.stack).Msg("delivery handler panicked")
		out = afterPanic(it, expiring, q.now())
	case !expiring && ctx.Err() != nil && out.State == "":
		// Shutting down mid-delivery: leave the item as it was on disk;
		// it is tried again after restart.
		return
	}
	if err := q.Complete(it.ID, out); err != nil {
		log.Error().Err(err).Msg("cannot record outcome; retrying in a minute")
		q.lanes.put(it.Class, id, q.now().Add(time.Minute))
	}
}

// handlerPanic is a panic caught in a delivery handler.
type handlerPanic struct {
	value any
	stack string
}

// guard runs f and catches a panic in it. A bug met by one message (a
// reply or a body no test had) must not take the relay down: after the
// restart the same item would be tried again and crash it again, and no
// reset would go out at all.
func guard(f func() Outcome) (out Outcome, p *handlerPanic) {
	defer func() {
		if v := recover(); v != nil {
			p = &handlerPanic{value: v, stack: string(debug.Stack())}
		}
	}()
	return f(), nil
}

// panicRetry is how long an item whose handler panicked waits before the
// next try: long enough not to spin, short enough for a reset's window.
const panicRetry = time.Minute

// afterPanic is the outcome of an attempt whose handler panicked. A
// delivery is tried again (the panic text stays in the log; the queue
// record and the trail say only "internal error"), until the cut-off,
// when the handler expires and escalates it as usual. If expiring itself
// panicked, the item ends expired here, without the handler's escalation,
// rather than be tried forever.
func afterPanic(it *Item, expiring bool, now time.Time) Outcome {
	const reason = "internal error (see the relay log)"
	if expiring {
		return Outcome{State: StateExpired, Reason: "expired; " + reason, Label: "internal_error",
			Events: []*audit.Event{{Time: now, Type: audit.Expired,
				Fields: map[string]string{"reason": reason, "deadline": it.Deadline.UTC().Format(time.RFC3339)}}}}
	}
	next := now.Add(panicRetry)
	if next.After(it.Cutoff) {
		next = it.Cutoff
	}
	return Outcome{Retry: next, Reason: reason, Label: "internal_error",
		Events: []*audit.Event{{Time: now, Type: audit.Deferred,
			Fields: map[string]string{"reply": reason, "next": next.UTC().Format(time.RFC3339)}}}}
}

func (q *Queue) classOf(id string) string {
	q.lanes.mu.Lock()
	defer q.lanes.mu.Unlock()
	if s := q.lanes.where[id]; s != nil {
		return s.lane.name
	}
	return ""
}

// Complete records out for item id: an attempt, a retry, a redirect or a
// final state, with its audit events, in one transaction.
func (q *Queue) Complete(id string, out Outcome) error { return q.complete(id, out, false) }

// CompleteIdle is Complete for a caller that is not the item's worker (a
// late bounce for a queued item). It answers ErrInFlight while a worker is
// delivering the item: putting it back on its lane then would let a second
// worker deliver it (to the backup address) at the same time. It answers
// ErrNotFound when the item is no longer live.
func (q *Queue) CompleteIdle(id string, out Outcome) error { return q.complete(id, out, true) }

func (q *Queue) complete(id string, out Outcome, idle bool) error {
	return q.store.Update(func(tx *Tx) error {
		now := q.now()
		it, err := q.getItem(tx.Txn, id)
		if err != nil {
			return err
		}
		if it == nil || Final(it.State) {
			if idle {
				return ErrNotFound
			}
			return nil
		}
		if idle {
			// Taken off its lane until this commit schedules or ends it.
			if !q.lanes.claim(id) {
				return ErrInFlight
			}
			tx.OnAbort(func() { q.lanes.unclaim(id) })
		}
		if out.Attempt != nil {
			it.record(*out.Attempt)
		}
		// A newer message for the same key arrived while this one was
		// being delivered (supersede could not touch it then): it must
		// not be tried again, or the user gets the dead link last.
		var newer string
		if out.State == "" {
			if newer, err = Newer(tx, it); err != nil {
				return err
			}
			if newer != "" && out.Redirect != "" {
				// Nor is it sent to the backup address: the trail must
				// not say it was.
				out.Events = without(out.Events, audit.RetriedBackup)
			}
		}
		if err := record(tx, it, out); err != nil {
			return err
		}
		if out.State != "" {
			return q.finish(tx, it, out.State, out.Reason, out.Label, now)
		}
		if newer != "" {
			it.SupersededBy = newer
			if err := q.finish(tx, it, StateSuperseded, "superseded by "+newer, "superseded", now); err != nil {
				return err
			}
			return tx.Audit(&audit.Event{Time: now, Type: audit.Superseded, QueueID: it.ID, MessageID: it.MessageID,
				Class: it.Class, Recipient: it.Rcpt, Fields: map[string]string{"by": newer}})
		}
		if out.Redirect != "" {
			if it.OrigRcpt == "" {
				it.OrigRcpt = it.Rcpt
			}
			it.Rcpt, it.BackupTried = out.Redirect, true
		}
		it.Due, it.Reason = out.Retry, out.Reason
		if err := q.writeLive(tx, it); err != nil {
			return err
		}
		class, due := it.Class, it.Due
		tx.After(func() { q.lanes.put(class, id, due) })
		return nil
	})
}

// without returns evs less the events of type typ, in a new slice (a
// commit function may run again with the same outcome).
func without(evs []*audit.Event, typ string) []*audit.Event {
	var out []*audit.Event
	for _, ev := range evs {
		if ev.Type != typ {
			out = append(out, ev)
		}
	}
	return out
}

// Newer returns the id of a message accepted after it under the same
// supersede key (a newer reset for the same user), or "", in tx.
func Newer(tx *Tx, it *Item) (string, error) { return newerThan(tx.Txn, it) }

// newerThan is Newer inside a Badger transaction.
func newerThan(txn *badger.Txn, it *Item) (string, error) {
	if it.SupersedeKey == "" {
		return "", nil
	}
	v, err := getValue(txn, key(pNewest, it.SupersedeKey))
	if err != nil || v == nil {
		return "", err
	}
	newest := string(v)
	if MsgIDOf(newest) == it.MsgID || !AcceptedAt(newest).After(AcceptedAt(it.ID)) {
		return "", nil
	}
	return newest, nil
}

func (q *Queue) getItem(txn *badger.Txn, id string) (*Item, error) {
	v, err := getValue(txn, key(pItem, id))
	if err != nil || v == nil {
		return nil, err
	}
	return decodeItem(v)
}

// Get returns an item by id (nil when unknown).
func (q *Queue) Get(id string) (*Item, error) {
	var it *Item
	err := q.store.View(func(txn *badger.Txn) error {
		var err error
		it, err = q.getItem(txn, id)
		return err
	})
	return it, err
}

// headerIDKey is the form of a Message-ID in the index: without angle
// brackets or surrounding space, so "<a@b>" and "a@b" meet; an id too long
// for a key (or holding the separator) is not indexed.
func headerIDKey(mid string) string {
	mid = strings.TrimSpace(mid)
	mid = strings.TrimSuffix(strings.TrimPrefix(mid, "<"), ">")
	if mid == "" || len(mid) > 900 || strings.IndexByte(mid, 0) >= 0 {
		return ""
	}
	return mid
}

// linkRetention is how long after its body a message can still be found
// by the hash of one of its links.
const linkRetention = 30 * 24 * time.Hour

// LookupLink returns the items of the message that carried the link whose
// SHA-256 (64 hex digits) is digest; none for an unknown one.
func (q *Queue) LookupLink(digest string) ([]*Item, error) {
	var out []*Item
	err := q.store.View(func(txn *badger.Txn) error {
		v, err := getValue(txn, key(pLink, strings.ToLower(digest)))
		if err != nil || v == nil {
			return err
		}
		out, err = q.itemsOf(txn, string(v))
		return err
	})
	return out, err
}

// Items returns the items of message msgID (every recipient, in order).
func (q *Queue) Items(msgID string) ([]*Item, error) {
	var out []*Item
	err := q.store.View(func(txn *badger.Txn) error {
		var err error
		out, err = q.itemsOf(txn, msgID)
		return err
	})
	return out, err
}

func (q *Queue) itemsOf(txn *badger.Txn, msgID string) ([]*Item, error) {
	var out []*Item
	iter := txn.NewIterator(badger.IteratorOptions{Prefix: key(pItem, msgID)})
	defer iter.Close()
	for iter.Rewind(); iter.Valid(); iter.Next() {
		if len(iter.Item().Key()) != len(pItem)+18 {
			continue // not an item id of this message
		}
		var it *Item
		err := iter.Item().Value(func(v []byte) error {
			var err error
			it, err = decodeItem(v)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("queue: items of %s: %w", msgID, err)
		}
		out = append(out, it)
	}
	return out, nil
}

// Lookup returns the items an operator's id names: a queue item id (one
// item), a message id as answered in "250 … queued as" (all its
// recipients), or a Message-ID header with or without angle brackets (every
// message that carried it). Unknown ids give no items and no error.
func (q *Queue) Lookup(id string) ([]*Item, error) {
	var out []*Item
	err := q.store.View(func(txn *badger.Txn) error {
		switch {
		case len(id) == 18 && ValidID(id):
			it, err := q.getItem(txn, id)
			if it != nil {
				out = append(out, it)
			}
			return err
		case len(id) == 16 && ValidID(id):
			var err error
			out, err = q.itemsOf(txn, id)
			return err
		}
		mid := headerIDKey(id)
		if mid == "" {
			return nil
		}
		prefix := key(pHeaderID, mid, "")
		iter := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer iter.Close()
		for iter.Rewind(); iter.Valid(); iter.Next() {
			msgID := string(iter.Item().Key()[len(prefix):])
			items, err := q.itemsOf(txn, msgID)
			if err != nil {
				return err
			}
			out = append(out, items...)
		}
		return nil
	})
	return out, err
}

// Body returns the stored message of a live item (nil once it is final).
func (q *Queue) Body(msgID string) ([]byte, error) {
	var b []byte
	err := q.store.View(func(txn *badger.Txn) error {
		var err error
		b, err = getValue(txn, key(pBody, msgID))
		return err
	})
	return b, err
}

// Filter selects items for List.
type Filter struct {
	Class string
	State string // "" = live items only; "all" = every item kept
	// Rcpt keeps items whose current or original recipient contains it
	// (case-insensitive).
	Rcpt string
	// Since and Until bound the acceptance time (Until exclusive); zero
	// means no bound.
	Since, Until time.Time
	// Newest lists the newest items first (a console's page).
	Newest bool
	// After continues a listing: only items after this id in the listing's
	// order (older ones when Newest). Empty starts at the beginning.
	After string
	Limit int
}

// List returns items in acceptance order, or newest first.
//
// The keys hold the acceptance time (AcceptedAt) but do not sort by it: the
// id alphabet puts 2-7 after z, ASCII before a. So List walks the time
// index (pTime), which holds every item's key in acceptance order, from the
// page's start, and stops when the page is full: an unfiltered page reads
// its own items only, whatever the queue's size. A state or class filter
// reads items until enough match; raw-JSON tests on the stored value skip
// most of the others without decoding them, and the decoded item decides.
// A recipient search is a sequential pass instead (listScan).
func (q *Queue) List(f Filter) ([]*Item, error) {
	if f.Rcpt != "" {
		return q.listScan(f)
	}
	var out []*Item
	candidate, _ := rawFilter(f)
	var since, until int64 = 0, math.MaxInt64
	if !f.Since.IsZero() {
		since = max(f.Since.UnixMilli(), 0)
	}
	if !f.Until.IsZero() {
		until = f.Until.UnixMilli()
	}
	err := q.store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pTime, Reverse: f.Newest})
		defer it.Close()
		var seek []byte
		switch {
		case f.After != "":
			seek = timeKey(f.After)
		case f.Newest && until != math.MaxInt64:
			seek = binary.BigEndian.AppendUint64(bytes.Clone(pTime), uint64(max(until, 0)))
		case f.Newest:
			seek = append(bytes.Clone(pTime), 0xff)
		default:
			seek = binary.BigEndian.AppendUint64(bytes.Clone(pTime), uint64(since))
		}
		for it.Seek(seek); it.ValidForPrefix(pTime); it.Next() {
			k := it.Item().Key()
			if len(k) <= len(pTime)+8 {
				continue
			}
			ms := int64(binary.BigEndian.Uint64(k[len(pTime):]))
			id := k[len(pTime)+8:]
			if f.After != "" && string(id) == f.After {
				continue
			}
			switch {
			case f.Newest && ms < since, !f.Newest && ms >= until:
				return nil // the rest is outside the window
			case ms < since || ms >= until:
				continue
			}
			v, err := getValue(txn, key(pItem, string(id)))
			if err != nil {
				return err
			}
			if v == nil || !candidate(v) {
				continue
			}
			item, err := decodeItem(v)
			if err != nil {
				return fmt.Errorf("queue: item %s: %w", id, err)
			}
			if !f.match(item) {
				continue
			}
			out = append(out, item)
			if f.Limit > 0 && len(out) >= f.Limit {
				return nil
			}
		}
		return nil
	})
	return out, err
}

// listScan is List for a recipient search, which matches few items
// anywhere in time: one sequential pass over every item beats a random read
// of each in time order (the block cache cannot hold them). It orders the
// matches by the time their ids carry, as the time index would.
func (q *Queue) listScan(f Filter) ([]*Item, error) {
	var out []*Item
	candidate, withValues := rawFilter(f)
	type ref struct {
		ms int64
		id string
	}
	less := func(a, b ref) int {
		if a.ms != b.ms {
			return cmp.Compare(a.ms, b.ms)
		}
		return strings.Compare(a.id, b.id)
	}
	var since, until int64 = math.MinInt64, math.MaxInt64
	if !f.Since.IsZero() {
		since = f.Since.UnixMilli()
	}
	if !f.Until.IsZero() {
		until = f.Until.UnixMilli()
	}
	err := q.store.View(func(txn *badger.Txn) error {
		// No PrefetchValues: Badger starts a goroutine and copies the value
		// for every prefetched item, which cost more than the read itself
		// for values kept in the tree.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pItem})
		var refs []ref
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()[len(pItem):]
			ms := idMillis(k)
			if ms < since || ms >= until {
				continue
			}
			if withValues {
				keep := false
				err := it.Item().Value(func(v []byte) error {
					keep = candidate(v)
					return nil
				})
				if err != nil {
					return err
				}
				if !keep {
					continue
				}
			}
			refs = append(refs, ref{ms, string(k)})
		}
		it.Close()
		slices.SortFunc(refs, less)
		if f.Newest {
			slices.Reverse(refs)
		}
		if f.After != "" {
			after := ref{AcceptedAt(f.After).UnixMilli(), f.After}
			i, _ := slices.BinarySearchFunc(refs, after, func(a, b ref) int {
				if f.Newest {
					return -less(a, b)
				}
				return less(a, b)
			})
			for i < len(refs) && refs[i].id == f.After {
				i++
			}
			refs = refs[i:]
		}
		for _, r := range refs {
			item, err := q.getItem(txn, r.id)
			if err != nil {
				return err
			}
			if item == nil || !f.match(item) {
				continue
			}
			out = append(out, item)
			if f.Limit > 0 && len(out) >= f.Limit {
				return nil
			}
		}
		return nil
	})
	return out, err
}

// rawFilter is List's test on a stored item's raw JSON, which skips most
// items without decoding them: the state and class as JSON members, the
// recipient as a case-insensitive substring (of any field: the decoded item
// decides). filters is false when the filter asks for none of them.
func rawFilter(f Filter) (test func(v []byte) bool, filters bool) {
	rcpt := []byte(strings.ToLower(f.Rcpt))
	var need [][]byte
	switch f.State {
	case "all":
	case "":
		need = append(need, []byte(`"state":"`+StateQueued+`"`))
	default:
		need = append(need, []byte(`"state":"`+f.State+`"`))
	}
	if f.Class != "" {
		need = append(need, []byte(`"class":`+strconv.Quote(f.Class)))
	}
	var lower []byte
	return func(v []byte) bool {
		for _, n := range need {
			if !bytes.Contains(v, n) {
				return false
			}
		}
		if len(rcpt) > 0 {
			lower = append(lower[:0], v...)
			for i, c := range lower {
				if 'A' <= c && c <= 'Z' {
					lower[i] = c + 'a' - 'A'
				}
			}
			return bytes.Contains(lower, rcpt)
		}
		return true
	}, len(need) > 0 || len(rcpt) > 0
}

// timeKey is an item's key in the time index: its acceptance time (as its
// id carries it) and its id, so that the index sorts by time.
func timeKey(id string) []byte {
	b := make([]byte, 0, len(pTime)+8+len(id))
	b = append(b, pTime...)
	b = binary.BigEndian.AppendUint64(b, uint64(idMillis([]byte(id))))
	return append(b, id...)
}

// buildTimeIndex puts every item of a database written before the time
// index existed into it, once: the marker says it is complete. Items are
// never deleted, so the index only grows with Enqueue.
func (q *Queue) buildTimeIndex() error {
	done := false
	var ids []string
	err := q.store.View(func(txn *badger.Txn) error {
		if v, err := getValue(txn, keyTimeIndexed); err != nil || v != nil {
			done = v != nil
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pItem})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			ids = append(ids, string(it.Item().Key()[len(pItem):]))
		}
		return nil
	})
	if err != nil || done {
		return err
	}
	for len(ids) > 0 {
		n := min(len(ids), 5000)
		if err := q.store.Update(func(tx *Tx) error {
			for _, id := range ids[:n] {
				if err := tx.Set(timeKey(id), nil); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("queue: build the time index: %w", err)
		}
		ids = ids[n:]
	}
	if err := q.store.Update(func(tx *Tx) error { return tx.Set(keyTimeIndexed, []byte{1}) }); err != nil {
		return fmt.Errorf("queue: build the time index: %w", err)
	}
	return nil
}

// idValue maps an id character to its 5-bit value (0xff: not one).
var idValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(idAlphabet); i++ {
		t[idAlphabet[i]] = byte(i)
	}
	return t
}()

// idMillis is AcceptedAt for a key, in milliseconds, without allocating;
// a malformed id gives 0.
func idMillis(id []byte) int64 {
	if len(id) < 10 {
		return 0
	}
	var ms uint64
	for _, c := range id[:10] {
		v := idValue[c]
		if v == 0xff {
			return 0
		}
		ms = ms<<5 | uint64(v)
	}
	return int64(ms >> 2)
}

func (f *Filter) match(item *Item) bool {
	if f.Class != "" && item.Class != f.Class {
		return false
	}
	switch {
	case f.State == "" && Final(item.State), f.State != "" && f.State != "all" && item.State != f.State:
		return false
	}
	if f.Rcpt != "" {
		r := strings.ToLower(f.Rcpt)
		if !strings.Contains(strings.ToLower(item.Rcpt), r) && !strings.Contains(strings.ToLower(item.OrigRcpt), r) {
			return false
		}
	}
	return true
}

// ErrNotFound is returned for an unknown or no longer live item.
var ErrNotFound = errors.New("queue: no such live item")

// Retry makes a queued item due now, on record with who asked.
func (q *Queue) Retry(id, by string) error {
	return q.store.Update(func(tx *Tx) error {
		it, err := q.getItem(tx.Txn, id)
		if err != nil {
			return err
		}
		if it == nil || Final(it.State) {
			return ErrNotFound
		}
		// A leased item is being delivered: putting it back on its lane
		// would let a second worker deliver it at the same time.
		if q.lanes.inflight(id) {
			return ErrInFlight
		}
		it.Due = q.now()
		if err := q.writeLive(tx, it); err != nil {
			return err
		}
		tx.After(func() { q.lanes.putIdle(it.Class, it.ID, it.Due) })
		return tx.Audit(&audit.Event{Time: it.Due, Type: audit.Retried, QueueID: it.ID, MessageID: it.MessageID,
			Class: it.Class, Recipient: it.Rcpt, Fields: map[string]string{"by": by}})
	})
}

// ErrInFlight is returned when dropping an item that is being delivered.
var ErrInFlight = errors.New("queue: item is being delivered; try again")

// Drop ends a queued item with state dropped, recording who did it.
func (q *Queue) Drop(id, by, reason string) error {
	return q.store.Update(func(tx *Tx) error {
		it, err := q.getItem(tx.Txn, id)
		if err != nil {
			return err
		}
		if it == nil || Final(it.State) {
			return ErrNotFound
		}
		if !q.lanes.claim(id) {
			return ErrInFlight
		}
		tx.OnAbort(func() { q.lanes.unclaim(id) })
		now := q.now()
		why := "dropped by " + by
		if reason != "" {
			why += ": " + reason
		}
		if err := q.finish(tx, it, StateDropped, why, "dropped", now); err != nil {
			return err
		}
		f := map[string]string{"by": by}
		if reason != "" {
			f["reason"] = reason
		}
		return tx.Audit(&audit.Event{Time: now, Type: audit.Dropped, QueueID: it.ID, MessageID: it.MessageID,
			Class: it.Class, Recipient: it.Rcpt, Fields: f})
	})
}

// Depth returns each class lane's live items, in-flight count and oldest
// acceptance time.
func (q *Queue) Depth() map[string]LaneDepth { return q.lanes.depth() }

// Backlog counts, up to limit, the items of class that are due and wait
// for a worker.
func (q *Queue) Backlog(class string, limit int) int {
	n, _ := q.lanes.ready(class, q.now(), limit)
	return n
}

// WaitBacklog holds the caller while more than limit items of class wait
// for a worker, at most max: acceptance's back-pressure, so that the CPU
// goes to delivery when the workers fall behind. It reports whether the
// backlog came down to limit in time. limit ≤ 0 never waits.
func (q *Queue) WaitBacklog(ctx context.Context, class string, limit int, max time.Duration) bool {
	if limit <= 0 {
		return true
	}
	_, ok := q.lanes.waitReady(ctx, class, limit, max, q.now)
	return ok
}

// rateTake reports whether one more message fits in rc's window and returns
// the entry that counts it, for the caller to write once every window of the
// message fits. The window is fixed (starts at the first message) and
// expires by TTL.
func rateTake(tx *Tx, rc RateCheck, now time.Time) (*badger.Entry, bool, error) {
	if rc.Limit <= 0 || rc.Window <= 0 {
		return nil, true, nil
	}
	k := key(pRate, rc.Key)
	v, err := getValue(tx.Txn, k)
	if err != nil {
		return nil, false, err
	}
	var start time.Time
	var n uint32
	if len(v) == 12 {
		start = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
		n = binary.BigEndian.Uint32(v[8:])
	}
	if start.IsZero() || now.Sub(start) >= rc.Window {
		start, n = now, 0
	}
	if int(n) >= rc.Limit {
		return nil, false, nil
	}
	b := make([]byte, 12)
	binary.BigEndian.PutUint64(b, uint64(start.UnixNano()))
	binary.BigEndian.PutUint32(b[8:], n+1)
	ttl := rc.Window - now.Sub(start)
	if ttl < time.Second {
		ttl = time.Second
	}
	return entry(k, b, ttl), true, nil
}

func getValue(txn *badger.Txn, k []byte) ([]byte, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func u32(n uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, n)
	return b
}

// Suppression is an address on a suppression list.
type Suppression struct {
	List    string    `json:"list"`
	Address string    `json:"address"`
	Reason  string    `json:"reason"`
	Time    time.Time `json:"time"`
	By      string    `json:"by,omitempty"` // who put it there, when a person did
}

// Suppressed returns the entries for addr on the given lists.
func (q *Queue) Suppressed(addr string, lists []string) ([]Suppression, error) {
	var out []Suppression
	addr = strings.ToLower(addr)
	err := q.store.View(func(txn *badger.Txn) error {
		for _, l := range lists {
			v, err := getValue(txn, key(pSuppress, l+"/"+addr))
			if err != nil {
				return err
			}
			if v != nil {
				s := Suppression{List: l, Address: addr}
				if err := jsonUnmarshal(v, &s); err != nil {
					return err
				}
				out = append(out, s)
			}
		}
		return nil
	})
	return out, err
}

// Suppress puts addr on list within tx.
func Suppress(tx *Tx, s Suppression) error {
	s.Address = strings.ToLower(s.Address)
	b, err := jsonMarshal(s)
	if err != nil {
		return err
	}
	if err := tx.Set(key(pSuppress, s.List+"/"+s.Address), b); err != nil {
		return err
	}
	f := map[string]string{"list": s.List, "reason": s.Reason}
	if s.By != "" {
		f["by"] = s.By
	}
	if h := tx.store.OnSuppress; h != nil {
		tx.After(func() { h(s, false) })
	}
	return tx.Audit(&audit.Event{Time: s.Time, Type: audit.Suppressed, Recipient: s.Address, Fields: f})
}

// ApplySuppression writes a change made on another node (cluster mode):
// s put on its list, or taken off when removed, with an audit event naming
// the node. A change already applied is not written again.
func (q *Queue) ApplySuppression(s Suppression, removed bool, from string) error {
	s.Address = strings.ToLower(s.Address)
	return q.store.Update(func(tx *Tx) error {
		k := key(pSuppress, s.List+"/"+s.Address)
		v, err := getValue(tx.Txn, k)
		if err != nil {
			return err
		}
		f := map[string]string{"list": s.List, "via": "cluster", "node": from}
		if removed {
			if v == nil {
				return nil
			}
			// An add here after the removal there (by the nodes' clocks)
			// stands: the later change wins, as it does for two adds.
			var cur Suppression
			if jsonUnmarshal(v, &cur) == nil && !s.Time.IsZero() && cur.Time.After(s.Time) {
				return nil
			}
			if err := tx.Delete(k); err != nil {
				return err
			}
			f["action"], f["by"] = "removed", s.By
			return tx.Audit(&audit.Event{Time: q.now(), Type: audit.Suppressed, Recipient: s.Address, Fields: f})
		}
		if v != nil {
			var cur Suppression
			if jsonUnmarshal(v, &cur) == nil && !cur.Time.Before(s.Time) {
				return nil // this one, or a later one, is here already
			}
		}
		b, err := jsonMarshal(s)
		if err != nil {
			return err
		}
		if err := tx.Set(k, b); err != nil {
			return err
		}
		f["reason"] = s.Reason
		if s.By != "" {
			f["by"] = s.By
		}
		return tx.Audit(&audit.Event{Time: q.now(), Type: audit.Suppressed, Recipient: s.Address, Fields: f})
	})
}

// AddSuppression puts addr on list.
func (q *Queue) AddSuppression(s Suppression) error {
	if s.Time.IsZero() {
		s.Time = q.now()
	}
	return q.store.Update(func(tx *Tx) error { return Suppress(tx, s) })
}

// RemoveSuppression takes addr off list, on record with who did it; it
// reports whether the address was there.
func (q *Queue) RemoveSuppression(list, addr, by string) (bool, error) {
	found := false
	err := q.store.Update(func(tx *Tx) error {
		k := key(pSuppress, list+"/"+strings.ToLower(addr))
		v, err := getValue(tx.Txn, k)
		if err != nil || v == nil {
			found = false
			return err
		}
		found = true
		if err := tx.Delete(k); err != nil {
			return err
		}
		if h := tx.store.OnSuppress; h != nil {
			removed := Suppression{List: list, Address: strings.ToLower(addr), By: by, Time: q.now()}
			tx.After(func() { h(removed, true) })
		}
		return tx.Audit(&audit.Event{Time: q.now(), Type: audit.Suppressed, Recipient: strings.ToLower(addr),
			Fields: map[string]string{"list": list, "action": "removed", "by": by}})
	})
	return found, err
}

// ListSuppressions returns the entries of list ("" for all lists).
func (q *Queue) ListSuppressions(list string) ([]Suppression, error) {
	var out []Suppression
	prefix := pSuppress
	if list != "" {
		prefix = append(append([]byte{}, pSuppress...), list+"/"...)
	}
	err := q.store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var s Suppression
			if err := it.Item().Value(func(v []byte) error { return jsonUnmarshal(v, &s) }); err != nil {
				return err
			}
			out = append(out, s)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		return out[i].List < out[j].List || out[i].List == out[j].List && out[i].Address < out[j].Address
	})
	return out, err
}
