package salesforce

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/audit"
)

// The reset's life in Salesforce: one Latchkey_Reset__c record per queue
// item (one recipient of one message), kept up to date from the audit trail.
//
// Every audit event of a class that is reported is folded, inside the same
// Badger transaction that writes the event, into a per-item state under
// "sfl/r/<id>" and marks the item dirty ("sfl/p/<id>"). So a state change
// and its report commit together or not at all: nothing is lost across a
// crash or an outage of any length. A worker sends the dirty items in
// batches of up to 200 with one sObject Collections upsert by External ID:
// a replay or a retry updates the same record, never a second one, and
// each record carries the item's whole accumulated state, so the order of
// the calls cannot leave an older state on top of a newer one.

// Logical field names, mapped to API names by LifecycleConfig.Fields.
const (
	FieldLatchkeyID      = "latchkey_id"
	FieldMessageID       = "message_id"
	FieldMessageIDHeader = "message_id_header"
	FieldRecipient       = "recipient"
	FieldBackupAddress   = "backup_address"
	FieldBackupUsed      = "backup_used"
	FieldContact         = "contact"
	FieldLead            = "lead"
	FieldUser            = "user"
	FieldCase            = "case"
	FieldRequestedBy     = "requested_by"
	FieldClass           = "class"
	FieldStatus          = "status"
	FieldRequestedAt     = "requested_at"
	FieldTokenExpiresAt  = "token_expires_at"
	FieldSentAt          = "sent_at"
	FieldDeliveredAt     = "delivered_at"
	FieldBouncedAt       = "bounced_at"
	FieldExpiredAt       = "expired_at"
	FieldSupersededAt    = "superseded_at"
	FieldClickedAt       = "clicked_at"
	FieldCompletedAt     = "completed_at"
	FieldEscalatedAt     = "escalated_at"
	FieldBounceType      = "bounce_type"
	FieldBounceReason    = "bounce_reason"
	FieldDeliverySeconds = "delivery_seconds"
	FieldAttempts        = "attempts"
)

// DefaultLifecycleFields maps every logical field to its API name in the
// object shipped in salesforce/metadata.
var DefaultLifecycleFields = map[string]string{
	FieldLatchkeyID: "Latchkey_Id__c", FieldMessageID: "Message_Id__c", FieldMessageIDHeader: "Message_ID_Header__c",
	FieldRecipient: "Recipient__c", FieldBackupAddress: "Backup_Address__c", FieldBackupUsed: "Backup_Used__c",
	FieldContact: "Contact__c", FieldLead: "Lead__c", FieldUser: "User__c", FieldCase: "Case__c",
	FieldRequestedBy: "Requested_By__c", FieldClass: "Class__c", FieldStatus: "Status__c",
	FieldRequestedAt: "Requested_At__c", FieldTokenExpiresAt: "Token_Expires_At__c", FieldSentAt: "Sent_At__c",
	FieldDeliveredAt: "Delivered_At__c", FieldBouncedAt: "Bounced_At__c", FieldExpiredAt: "Expired_At__c",
	FieldSupersededAt: "Superseded_At__c", FieldClickedAt: "Clicked_At__c", FieldCompletedAt: "Completed_At__c",
	FieldEscalatedAt: "Escalated_At__c", FieldBounceType: "Bounce_Type__c", FieldBounceReason: "Bounce_Reason__c",
	FieldDeliverySeconds: "Delivery_Seconds__c", FieldAttempts: "Attempts__c",
}

// LifecycleConfig is the [salesforce.lifecycle] table.
type LifecycleConfig struct {
	// Enabled reports every reset's life to Salesforce.
	Enabled bool `toml:"enabled"`
	// Classes are the policy classes reported (default: reset).
	Classes []string `toml:"classes"`
	// Object is the custom object's API name (default Latchkey_Reset__c).
	Object string `toml:"object"`
	// Fields overrides the API name of a logical field ("status" =
	// "My_Status__c"); an empty name leaves the field out. The External ID
	// (latchkey_id) cannot be left out.
	Fields map[string]string `toml:"fields"`
	// Backup is how the backup address appears: "masked" (j***@example.org,
	// the default), "hashed" (sha256 of the lower-cased address) or "omit".
	Backup string `toml:"backup"`
	// Batch is the most records per call (at most 200, the Collections limit).
	Batch int `toml:"batch"`
	// Interval is how long a change waits to be batched with others.
	Interval time.Duration `toml:"interval"`
	// LimitReserve is the share of the org's daily API allocation left to
	// everything else: past 1-LimitReserve used, calls slow to one per
	// SlowInterval (nothing is dropped; they catch up when the day rolls).
	LimitReserve float64       `toml:"limit_reserve"`
	SlowInterval time.Duration `toml:"slow_interval"`
	// Tasks adds a completed Task on the Contact or Lead when a reset is
	// delivered and when it bounces, so it shows on the record's activity
	// timeline (one more API call per batch of up to 200).
	Tasks bool `toml:"tasks"`
}

// DefaultLifecycleConfig is off, with the shipped object's names.
func DefaultLifecycleConfig() LifecycleConfig {
	return LifecycleConfig{Classes: []string{"reset"}, Object: "Latchkey_Reset__c", Backup: "masked", Batch: 200,
		Interval: time.Second, LimitReserve: 0.1, SlowInterval: time.Minute}
}

// validate reports problems as "salesforce.lifecycle.<key>: …".
func (c LifecycleConfig) validate(bad func(key, format string, a ...any)) {
	if !c.Enabled {
		return
	}
	if len(c.Classes) == 0 {
		bad("lifecycle.classes", "name at least one class, e.g. [\"reset\"]")
	}
	if !apiNameRE.MatchString(c.Object) {
		bad("lifecycle.object", "%q is not an object API name", c.Object)
	}
	for k, v := range c.Fields {
		if _, ok := DefaultLifecycleFields[k]; !ok {
			known := make([]string, 0, len(DefaultLifecycleFields))
			for n := range DefaultLifecycleFields {
				known = append(known, n)
			}
			slices.Sort(known)
			bad("lifecycle.fields", "%q is not a field latchkey writes (%s)", k, strings.Join(known, ", "))
			continue
		}
		if v == "" && k == FieldLatchkeyID {
			bad("lifecycle.fields", "latchkey_id is the External ID every upsert uses; it cannot be left out")
		} else if v != "" && !apiNameRE.MatchString(v) {
			bad("lifecycle.fields", "%s: %q is not a field API name", k, v)
		}
	}
	switch c.Backup {
	case "masked", "hashed", "omit":
	default:
		bad("lifecycle.backup", "must be \"masked\", \"hashed\" or \"omit\", not %q", c.Backup)
	}
	if c.Batch < 1 || c.Batch > collectionLimit {
		bad("lifecycle.batch", "must be from 1 to %d (the sObject Collections limit)", collectionLimit)
	}
	if c.Interval <= 0 || c.Interval > time.Hour {
		bad("lifecycle.interval", "must be positive and at most 1h, e.g. \"1s\"")
	}
	if c.LimitReserve < 0 || c.LimitReserve >= 1 {
		bad("lifecycle.limit_reserve", "must be from 0 to below 1, e.g. 0.1")
	}
	if c.SlowInterval < c.Interval {
		bad("lifecycle.slow_interval", "must be at least interval")
	}
}

// collectionLimit is the sObject Collections limit per request.
const collectionLimit = 200

// Statuses of the Status__c picklist.
const (
	StatusAccepted   = "Accepted"
	StatusSent       = "Sent"
	StatusDeferred   = "Deferred"
	StatusDelivered  = "Delivered"
	StatusBounced    = "Bounced"
	StatusExpired    = "Expired"
	StatusSuperseded = "Superseded"
	StatusSuppressed = "Suppressed"
	StatusDropped    = "Dropped"
	StatusClicked    = "Clicked"
	StatusCompleted  = "Completed"
)

// Key prefixes of the lifecycle in the shared database.
const (
	lcState = "sfl/r/" // sfl/r/<item id> → resetState JSON (TTL lcStateTTL)
	lcDirty = "sfl/p/" // sfl/p/<item id> → "": changed since last sent
	lcDead  = "sfl/d/" // sfl/d/<item id> → DeadRecord JSON: Salesforce refused the record
	lcMsg   = "sfl/m/" // sfl/m/<msg id> → msgFacts JSON (TTL 1h): the received event's Salesforce ids
	lcTask  = "sfl/t/" // sfl/t/<item id> → "": a timeline Task is wanted or its creation unconfirmed
)

// Timeline Task states in resetState.Tasks (else the Task's id).
const (
	taskWanted  = "want"    // to create
	taskPending = "pending" // a create was sent; look it up before sending another
	taskFailed  = "-"       // Salesforce refused it for good
)

// lcStateTTL bounds how long an item's state is kept after its last event:
// a click or completion later than this starts a fresh state (still the
// same record, by External ID).
const lcStateTTL = 30 * 24 * time.Hour

// resetState is what latchkey knows of one reset, in logical field names.
type resetState struct {
	Ver     uint64         `json:"ver"`
	SentVer uint64         `json:"sent_ver"`
	Fields  map[string]any `json:"fields"`
	// RecordID is the Salesforce id of the record, once upserted.
	RecordID string `json:"record_id,omitempty"`
	// Tasks are the timeline Tasks by kind (delivered, bounced).
	Tasks map[string]string `json:"tasks,omitempty"`
}

type msgFacts struct {
	User   string `json:"user,omitempty"`
	Entity string `json:"entity,omitempty"`
}

// DeadRecord is a reset record Salesforce refused for good, with why.
type DeadRecord struct {
	ID     string         `json:"id"`
	Fields map[string]any `json:"fields"`
	Error  string         `json:"error"`
	At     time.Time      `json:"at"`
}

// Lifecycle reports resets to Salesforce. Record is called for every audit
// event inside its transaction; Run sends.
type Lifecycle struct {
	db *badger.DB
	// Update runs a read-modify-write of the lifecycle's keys. It must be
	// serialised with the transactions that call Record (the relay's
	// committer): the database does not detect conflicts, so a write from
	// a second writer could overwrite a state Record has just advanced.
	// NewLifecycle sets it to db.Update, for tools that only read.
	Update  func(fn func(txn *badger.Txn) error) error
	client  *Client
	cfg     LifecycleConfig
	classes map[string]bool
	log     zerolog.Logger
	wake    chan struct{}
	now     func() time.Time

	calls     atomic.Int64 // upsert calls made
	sent      atomic.Int64 // records accepted by Salesforce
	throttled atomic.Bool
	mu        sync.Mutex
	lastErr   string
}

// NewLifecycle returns the reporter; nothing is sent until Run.
func NewLifecycle(db *badger.DB, client *Client, cfg LifecycleConfig, log zerolog.Logger) *Lifecycle {
	l := &Lifecycle{db: db, Update: db.Update, client: client, cfg: cfg, classes: map[string]bool{}, log: log,
		wake: make(chan struct{}, 1), now: time.Now}
	for _, c := range cfg.Classes {
		l.classes[c] = true
	}
	return l
}

// apiName is the API name of a logical field, "" when left out.
func (l *Lifecycle) apiName(logical string) string {
	if v, ok := l.cfg.Fields[logical]; ok {
		return v
	}
	return DefaultLifecycleFields[logical]
}

// sfTime is Salesforce's datetime format.
func sfTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// Record folds ev into its reset's state, in ev's transaction.
func (l *Lifecycle) Record(txn *badger.Txn, ev *audit.Event) error {
	if !l.classes[ev.Class] {
		return nil
	}
	if ev.Type == audit.Received {
		msgID := ev.Fields["queue_id"]
		f := msgFacts{User: ev.Fields["sfdc_user"], Entity: ev.Fields["sfdc_entity"]}
		if msgID == "" || (f.User == "" && f.Entity == "") {
			return nil
		}
		b, _ := json.Marshal(f)
		return txn.SetEntry(badger.NewEntry([]byte(lcMsg+msgID), b).WithTTL(time.Hour))
	}
	if len(ev.QueueID) != 18 {
		return nil // not one recipient's event
	}
	if ev.Type == audit.Dropped && ev.Fields["by"] == "cluster" {
		// Handed over to the cluster node that adopted it while this one
		// was down: that node reports the reset's fate. What this node
		// had not sent is older, and would overwrite it.
		return txn.Delete([]byte(lcDirty + ev.QueueID))
	}
	st, err := l.load(txn, ev.QueueID)
	if err != nil {
		return err
	}
	if !l.apply(txn, st, ev) {
		return nil
	}
	st.Ver++
	if l.cfg.Tasks && (st.Fields[FieldContact] != nil || st.Fields[FieldLead] != nil) {
		for kind, field := range map[string]string{"delivered": FieldDeliveredAt, "bounced": FieldBouncedAt} {
			if _, done := st.Tasks[kind]; !done && st.Fields[field] != nil {
				if st.Tasks == nil {
					st.Tasks = map[string]string{}
				}
				st.Tasks[kind] = taskWanted
				// With a TTL: a reset whose record Salesforce refused never
				// gets a record id, and its Task would wait forever.
				if err := txn.SetEntry(badger.NewEntry([]byte(lcTask+ev.QueueID), nil).WithTTL(lcStateTTL)); err != nil {
					return err
				}
			}
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("salesforce: lifecycle: encode %s: %w", ev.QueueID, err)
	}
	if err := txn.SetEntry(badger.NewEntry([]byte(lcState+ev.QueueID), b).WithTTL(lcStateTTL)); err != nil {
		return fmt.Errorf("salesforce: lifecycle: store %s: %w", ev.QueueID, err)
	}
	return txn.Set([]byte(lcDirty+ev.QueueID), nil)
}

func (l *Lifecycle) load(txn *badger.Txn, id string) (*resetState, error) {
	st := &resetState{Fields: map[string]any{}}
	item, err := txn.Get([]byte(lcState + id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("salesforce: lifecycle: read %s: %w", id, err)
	}
	err = item.Value(func(v []byte) error { return json.Unmarshal(v, st) })
	if err != nil {
		return nil, fmt.Errorf("salesforce: lifecycle: decode %s: %w", id, err)
	}
	if st.Fields == nil {
		st.Fields = map[string]any{}
	}
	return st, nil
}

// final statuses: a later attempt or deferral does not undo them.
var finalStatus = map[string]bool{StatusDelivered: true, StatusBounced: true, StatusExpired: true,
	StatusSuperseded: true, StatusSuppressed: true, StatusDropped: true, StatusClicked: true, StatusCompleted: true}

// setStatus moves the status on, never back: a click does not undo a
// completion, a deferral does not undo a delivery.
func setStatus(f map[string]any, s string) {
	cur, _ := f[FieldStatus].(string)
	switch {
	case cur == StatusCompleted:
		return
	case cur == StatusClicked && s != StatusCompleted:
		return
	case (s == StatusSent || s == StatusDeferred) && finalStatus[cur]:
		return
	}
	f[FieldStatus] = s
}

// apply folds ev into st; false when the event changes nothing reported.
func (l *Lifecycle) apply(txn *badger.Txn, st *resetState, ev *audit.Event) bool {
	f := st.Fields
	at := sfTime(ev.Time)
	once := func(k string) {
		if _, ok := f[k]; !ok {
			f[k] = at
		}
	}
	switch ev.Type {
	case audit.Queued:
		f[FieldLatchkeyID] = ev.QueueID
		f[FieldMessageID] = ev.QueueID[:16]
		if ev.MessageID != "" {
			f[FieldMessageIDHeader] = clipRunes(ev.MessageID, 255)
		}
		if _, ok := f[FieldRecipient]; !ok {
			f[FieldRecipient] = ev.Recipient
		}
		f[FieldClass] = ev.Class
		once(FieldRequestedAt)
		if d, err := time.Parse(time.RFC3339, ev.Fields["deadline"]); err == nil {
			f[FieldTokenExpiresAt] = sfTime(d)
		}
		if _, ok := f[FieldStatus]; !ok {
			f[FieldStatus] = StatusAccepted
		}
		l.person(txn, ev.QueueID[:16], f)
	case audit.Adopted:
		// Cluster mode: this node took the reset over from a dead node,
		// whose record holds what happened before. The adopter's record
		// state starts here: identity and request time (for the delivery
		// time), no status (the dead node's stands until this node's next).
		if ev.Fields["escalation"] != "" {
			return false
		}
		f[FieldLatchkeyID] = ev.QueueID
		f[FieldMessageID] = ev.QueueID[:16]
		if ev.MessageID != "" {
			f[FieldMessageIDHeader] = clipRunes(ev.MessageID, 255)
		}
		if _, ok := f[FieldRecipient]; !ok {
			f[FieldRecipient] = ev.Recipient
		}
		f[FieldClass] = ev.Class
		if a, err := time.Parse(time.RFC3339Nano, ev.Fields["accepted"]); err == nil {
			if _, ok := f[FieldRequestedAt]; !ok {
				f[FieldRequestedAt] = sfTime(a)
			}
		}
		if d, err := time.Parse(time.RFC3339, ev.Fields["deadline"]); err == nil {
			f[FieldTokenExpiresAt] = sfTime(d)
		}
	case audit.Attempt:
		once(FieldSentAt)
		n, _ := f[FieldAttempts].(float64)
		f[FieldAttempts] = n + 1
		setStatus(f, StatusSent)
	case audit.Delivered:
		f[FieldDeliveredAt] = at
		if req, ok := f[FieldRequestedAt].(string); ok {
			if t, err := time.Parse("2006-01-02T15:04:05.000Z", req); err == nil {
				f[FieldDeliverySeconds] = float64(ev.Time.Sub(t).Milliseconds()) / 1000
			}
		}
		setStatus(f, StatusDelivered)
	case audit.Deferred:
		setStatus(f, StatusDeferred)
	case audit.Bounced:
		f[FieldBouncedAt] = at
		typ := "Policy"
		switch {
		case ev.Fields["hard"] == "true":
			typ = "Hard"
		case ev.Fields["permanent"] == "false":
			typ = "Soft"
		}
		f[FieldBounceType] = typ
		reason := strings.TrimSpace(ev.Fields["status"] + " " + ev.Fields["diagnostic"])
		if reason == "" {
			reason = ev.Fields["reason"]
		}
		f[FieldBounceReason] = clipRunes(oneLine(reason), 255)
		setStatus(f, StatusBounced)
	case audit.RetriedBackup:
		f[FieldBackupUsed] = true
		switch l.cfg.Backup {
		case "masked":
			f[FieldBackupAddress] = maskAddress(ev.Recipient)
		case "hashed":
			sum := sha256.Sum256([]byte(strings.ToLower(ev.Recipient)))
			f[FieldBackupAddress] = "sha256:" + hex.EncodeToString(sum[:])
		}
		if orig := ev.Fields["original"]; orig != "" {
			f[FieldRecipient] = orig
		}
	case audit.Expired:
		f[FieldExpiredAt] = at
		setStatus(f, StatusExpired)
	case audit.Superseded:
		f[FieldSupersededAt] = at
		setStatus(f, StatusSuperseded)
	case audit.Suppressed:
		setStatus(f, StatusSuppressed)
	case audit.Dropped:
		setStatus(f, StatusDropped)
	case audit.Escalated:
		once(FieldEscalatedAt)
		if c := ev.Fields["case_id"]; c != "" {
			f[FieldCase] = c
		}
	case audit.Clicked:
		if ev.Fields["duplicate"] == "true" {
			return false
		}
		once(FieldClickedAt)
		setStatus(f, StatusClicked)
	case audit.Completed:
		if ev.Fields["duplicate"] == "true" {
			return false
		}
		once(FieldCompletedAt)
		setStatus(f, StatusCompleted)
	default:
		return false
	}
	return true
}

// person sets the Contact, Lead or User lookup and the requesting user from
// the Salesforce headers of the message (X-SFDC-EntityId, X-SFDC-User), by
// their key prefix: no API call is needed to link the record.
func (l *Lifecycle) person(txn *badger.Txn, msgID string, f map[string]any) {
	item, err := txn.Get([]byte(lcMsg + msgID))
	if err != nil {
		return
	}
	var m msgFacts
	if item.Value(func(v []byte) error { return json.Unmarshal(v, &m) }) != nil {
		return
	}
	if sfIDRE.MatchString(m.Entity) {
		switch m.Entity[:3] {
		case "003":
			f[FieldContact] = m.Entity
		case "00Q":
			f[FieldLead] = m.Entity
		case "005":
			f[FieldUser] = m.Entity
		}
	}
	if sfIDRE.MatchString(m.User) && strings.HasPrefix(m.User, "005") {
		f[FieldRequestedBy] = m.User
	}
}

// maskAddress keeps the first character of the local part and the domain.
func maskAddress(a string) string {
	local, domain, ok := strings.Cut(a, "@")
	if !ok || local == "" {
		return "***"
	}
	return local[:1] + "***@" + domain
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Wake makes the worker send now instead of at the next interval.
func (l *Lifecycle) Wake() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// LifecycleStats is what operations watch.
type LifecycleStats struct {
	Pending   int    `json:"pending"`   // resets with changes not yet in Salesforce
	Dead      int    `json:"dead"`      // records Salesforce refused for good
	Calls     int64  `json:"calls"`     // upsert calls made since start
	Sent      int64  `json:"sent"`      // record writes Salesforce accepted since start
	Throttled bool   `json:"throttled"` // slowed down near the org's API limit
	LastError string `json:"last_error,omitempty"`
}

// Stats counts pending and dead records.
func (l *Lifecycle) Stats() LifecycleStats {
	s := LifecycleStats{Calls: l.calls.Load(), Sent: l.sent.Load(), Throttled: l.throttled.Load()}
	l.mu.Lock()
	s.LastError = l.lastErr
	l.mu.Unlock()
	_ = l.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		for _, p := range []struct {
			prefix string
			n      *int
		}{{lcDirty, &s.Pending}, {lcDead, &s.Dead}} {
			opts.Prefix = []byte(p.prefix)
			it := txn.NewIterator(opts)
			for it.Rewind(); it.Valid(); it.Next() {
				*p.n++
			}
			it.Close()
		}
		return nil
	})
	return s
}

// DeadRecords lists the records Salesforce refused for good, with why.
func (l *Lifecycle) DeadRecords() ([]DeadRecord, error) {
	var out []DeadRecord
	err := l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(lcDead), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var d DeadRecord
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &d) }); err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// Run sends dirty resets until ctx ends.
func (l *Lifecycle) Run(ctx context.Context) error {
	failures := 0
	for {
		wait := l.cfg.Interval
		if l.throttled.Load() {
			wait = l.cfg.SlowInterval
		}
		if failures > 0 {
			wait = l.backoff(failures)
		}
		// A wake cuts the batching interval short, never a back-off or
		// the slow pace near the API limit.
		hold := failures > 0 || l.throttled.Load()
		t := time.NewTimer(wait)
	waiting:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
				break waiting
			case <-l.wake:
				if !hold {
					t.Stop()
					break waiting
				}
			}
		}
		for {
			more, err := l.sendBatch(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, badger.ErrDBClosed) {
				return err
			}
			if err != nil {
				failures++
				l.mu.Lock()
				l.lastErr = clip(err.Error(), 500)
				l.mu.Unlock()
				l.log.Warn().Err(err).Int("failures", failures).Msg("salesforce lifecycle: upsert failed; the records stay queued")
				break
			}
			failures = 0
			if !more || l.throttled.Load() {
				break
			}
		}
		if failures == 0 && l.cfg.Tasks {
			if err := l.sendTasks(ctx); err != nil && ctx.Err() == nil {
				failures++
				l.log.Warn().Err(err).Msg("salesforce lifecycle: timeline Tasks failed; they stay queued")
			}
		}
	}
}

func (l *Lifecycle) backoff(failures int) time.Duration {
	d := l.cfg.Interval
	for i := 0; i < failures && d < 5*time.Minute; i++ {
		d *= 2
	}
	d = min(d, 5*time.Minute)
	return d/2 + rand.N(d/2+1)
}

type dirty struct {
	id string
	st *resetState
}

// sendBatch sends up to Batch dirty resets in one call; more reports that
// the batch was full (others wait now). Records locked or changed during the
// call stay dirty for the next round, one interval later.
func (l *Lifecycle) sendBatch(ctx context.Context) (more bool, err error) {
	var batch []dirty
	err = l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(lcDirty)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if len(batch) == l.cfg.Batch {
				more = true
				return nil
			}
			id := string(it.Item().Key()[len(lcDirty):])
			st, err := l.load(txn, id)
			if err != nil {
				return err
			}
			batch = append(batch, dirty{id, st})
		}
		return nil
	})
	if err != nil || len(batch) == 0 {
		return false, err
	}
	ext := l.apiName(FieldLatchkeyID)
	recs := make([]map[string]any, len(batch))
	for i, d := range batch {
		r := map[string]any{"attributes": map[string]string{"type": l.cfg.Object}, ext: d.id}
		for k, v := range d.st.Fields {
			if k == FieldLatchkeyID {
				continue
			}
			if name := l.apiName(k); name != "" {
				r[name] = v
			}
		}
		recs[i] = r
	}
	l.calls.Add(1)
	results, err := l.client.UpsertCollection(ctx, l.cfg.Object, ext, recs)
	l.checkLimit()
	if err != nil {
		return false, err
	}
	if len(results) != len(batch) {
		return false, fmt.Errorf("salesforce: lifecycle: %d results for %d records", len(results), len(batch))
	}
	now := l.now().UTC()
	err = l.Update(func(txn *badger.Txn) error {
		for i, d := range batch {
			res := results[i]
			if !res.Success && res.retryable() {
				continue // locked: stays dirty, the next round sends it again
			}
			cur, err := l.load(txn, d.id)
			if err != nil {
				return err
			}
			if res.Success {
				l.sent.Add(1)
				if res.ID != "" && cur.RecordID != res.ID {
					cur.RecordID = res.ID
					if err := l.store(txn, d.id, cur); err != nil {
						return err
					}
				}
			} else {
				b, _ := json.Marshal(DeadRecord{ID: d.id, Fields: d.st.Fields, Error: res.errorText(), At: now})
				if err := txn.Set([]byte(lcDead+d.id), b); err != nil {
					return err
				}
				l.log.Error().Str("queue_id", d.id).Str("error", res.errorText()).
					Msg("salesforce lifecycle: Salesforce refused the record; it is kept under the dead records")
			}
			// Changed again while the call ran: stays dirty, sent next round.
			if cur.Ver != d.st.Ver {
				continue
			}
			cur.SentVer = cur.Ver
			if err := l.store(txn, d.id, cur); err != nil {
				return err
			}
			if err := txn.Delete([]byte(lcDirty + d.id)); err != nil {
				return err
			}
		}
		return nil
	})
	return more, err
}

func (l *Lifecycle) store(txn *badger.Txn, id string, st *resetState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("salesforce: lifecycle: encode %s: %w", id, err)
	}
	return txn.SetEntry(badger.NewEntry([]byte(lcState+id), b).WithTTL(lcStateTTL))
}

type taskJob struct {
	id, kind string
	st       *resetState
}

// sendTasks creates the wanted timeline Tasks of resets whose record exists,
// up to 200 in one sObject Collections create. A create is marked pending
// before it is sent; a pending one (the answer was lost, or latchkey
// stopped) is looked up by its reference before it is sent again, so a
// replay never adds a second Task.
func (l *Lifecycle) sendTasks(ctx context.Context) error {
	var jobs []taskJob
	err := l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(lcTask)})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(jobs) < collectionLimit; it.Next() {
			id := string(it.Item().Key()[len(lcTask):])
			st, err := l.load(txn, id)
			if err != nil {
				return err
			}
			if st.RecordID == "" {
				continue // its record is not in Salesforce yet
			}
			for kind, v := range st.Tasks {
				if (v == taskWanted || v == taskPending) && len(jobs) < collectionLimit {
					jobs = append(jobs, taskJob{id, kind, st})
				}
			}
		}
		return nil
	})
	if err != nil || len(jobs) == 0 {
		return err
	}
	var send []taskJob
	found := map[int]string{}
	for i, j := range jobs {
		if j.st.Tasks[j.kind] == taskPending {
			tid, err := l.client.FindByRef(ctx, "Task", taskRef(j.id, j.kind))
			if err != nil {
				return err
			}
			if tid != "" {
				found[i] = tid
				continue
			}
		}
		send = append(send, j)
	}
	if err := l.setTasks(jobs, func(i int, j taskJob) string {
		if tid, ok := found[i]; ok {
			return tid
		}
		return taskPending
	}); err != nil || len(send) == 0 {
		return err
	}
	recs := make([]map[string]any, len(send))
	for i, j := range send {
		recs[i] = l.taskRecord(j)
	}
	l.calls.Add(1)
	results, err := l.client.CreateCollection(ctx, recs)
	if err != nil {
		return err
	}
	return l.setTasks(send, func(i int, j taskJob) string {
		switch r := results[i]; {
		case r.Success:
			return r.ID
		case r.retryable():
			return taskPending
		default:
			l.log.Error().Str("queue_id", j.id).Str("task", j.kind).Str("error", r.errorText()).Msg("salesforce lifecycle: timeline Task refused")
			return taskFailed
		}
	})
}

// setTasks stores each job's new Task state and drops the marker of resets
// with no Task left to create.
func (l *Lifecycle) setTasks(jobs []taskJob, state func(int, taskJob) string) error {
	return l.Update(func(txn *badger.Txn) error {
		touched := map[string]*resetState{}
		for i, j := range jobs {
			cur, ok := touched[j.id]
			if !ok {
				var err error
				if cur, err = l.load(txn, j.id); err != nil {
					return err
				}
				touched[j.id] = cur
			}
			if cur.Tasks == nil {
				cur.Tasks = map[string]string{}
			}
			cur.Tasks[j.kind] = state(i, j)
		}
		for id, cur := range touched {
			if err := l.store(txn, id, cur); err != nil {
				return err
			}
			open := false
			for _, v := range cur.Tasks {
				open = open || v == taskWanted || v == taskPending
			}
			if !open {
				if err := txn.Delete([]byte(lcTask + id)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func taskRef(id, kind string) string { return id + "-" + kind }

// taskRecord is the completed Task of one timeline event.
func (l *Lifecycle) taskRecord(j taskJob) map[string]any {
	f := j.st.Fields
	rcpt, _ := f[FieldRecipient].(string)
	t := TaskRequest{Ref: taskRef(j.id, j.kind), WhatID: j.st.RecordID}
	if c, ok := f[FieldContact].(string); ok {
		t.WhoID = c
	} else if ld, ok := f[FieldLead].(string); ok {
		t.WhoID = ld
	}
	when, _ := f[FieldDeliveredAt].(string)
	switch j.kind {
	case "delivered":
		t.Subject = "Password reset email delivered to " + rcpt
		t.Description = "latchkey delivered the password reset email to " + rcpt + " at " + when + "."
	case "bounced":
		when, _ = f[FieldBouncedAt].(string)
		reason, _ := f[FieldBounceReason].(string)
		t.Subject = "Password reset email bounced at " + rcpt
		t.Description = "The password reset email to " + rcpt + " bounced at " + when + ": " + reason
	}
	body := taskBody(t)
	body["Status"], body["Priority"], body["TaskSubtype"] = "Completed", "Normal", "Email"
	if len(when) >= 10 {
		body["ActivityDate"] = when[:10]
	}
	rec := map[string]any{"attributes": map[string]string{"type": "Task"}}
	for k, v := range body {
		rec[k] = v
	}
	return rec
}

// CreateCollection creates up to 200 records (each naming its type in
// attributes) in one call (POST /composite/sobjects, allOrNone false).
func (c *Client) CreateCollection(ctx context.Context, recs []map[string]any) ([]SaveResult, error) {
	if len(recs) == 0 || len(recs) > collectionLimit {
		return nil, fmt.Errorf("salesforce: create: %d records; a call takes 1 to %d", len(recs), collectionLimit)
	}
	var out []SaveResult
	if err := c.do(ctx, "POST", "/composite/sobjects", map[string]any{"allOrNone": false, "records": recs}, &out); err != nil {
		return nil, fmt.Errorf("salesforce: create %d records: %w", len(recs), err)
	}
	if len(out) != len(recs) {
		return nil, fmt.Errorf("salesforce: create: %d results for %d records", len(out), len(recs))
	}
	return out, nil
}

// checkLimit slows the worker down once the org has used more than
// 1-LimitReserve of its daily allocation, and says so once.
func (l *Lifecycle) checkLimit() {
	used, limit := l.client.APIUsage()
	if limit <= 0 {
		return
	}
	over := float64(used) >= float64(limit)*(1-l.cfg.LimitReserve)
	if l.throttled.Swap(over) != over {
		if over {
			l.log.Warn().Int("api_used", used).Int("api_limit", limit).Dur("every", l.cfg.SlowInterval).
				Msg("salesforce lifecycle: near the org's daily API limit; slowed down (nothing is dropped)")
		} else {
			l.log.Info().Int("api_used", used).Int("api_limit", limit).Msg("salesforce lifecycle: API usage back under the reserve; full speed")
		}
	}
}

// SaveResult is one record's answer in a Collections call.
type SaveResult struct {
	ID      string `json:"id"`
	Success bool   `json:"success"`
	Created bool   `json:"created"`
	Errors  []struct {
		StatusCode string   `json:"statusCode"`
		Message    string   `json:"message"`
		Fields     []string `json:"fields"`
	} `json:"errors"`
}

// retryable: a row lock held by another transaction passes.
func (r SaveResult) retryable() bool {
	for _, e := range r.Errors {
		if e.StatusCode == "UNABLE_TO_LOCK_ROW" {
			return true
		}
	}
	return false
}

func (r SaveResult) errorText() string {
	var parts []string
	for _, e := range r.Errors {
		p := e.StatusCode + ": " + e.Message
		if len(e.Fields) > 0 {
			p += " (" + strings.Join(e.Fields, ", ") + ")"
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "refused without an error"
	}
	return clip(strings.Join(parts, "; "), 1000)
}

// UpsertCollection upserts up to 200 records of obj by the External ID
// field ext in one call (PATCH /composite/sobjects/{obj}/{ext}, allOrNone
// false): one result per record, in order.
func (c *Client) UpsertCollection(ctx context.Context, obj, ext string, recs []map[string]any) ([]SaveResult, error) {
	if !apiNameRE.MatchString(obj) || !apiNameRE.MatchString(ext) {
		return nil, fmt.Errorf("salesforce: upsert: %q.%q is not an object and field API name", obj, ext)
	}
	if len(recs) == 0 || len(recs) > collectionLimit {
		return nil, fmt.Errorf("salesforce: upsert: %d records; a call takes 1 to %d", len(recs), collectionLimit)
	}
	var out []SaveResult
	err := c.do(ctx, "PATCH", "/composite/sobjects/"+obj+"/"+ext, map[string]any{"allOrNone": false, "records": recs}, &out)
	if err != nil {
		return nil, fmt.Errorf("salesforce: upsert %d %s: %w", len(recs), obj, err)
	}
	return out, nil
}
