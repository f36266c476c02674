package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/mail"
	"strconv"
	"strings"
	"time"
)

// Deadline returns the time after which a message accepted at accepted must
// never be delivered: accepted+Expiry, or the time in the class's
// ExpiryHeader when that is earlier. A header time not after accepted is the
// deadline too: the token was dead before latchkey saw it, so the message
// must expire unsent (and be escalated), never carry a dead link; warning
// says so. An unreadable one is ignored and described in warning, so the
// relay can log it; a later one is silently capped by the window, which is
// the admin's decision.
func (c *Class) Deadline(m *Meta, accepted time.Time) (deadline time.Time, warning string) {
	deadline = accepted.Add(c.Expiry)
	if c.ExpiryHeader == "" || m == nil || !m.Header.Has(c.ExpiryHeader) {
		return deadline, ""
	}
	v := strings.TrimSpace(m.Header.Get(c.ExpiryHeader))
	t, ok := parseExpiry(v)
	switch {
	case !ok:
		return deadline, fmt.Sprintf("policy: %s header %s is not a time; using the %s window",
			c.ExpiryHeader, quoteShort(v), c.Expiry)
	case !t.After(accepted):
		return t, fmt.Sprintf("policy: %s header %s is not after acceptance: the token has already expired; the message will expire unsent",
			c.ExpiryHeader, quoteShort(v))
	case t.Before(deadline):
		return t, ""
	}
	return deadline, ""
}

// parseExpiry reads RFC 3339, RFC 5322 dates and unix seconds — what a
// template can produce from a token's expiry field.
func parseExpiry(v string) (time.Time, bool) {
	if v == "" {
		return time.Time{}, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		// Beyond year 9999 is nonsense, and would overflow time arithmetic.
		if n <= 0 || n > 253402300799 {
			return time.Time{}, false
		}
		return time.Unix(n, 0), true
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, true
	}
	if t, err := mail.ParseDate(numericZone(v)); err == nil {
		return t, true
	}
	return time.Time{}, false
}

// obsZones are the zone names RFC 5322 (4.3) still lets a date carry. Go reads
// a zone name it does not know locally as UTC, which would move a token's
// expiry by up to eight hours, so they are rewritten as offsets first.
var obsZones = map[string]string{
	"UT": "+0000", "GMT": "+0000",
	"EST": "-0500", "EDT": "-0400", "CST": "-0600", "CDT": "-0500",
	"MST": "-0700", "MDT": "-0600", "PST": "-0800", "PDT": "-0700",
}

// numericZone replaces a trailing obsolete zone name of an RFC 5322 date
// with its offset.
func numericZone(v string) string {
	i := strings.LastIndexAny(v, " \t")
	if i < 0 {
		return v
	}
	if off, ok := obsZones[strings.ToUpper(v[i+1:])]; ok {
		return v[:i+1] + off
	}
	return v
}

func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strconv.Quote(s)
}

// Cutoff is the last moment a message with this deadline may be handed to an
// MX: the deadline minus the margin.
func (c *Class) Cutoff(deadline time.Time) time.Time { return deadline.Add(-c.Margin) }

// NextRetry returns when to try again after attempt failed attempts (1 after
// the first failure), starting from now. The wait is Retry[attempt-1], the
// last entry repeating, plus up to 10% jitter from rnd (rand.Int64N when nil)
// so that messages deferred together do not retry together.
//
// When the wait would end past the cut-off (deadline − Margin), one last
// attempt is scheduled half the first retry interval before the cut-off, if
// at least that interval is left — a reset delivered with its margin to
// spare is still useful, and the attempt needs time to finish before the
// cut-off (a delivery never starts or runs past it); otherwise ok is false
// and the message should end as expired. A zero deadline means
// accepted+Expiry.
func (c *Class) NextRetry(attempt int, accepted, now, deadline time.Time, rnd func(n int64) int64) (next time.Time, ok bool) {
	if deadline.IsZero() {
		deadline = accepted.Add(c.Expiry)
	}
	cutoff := c.Cutoff(deadline)
	if len(c.Retry) == 0 || !now.Before(cutoff) {
		return time.Time{}, false
	}
	i := min(max(attempt-1, 0), len(c.Retry)-1)
	wait := c.Retry[i]
	if rnd == nil {
		rnd = rand.Int64N
	}
	if j := int64(wait / 10); j > 0 {
		wait += time.Duration(rnd(j))
	}
	next = now.Add(wait)
	if next.After(cutoff) {
		if cutoff.Sub(now) < c.Retry[0] {
			return time.Time{}, false
		}
		next = cutoff.Add(-c.Retry[0] / 2)
	}
	return next, true
}

// keyHash keeps index keys short and of fixed size whatever the header values
// are, and keeps addresses out of key listings.
func keyHash(prefix string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	return prefix + hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// SupersedeKeyFor returns the key under which a message to rcpt supersedes
// older queued messages of this class, or "" when Supersede is off. The
// recipient and header values are compared case-insensitively; the class name
// is part of the key so that classes never supersede each other.
func (c *Class) SupersedeKeyFor(m *Meta, rcpt string) string {
	if !c.Supersede {
		return ""
	}
	parts := make([]string, 0, 2+2*len(c.supHeaders))
	parts = append(parts, c.Name, strings.ToLower(trimAngle(rcpt)))
	for _, h := range c.supHeaders {
		v := ""
		if m != nil {
			v = strings.ToLower(strings.TrimSpace(m.Header.Get(h)))
		}
		parts = append(parts, h, v)
	}
	return keyHash("sup:", parts...)
}

// DedupeKeys returns the keys that identify a resubmission of the same
// message to rcpt: one for its Message-ID (when it has one) and one for its
// body digest. Both include the recipient because the queue holds one entry
// per recipient. nil when the class's DedupeWindow is 0.
func (c *Class) DedupeKeys(messageID, bodySHA256, rcpt string) []string {
	if c.DedupeWindow <= 0 {
		return nil
	}
	r := strings.ToLower(trimAngle(rcpt))
	keys := make([]string, 0, 2)
	// Message-IDs are compared exactly (RFC 5322 makes them case-sensitive);
	// only the angle brackets and spaces are not part of the identity.
	if id := trimAngle(messageID); id != "" {
		keys = append(keys, keyHash("mid:", id, r))
	}
	if bodySHA256 != "" {
		keys = append(keys, keyHash("body:", strings.ToLower(bodySHA256), r))
	}
	return keys
}
