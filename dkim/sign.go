package dkim

import (
	"bytes"
	"fmt"
	"time"
)

// signedHeaders are the header fields every signature covers. Each is
// over-signed: listed in h= once more than it occurs, so that a copy added in
// transit (a second From or Subject, say) breaks the signature instead of
// being shown to the reader unsigned (RFC 6376 sections 5.4.2 and 8.15).
// The List-* fields are there for Salesforce's marketing mail: one-click
// unsubscribe (RFC 8058 section 3) works only when List-Unsubscribe and
// List-Unsubscribe-Post are covered by a valid signature, and Gmail and
// Yahoo require it of bulk senders.
var signedHeaders = [...]string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding", "List-Id", "List-Unsubscribe",
	"List-Unsubscribe-Post",
}

// maxCount caps how often one name is repeated in h=; a message with more
// copies than this is malformed anyway, and the cap bounds the header size.
const maxCount = 50

// SignedHeaders returns the header fields every signature covers.
func SignedHeaders() []string {
	return append([]string(nil), signedHeaders[:]...)
}

// headerKeys returns the h= list for msg: each signedHeaders name repeated
// (occurrences + 1) times. It scans only the header section, in place.
func headerKeys(msg []byte) []string {
	var counts [len(signedHeaders)]int
	for len(msg) > 0 {
		var line []byte
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			line, msg = msg, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			break // end of header
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // folded continuation
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		name := bytes.TrimRight(line[:colon], " \t")
		for i, h := range signedHeaders {
			if len(name) == len(h) && bytes.EqualFold(name, []byte(h)) {
				if counts[i] < maxCount {
					counts[i]++
				}
				break
			}
		}
	}
	n := len(signedHeaders)
	for i := range signedHeaders {
		n += counts[i]
	}
	keys := make([]string, 0, n)
	for i, h := range signedHeaders {
		for j := 0; j <= counts[i]; j++ {
			keys = append(keys, h)
		}
	}
	return keys
}

// Sign signs msg (a full message, header and body, CRLF line endings) with
// every key of domain and returns the DKIM-Signature header fields, folded and
// CRLF-terminated, to prepend to msg unchanged. With both an RSA and an
// Ed25519 selector the message carries both signatures (RFC 8463 section 5),
// so receivers that do not know Ed25519 still see a valid RSA one.
//
// It returns an error wrapping ErrNoKey if the domain has no key.
func (kr *Keyring) Sign(domain string, msg []byte) ([]byte, error) {
	keys := kr.set.Load().byDomain[normDomain(domain)]
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w %q", ErrNoKey, domain)
	}
	hk := headerKeys(msg)
	var out []byte
	for _, k := range keys {
		sig, err := signOne(k, hk, msg)
		if err != nil {
			return nil, err
		}
		out = append(out, sig...)
	}
	return out, nil
}

func signOne(k *loadedKey, hk []string, msg []byte) (string, error) {
	return signRelaxed(k, hk, msg, time.Now())
}
