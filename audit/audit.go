// Package audit keeps latchkey's append-only, hash-chained trail of every
// message's lifecycle (above all every password reset's), for SOC 2, ISO 27001
// and HIPAA auditors.
//
// The trail lives in the relay's one Badger database, beside the queue, so
// that a state change and its audit event commit in the same transaction:
//
//  1. The relay's committer goroutine calls [Log.Mark], then [Log.Append] for
//     each event of a batch inside the batch's *badger.Txn, then commits.
//     If the commit fails it calls [Log.Rollback] with the mark, so the
//     in-memory chain head matches what is on disk again.
//  2. Each event gets the next sequence number, the previous event's hash as
//     Prev, and Hash = SHA-256 of a canonical encoding of the event including
//     Prev. It is stored under a/e/<big-endian seq> as that canonical
//     encoding followed by the hash (exports are JSON or CSV), with index keys
//     a/q/<queue id>/<seq> and a/m/<Message-ID>/<seq>. A signed chain head
//     (a/h) is rewritten in the same transaction, so that truncating the tail
//     or re-hashing a rewritten chain is detected.
//  3. [Show], [Query] and [Export] read the trail; [Verify] walks the chain and
//     names every changed, inserted or missing event; [Prune] deletes events
//     older than the retention cutoff and leaves an HMAC-signed checkpoint
//     (a/c/<seq>) so the rest stays verifiable.
//
// No secrets are stored: message bodies are recorded as [BodyDigest] and the
// links in them as keyed hashes ([Log.URLHashes]), enough to prove which link
// was sent and useless to anyone reading the database. Any http(s) URL found
// in an event's Fields values is replaced by its keyed hash before storing.
package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"
)

// Event types, one per step of a message's life.
const (
	Received      = "received"
	Signed        = "signed"
	Queued        = "queued"
	Attempt       = "attempt"
	Delivered     = "delivered"
	Deferred      = "deferred"
	Bounced       = "bounced"
	Superseded    = "superseded"
	Deduplicated  = "deduplicated"
	Expired       = "expired"
	RetriedBackup = "retried_backup"
	Suppressed    = "suppressed"
	Escalated     = "escalated"
	Dropped       = "dropped"
	Retried       = "retried" // an operator made a queued item due now
	Clicked       = "clicked"
	Completed     = "completed" // the user finished the reset (reported by the app or a Salesforce Flow)
	RateLimited   = "rate_limited"
	Rejected      = "rejected"
	// Adopted is written by the node that took over a dead node's item
	// (cluster mode), with the node it came from.
	Adopted = "adopted"
	// Integrity is written by the relay itself when it finds the trail
	// tampered with at start (problem=unsigned_tail: events after the
	// signed chain head); Verify reports what it names.
	Integrity = "integrity"
)

// Types lists every event type, for callers that check a type a person typed.
var Types = []string{Received, Signed, Queued, Attempt, Delivered, Deferred, Bounced, Superseded, Deduplicated,
	Expired, RetriedBackup, Suppressed, Escalated, Dropped, Retried, Clicked, Completed, RateLimited, Rejected, Adopted, Integrity}

// Key prefixes inside the shared Badger database.
const (
	prefixEvent      = "a/e/"
	prefixQueue      = "a/q/"
	prefixMsgID      = "a/m/"
	prefixCheckpoint = "a/c/"
	keyHead          = "a/h"
	// prefixMinute indexes time: a/t/<unix minute> → the first sequence
	// number written in that minute, so a query for a time window seeks
	// instead of reading the whole chain. keyMinuteStart holds the first
	// sequence number the index covers (older events predate it).
	prefixMinute   = "a/t/"
	keyMinuteStart = "a/ts"
)

// MinKeyLen is the shortest HMAC key Open accepts: a shorter one would make
// URL hashes guessable.
const MinKeyLen = 16

var (
	// ErrNotFound is returned by Show when no event names the id.
	ErrNotFound = errors.New("audit: no events for this id")
	// ErrBadKey is returned by Open when the stored chain head was signed with
	// another key (a misconfigured key, or tampering).
	ErrBadKey = errors.New("audit: chain head signature does not match the key")
)

// Event is one step of one message's life. Its JSON field names are stable:
// seq, time, type, queue_id, message_id, class, recipient, sender, fields,
// prev, hash (Prev and Hash as lower-case hex).
type Event struct {
	Seq       uint64
	Time      time.Time
	Type      string
	QueueID   string
	MessageID string
	Class     string
	Recipient string
	Sender    string
	// Fields holds the details of the step, e.g. client_ip, auth_user, tls,
	// sfdc_org, sfdc_user, sfdc_entity, deadline, domain, selectors, mx, ip,
	// reply, code, enhanced, latency_ms, permanent, hard, reason, status, by,
	// case_id, body_sha256, url_hashes. Never a secret.
	Fields map[string]string
	Prev   []byte
	Hash   []byte
}

// Log appends events to the chain. It is NOT safe for concurrent use: the
// relay calls it from its single committer goroutine, in commit order, which
// is what keeps sequence numbers and hashes in chain order.
type Log struct {
	urlKey  []byte
	signKey []byte
	seq     uint64
	hash    []byte

	// unsignedFrom..unsignedTo are events found after the signed head by
	// Open (0 when none).
	unsignedFrom, unsignedTo uint64
}

// Mark is a saved chain head, restored by Rollback.
type Mark struct {
	seq  uint64
	hash []byte
}

// Open loads the chain head (last sequence number and hash) from db. key is
// the secret HMAC key used for URL hashes and for signing the chain head and
// checkpoints; it must be the same on every start.
func Open(db *badger.DB, key []byte) (*Log, error) {
	if db == nil {
		return nil, errors.New("audit: nil database")
	}
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("audit: key is %d bytes, need at least %d", len(key), MinKeyLen)
	}
	l := &Log{urlKey: deriveKey(key, "url"), signKey: deriveKey(key, "sign")}
	err := db.View(func(txn *badger.Txn) error {
		// The last stored event is the head, unless the signed head says the
		// chain went further (events pruned or truncated): then the chain
		// continues from the signed head so any gap stays visible to Verify.
		it := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: []byte(prefixEvent)})
		defer it.Close()
		it.Seek(append([]byte(prefixEvent), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
		// lastKey is the highest sequence number stored, decodable or not:
		// a record after the signed head that does not decode is not
		// latchkey's either, and must not be overwritten by the next event.
		var lastKey uint64
		for ; it.Valid(); it.Next() {
			if k := it.Item().Key(); lastKey == 0 && len(k) == len(prefixEvent)+8 {
				lastKey = binary.BigEndian.Uint64(k[len(prefixEvent):])
			}
			var ev Event
			err := it.Item().Value(func(v []byte) error { return ev.decodeStored(v) })
			if err != nil {
				continue // a damaged event is Verify's to report; look further back
			}
			l.seq, l.hash = ev.Seq, ev.Hash
			break
		}
		h, err := readHead(txn, l.signKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if lastKey > l.seq && lastKey > h.seq {
			l.seq = lastKey
		}
		switch {
		case h.seq > l.seq:
			l.seq, l.hash = h.seq, h.hash
		case l.seq > h.seq:
			// Events after the signed head: the head is written in the
			// same transaction as every event, so latchkey did not write
			// these. Chaining on from them would sign them in and hide
			// them from Verify for good; chaining from the head's hash
			// (after them, so they stay as evidence) keeps the break
			// visible. The caller records what it found (UnsignedTail).
			l.unsignedFrom, l.unsignedTo = h.seq+1, l.seq
			l.hash = h.hash
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrBadKey) {
		err = fmt.Errorf("audit: open: %w", err)
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}

// UnsignedTail returns the sequence numbers of the events Open found after
// the signed chain head, or 0, 0. A relay that finds some must record them
// (an Integrity event) before anything else, and say so loudly.
func (l *Log) UnsignedTail() (from, to uint64) { return l.unsignedFrom, l.unsignedTo }

// IntegrityEvent is the event recording UnsignedTail, to append first.
func (l *Log) IntegrityEvent() *Event {
	if l.unsignedFrom == 0 {
		return nil
	}
	return &Event{Type: Integrity, Fields: map[string]string{
		"problem":   "unsigned_tail",
		"from":      strconv.FormatUint(l.unsignedFrom, 10),
		"to":        strconv.FormatUint(l.unsignedTo, 10),
		"head_hash": hex.EncodeToString(l.hash),
	}}
}

// Mark returns the current chain head, to be passed to Rollback if the
// transaction holding the following appends fails to commit.
func (l *Log) Mark() Mark { return Mark{seq: l.seq, hash: l.hash} }

// Rollback restores the chain head saved by Mark, after the transaction
// holding the events appended since was discarded or failed to commit.
func (l *Log) Rollback(m Mark) { l.seq, l.hash = m.seq, m.hash }

// Head returns the sequence number and hash of the last appended event.
func (l *Log) Head() (uint64, []byte) { return l.seq, slices.Clone(l.hash) }

// Append adds ev to the chain inside txn. It sets ev.Seq, ev.Time (if zero),
// ev.Prev and ev.Hash. On error the caller should discard txn and Rollback.
// Not safe for concurrent use (see Log).
func (l *Log) Append(txn *badger.Txn, ev *Event) error {
	if ev == nil || ev.Type == "" {
		return errors.New("audit: event has no type")
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	// UTC also strips the monotonic reading, so the stored time is the hashed one.
	ev.Time = ev.Time.UTC()
	if y := ev.Time.Year(); y < 1 || y > 9999 {
		return fmt.Errorf("audit: event time %v out of range", ev.Time)
	}
	l.sanitize(ev)
	ev.Seq = l.seq + 1
	ev.Prev = slices.Clone(l.hash)
	// The stored value is the hashed canonical encoding followed by the
	// hash, so what is on disk is exactly what the hash covers.
	val := appendCanonical(nil, ev)
	sum := sha256.Sum256(val)
	ev.Hash = sum[:]
	val = append(val, ev.Hash...)
	if err := txn.Set(eventKey(ev.Seq), val); err != nil {
		return fmt.Errorf("audit: write event %d: %w", ev.Seq, err)
	}
	if k := indexKey(prefixQueue, ev.QueueID, ev.Seq); k != nil {
		if err := txn.Set(k, nil); err != nil {
			return fmt.Errorf("audit: write queue index %d: %w", ev.Seq, err)
		}
	}
	if k := indexKey(prefixMsgID, ev.MessageID, ev.Seq); k != nil {
		if err := txn.Set(k, nil); err != nil {
			return fmt.Errorf("audit: write message-id index %d: %w", ev.Seq, err)
		}
	}
	if err := l.indexMinute(txn, ev); err != nil {
		return err
	}
	if err := txn.Set([]byte(keyHead), encodeHead(l.signKey, ev.Seq, ev.Hash)); err != nil {
		return fmt.Errorf("audit: write chain head %d: %w", ev.Seq, err)
	}
	l.seq, l.hash = ev.Seq, ev.Hash
	return nil
}

// indexMinute records ev.Seq as the first of its minute unless an earlier
// event of that minute did (reading the transaction's own writes, so an
// aborted batch leaves no stale state behind).
func (l *Log) indexMinute(txn *badger.Txn, ev *Event) error {
	k := minuteKey(ev.Time)
	if _, err := txn.Get(k); err == nil {
		return nil
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("audit: time index: %w", err)
	}
	seq := binary.BigEndian.AppendUint64(nil, ev.Seq)
	if err := txn.Set(k, seq); err != nil {
		return fmt.Errorf("audit: time index: %w", err)
	}
	if _, err := txn.Get([]byte(keyMinuteStart)); errors.Is(err, badger.ErrKeyNotFound) {
		return txn.Set([]byte(keyMinuteStart), seq)
	} else if err != nil {
		return fmt.Errorf("audit: time index: %w", err)
	}
	return nil
}

// minuteKey is the time index key of t's minute. Times before 1970 (a
// window "since 100 years ago", or a wrong clock) all fall in minute 0:
// their negative minute would wrap to the end of the index, and a window
// starting there would seek past every event.
func minuteKey(t time.Time) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixMinute), uint64(max(t.Unix(), 0)/60))
}

// sanitize makes the event storable as it will be hashed: JSON would turn
// invalid UTF-8 into U+FFFD after hashing, and a URL in a detail (a remote
// server's reply, a reason) could carry a reset token.
func (l *Log) sanitize(ev *Event) {
	for _, p := range []*string{&ev.Type, &ev.QueueID, &ev.MessageID, &ev.Class, &ev.Recipient, &ev.Sender} {
		*p = strings.ToValidUTF8(*p, "\uFFFD")
	}
	if len(ev.Fields) == 0 {
		return
	}
	clean := make(map[string]string, len(ev.Fields))
	for k, v := range ev.Fields {
		clean[strings.ToValidUTF8(k, "\uFFFD")] = l.redactURLs(strings.ToValidUTF8(v, "\uFFFD"))
	}
	ev.Fields = clean
}

// appendCanonical appends the byte string an event's hash covers: a version tag, then
// every field in a fixed order, each length-prefixed so no two events
// encode alike, Fields sorted by key, and Prev last.
func appendCanonical(b []byte, ev *Event) []byte {
	b = append(b, canonicalTag...)
	b = binary.BigEndian.AppendUint64(b, ev.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(ev.Time.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(ev.Time.Nanosecond()))
	for _, s := range []string{ev.Type, ev.QueueID, ev.MessageID, ev.Class, ev.Recipient, ev.Sender} {
		b = appendString(b, s)
	}
	keys := make([]string, 0, len(ev.Fields))
	for k := range ev.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, ev.Fields[k])
	}
	b = binary.AppendUvarint(b, uint64(len(ev.Prev)))
	return append(b, ev.Prev...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// ComputeHash returns the hash an event should carry given its contents and
// Prev, so that anyone holding an export can re-check the chain.
func ComputeHash(ev *Event) []byte {
	sum := sha256.Sum256(appendCanonical(nil, ev))
	return sum[:]
}

func deriveKey(key []byte, purpose string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("latchkey-audit-" + purpose))
	return m.Sum(nil)
}

func eventKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixEvent), seq)
}

// indexPart is the form of a queue id or Message-ID used in index keys:
// angle brackets and spaces trimmed so "<id@host>" and "id@host" meet, and
// very long values hashed so keys stay small.
func indexPart(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	if len(s) > 200 {
		sum := sha256.Sum256([]byte(s))
		return "#" + hex.EncodeToString(sum[:])
	}
	return s
}

func indexPrefix(prefix, id string) []byte {
	p := indexPart(id)
	if p == "" {
		return nil
	}
	return []byte(prefix + p + "/")
}

func indexKey(prefix, id string, seq uint64) []byte {
	p := indexPrefix(prefix, id)
	if p == nil {
		return nil
	}
	return binary.BigEndian.AppendUint64(p, seq)
}

// head is the signed record of the last appended event.
type head struct {
	seq  uint64
	hash []byte
}

const headLen = 8 + sha256.Size + sha256.Size

func headMAC(key []byte, seq uint64, hash []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("latchkey-audit-head-v1\n"))
	m.Write(binary.BigEndian.AppendUint64(nil, seq))
	m.Write(hash)
	return m.Sum(nil)
}

func encodeHead(key []byte, seq uint64, hash []byte) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, headLen), seq)
	b = append(b, hash...)
	return append(b, headMAC(key, seq, hash)...)
}

var errBadHead = errors.New("audit: chain head record is malformed or forged")

// decodeHead parses and authenticates a stored chain head.
func decodeHead(key, v []byte) (head, error) {
	if len(v) != headLen {
		return head{}, errBadHead
	}
	h := head{seq: binary.BigEndian.Uint64(v), hash: slices.Clone(v[8 : 8+sha256.Size])}
	if !hmac.Equal(v[8+sha256.Size:], headMAC(key, h.seq, h.hash)) {
		return head{}, errBadHead
	}
	return h, nil
}

// SignedHead reads the chain head stored in db and checks its signature: the
// committed state, safe to call while a Log appends. A chain with no events
// yet gives 0 and no hash.
func SignedHead(db *badger.DB, key []byte) (seq uint64, hash []byte, err error) {
	err = db.View(func(txn *badger.Txn) error {
		h, err := readHead(txn, deriveKey(key, "sign"))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		seq, hash = h.seq, h.hash
		return err
	})
	return seq, hash, err
}

func readHead(txn *badger.Txn, signKey []byte) (head, error) {
	item, err := txn.Get([]byte(keyHead))
	if err != nil {
		return head{}, err
	}
	var h head
	err = item.Value(func(v []byte) error {
		var derr error
		h, derr = decodeHead(signKey, v)
		return derr
	})
	if errors.Is(err, errBadHead) {
		return head{}, ErrBadKey
	}
	return h, err
}

const canonicalTag = "latchkey-audit-v1\n"

var errStored = errors.New("audit: malformed stored event")

// decodeStored parses a stored event: the canonical encoding followed by
// the hash. Stored data is not trusted, so it is strict: only an exact
// canonical encoding (sorted unique field keys, valid UTF-8, in-range time)
// decodes, which makes decoding and re-encoding an identity.
func (ev *Event) decodeStored(b []byte) error {
	var v View
	if err := v.parse(b); err != nil {
		return err
	}
	e := Event{Seq: v.Seq, Time: v.Time, Type: string(v.Type), QueueID: string(v.QueueID),
		MessageID: string(v.MessageID), Class: string(v.Class), Recipient: string(v.Recipient),
		Sender: string(v.Sender), Prev: bytes.Clone(v.Prev), Hash: bytes.Clone(v.Hash)}
	if v.nFields > 0 {
		e.Fields = make(map[string]string, v.nFields)
		v.eachField(func(k, val []byte) { e.Fields[string(k)] = string(val) })
	}
	*ev = e
	return nil
}

// decoder reads the canonical encoding, latching the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) u64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.err = errStored
		return 0
	}
	x := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return x
}

func (d *decoder) u32() uint32 {
	if d.err != nil || len(d.b) < 4 {
		d.err = errStored
		return 0
	}
	x := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return x
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errStored
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) || !utf8.Valid(d.b[:n]) {
		d.err = errStored
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// encodeStored is the inverse of decodeStored.
func encodeStored(ev *Event) []byte {
	return append(appendCanonical(nil, ev), ev.Hash...)
}

// eventJSON is the exported (JSON Lines) form of an Event.
type eventJSON struct {
	Seq       uint64            `json:"seq"`
	Time      string            `json:"time"`
	Type      string            `json:"type"`
	QueueID   string            `json:"queue_id,omitempty"`
	MessageID string            `json:"message_id,omitempty"`
	Class     string            `json:"class,omitempty"`
	Recipient string            `json:"recipient,omitempty"`
	Sender    string            `json:"sender,omitempty"`
	Fields    map[string]string `json:"fields,omitempty"`
	Prev      string            `json:"prev,omitempty"`
	Hash      string            `json:"hash"`
}

// MarshalJSON encodes the event with its stable field names.
func (ev Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(eventJSON{
		Seq: ev.Seq, Time: ev.Time.UTC().Format(time.RFC3339Nano), Type: ev.Type,
		QueueID: ev.QueueID, MessageID: ev.MessageID, Class: ev.Class,
		Recipient: ev.Recipient, Sender: ev.Sender, Fields: ev.Fields,
		Prev: hex.EncodeToString(ev.Prev), Hash: hex.EncodeToString(ev.Hash),
	})
}

// UnmarshalJSON decodes an event exported by MarshalJSON. Exported data is
// not trusted: anything malformed is an error, never a panic.
func (ev *Event) UnmarshalJSON(data []byte) error {
	var j eventJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("audit: decode event: %w", err)
	}
	t, err := time.Parse(time.RFC3339Nano, j.Time)
	if err != nil {
		return fmt.Errorf("audit: decode event time: %w", err)
	}
	prev, err := decodeHash(j.Prev, true)
	if err != nil {
		return fmt.Errorf("audit: decode event prev: %w", err)
	}
	hash, err := decodeHash(j.Hash, false)
	if err != nil {
		return fmt.Errorf("audit: decode event hash: %w", err)
	}
	if j.Type == "" {
		return errors.New("audit: decode event: no type")
	}
	*ev = Event{
		Seq: j.Seq, Time: t.UTC(), Type: j.Type, QueueID: j.QueueID, MessageID: j.MessageID,
		Class: j.Class, Recipient: j.Recipient, Sender: j.Sender, Fields: j.Fields,
		Prev: prev, Hash: hash,
	}
	return nil
}

func decodeHash(s string, mayBeEmpty bool) ([]byte, error) {
	if s == "" && mayBeEmpty {
		return nil, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b) != sha256.Size {
		return nil, fmt.Errorf("hash is %d bytes, want %d", len(b), sha256.Size)
	}
	return b, nil
}

// HashAt returns the stored hash of event seq, or ErrNotFound when the
// trail has no such event (pruned, or never written): what a checkpoint
// kept elsewhere (the cluster's) is compared with.
func HashAt(db *badger.DB, seq uint64) ([]byte, error) {
	var hash []byte
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(eventKey(seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		var ev Event
		if err := item.Value(func(v []byte) error { return ev.decodeStored(v) }); err != nil {
			return err
		}
		hash = ev.Hash
		return nil
	})
	return hash, err
}
