package audit

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// urlRegexp is the definition findURLSpans implements.
var urlRegexp = regexp.MustCompile(`(?i)\bhttps?://[^\s<>"'\x60]+`)

// findURLSpans finds exactly what the regular expression finds, on edge
// cases and on 20,000 random strings made of URL-ish pieces.
func TestFindURLSpansMatchesRegexp(t *testing.T) {
	cases := []string{
		"", "http://", "https://x", "HTTPS://Example.com/a?b=c", "xhttps://a.b", "_http://a", "see http://a.b, then https://c.d.",
		"<https://e.f/g>", `href="https://h.i/j?k=1&amp;l=2"`, "http://a/https://b", "https:///", "ahttp://b http://c",
		"http://\u00e9t\u00e9.fr/\u00e0", "hTtP://x\thttp://y\nhttps://z", "://x", "ttps://x", "s://x", "http:/x", "9http://x",
		".http://x", "http://a\vb", "https://x'y", "https://a`b", "httpshttps://x",
	}
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"http", "https", "HTTP", "://", ":", "/", "a", "_", " ", "\n", "<", ">", "\"", "'", "s", "x", ".", "é"}
	for range 20000 {
		var b strings.Builder
		for k := r.IntN(12); k >= 0; k-- {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		cases = append(cases, b.String())
	}
	for _, c := range cases {
		want := urlRegexp.FindAllStringIndex(c, -1)
		got := findURLSpans(c)
		if len(want) != len(got) {
			t.Fatalf("%q: regexp %v, scanner %v", c, want, got)
		}
		for i := range want {
			if want[i][0] != got[i][0] || want[i][1] != got[i][1] {
				t.Fatalf("%q: regexp %v, scanner %v", c, want, got)
			}
		}
	}
}

func FuzzFindURLSpans(f *testing.F) {
	f.Add("see https://a.example/reset?t=1, then http://b")
	f.Fuzz(func(t *testing.T, s string) {
		want := urlRegexp.FindAllStringIndex(s, -1)
		got := findURLSpans(s)
		if len(want) != len(got) {
			t.Fatalf("%q: regexp %v, scanner %v", s, want, got)
		}
		for i := range want {
			if want[i][0] != got[i][0] || want[i][1] != got[i][1] {
				t.Fatalf("%q: regexp %v, scanner %v", s, want, got)
			}
		}
	})
}

// resetText is the decoded text of a ~4 KB reset message (plain + HTML)
// with one link, twice.
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

// BenchmarkURLRegexp is the regular expression findURLSpans replaced, for
// comparison (docs/benchmarks.md).
func BenchmarkURLRegexp(b *testing.B) {
	s := resetText()
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		if len(urlRegexp.FindAllStringIndex(s, -1)) != 2 {
			b.Fatal("expected 2 URLs")
		}
	}
}

func BenchmarkFindURLSpans(b *testing.B) {
	s := resetText()
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		if len(findURLSpans(s)) != 2 {
			b.Fatal("expected 2 URLs")
		}
	}
}

// BenchmarkURLHashes measures what the submission path calls for the audit
// trail (URLHashes) on a 4 KB reset: MIME walk, decoding, the link scanner
// and the keyed hashes.
func BenchmarkURLHashes(b *testing.B) {
	db := openDB(b, b.TempDir())
	b.Cleanup(func() { db.Close() })
	l := openLog(b, db)
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
