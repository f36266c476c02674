package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"html"
	"io"
	"strings"

	"github.com/emersion/go-message"
)

// Limits on what URLHashes reads, so a hostile body cannot make the
// committer path slow or large.
const (
	maxScanBytes = 16 << 20
	maxURLs      = 256
)

// findURLSpans returns the [start, end) of every http(s) URL in s: what
// the regular expression (?i)\bhttps?://[^\s<>"'`]+ finds (the test checks
// they agree), without one. Quotes and angle brackets end a URL, as they do
// in HTML attributes and in "<https://...>" in text. It runs on every text
// part of every accepted message, where the regular expression cost about
// 5% of the relay's CPU; jumping from one "://" to the next is ~100× faster.
func findURLSpans(s string) [][2]int {
	var out [][2]int
	for i := 0; ; {
		j := strings.Index(s[i:], "://")
		if j < 0 {
			return out
		}
		j += i
		start := -1
		if j >= 5 && strings.EqualFold(s[j-5:j], "https") {
			start = j - 5
		} else if j >= 4 && strings.EqualFold(s[j-4:j], "http") {
			start = j - 4
		}
		// \b: the scheme must not continue a word ("xhttp://" is no URL).
		if start > 0 && isWordByte(s[start-1]) {
			start = -1
		}
		end := j + 3
		for end < len(s) && !isURLStop(s[end]) {
			end++
		}
		if start < 0 || end == j+3 {
			i = j + 1
			continue
		}
		out = append(out, [2]int{start, end})
		i = end
	}
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// isURLStop is [^\s<>"'`] negated, with RE2's \s ([\t\n\f\r ], no \v).
func isURLStop(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\f', '\r', '<', '>', '"', '\'', '`':
		return true
	}
	return false
}

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

// LinkHashes is URLHashes, and with it the plain SHA-256 (hex) of each URL:
// what an application that holds the link (the reset page) can compute
// itself to report a click without sending the link or its token.
func (l *Log) LinkHashes(body []byte) (keyed, plain []string) {
	for _, u := range findURLs(body) {
		keyed = append(keyed, l.URLHash(u))
		sum := sha256.Sum256([]byte(u))
		plain = append(plain, hex.EncodeToString(sum[:]))
	}
	return keyed, plain
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
	for _, sp := range findURLSpans(s) {
		u := s[sp[0]:sp[1]]
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
	var b strings.Builder
	last := 0
	for _, sp := range findURLSpans(v) {
		b.WriteString(v[last:sp[0]])
		b.WriteString("[url:" + l.URLHash(v[sp[0]:sp[1]]) + "]")
		last = sp[1]
	}
	b.WriteString(v[last:])
	return b.String()
}
