package bench

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/latchkey/latchkey/audit"
)

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

// BenchmarkURLHashes measures what the submission path calls for the audit
// trail (audit.(*Log).URLHashes) on a 4 KB reset: MIME walk, decoding, the
// link scanner and the keyed hashes. The scanner alone, against the regular
// expression it replaced, is benchmarked in the audit package
// (BenchmarkFindURLSpans, BenchmarkURLRegexp).
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
