package audit

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"
)

// View is a stored event read in place: its byte slices point into the
// database's value and are valid only during the callback that received it
// (copy what you keep: string(v.QueueID)). It exists for the walks over the
// whole trail (the figures, chain verification) where decoding every event
// into an Event, with its map and strings, was most of the cost.
//
// A View is validated exactly as strictly as decodeStored validates an
// Event; decodeStored is built on it, so there is one parser.
type View struct {
	Seq       uint64
	Time      time.Time
	Type      []byte
	QueueID   []byte
	MessageID []byte
	Class     []byte
	Recipient []byte
	Sender    []byte
	Prev      []byte // nil for the first event of the chain
	Hash      []byte
	// Canonical is the hashed part of the stored value (everything but the
	// trailing hash).
	Canonical []byte

	fields  []byte // the encoded fields, validated
	nFields int
}

// Field returns the value of the named field, nil when absent.
func (v *View) Field(name string) []byte {
	d := decoder{b: v.fields}
	for range v.nFields {
		k, val := d.bytes(), d.bytes()
		if string(k) == name {
			return val
		}
	}
	return nil
}

// eachField calls fn for every field in key order.
func (v *View) eachField(fn func(k, val []byte)) {
	d := decoder{b: v.fields}
	for range v.nFields {
		k, val := d.bytes(), d.bytes()
		fn(k, val)
	}
}

// parse reads a stored value into v without copying. Stored data is not
// trusted, so it is strict: only an exact canonical encoding (sorted unique
// field keys, valid UTF-8, in-range time) parses, which makes decoding and
// re-encoding an identity.
func (v *View) parse(b []byte) error {
	if !bytes.HasPrefix(b, []byte(canonicalTag)) || len(b) < len(canonicalTag)+sha256.Size {
		return errStored
	}
	d := decoder{b: b[len(canonicalTag) : len(b)-sha256.Size]}
	var e View
	e.Seq = d.u64()
	sec, nsec := int64(d.u64()), d.u32()
	if d.err != nil || nsec >= 1e9 {
		return errStored
	}
	e.Time = time.Unix(sec, int64(nsec)).UTC()
	if y := e.Time.Year(); y < 1 || y > 9999 {
		return errStored
	}
	for _, p := range []*[]byte{&e.Type, &e.QueueID, &e.MessageID, &e.Class, &e.Recipient, &e.Sender} {
		*p = d.bytes()
	}
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b))/2 {
		return errStored
	}
	e.fields, e.nFields = d.b, int(n)
	var last []byte
	for i := range n {
		k, _ := d.bytes(), d.bytes()
		if d.err != nil || (i > 0 && bytes.Compare(k, last) <= 0) {
			return errStored
		}
		last = k
	}
	e.fields = e.fields[:len(e.fields)-len(d.b)]
	switch pl := d.uvarint(); {
	case d.err != nil:
		return errStored
	case pl == sha256.Size && len(d.b) == sha256.Size:
		e.Prev = d.b
		d.b = nil
	case pl != 0:
		return errStored
	}
	if d.err != nil || len(d.b) != 0 || len(e.Type) == 0 {
		return errStored
	}
	e.Canonical = b[:len(b)-sha256.Size]
	e.Hash = b[len(b)-sha256.Size:]
	*v = e
	return nil
}

// bytes reads a length-prefixed UTF-8 string in place.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) || !utf8.Valid(d.b[:n]) {
		d.err = errStored
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

// ScanViews calls fn for every stored event from the first that can be
// stamped at or after since (the minute index, as [Scan] uses it) to the
// end of the chain, in chain order, without decoding them into Events. It
// does not filter by time: the caller compares v.Time, because event times
// follow the chain only as well as the clock did. fn must not keep v or its
// slices; returning [ErrStopScan] ends the walk without an error.
func ScanViews(db *badger.DB, since time.Time, fn func(*View) error) error {
	err := db.View(func(txn *badger.Txn) error {
		from, err := firstSeqSince(txn, since)
		if err != nil {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixEvent)})
		defer it.Close()
		var v View
		for it.Seek(eventKey(from)); it.Valid(); it.Next() {
			item := it.Item()
			if err := item.Value(func(b []byte) error {
				if err := v.parse(b); err != nil {
					return err
				}
				return fn(&v)
			}); err != nil {
				if errors.Is(err, ErrStopScan) {
					return err
				}
				return fmt.Errorf("audit: event at key %x: %w", item.Key(), err)
			}
		}
		return nil
	})
	if errors.Is(err, ErrStopScan) {
		return nil
	}
	return err
}

// ErrStopScan, returned by a [ScanViews] callback, ends the walk early.
var ErrStopScan = errors.New("audit: stop scan")
