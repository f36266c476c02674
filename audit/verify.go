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
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Problem kinds reported by Verify.
const (
	// KindChanged: an event's content no longer matches its hash, or it does
	// not match the signed head or checkpoint that vouches for it.
	KindChanged = "changed"
	// KindInserted: an event that was never appended: beyond the signed
	// chain head, under a malformed key, or not linking to its predecessor.
	KindInserted = "inserted"
	// KindMissing: a gap in the sequence numbers.
	KindMissing = "missing"
	// KindCheckpoint: a checkpoint record whose signature does not verify.
	KindCheckpoint = "checkpoint"
	// KindHead: the signed chain head record is missing or forged.
	KindHead = "head"
)

// maxProblems caps a report, so verifying a wrecked database of millions of
// events does not need memory for millions of problems.
const maxProblems = 10000

// Problem is one piece of tamper evidence, located by sequence number and
// time (for a gap, Seq..SeqEnd are missing and Time is that of the event
// just before it).
type Problem struct {
	Kind   string
	Seq    uint64
	SeqEnd uint64
	Time   time.Time
	Detail string
}

func (p Problem) String() string {
	at := fmt.Sprintf("seq %d", p.Seq)
	if p.SeqEnd > p.Seq {
		at = fmt.Sprintf("seq %d-%d", p.Seq, p.SeqEnd)
	}
	if !p.Time.IsZero() {
		at += " at " + p.Time.UTC().Format(time.RFC3339Nano)
	}
	return p.Kind + " " + at + ": " + p.Detail
}

// VerifyReport is the result of Verify.
type VerifyReport struct {
	Events     int         // events read
	FirstSeq   uint64      // first event's seq (0 if none)
	LastSeq    uint64      // last event's seq
	HeadSeq    uint64      // seq in the signed chain head
	HeadHash   []byte      // hash in the signed chain head: compare it with the relay's logged anchors
	Checkpoint *Checkpoint // latest valid checkpoint, if the chain was pruned
	Problems   []Problem
	Truncated  bool // more problems than maxProblems; the rest are not listed
}

// OK reports whether the chain verified clean.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 && !r.Truncated }

func (r *VerifyReport) add(p Problem) {
	if len(r.Problems) >= maxProblems {
		r.Truncated = true
		return
	}
	r.Problems = append(r.Problems, p)
}

// Checkpoint is written by Prune: it vouches, under the HMAC key, for the
// first retained event (Seq, whose Prev is the last pruned event's hash, and
// whose Hash is given when that event existed at pruning time).
type Checkpoint struct {
	Seq     uint64
	Prev    []byte
	Hash    []byte
	Time    time.Time // when the prune ran
	Before  time.Time // the retention cutoff
	Removed int
	MAC     []byte
}

type checkpointJSON struct {
	Seq     uint64 `json:"seq"`
	Prev    string `json:"prev,omitempty"`
	Hash    string `json:"hash,omitempty"`
	Time    string `json:"time"`
	Before  string `json:"before"`
	Removed int    `json:"removed"`
	MAC     string `json:"mac"`
}

func (c *Checkpoint) mac(signKey []byte) []byte {
	b := []byte("latchkey-audit-checkpoint-v1\n")
	b = binary.BigEndian.AppendUint64(b, c.Seq)
	b = appendString(b, string(c.Prev))
	b = appendString(b, string(c.Hash))
	b = binary.BigEndian.AppendUint64(b, uint64(c.Time.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(c.Before.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(c.Removed))
	m := hmac.New(sha256.New, signKey)
	m.Write(b)
	return m.Sum(nil)
}

func encodeCheckpoint(c *Checkpoint) ([]byte, error) {
	return json.Marshal(checkpointJSON{
		Seq: c.Seq, Prev: hex.EncodeToString(c.Prev), Hash: hex.EncodeToString(c.Hash),
		Time: c.Time.UTC().Format(time.RFC3339Nano), Before: c.Before.UTC().Format(time.RFC3339Nano),
		Removed: c.Removed, MAC: hex.EncodeToString(c.MAC),
	})
}

// decodeCheckpoint parses a stored checkpoint; it does not check the MAC.
func decodeCheckpoint(data []byte) (*Checkpoint, error) {
	var j checkpointJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("audit: decode checkpoint: %w", err)
	}
	c := &Checkpoint{Seq: j.Seq, Removed: j.Removed}
	var err error
	if c.Time, err = time.Parse(time.RFC3339Nano, j.Time); err != nil {
		return nil, fmt.Errorf("audit: decode checkpoint time: %w", err)
	}
	if c.Before, err = time.Parse(time.RFC3339Nano, j.Before); err != nil {
		return nil, fmt.Errorf("audit: decode checkpoint cutoff: %w", err)
	}
	if c.Prev, err = decodeHash(j.Prev, true); err != nil {
		return nil, fmt.Errorf("audit: decode checkpoint prev: %w", err)
	}
	if c.Hash, err = decodeHash(j.Hash, true); err != nil {
		return nil, fmt.Errorf("audit: decode checkpoint hash: %w", err)
	}
	if c.MAC, err = hex.DecodeString(j.MAC); err != nil {
		return nil, fmt.Errorf("audit: decode checkpoint mac: %w", err)
	}
	return c, nil
}

func checkpointKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixCheckpoint), seq)
}

// Verify walks the whole chain in one read-only snapshot and reports every
// changed, inserted or missing event, every forged checkpoint and a forged
// or inconsistent chain head. A nil error with problems means tampering (or
// damage) was found; an error means the walk itself failed.
func Verify(db *badger.DB, key []byte) (*VerifyReport, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("audit: key is %d bytes, need at least %d", len(key), MinKeyLen)
	}
	signKey := deriveKey(key, "sign")
	r := &VerifyReport{}
	err := db.View(func(txn *badger.Txn) error {
		cps, err := readCheckpoints(txn, signKey, r)
		if err != nil {
			return err
		}
		start := uint64(1)
		for seq, cp := range cps {
			if seq > start || r.Checkpoint == nil {
				start, r.Checkpoint = seq, cp
			}
		}

		h, herr := readHead(txn, signKey)
		haveHead := herr == nil
		switch {
		case haveHead:
			r.HeadSeq, r.HeadHash = h.seq, h.hash
		case errors.Is(herr, ErrBadKey):
			r.add(Problem{Kind: KindHead, Detail: "the chain head record is forged or signed with another key"})
		case !errors.Is(herr, badger.ErrKeyNotFound):
			return herr
		}

		var (
			have     bool
			prevSeq  uint64
			prevHash []byte
			prevTime time.Time
		)
		hashBuf, prevBuf := make([]byte, 0, sha256.Size), make([]byte, 0, sha256.Size)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixEvent)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) != len(prefixEvent)+8 {
				r.add(Problem{Kind: KindInserted, Detail: fmt.Sprintf("record under malformed key %x", k)})
				continue
			}
			seq := binary.BigEndian.Uint64(k[len(prefixEvent):])
			r.Events++
			if haveHead && seq > h.seq {
				r.add(Problem{Kind: KindInserted, Seq: seq, Detail: fmt.Sprintf("event beyond the signed chain head (seq %d)", h.seq)})
				continue
			}
			if r.FirstSeq == 0 {
				r.FirstSeq = seq
			}
			r.LastSeq = seq

			// Link and gap checks come first: they need only the key.
			switch {
			case !have && seq > start:
				r.add(Problem{Kind: KindMissing, Seq: start, SeqEnd: seq - 1, Detail: "events missing at the start of the chain"})
			case have && seq != prevSeq+1:
				r.add(Problem{Kind: KindMissing, Seq: prevSeq + 1, SeqEnd: seq - 1, Time: prevTime,
					Detail: fmt.Sprintf("events missing between seq %d and seq %d", prevSeq, seq)})
			}

			// The checks read the event in place; only the hash it links to
			// is kept, in a buffer reused from event to event.
			var ev struct {
				seq      uint64
				time     time.Time
				prev     []byte
				hash     [sha256.Size]byte
				integ    bool
				from, to uint64
				headHash string
			}
			var hashOK bool
			err := item.Value(func(b []byte) error {
				var v View
				if err := v.parse(b); err != nil {
					return err
				}
				ev.seq, ev.time = v.Seq, v.Time
				copy(ev.hash[:], v.Hash)
				if v.Prev != nil {
					ev.prev = append(prevBuf[:0], v.Prev...)
				}
				// The stored form is the canonical encoding and the hash, so
				// the check hashes the bytes as they are on disk.
				hashOK = sha256.Sum256(v.Canonical) == ev.hash
				if string(v.Type) == Integrity && string(v.Field("problem")) == "unsigned_tail" {
					ev.integ = true
					ev.from, _ = strconv.ParseUint(string(v.Field("from")), 10, 64)
					ev.to, _ = strconv.ParseUint(string(v.Field("to")), 10, 64)
					ev.headHash = string(v.Field("head_hash"))
				}
				return nil
			})
			if err != nil {
				r.add(Problem{Kind: KindChanged, Seq: seq, Detail: "event cannot be decoded: " + err.Error()})
				have, prevSeq, prevHash, prevTime = true, seq, nil, time.Time{}
				continue
			}
			if ev.seq != seq {
				r.add(Problem{Kind: KindChanged, Seq: seq, Time: ev.time, Detail: fmt.Sprintf("event stored under seq %d says seq %d", seq, ev.seq)})
			}
			if !hashOK {
				r.add(Problem{Kind: KindChanged, Seq: seq, Time: ev.time, Detail: "event content does not match its hash"})
			}
			// The relay's own record of events it found after the signed
			// head at start: they stay reported on every run, and the break
			// in the chain right at this record is the one it explains.
			explained := false
			if ev.integ && hashOK {
				if ev.from > 0 && ev.to >= ev.from && ev.to < seq {
					r.add(Problem{Kind: KindInserted, Seq: ev.from, SeqEnd: ev.to, Time: ev.time, Detail: fmt.Sprintf(
						"events found after the signed chain head when the relay started (recorded by event %d): not written by latchkey", seq)})
					explained = ev.headHash == hex.EncodeToString(ev.prev) && prevSeq == ev.to
				}
			}
			switch {
			case !have && seq == 1 && len(ev.prev) != 0:
				r.add(Problem{Kind: KindChanged, Seq: seq, Time: ev.time, Detail: "first event of the chain names a predecessor"})
			case have && seq == prevSeq+1 && prevHash != nil && !bytes.Equal(ev.prev, prevHash) && !explained:
				r.add(Problem{Kind: KindInserted, Seq: seq, Time: ev.time,
					Detail: fmt.Sprintf("event does not link to event %d: one of the two was replaced by a forged event", prevSeq)})
			}
			if cp, ok := cps[seq]; ok {
				if !bytes.Equal(ev.prev, cp.Prev) || (cp.Hash != nil && !bytes.Equal(ev.hash[:], cp.Hash)) {
					r.add(Problem{Kind: KindChanged, Seq: seq, Time: ev.time, Detail: "event does not match the signed checkpoint"})
				}
			}
			// ev.prev lives in prevBuf and prevHash in hashBuf, so neither
			// is overwritten before it is compared.
			prevHash = append(hashBuf[:0], ev.hash[:]...)
			have, prevSeq, prevTime = true, seq, ev.time
		}

		switch {
		case !haveHead:
			// A checkpoint is only written over a chain that had events,
			// so it too proves a head should exist.
			if have || len(cps) > 0 {
				r.add(Problem{Kind: KindHead, Detail: "the signed chain head record is missing"})
			}
		case !have:
			if h.seq >= start {
				r.add(Problem{Kind: KindMissing, Seq: start, SeqEnd: h.seq, Detail: "every event up to the signed chain head is missing"})
			}
		case h.seq > prevSeq:
			r.add(Problem{Kind: KindMissing, Seq: prevSeq + 1, SeqEnd: h.seq, Time: prevTime, Detail: "events missing at the end of the chain (truncated)"})
		case h.seq == prevSeq && !bytes.Equal(h.hash, prevHash):
			r.add(Problem{Kind: KindChanged, Seq: prevSeq, Time: prevTime, Detail: "last event does not match the signed chain head: the chain was rewritten"})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: verify: %w", err)
	}
	return r, nil
}

// readCheckpoints returns the checkpoints whose signature verifies, by seq,
// and reports the others.
func readCheckpoints(txn *badger.Txn, signKey []byte, r *VerifyReport) (map[uint64]*Checkpoint, error) {
	cps := map[uint64]*Checkpoint{}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixCheckpoint), PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if len(k) != len(prefixCheckpoint)+8 {
			r.add(Problem{Kind: KindCheckpoint, Detail: fmt.Sprintf("checkpoint under malformed key %x", k)})
			continue
		}
		seq := binary.BigEndian.Uint64(k[len(prefixCheckpoint):])
		var cp *Checkpoint
		err := item.Value(func(v []byte) error {
			var err error
			cp, err = decodeCheckpoint(v)
			return err
		})
		switch {
		case err != nil:
			r.add(Problem{Kind: KindCheckpoint, Seq: seq, Detail: "checkpoint cannot be decoded: " + err.Error()})
		case cp.Seq != seq || !hmac.Equal(cp.MAC, cp.mac(signKey)):
			r.add(Problem{Kind: KindCheckpoint, Seq: seq, Time: cp.Time, Detail: "checkpoint signature does not verify: forged or altered"})
		default:
			cps[seq] = cp
		}
	}
	return cps, nil
}

// pruneBatch bounds the size of each delete transaction.
const pruneBatch = 1000

// Prune deletes the events older than before (and their index keys), from
// the start of the chain up to the first event that is not older, so the
// retained chain stays contiguous. An event stamped out of order (clock
// step) holds back the pruning of those after it until it is old enough.
// First it writes a checkpoint, signed with key, vouching for the first
// retained event, so Verify still has an anchor; then it deletes in bounded
// batches. An interrupted prune leaves events before the checkpoint, which
// still verify, and the next Prune finishes the job.
func Prune(db *badger.DB, key []byte, before time.Time) (removed int, err error) {
	if len(key) < MinKeyLen {
		return 0, fmt.Errorf("audit: key is %d bytes, need at least %d", len(key), MinKeyLen)
	}
	signKey := deriveKey(key, "sign")
	var (
		cut     *Checkpoint
		toPrune int
	)
	err = db.View(func(txn *badger.Txn) error {
		var last *Event
		err := walkEvents(txn, func(ev *Event) error {
			if !ev.Time.Before(before) {
				cut = &Checkpoint{Seq: ev.Seq, Prev: ev.Prev, Hash: ev.Hash}
				return errStop
			}
			toPrune++
			e := *ev
			last = &e
			return nil
		})
		if errors.Is(err, errStop) {
			return nil
		}
		if err != nil {
			return err
		}
		if last != nil {
			// Everything is old: vouch for the next event to be appended.
			cut = &Checkpoint{Seq: last.Seq + 1, Prev: last.Hash}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	if toPrune == 0 {
		return 0, nil
	}
	cut.Time, cut.Before, cut.Removed = time.Now().UTC(), before.UTC(), toPrune
	cut.MAC = cut.mac(signKey)
	val, err := encodeCheckpoint(cut)
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	if err := update(db, func(txn *badger.Txn) error { return txn.Set(checkpointKey(cut.Seq), val) }); err != nil {
		return 0, fmt.Errorf("audit: prune: write checkpoint: %w", err)
	}

	for {
		n := 0
		err := update(db, func(txn *badger.Txn) error {
			n = 0
			err := walkEvents(txn, func(ev *Event) error {
				if ev.Seq >= cut.Seq || n >= pruneBatch {
					return errStop
				}
				for _, k := range [][]byte{eventKey(ev.Seq), indexKey(prefixQueue, ev.QueueID, ev.Seq), indexKey(prefixMsgID, ev.MessageID, ev.Seq)} {
					if k == nil {
						continue
					}
					if err := txn.Delete(k); err != nil {
						return err
					}
				}
				n++
				return nil
			})
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		})
		if err != nil {
			return removed, fmt.Errorf("audit: prune: delete: %w", err)
		}
		removed += n
		if n < pruneBatch {
			return removed, pruneMinutes(db, before)
		}
	}
}

// pruneMinutes deletes the time index of the minutes before before's. An
// event of such a minute kept back by Prune (stamped out of order) is still
// found: the minute of the first retained event is not before before's,
// and its first sequence number is at most that event's.
func pruneMinutes(db *badger.DB, before time.Time) error {
	end := minuteKey(before)
	for {
		n := 0
		err := update(db, func(txn *badger.Txn) error {
			n = 0
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixMinute)})
			defer it.Close()
			for it.Rewind(); it.Valid() && n < pruneBatch; it.Next() {
				k := it.Item().KeyCopy(nil)
				if bytes.Compare(k, end) >= 0 {
					break
				}
				if err := txn.Delete(k); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("audit: prune: time index: %w", err)
		}
		if n < pruneBatch {
			return nil
		}
	}
}

// update runs fn in a read-write transaction, retrying when it conflicts
// with the relay's committer.
func update(db *badger.DB, fn func(*badger.Txn) error) error {
	var err error
	for range 5 {
		err = db.Update(fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return err
}
