package salesforce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"
)

// Escalation is an undeliverable reset to report to Salesforce.
type Escalation struct {
	ID         string    // unique, 1-64 of [A-Za-z0-9._-]; the Case reference
	QueueID    string    // the relay's queue id of the message
	Class      string    // policy class, e.g. "reset"
	Recipient  string    // the address that could not be reached
	Trigger    string    // "hard_bounce" | "expired" | "suppressed"
	Reason     string    // bounce reason in words
	Status     string    // enhanced status code, e.g. "5.1.1"
	RemoteMTA  string    // the server that refused it
	Diagnostic string    // the remote server's text
	MessageID  string    // Message-ID of the reset
	AcceptedAt time.Time // when the relay accepted the message
	FailedAt   time.Time // when it was found undeliverable
	// Backup is the backup address tried (masked), and BackupDiagnostic
	// what its server answered, when the reset bounced there too.
	Backup           string `json:",omitempty"`
	BackupDiagnostic string `json:",omitempty"`
	// RecordOnly records the bounce on the person's record without a
	// Case: the reset reached a backup address, support need not act.
	RecordOnly bool `json:",omitempty"`
}

// Triggers of an escalation.
const (
	TriggerHardBounce = "hard_bounce"
	// TriggerPolicyBounce is a permanent refusal of the message (policy,
	// spam, content, authentication), not of the address.
	TriggerPolicyBounce = "policy_bounce"
	TriggerExpired      = "expired"
	TriggerSuppressed   = "suppressed"
	// TriggerBounceRecord records a hard bounce on the person's record
	// (RecordOnly): the reset was delivered to a backup address.
	TriggerBounceRecord = "bounce_record"
)

// Outbox states.
const (
	StatePending = "pending"
	StateDead    = "dead"
	StateDone    = "done"
)

// Item is an escalation with its delivery state, as stored.
type Item struct {
	Escalation
	State     string    `json:"state"`
	Attempts  int       `json:"attempts"`
	NextTry   time.Time `json:"next_try"`
	LastError string    `json:"last_error,omitempty"`
	// Progress, so a retry resumes after the steps already done.
	CaseID         string `json:"case_id,omitempty"`
	PersonObject   string `json:"person_object,omitempty"`
	PersonID       string `json:"person_id,omitempty"`
	PersonLooked   bool   `json:"person_looked,omitempty"`
	BounceRecorded bool   `json:"bounce_recorded,omitempty"`
	TaskID         string `json:"task_id,omitempty"`
	// HandedTo is the cluster node that took the escalation over while
	// this one was down (state done, nothing sent from here).
	HandedTo  string    `json:"handed_to,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// OutboxOptions tunes the outbox; zero values take the defaults.
type OutboxOptions struct {
	// MaxAttempts before dead-lettering; default the client's max_attempts.
	MaxAttempts int
	// InitialBackoff is the wait after the first failure (default 30s); it
	// doubles with each attempt up to MaxBackoff (default 30m).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// Poll is how often the worker looks for due items without a Wake
	// (default 1m); it only matters for items Put without a Wake.
	Poll time.Duration
	// DoneRetention is how long finished items stay listable (default 30
	// days); Badger drops them afterwards.
	DoneRetention time.Duration
	// OnDone is called after an escalation's Case exists (and the bounce is
	// recorded); OnDead after it is moved to the dead letters, with the id
	// of the Case if one was opened before a later step (bounce fields,
	// Task) failed for good. Both run on the worker goroutine and must not
	// block for long.
	OnDone func(e Escalation, caseID string)
	OnDead func(e Escalation, caseID string, err error)
	// OnRetry is called after Retry moved a dead escalation back to
	// pending (the cluster shares it again).
	OnRetry func(e Escalation)
	// Log receives one line per failed attempt; nil means no logging.
	Log *zerolog.Logger
}

// Outbox is the durable queue of escalations, stored in Badger under "sfo/".
type Outbox struct {
	db     *badger.DB
	client *Client
	opts   OutboxOptions
	log    zerolog.Logger
	wake   chan struct{}
	now    func() time.Time
	runMu  sync.Mutex
}

const outboxPrefix = "sfo/"

func stateKey(state, id string) []byte { return []byte(outboxPrefix + state + "/" + id) }

// NewOutbox returns an outbox over db. Nothing runs until Run.
func NewOutbox(db *badger.DB, client *Client, opts OutboxOptions) *Outbox {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 12
		if client != nil && client.cfg.MaxAttempts > 0 {
			opts.MaxAttempts = client.cfg.MaxAttempts
		}
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = 30 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Minute
	}
	if opts.MaxBackoff < opts.InitialBackoff {
		opts.MaxBackoff = opts.InitialBackoff
	}
	if opts.Poll <= 0 {
		opts.Poll = time.Minute
	}
	if opts.DoneRetention <= 0 {
		opts.DoneRetention = 30 * 24 * time.Hour
	}
	o := &Outbox{db: db, client: client, opts: opts, log: zerolog.Nop(), wake: make(chan struct{}, 1), now: time.Now}
	if opts.Log != nil {
		o.log = *opts.Log
	}
	return o
}

// Put stores e as pending inside the caller's transaction, so it commits
// atomically with the bounce that caused it. Putting an id that is already
// stored, in any state, does nothing. Call Wake after the commit to send it
// at once.
func (o *Outbox) Put(txn *badger.Txn, e Escalation) error {
	_, err := o.Add(txn, e)
	return err
}

// Add is Put, reporting whether e was new (and so stored).
func (o *Outbox) Add(txn *badger.Txn, e Escalation) (bool, error) {
	if !refRE.MatchString(e.ID) {
		return false, fmt.Errorf("salesforce: outbox: escalation id %q must be 1-64 of [A-Za-z0-9._-]", clip(e.ID, 80))
	}
	if err := checkAddress(e.Recipient); err != nil {
		return false, fmt.Errorf("salesforce: outbox: escalation %s: %w", e.ID, err)
	}
	for _, st := range []string{StatePending, StateDead, StateDone} {
		_, err := txn.Get(stateKey(st, e.ID))
		if err == nil {
			return false, nil
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return false, fmt.Errorf("salesforce: outbox: %w", err)
		}
	}
	now := o.now().UTC()
	return true, o.write(txn, &Item{Escalation: e, State: StatePending, CreatedAt: now, UpdatedAt: now})
}

func (o *Outbox) write(txn *badger.Txn, it *Item) error {
	b, err := json.Marshal(it)
	if err != nil {
		return fmt.Errorf("salesforce: outbox: encode %s: %w", it.ID, err)
	}
	e := badger.NewEntry(stateKey(it.State, it.ID), b)
	if it.State == StateDone {
		e = e.WithTTL(o.opts.DoneRetention)
	}
	if err := txn.SetEntry(e); err != nil {
		return fmt.Errorf("salesforce: outbox: store %s: %w", it.ID, err)
	}
	return nil
}

// Wake makes the worker look for due items now.
func (o *Outbox) Wake() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// List returns the items in state (pending, dead or done), oldest first.
// An entry that cannot be decoded is logged and skipped, so that one bad
// value cannot stop the worker, or the listing, for every other escalation.
func (o *Outbox) List(state string) ([]Item, error) {
	switch state {
	case StatePending, StateDead, StateDone:
	default:
		return nil, fmt.Errorf("salesforce: outbox: unknown state %q (pending, dead or done)", state)
	}
	var items []Item
	err := o.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		prefix := stateKey(state, "")
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			var item Item
			var bad error
			err := it.Item().Value(func(v []byte) error { bad = json.Unmarshal(v, &item); return nil })
			if err != nil {
				return fmt.Errorf("salesforce: outbox: read %s: %w", it.Item().Key(), err)
			}
			id := string(it.Item().Key()[len(prefix):])
			if bad == nil && item.ID != id {
				bad = fmt.Errorf("holds escalation %q", clip(item.ID, 80))
			}
			if bad != nil {
				o.log.Error().Err(bad).Str("key", clip(string(it.Item().Key()), 120)).Msg("salesforce outbox: skipping an unreadable entry")
				continue
			}
			items = append(items, item)
		}
		return nil
	})
	sort.SliceStable(items, func(i, j int) bool { return items[i].CreatedAt.Before(items[j].CreatedAt) })
	return items, err
}

// Stats counts pending and dead items.
func (o *Outbox) Stats() (pending, dead int) {
	_ = o.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for _, st := range []string{StatePending, StateDead} {
			prefix := stateKey(st, "")
			for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
				if st == StatePending {
					pending++
				} else {
					dead++
				}
			}
		}
		return nil
	})
	return pending, dead
}

// Retry moves a dead item back to pending with a fresh attempt count.
func (o *Outbox) Retry(id string) error {
	var esc Escalation
	err := o.db.Update(func(txn *badger.Txn) error {
		it, err := getItem(txn, StateDead, id)
		if err != nil {
			return err
		}
		esc = it.Escalation
		if err := txn.Delete(stateKey(StateDead, id)); err != nil {
			return err
		}
		it.State, it.Attempts, it.NextTry, it.UpdatedAt = StatePending, 0, time.Time{}, o.now().UTC()
		return o.write(txn, it)
	})
	if err != nil {
		return fmt.Errorf("salesforce: outbox: retry %s: %w", id, err)
	}
	if o.opts.OnRetry != nil {
		o.opts.OnRetry(esc)
	}
	o.Wake()
	return nil
}

// HandOver ends a pending item as done without sending it: node, which
// took it over in the cluster while this node was down, sends it.
func (o *Outbox) HandOver(id, node string) error {
	err := o.db.Update(func(txn *badger.Txn) error {
		it, err := getItem(txn, StatePending, id)
		if err != nil {
			return err
		}
		if err := txn.Delete(stateKey(StatePending, id)); err != nil {
			return err
		}
		it.State, it.HandedTo, it.UpdatedAt = StateDone, node, o.now().UTC()
		return o.write(txn, it)
	})
	if err != nil {
		return fmt.Errorf("salesforce: outbox: hand over %s: %w", id, err)
	}
	return nil
}

func getItem(txn *badger.Txn, state, id string) (*Item, error) {
	bi, err := txn.Get(stateKey(state, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("no %s item %q", state, id)
	}
	if err != nil {
		return nil, err
	}
	var it Item
	if err := bi.Value(func(v []byte) error { return json.Unmarshal(v, &it) }); err != nil {
		return nil, err
	}
	return &it, nil
}

// Run sends due items until ctx ends, one at a time: escalations are rare
// and one worker keeps the org's API usage predictable. It returns nil when
// ctx ends, or the storage error that stopped it.
func (o *Outbox) Run(ctx context.Context) error {
	o.runMu.Lock()
	defer o.runMu.Unlock()
	for {
		next, err := o.runDue(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, badger.ErrDBClosed) {
				return fmt.Errorf("salesforce: outbox: %w", err)
			}
			o.log.Error().Err(err).Msg("salesforce outbox")
		}
		wait := o.opts.Poll
		if !next.IsZero() {
			if d := next.Sub(o.now()); d < wait {
				wait = d
			}
		}
		if wait < 0 {
			wait = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-o.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// runDue sends every due pending item once and returns when the earliest
// remaining one is due (zero when none).
func (o *Outbox) runDue(ctx context.Context) (time.Time, error) {
	items, err := o.List(StatePending)
	if err != nil {
		return time.Time{}, err
	}
	var next time.Time
	for i := range items {
		if ctx.Err() != nil {
			return time.Time{}, nil
		}
		it := &items[i]
		if it.NextTry.After(o.now()) {
			if next.IsZero() || it.NextTry.Before(next) {
				next = it.NextTry
			}
			continue
		}
		if err := o.attempt(ctx, it); err != nil {
			return time.Time{}, err
		}
		if it.State == StatePending && (next.IsZero() || it.NextTry.Before(next)) {
			next = it.NextTry
		}
	}
	return next, nil
}

// save stores it in its (possibly new) state, removing it from pending when
// it left that state.
func (o *Outbox) save(it *Item) error {
	it.UpdatedAt = o.now().UTC()
	return o.db.Update(func(txn *badger.Txn) error {
		if it.State != StatePending {
			if err := txn.Delete(stateKey(StatePending, it.ID)); err != nil {
				return err
			}
		}
		return o.write(txn, it)
	})
}

// attempt runs the steps not done yet for one item. Only storage errors are
// returned; Salesforce errors are recorded on the item.
func (o *Outbox) attempt(ctx context.Context, it *Item) error {
	err := o.send(ctx, it)
	if err == nil {
		it.State = StateDone
		if err := o.save(it); err != nil {
			return err
		}
		if o.opts.OnDone != nil {
			o.opts.OnDone(it.Escalation, it.CaseID)
		}
		return nil
	}
	if ctx.Err() != nil {
		// Shutting down is not the item's fault: keep the attempt count.
		return o.save(it)
	}
	it.Attempts++
	it.LastError = clip(err.Error(), 1000)
	o.log.Warn().Str("escalation", it.ID).Int("attempt", it.Attempts).Err(err).Msg("salesforce escalation failed")
	if !IsRetryable(err) || it.Attempts >= o.opts.MaxAttempts {
		it.State = StateDead
		if err := o.save(it); err != nil {
			return err
		}
		if o.opts.OnDead != nil {
			o.opts.OnDead(it.Escalation, it.CaseID, err)
		}
		return nil
	}
	it.NextTry = o.now().Add(o.backoff(it.Attempts)).UTC()
	return o.save(it)
}

// backoff doubles the wait with each attempt and draws it between half and
// all of that, so that items failed together do not retry together.
func (o *Outbox) backoff(attempts int) time.Duration {
	d := o.opts.InitialBackoff
	for i := 1; i < attempts && d < o.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, o.opts.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// send runs the remaining steps, storing progress after each so that a
// restart resumes where it stopped. The first try costs, besides the
// (cached) person look-up, two calls: the query for a Case already opened
// under the reference, and one Composite call that opens the Case, records
// the bounce and adds the Task. A retry redoes only what is not done, and
// looks a Task up by its reference before creating it, so a lost answer
// never makes a second Case or Task.
func (o *Outbox) send(ctx context.Context, it *Item) error {
	c := o.client
	if c == nil {
		return errors.New("salesforce: outbox has no client")
	}
	if !it.PersonLooked {
		p, err := c.LookupPerson(ctx, it.Recipient)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		default:
			it.PersonObject, it.PersonID = p.Object, p.ID
		}
		it.PersonLooked = true
	}
	person := &Person{Object: it.PersonObject, ID: it.PersonID, Email: it.Recipient}
	wantBounce := c.cfg.SetBounceFields && it.PersonID != "" && !it.BounceRecorded
	at := it.FailedAt
	if at.IsZero() {
		at = it.UpdatedAt
	}
	if it.RecordOnly {
		// The reset reached a backup address: no Case, but Salesforce must
		// still learn that the primary address bounces.
		if wantBounce {
			if err := c.RecordBounce(ctx, person, bounceReason(it.Escalation), at); err != nil {
				if IsRetryable(err) {
					return err
				}
				it.LastError = clip("bounce fields not recorded: "+err.Error(), 1000)
			}
		}
		it.BounceRecorded = true
		return nil
	}
	task := func() *TaskRequest {
		if !c.cfg.CreateTask || it.TaskID != "" {
			return nil
		}
		return &TaskRequest{
			Ref:         it.ID,
			Subject:     "Reach " + it.Recipient + ": password reset undeliverable",
			Description: CaseFromEscalation(it.Escalation).Description,
			WhoID:       it.PersonID,
			WhatID:      it.CaseID,
		}
	}
	if it.CaseID == "" {
		id, err := c.FindByRef(ctx, "Case", it.ID)
		if err != nil {
			return err
		}
		it.CaseID = id
	}
	if it.CaseID == "" {
		req := CaseFromEscalation(it.Escalation)
		if strings.EqualFold(it.PersonObject, "Contact") {
			req.ContactID = it.PersonID
		}
		plan := EscalationPlan{Case: req, Reason: bounceReason(it.Escalation), At: at, Task: task()}
		if wantBounce {
			plan.Bounce = person
		}
		res, err := c.Escalate(ctx, plan)
		if err != nil {
			return err
		}
		if res.BounceDone {
			it.BounceRecorded = true
		} else if res.BounceErr != nil && !IsRetryable(res.BounceErr) {
			it.LastError = clip("bounce fields not recorded: "+res.BounceErr.Error(), 1000)
			it.BounceRecorded = true
		}
		if res.CaseErr != nil {
			if err := o.save(it); err != nil {
				return err
			}
			return res.CaseErr
		}
		it.CaseID = res.CaseID
		switch {
		case res.TaskID != "":
			it.TaskID = res.TaskID
		case res.TaskRan && res.TaskErr != nil && !IsRetryable(res.TaskErr):
			it.LastError = clip("task not created: "+res.TaskErr.Error(), 1000)
			it.TaskID = "-"
		}
		if err := o.save(it); err != nil {
			return err
		}
	}
	// What is left after a failed step or a replay, one call each.
	if c.cfg.SetBounceFields && it.PersonID != "" && !it.BounceRecorded {
		err := c.RecordBounce(ctx, person, bounceReason(it.Escalation), at)
		if err != nil && IsRetryable(err) {
			return err
		}
		if err != nil {
			// The Case, which is what matters, exists: note the
			// refusal instead of dead-lettering the escalation.
			it.LastError = clip("bounce fields not recorded: "+err.Error(), 1000)
		}
		it.BounceRecorded = true
	}
	if t := task(); t != nil {
		id, err := c.CreateTask(ctx, *t)
		if err != nil && IsRetryable(err) {
			return err
		}
		if err != nil {
			it.LastError = clip("task not created: "+err.Error(), 1000)
			id = "-"
		}
		it.TaskID = id
	}
	return nil
}

func bounceReason(e Escalation) string {
	parts := []string{}
	for _, s := range []string{e.Status, e.Reason, e.Diagnostic} {
		if s = strings.TrimSpace(s); s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return e.Trigger
	}
	return strings.Join(parts, " ")
}

var triggerWords = map[string]string{
	TriggerHardBounce:   "hard bounce",
	TriggerPolicyBounce: "refused by the recipient's server",
	TriggerExpired:      "expired undelivered",
	TriggerSuppressed:   "not sent: address suppressed",
	TriggerBounceRecord: "hard bounce, delivered to the backup address",
}

// CaseFromEscalation builds the Case for e: a subject naming the recipient
// and what happened, and a description with everything support needs to act.
func CaseFromEscalation(e Escalation) CaseRequest {
	what := triggerWords[e.Trigger]
	if what == "" {
		what = e.Trigger
	}
	var d strings.Builder
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&d, "%s: %s\n", k, v)
		}
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(&d, "A %s email to %s could not be delivered (%s). The user may be locked out; reach them another way.\n\n",
		orDefault(e.Class, "password reset"), e.Recipient, what)
	line("Recipient", e.Recipient)
	line("Trigger", e.Trigger)
	line("Status code", e.Status)
	line("Reason", e.Reason)
	line("Remote server", e.RemoteMTA)
	line("Remote server said", e.Diagnostic)
	line("Backup address tried", e.Backup)
	line("Backup address's server said", e.BackupDiagnostic)
	line("Accepted at", ts(e.AcceptedAt))
	line("Failed at", ts(e.FailedAt))
	line("Queue id", e.QueueID)
	line("Message-ID", e.MessageID)
	line("Escalation id", e.ID)
	return CaseRequest{
		Ref:           e.ID,
		Subject:       what + ": " + orDefault(e.Class, "reset") + " to " + e.Recipient,
		Description:   d.String(),
		SuppliedEmail: e.Recipient,
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
