package queue

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// States of an item. Every item ends in exactly one final state.
const (
	StateQueued     = "queued"     // waiting for its due time or a worker
	StateDelivered  = "delivered"  // the recipient's MX accepted it
	StateBounced    = "bounced"    // permanently refused
	StateExpired    = "expired"    // not delivered before its deadline
	StateSuperseded = "superseded" // a newer reset for the same key replaced it
	StateDropped    = "dropped"    // an operator removed it
)

// Final reports whether state is an end state.
func Final(state string) bool { return state != StateQueued && state != "" }

// Attempt is the result of one delivery try, as recorded on the item.
type Attempt struct {
	Time      time.Time `json:"time"`
	Host      string    `json:"host,omitempty"`
	IP        string    `json:"ip,omitempty"`
	TLS       string    `json:"tls,omitempty"`
	Code      int       `json:"code,omitempty"`
	Enhanced  string    `json:"enhanced,omitempty"`
	Text      string    `json:"text,omitempty"`
	Permanent bool      `json:"permanent,omitempty"`
	Error     string    `json:"error,omitempty"` // no reply: connection or DNS failure
}

// Item is one recipient of one accepted message: the unit of delivery.
type Item struct {
	ID       string `json:"id"`     // message id + recipient index
	MsgID    string `json:"msg_id"` // the id answered in "250 queued as"
	Class    string `json:"class"`
	Priority int    `json:"priority"`

	From      string `json:"from"`                 // original envelope sender
	Sender    string `json:"sender"`               // envelope sender used on delivery (VERP)
	Rcpt      string `json:"rcpt"`                 // current recipient
	OrigRcpt  string `json:"orig_rcpt,omitempty"`  // set when redirected to a backup address
	Domain    string `json:"domain"`               // transactional (signing) domain
	MessageID string `json:"message_id,omitempty"` // Message-ID header
	Size      int    `json:"size,omitempty"`       // octets of the signed message
	AuthUser  string `json:"auth_user,omitempty"`
	ClientIP  string `json:"client_ip,omitempty"`

	Accepted time.Time `json:"accepted"`
	Deadline time.Time `json:"deadline"` // the token's expiry
	Cutoff   time.Time `json:"cutoff"`   // last moment a delivery may start
	Due      time.Time `json:"due"`

	SupersedeKey string `json:"supersede_key,omitempty"`
	Backup       string `json:"backup,omitempty"` // backup address on file
	BackupTried  bool   `json:"backup_tried,omitempty"`

	Attempts     int       `json:"attempts"`
	State        string    `json:"state"`
	Reason       string    `json:"reason,omitempty"` // why it ended (or was last deferred)
	SupersededBy string    `json:"superseded_by,omitempty"`
	Finished     time.Time `json:"finished,omitempty"`
	Last         *Attempt  `json:"last,omitempty"`
	History      []Attempt `json:"history,omitempty"`
}

// maxHistory bounds the attempts kept on an item; the audit trail has all.
const maxHistory = 16

func (it *Item) record(a Attempt) {
	it.Attempts++
	it.Last = &a
	it.History = append(it.History, a)
	if len(it.History) > maxHistory {
		it.History = it.History[len(it.History)-maxHistory:]
	}
}

// Key layout (all under the queue's prefixes in the shared database).
var (
	pItem      = []byte("q/m/") // q/m/<item id> → Item JSON
	pBody      = []byte("q/b/") // q/b/<msg id> → message bytes
	pRefs      = []byte("q/c/") // q/c/<msg id> → live items of the message (uint32)
	pLive      = []byte("q/l/") // q/l/<item id> → schedule (class, due, cutoff)
	pSupersede = []byte("q/s/") // q/s/<key>\x00<item id> → ""
	pNewest    = []byte("q/n/") // q/n/<key> → newest item id for a supersede key (TTL: its deadline)
	pDedupe    = []byte("q/d/") // q/d/<key> → msg id (TTL)
	pRate      = []byte("q/r/") // q/r/<key> → window counter (TTL)
	pSuppress  = []byte("sup/") // sup/<list>/<address> → Suppression JSON
	pHeaderID  = []byte("q/h/") // q/h/<Message-ID>\x00<msg id> → "": the messages that carried a Message-ID
	pLink      = []byte("q/k/") // q/k/<sha256 of a link> → msg id (TTL: body's + linkRetention)
	pTime      = []byte("q/t/") // q/t/<acceptance ms, 8 bytes BE><item id> → "": every item in acceptance order
	// keyTimeIndexed marks pTime complete (older databases are indexed once by New).
	keyTimeIndexed = []byte("q/t!")
)

func key(prefix []byte, parts ...string) []byte {
	n := len(prefix)
	for _, p := range parts {
		n += len(p) + 1
	}
	k := make([]byte, 0, n)
	k = append(k, prefix...)
	for i, p := range parts {
		if i > 0 {
			k = append(k, 0)
		}
		k = append(k, p...)
	}
	return k
}

// schedule is the small value of a live-index entry: enough to rebuild the
// in-memory lanes at start without reading every item.
type schedule struct {
	Class  string
	Due    time.Time
	Cutoff time.Time
}

func (s schedule) encode() []byte {
	b := make([]byte, 16, 16+len(s.Class))
	binary.BigEndian.PutUint64(b, uint64(s.Due.UnixNano()))
	binary.BigEndian.PutUint64(b[8:], uint64(s.Cutoff.UnixNano()))
	return append(b, s.Class...)
}

func decodeSchedule(b []byte) (schedule, error) {
	if len(b) < 16 {
		return schedule{}, fmt.Errorf("queue: live entry of %d bytes", len(b))
	}
	return schedule{
		Due:    time.Unix(0, int64(binary.BigEndian.Uint64(b))),
		Cutoff: time.Unix(0, int64(binary.BigEndian.Uint64(b[8:]))),
		Class:  string(b[16:]),
	}, nil
}

func encodeItem(it *Item) ([]byte, error) { return json.Marshal(it) }

func decodeItem(b []byte) (*Item, error) {
	it := new(Item)
	if err := json.Unmarshal(b, it); err != nil {
		return nil, fmt.Errorf("queue: decode item: %w", err)
	}
	return it, nil
}

// base32 alphabet in lower case: ids appear in VERP local parts, which some
// MTAs lower-case.
const idAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

// NewMsgID returns a 16-character id: 48 bits of milliseconds (AcceptedAt
// reads them back) and 32 random bits. The ids do not sort by time as
// strings: the alphabet's digits come after its letters.
func NewMsgID(now time.Time) string {
	var b [10]byte
	ms := uint64(now.UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	rand.Read(b[6:])
	var out [16]byte
	// 80 bits → 16 base32 characters.
	var acc uint64
	bits := 0
	j := 0
	for _, c := range b {
		acc = acc<<8 | uint64(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			out[j] = idAlphabet[(acc>>uint(bits))&31]
			j++
		}
	}
	return string(out[:])
}

// AcceptedAt returns the acceptance time encoded in a message or item id,
// or the zero time for a malformed one.
func AcceptedAt(id string) time.Time {
	if len(id) < 10 {
		return time.Time{}
	}
	var ms uint64
	for _, c := range id[:10] { // 10 characters = 50 bits ⊇ the 48-bit time
		i := strings.IndexRune(idAlphabet, c)
		if i < 0 {
			return time.Time{}
		}
		ms = ms<<5 | uint64(i)
	}
	return time.UnixMilli(int64(ms >> 2))
}

// ItemID is the id of the n-th recipient of message msgID.
func ItemID(msgID string, n int) string {
	return msgID + string(idAlphabet[(n>>5)&31]) + string(idAlphabet[n&31])
}

// MsgIDOf returns the message id part of an item id.
func MsgIDOf(itemID string) string {
	if len(itemID) == 18 {
		return itemID[:16]
	}
	return itemID
}

// ValidID reports whether s looks like a message or item id.
func ValidID(s string) bool {
	if len(s) != 16 && len(s) != 18 {
		return false
	}
	return strings.Trim(s, idAlphabet) == ""
}

func jsonMarshal(v any) ([]byte, error)   { return json.Marshal(v) }
func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
