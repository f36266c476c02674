package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"html"
	"io"
	"regexp"
	"strings"

	"github.com/emersion/go-message"
)

// Limits on what URLHashes reads, so a hostile body cannot make the
// committer path slow or large.
const (
	maxScanBytes = 16 << 20
	maxURLs      = 256
)

// urlPattern finds http(s) URLs in decoded text. Quotes and angle brackets
// end a URL, as they do in HTML attributes and in "<https://...>" in text.
var urlPattern = regexp.MustCompile(`(?i)\bhttps?://[^\s<>"'\x60]+`)

// BodyDigest returns the SHA-256 of a message body, in hex: it proves which
// body was sent without storing it.
func BodyDigest(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// URLHash returns the keyed hash of one URL, as URLHashes does: an auditor
// holding a link (from a user's complaint, say) can check it was sent.
func (l *Log) URLHash(u string) string {
	m := hmac.New(sha256.New, l.urlKey)
	m.Write([]byte(u))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// URLHashes finds every distinct http(s) URL in a message (plain text and
// HTML parts, with transfer encodings such as quoted-printable and base64
// decoded) and returns the keyed hash of each, in order of first
// appearance. The URLs themselves are never returned or stored.
func (l *Log) URLHashes(body []byte) []string {
	urls := findURLs(body)
	out := make([]string, 0, len(urls))
	for _, u := range urls {
		out = append(out, l.URLHash(u))
	}
	return out
}

// findURLs walks the MIME tree; if the message cannot be parsed as MIME
// (no header, broken multipart) it falls back to scanning the raw bytes with
// quoted-printable soft breaks and =3D undone, so links are not missed.
func findURLs(body []byte) []string {
	f := urlFinder{seen: map[string]bool{}}
	ent, err := message.Read(bytes.NewReader(body))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		f.scan(qpFallback(body), false)
		return f.urls
	}
	budget := int64(maxScanBytes)
	werr := ent.Walk(func(_ []int, part *message.Entity, err error) error {
		if err != nil && !message.IsUnknownCharset(err) {
			return nil // undecodable part: nothing reliable to read
		}
		if part.MultipartReader() != nil {
			return nil
		}
		mt, _, _ := part.Header.ContentType()
		if mt == "" {
			mt = "text/plain"
		}
		if !strings.HasPrefix(mt, "text/") {
			return nil
		}
		// A truncated or badly encoded part still yields the links read so
		// far, so a read error is not fatal.
		text, _ := io.ReadAll(io.LimitReader(part.Body, budget))
		budget -= int64(len(text))
		f.scan(text, mt == "text/html")
		if budget <= 0 {
			return io.EOF
		}
		return nil
	})
	if werr != nil && werr != io.EOF && len(f.urls) == 0 {
		f.scan(qpFallback(body), false)
	}
	return f.urls
}

type urlFinder struct {
	seen map[string]bool
	urls []string
}

func (f *urlFinder) scan(text []byte, isHTML bool) {
	s := string(text)
	if isHTML {
		// href="...&amp;..." carries "&" in the real link.
		s = html.UnescapeString(s)
	}
	for _, u := range urlPattern.FindAllString(s, -1) {
		// Sentence punctuation after a link in text is not part of it.
		u = strings.TrimRight(u, ".,;:!?)]}*")
		if len(f.urls) >= maxURLs || f.seen[u] {
			continue
		}
		f.seen[u] = true
		f.urls = append(f.urls, u)
	}
}

// qpFallback undoes quoted-printable soft line breaks and =3D, the two
// encodings that split or disguise links in raw QP text.
func qpFallback(b []byte) []byte {
	if len(b) > maxScanBytes {
		b = b[:maxScanBytes]
	}
	b = bytes.ReplaceAll(b, []byte("=\r\n"), nil)
	b = bytes.ReplaceAll(b, []byte("=\n"), nil)
	b = bytes.ReplaceAll(b, []byte("=3D"), []byte("="))
	return bytes.ReplaceAll(b, []byte("=3d"), []byte("="))
}

// RedactURLs replaces every http(s) URL in v by its keyed hash. The relay
// applies it to remote replies before storing or logging them: a content
// filter may quote the reset link it refused. Unlike Append, it is safe
// for concurrent use (it reads only the key).
func (l *Log) RedactURLs(v string) string { return l.redactURLs(v) }

// redactURLs replaces every http(s) URL in a detail value by its keyed hash,
// so a URL passed in by mistake (a remote reply quoting a link) is not stored.
func (l *Log) redactURLs(v string) string {
	if !strings.Contains(v, "://") {
		return v
	}
	return urlPattern.ReplaceAllStringFunc(v, func(u string) string {
		return "[url:" + l.URLHash(u) + "]"
	})
}
