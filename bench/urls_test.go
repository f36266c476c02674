package bench

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/latchkey/latchkey/audit"
)

// The submission path hashes every URL of a message for the audit trail
// (audit.(*Log).URLHashes). Profiles of the relay under load put it at
// about 5% of the relay's CPU, nearly all of it in one case-insensitive
// regular expression that Go runs with its backtracking engine over every
// byte of every text part. These benchmarks measure it beside a literal
// scanner that finds the same URLs (TestScanURLsMatchesRegexp), the change
// proposed for audit/urls.go.

// urlPattern is audit's pattern, copied to compare against.
var urlPattern = regexp.MustCompile(`(?i)\bhttps?://[^\s<>"'\x60]+`)

// scanURLs returns what urlPattern.FindAllString(s, -1) returns, without a
// regular expression: it jumps from one "://" to the next and checks the
// scheme before it and the word boundary before the scheme.
func scanURLs(s string) []string {
	var out []string
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
		if start > 0 && isWord(s[start-1]) {
			start = -1
		}
		end := j + 3
		for end < len(s) && !isStop(s[end]) {
			end++
		}
		if start < 0 || end == j+3 {
			i = j + 1
			continue
		}
		out = append(out, s[start:end])
		i = end
	}
}

func isWord(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// isStop is the pattern's [^\s<>"'`] negated; RE2's \s is [\t\n\f\r ] (no \v).
func isStop(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\f', '\r', '<', '>', '"', '\'', '`':
		return true
	}
	return false
}

func TestScanURLsMatchesRegexp(t *testing.T) {
	cases := []string{
		"", "http://", "https://x", "HTTPS://Example.com/a?b=c", "xhttps://a.b", "_http://a", "see http://a.b, then https://c.d.",
		"<https://e.f/g>", `href="https://h.i/j?k=1&amp;l=2"`, "http://a/https://b", "https:///", "ahttp://b http://c",
		"http://\u00e9t\u00e9.fr/\u00e0", "hTtP://x\thttp://y\nhttps://z", "://x", "ttps://x", "s://x", "http:/x", "9http://x",
		".http://x", "http://a\vb", "https://x'y", "https://a`b", "httpshttps://x",
	}
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"http", "https", "HTTP", "://", ":", "/", "a", "_", " ", "\n", "<", ">", "\"", "'", "s", "x", ".", "é"}
	for i := 0; i < 20000; i++ {
		var b strings.Builder
		for k := r.IntN(12); k >= 0; k-- {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		cases = append(cases, b.String())
	}
	for _, c := range cases {
		want, got := urlPattern.FindAllString(c, -1), scanURLs(c)
		if !slices.Equal(want, got) {
			t.Fatalf("%q: regexp %q, scanner %q", c, want, got)
		}
	}
}

// resetText is the decoded text of a ~4 KB reset message (plain + HTML).
func resetText() string {
	link := "https://login.example.com/secur/forgotpassword.jsp?r=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
	var b strings.Builder
	b.WriteString("Hello,\r\n\r\nWe received a request to reset your password.\r\nUse this link within 30 minutes:\r\n\r\n" + link + "\r\n\r\n")
	for b.Len() < 1900 {
		b.WriteString("Keep your account safe: never share your password, and check the address bar.\r\n")
	}
	b.WriteString(`<html><body><p><a href="` + link + `">Reset your password</a></p>` + "\r\n")
	for b.Len() < 3800 {
		b.WriteString("<p>Keep your account safe: never share your password, and check the addre</p>\r\n")
	}
	b.WriteString("</body></html>\r\n")
	return b.String()
}

func BenchmarkURLRegexp(b *testing.B) {
	s := resetText()
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		if len(urlPattern.FindAllString(s, -1)) != 2 {
			b.Fatal("expected 2 URLs")
		}
	}
}

func BenchmarkURLScan(b *testing.B) {
	s := resetText()
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		if len(scanURLs(s)) != 2 {
			b.Fatal("expected 2 URLs")
		}
	}
}

// BenchmarkURLHashes is the whole of what the submission path calls: MIME
// walk, decoding, the regexp and the keyed hashes, on a 4 KB reset.
func BenchmarkURLHashes(b *testing.B) {
	db, err := badger.Open(badger.DefaultOptions(b.TempDir()).WithLogger(nil))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	l, err := audit.Open(db, bytes.Repeat([]byte{7}, 32))
	if err != nil {
		b.Fatal(err)
	}
	text := resetText()
	i := strings.Index(text, "<html>")
	msg := fmt.Sprintf("From: a@example.com\r\nTo: b@dest.test\r\nSubject: Reset\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n"+
		"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n%s\r\n--b--\r\n", text[:i], text[i:])
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if len(l.URLHashes([]byte(msg))) != 1 {
			b.Fatal("expected 1 distinct URL")
		}
	}
}
