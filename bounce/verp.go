package bounce

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// VERP errors, wrapped with detail by DecodeVERP.
var (
	// ErrNotVERP means the address is not of the b+<id>.<mac>@bounce.<domain>
	// form at all: mail to some other address.
	ErrNotVERP = errors.New("bounce: not a VERP address")
	// ErrBadMAC means the address has the form but not a valid signature:
	// a forged or mangled bounce.
	ErrBadMAC = errors.New("bounce: VERP address has a bad MAC")
)

const (
	verpPrefix = "b+"
	verpSub    = "bounce."
	macLen     = 10 // base32 characters: 50 bits, plenty against guessing
	maxQueueID = 32
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// verpMAC signs a queue id for a domain. Both are lower-cased first because
// some MTAs lower-case the whole address on the way back.
func verpMAC(key []byte, queueID, domain string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(strings.ToLower(queueID)))
	m.Write([]byte{0}) // keeps ("ab","c") and ("a","bc") apart
	m.Write([]byte(strings.ToLower(domain)))
	return strings.ToLower(b32.EncodeToString(m.Sum(nil)))[:macLen]
}

// EncodeVERP returns the envelope sender for a queued message:
// b+<queueID>.<mac>@bounce.<domain>. queueID must be lower-case alphanumeric
// (it is lower-cased here) and at most 32 characters.
func EncodeVERP(key []byte, queueID, domain string) string {
	id := strings.ToLower(queueID)
	d := strings.ToLower(domain)
	return verpPrefix + id + "." + verpMAC(key, id, d) + "@" + verpSub + d
}

// DecodeVERP checks a bounce address made by EncodeVERP and returns the queue
// id and domain it carries. The match is case-insensitive and the MAC is
// compared in constant time. The error wraps ErrNotVERP when addr does not
// have the form, ErrBadMAC when the signature does not match.
func DecodeVERP(key []byte, addr string) (queueID, domain string, err error) {
	a := strings.ToLower(strings.Trim(strings.TrimSpace(addr), "<>"))
	local, host, ok := strings.Cut(a, "@")
	if !ok || strings.Contains(host, "@") {
		return "", "", fmt.Errorf("%w: %q has no single @", ErrNotVERP, addr)
	}
	if !strings.HasPrefix(host, verpSub) || len(host) == len(verpSub) {
		return "", "", fmt.Errorf("%w: %q is not on a bounce. subdomain", ErrNotVERP, addr)
	}
	domain = host[len(verpSub):]
	if !strings.HasPrefix(local, verpPrefix) {
		return "", "", fmt.Errorf("%w: %q does not start with %q", ErrNotVERP, addr, verpPrefix)
	}
	rest := local[len(verpPrefix):]
	dot := strings.LastIndexByte(rest, '.')
	if dot < 0 {
		return "", "", fmt.Errorf("%w: %q has no MAC", ErrNotVERP, addr)
	}
	queueID, mac := rest[:dot], rest[dot+1:]
	if queueID == "" || len(queueID) > maxQueueID || !alnum(queueID) {
		return "", "", fmt.Errorf("%w: %q has a malformed queue id", ErrNotVERP, addr)
	}
	if len(mac) != macLen {
		return "", "", fmt.Errorf("%w: %q has a MAC of the wrong length", ErrNotVERP, addr)
	}
	want := verpMAC(key, queueID, domain)
	if !hmac.Equal([]byte(mac), []byte(want)) {
		return "", "", fmt.Errorf("%w: %q", ErrBadMAC, addr)
	}
	return queueID, domain, nil
}

func alnum(s string) bool {
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
