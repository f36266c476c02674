package audit

import (
	"bufio"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/dgraph-io/badger/v4"
)

// errStop ends a walk early without an error.
var errStop = errors.New("audit: stop")

// Show returns one message's timeline in chain order, looked up by queue id
// first and then by Message-ID (with or without angle brackets).
func Show(db *badger.DB, idOrMessageID string) ([]Event, error) {
	var out []Event
	err := db.View(func(txn *badger.Txn) error {
		for _, prefix := range []string{prefixQueue, prefixMsgID} {
			p := indexPrefix(prefix, idOrMessageID)
			if p == nil {
				return nil
			}
			err := walkIndex(txn, p, func(ev *Event) error {
				out = append(out, *ev)
				return nil
			})
			if err != nil || len(out) > 0 {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, idOrMessageID)
	}
	return out, nil
}

// Lifeline returns the whole life of one accepted message in chain order:
// the events filed under its message id or any of its item ids (queue ids
// starting with msgID), and the events filed under its Message-ID header
// that name msgID in their queue_id field (received, signed). With itemID
// set, events of the message's other items are left out.
func Lifeline(db *badger.DB, msgID, itemID, messageID string) ([]Event, error) {
	if msgID == "" || indexPart(msgID) != msgID || strings.Contains(msgID, "/") {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, msgID)
	}
	keep := func(ev *Event) bool {
		if ev.QueueID == "" {
			return ev.Fields["queue_id"] == msgID
		}
		if !strings.HasPrefix(ev.QueueID, msgID) {
			return false
		}
		return itemID == "" || ev.QueueID == msgID || ev.QueueID == itemID
	}
	seen := map[uint64]bool{}
	var out []Event
	err := db.View(func(txn *badger.Txn) error {
		collect := func(ev *Event) error {
			if !seen[ev.Seq] && keep(ev) {
				seen[ev.Seq] = true
				out = append(out, *ev)
			}
			return nil
		}
		// Item ids extend the message id, so one prefix scan finds them
		// all; walkIndexFamily checks each key's shape.
		if err := walkIndexFamily(txn, []byte(prefixQueue+msgID), collect); err != nil {
			return err
		}
		if p := indexPrefix(prefixMsgID, messageID); p != nil {
			return walkIndex(txn, p, collect)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, msgID)
	}
	slices.SortFunc(out, func(a, b Event) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	return out, nil
}

// walkIndexFamily is walkIndex over every id that starts with the id in
// prefix: keys are <prefix><rest>/<seq>, with rest free of "/".
func walkIndexFamily(txn *badger.Txn, prefix []byte, fn func(*Event) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()
		if len(k) < len(prefix)+9 || k[len(k)-9] != '/' || slices.Contains(k[len(prefix):len(k)-9], '/') {
			continue
		}
		seq := binary.BigEndian.Uint64(k[len(k)-8:])
		item, err := txn.Get(eventKey(seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("audit: read event %d: %w", seq, err)
		}
		var ev Event
		if err := item.Value(func(v []byte) error { return ev.decodeStored(v) }); err != nil {
			return fmt.Errorf("audit: event %d: %w", seq, err)
		}
		if err := fn(&ev); err != nil {
			return err
		}
	}
	return nil
}

// walkIndex calls fn for each event listed under an index prefix, in seq
// order. Index entries whose event is gone (pruned) are skipped.
func walkIndex(txn *badger.Txn, prefix []byte, fn func(*Event) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()
		// An id that itself contains "/" shares a prefix with a shorter id;
		// the fixed 8-byte seq suffix tells the two apart.
		if len(k) != len(prefix)+8 {
			continue
		}
		seq := binary.BigEndian.Uint64(k[len(prefix):])
		item, err := txn.Get(eventKey(seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("audit: read event %d: %w", seq, err)
		}
		var ev Event
		if err := item.Value(func(v []byte) error { return ev.decodeStored(v) }); err != nil {
			return fmt.Errorf("audit: event %d: %w", seq, err)
		}
		if err := fn(&ev); err != nil {
			return err
		}
	}
	return nil
}

// walkEvents calls fn for every stored event in seq order. Undecodable
// events are an error here; Verify is the tool that reports them in detail.
func walkEvents(txn *badger.Txn, fn func(*Event) error) error {
	return walkEventsFrom(txn, 0, fn)
}

// walkEventsFrom is walkEvents from sequence number from on.
func walkEventsFrom(txn *badger.Txn, from uint64, fn func(*Event) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixEvent)})
	defer it.Close()
	var ev Event
	for it.Seek(eventKey(from)); it.Valid(); it.Next() {
		item := it.Item()
		if err := item.Value(func(v []byte) error { return ev.decodeStored(v) }); err != nil {
			return fmt.Errorf("audit: event at key %x: %w", item.Key(), err)
		}
		if err := fn(&ev); err != nil {
			return err
		}
	}
	return nil
}

// Filter selects events for Query. Empty fields match everything.
type Filter struct {
	Recipient string // case-insensitive
	Class     string
	Type      string // event type, e.g. Delivered or Bounced (the outcome)
	QueueID   string
	SFDCUser  string // Fields["sfdc_user"]
	SFDCOrg   string // Fields["sfdc_org"]
	Since     time.Time
	Until     time.Time // exclusive
	Limit     int       // 0: no limit
}

func (f *Filter) match(ev *Event) bool {
	switch {
	case f.Recipient != "" && !strings.EqualFold(f.Recipient, ev.Recipient),
		f.Class != "" && f.Class != ev.Class,
		f.Type != "" && f.Type != ev.Type,
		f.QueueID != "" && f.QueueID != ev.QueueID,
		f.SFDCUser != "" && f.SFDCUser != ev.Fields["sfdc_user"],
		f.SFDCOrg != "" && f.SFDCOrg != ev.Fields["sfdc_org"],
		!f.Since.IsZero() && ev.Time.Before(f.Since),
		!f.Until.IsZero() && !ev.Time.Before(f.Until):
		return false
	}
	return true
}

// Scan calls fn for each event matching f, in chain order, inside one
// read-only transaction, holding one event at a time. fn must not keep the
// pointer; returning an error stops the scan with that error.
func Scan(db *badger.DB, f Filter, fn func(*Event) error) error {
	n := 0
	visit := func(ev *Event) error {
		if !f.match(ev) {
			return nil
		}
		if err := fn(ev); err != nil {
			return err
		}
		n++
		if f.Limit > 0 && n >= f.Limit {
			return errStop
		}
		return nil
	}
	err := db.View(func(txn *badger.Txn) error {
		if f.QueueID != "" {
			return walkIndex(txn, indexPrefix(prefixQueue, f.QueueID), visit)
		}
		from, err := firstSeqSince(txn, f.Since)
		if err != nil {
			return err
		}
		return walkEventsFrom(txn, from, visit)
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// firstSeqSince returns a sequence number at or before that of every event
// stamped at or after since, from the minute index: the smallest first-seq
// of the minutes from since's on. Event times follow the chain only as well
// as the clock did, which is why it takes the minimum over every later
// minute rather than the first one found. Without the index (events older
// than it, or no since) it returns 0: the whole chain.
func firstSeqSince(txn *badger.Txn, since time.Time) (uint64, error) {
	if since.IsZero() {
		return 0, nil
	}
	item, err := txn.Get([]byte(keyMinuteStart))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("audit: time index: %w", err)
	}
	var start uint64
	if err := item.Value(func(v []byte) error { start = seqValue(v); return nil }); err != nil {
		return 0, err
	}
	// Events before the index began are not covered: walk them too while
	// any remain.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixEvent)})
	it.Rewind()
	older := false
	if it.Valid() {
		// A record under a malformed key (damage, which Verify reports)
		// must not be read past its end.
		k := it.Item().Key()
		older = len(k) != len(prefixEvent)+8 || binary.BigEndian.Uint64(k[len(prefixEvent):]) < start
	}
	it.Close()
	if older {
		return 0, nil
	}
	min := uint64(math.MaxUint64)
	mit := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixMinute), PrefetchValues: true})
	defer mit.Close()
	for mit.Seek(minuteKey(since)); mit.Valid(); mit.Next() {
		if err := mit.Item().Value(func(v []byte) error {
			if s := seqValue(v); s < min {
				min = s
			}
			return nil
		}); err != nil {
			return 0, err
		}
	}
	return min, nil
}

func seqValue(v []byte) uint64 {
	if len(v) != 8 {
		return 0 // unreadable: fall back to the whole chain
	}
	return binary.BigEndian.Uint64(v)
}

// Query returns the events matching f, in chain order.
func Query(db *badger.DB, f Filter) ([]Event, error) {
	var out []Event
	err := Scan(db, f, func(ev *Event) error {
		out = append(out, *ev)
		return nil
	})
	return out, err
}

// CSVHeader is the header row of a CSV export.
var CSVHeader = []string{"seq", "time", "event", "queue_id", "message_id", "class", "recipient", "sender", "details", "prev_hash", "hash"}

// Export writes the events with since <= time < until (zero: unbounded) to
// w as "csv" (with CSVHeader) or "jsonl" (one Event JSON per line). It
// streams: memory stays constant however many events there are.
func Export(db *badger.DB, w io.Writer, format string, since, until time.Time) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	var write func(*Event) error
	flush := bw.Flush
	switch format {
	case "csv":
		cw := csv.NewWriter(bw)
		if err := cw.Write(CSVHeader); err != nil {
			return fmt.Errorf("audit: export: %w", err)
		}
		row := make([]string, len(CSVHeader))
		var details strings.Builder
		write = func(ev *Event) error {
			details.Reset()
			FormatDetails(&details, ev.Fields)
			row[0] = strconv.FormatUint(ev.Seq, 10)
			row[1] = ev.Time.UTC().Format(time.RFC3339Nano)
			row[2], row[3], row[4], row[5], row[6], row[7] = ev.Type, ev.QueueID, ev.MessageID, ev.Class, ev.Recipient, ev.Sender
			row[8] = details.String()
			for i := 2; i <= 8; i++ {
				row[i] = escapeCSVCell(row[i])
			}
			row[9] = hex.EncodeToString(ev.Prev)
			row[10] = hex.EncodeToString(ev.Hash)
			return cw.Write(row)
		}
		flush = func() error {
			// The CSV writer buffers into bw, so it drains first.
			cw.Flush()
			if err := cw.Error(); err != nil {
				return err
			}
			return bw.Flush()
		}
	case "jsonl":
		write = func(ev *Event) error {
			b, err := ev.MarshalJSON()
			if err != nil {
				return err
			}
			if _, err := bw.Write(b); err != nil {
				return err
			}
			return bw.WriteByte('\n')
		}
	default:
		return fmt.Errorf("audit: export format %q: want csv or jsonl", format)
	}
	err := Scan(db, Filter{Since: since, Until: until}, write)
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

// escapeCSVCell keeps a spreadsheet from running a cell as a formula: a
// Message-ID or recipient is chosen by whoever sent the mail, and
// "=cmd|..." would execute when an auditor opens the export in Excel. A
// cell starting with =, +, -, @, tab or CR gets a leading "'" (the OWASP
// advice); so does one starting with "'", so that [UnescapeCSVCell], which
// drops one leading "'", gives back the exact value.
func escapeCSVCell(s string) string {
	if s != "" && strings.IndexByte("=+-@\t\r'", s[0]) >= 0 {
		return "'" + s
	}
	return s
}

// UnescapeCSVCell reverses the formula escaping of a text cell of a CSV
// export (every column but seq, time, prev_hash and hash): it drops one
// leading "'".
func UnescapeCSVCell(s string) string { return strings.TrimPrefix(s, "'") }

// FormatDetails writes fields as space-separated key=value pairs sorted by
// key, quoting (Go syntax) any key or value that is empty or holds spaces,
// quotes, "=" or unprintable characters, so the column parses back exactly.
func FormatDetails(b *strings.Builder, fields map[string]string) {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(quoteDetail(k))
		b.WriteByte('=')
		b.WriteString(quoteDetail(fields[k]))
	}
}

func quoteDetail(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if r == '"' || r == '=' || r == '\\' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// ParseDetails reverses FormatDetails.
func ParseDetails(s string) (map[string]string, error) {
	out := map[string]string{}
	for s != "" {
		k, rest, err := detailToken(s)
		if err != nil {
			return nil, err
		}
		if rest == "" || rest[0] != '=' {
			return nil, fmt.Errorf("audit: details: missing '=' after %q", k)
		}
		v, rest, err := detailToken(rest[1:])
		if err != nil {
			return nil, err
		}
		out[k] = v
		s = strings.TrimPrefix(rest, " ")
	}
	return out, nil
}

func detailToken(s string) (tok, rest string, err error) {
	if strings.HasPrefix(s, `"`) {
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			return "", "", fmt.Errorf("audit: details: %w", err)
		}
		tok, err = strconv.Unquote(q)
		if err != nil {
			return "", "", fmt.Errorf("audit: details: %w", err)
		}
		return tok, s[len(q):], nil
	}
	i := strings.IndexAny(s, "= ")
	if i < 0 {
		return s, "", nil
	}
	return s[:i], s[i:], nil
}
