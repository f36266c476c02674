package dkim

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The signer works on the buffered message in place: relaxed/relaxed
// canonicalisation (RFC 6376 section 3.4) straight into the hashes, with no
// copy of the message and a few allocations per signature, where
// go-msgauth's streaming signer made about 190 (issue 17, step 5). It is
// checked against go-msgauth's verifier and Debian's python3-dkim in the
// tests.

// field is one header field of the message: its name and its whole raw text
// (folded lines included, without the final CRLF).
type field struct {
	name []byte
	raw  []byte
}

// splitMessage returns the header fields in order and the body. The
// fields' raw text is a slice of msg. ok is false when the header has no
// end (no empty line): such a message cannot be signed.
func splitMessage(msg []byte) (fields []field, body []byte, ok bool) {
	start := -1 // offset of the current field in msg
	end := 0    // end of its text so far (no line ending)
	for pos := 0; pos < len(msg); {
		next := len(msg)
		if i := bytes.IndexByte(msg[pos:], '\n'); i >= 0 {
			next = pos + i + 1
		}
		textEnd := next
		if textEnd > pos && msg[textEnd-1] == '\n' {
			textEnd--
		}
		if textEnd > pos && msg[textEnd-1] == '\r' {
			textEnd--
		}
		text := msg[pos:textEnd]
		if len(text) == 0 {
			if start >= 0 {
				fields[len(fields)-1].raw = msg[start:end]
			}
			return fields, msg[next:], true // the empty line: the body follows
		}
		if isWSP(text[0]) && start >= 0 {
			end = textEnd // a continuation of the current field
			pos = next
			continue
		}
		if start >= 0 {
			fields[len(fields)-1].raw = msg[start:end]
			start = -1
		}
		if colon := bytes.IndexByte(text, ':'); colon >= 0 {
			fields = append(fields, field{name: bytes.TrimRight(text[:colon], " \t")})
			start, end = pos, textEnd
		}
		pos = next
	}
	if start >= 0 {
		fields[len(fields)-1].raw = msg[start:end]
	}
	return fields, nil, false
}

// isWSP reports SP or HTAB.
func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// relaxedHeader writes f canonicalised "relaxed" (RFC 6376 3.4.2): the name
// lower-cased, the value unfolded, runs of whitespace made one space, and
// whitespace at its ends and around the colon removed.
func relaxedHeader(buf []byte, f field) []byte {
	for _, c := range f.name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf = append(buf, c)
	}
	buf = append(buf, ':')
	v := f.raw[bytes.IndexByte(f.raw, ':')+1:]
	space := false
	started := false
	for _, c := range v {
		switch {
		case c == '\r' || c == '\n':
			continue // unfold
		case isWSP(c):
			space = started
		default:
			if space {
				buf = append(buf, ' ')
				space = false
			}
			buf = append(buf, c)
			started = true
		}
	}
	return buf
}

// relaxedBody hashes body canonicalised "relaxed" (RFC 6376 3.4.4): runs of
// whitespace in a line made one space, whitespace at line ends removed, and
// empty lines at the end removed; a non-empty body ends with CRLF.
func relaxedBody(h interface{ Write([]byte) (int, error) }, body []byte) {
	var line []byte
	pendingCRLF := 0 // empty lines seen and not yet written
	crlf := []byte("\r\n")
	for len(body) > 0 {
		var raw []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			raw, body = body[:i], body[i+1:]
		} else {
			raw, body = body, nil
		}
		raw = bytes.TrimSuffix(raw, []byte{'\r'})
		line = line[:0]
		space := false
		for _, c := range raw {
			if isWSP(c) {
				space = true
				continue
			}
			if space {
				line = append(line, ' ')
				space = false
			}
			line = append(line, c)
		}
		if len(line) == 0 {
			pendingCRLF++
			continue
		}
		for ; pendingCRLF > 0; pendingCRLF-- {
			h.Write(crlf)
		}
		h.Write(line)
		h.Write(crlf)
	}
}

// signRelaxed makes the DKIM-Signature field for k over msg, signing the
// header fields named in hk (each name taking the next instance from the
// bottom, and nothing once they run out: RFC 6376 5.4.2).
func signRelaxed(k *loadedKey, hk []string, msg []byte, now time.Time) (string, error) {
	fields, body, ok := splitMessage(msg)
	if !ok {
		return "", fmt.Errorf("dkim: sign %s/%s: the message has no end of header (an empty line)", k.domain, k.entry.Selector)
	}
	bh := sha256.New()
	relaxedBody(bh, body)
	var algo string
	switch k.algo {
	case "ed25519":
		algo = "ed25519-sha256"
	default:
		algo = "rsa-sha256"
	}
	var sb strings.Builder
	sb.Grow(512)
	sb.WriteString("DKIM-Signature: v=1; a=")
	sb.WriteString(algo)
	sb.WriteString("; c=relaxed/relaxed; d=")
	sb.WriteString(k.domain)
	sb.WriteString("; s=")
	sb.WriteString(k.entry.Selector)
	sb.WriteString(";\r\n t=")
	sb.WriteString(strconv.FormatInt(now.Unix(), 10))
	sb.WriteString("; h=")
	width := 5
	for i, name := range hk {
		if i > 0 {
			sb.WriteByte(':')
			width++
		}
		if width+len(name) > 74 {
			sb.WriteString("\r\n ")
			width = 1
		}
		sb.WriteString(name)
		width += len(name)
	}
	sb.WriteString(";\r\n bh=")
	sb.WriteString(base64.StdEncoding.EncodeToString(bh.Sum(nil)))
	sb.WriteString(";\r\n b=")
	unsigned := sb.String()

	hh := sha256.New()
	used := make([]bool, len(fields))
	buf := make([]byte, 0, 256)
	for _, name := range hk {
		for i := len(fields) - 1; i >= 0; i-- {
			if used[i] || !strings.EqualFold(string(fields[i].name), name) {
				continue
			}
			used[i] = true
			buf = relaxedHeader(buf[:0], fields[i])
			buf = append(buf, '\r', '\n')
			hh.Write(buf)
			break
		}
	}
	// The signature field itself, with b= empty and no final CRLF.
	buf = relaxedHeader(buf[:0], field{name: []byte("DKIM-Signature"), raw: []byte(unsigned)})
	hh.Write(buf)
	digest := hh.Sum(nil)
	var sig []byte
	var err error
	if k.algo == "ed25519" {
		// RFC 8463 3: Ed25519 signs the SHA-256 hash itself (PureEdDSA).
		sig, err = k.signer.Sign(rand.Reader, digest, crypto.Hash(0))
	} else {
		sig, err = k.signer.Sign(rand.Reader, digest, crypto.SHA256)
	}
	if err != nil {
		return "", fmt.Errorf("dkim: sign %s/%s: %w", k.domain, k.entry.Selector, err)
	}
	b64 := base64.StdEncoding.EncodeToString(sig)
	var out strings.Builder
	out.Grow(len(unsigned) + len(b64) + len(b64)/72*3 + 2)
	out.WriteString(unsigned)
	for len(b64) > 72 {
		out.WriteString(b64[:72])
		out.WriteString("\r\n ")
		b64 = b64[72:]
	}
	out.WriteString(b64)
	out.WriteString("\r\n")
	return out.String(), nil
}
