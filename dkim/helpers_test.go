package dkim_test

import (
	"crypto"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/latchkey/latchkey/dkim"
)

// Generating RSA-2048 keys takes a good fraction of a second on a shared
// machine, so the tests share one of each kind.
var (
	keysOnce sync.Once
	rsaKey   crypto.Signer
	edKey    crypto.Signer
	otherRSA crypto.Signer // the "Salesforce" key
	keysErr  error
)

func testKeys(t testing.TB) (rsa2048, ed, other crypto.Signer) {
	t.Helper()
	keysOnce.Do(func() {
		if rsaKey, keysErr = dkim.GenerateKey("rsa", 0); keysErr != nil {
			return
		}
		if edKey, keysErr = dkim.GenerateKey("ed25519", 0); keysErr != nil {
			return
		}
		otherRSA, keysErr = dkim.GenerateKey("rsa", 1024)
	})
	if keysErr != nil {
		t.Fatalf("generate test keys: %v", keysErr)
	}
	return rsaKey, edKey, otherRSA
}

// dualKeyring writes the shared keys under dir and loads a keyring signing
// example.test with an RSA and an Ed25519 selector.
func dualKeyring(t testing.TB, dir string) (*dkim.Keyring, []dkim.KeyEntry) {
	t.Helper()
	r, e, _ := testKeys(t)
	entries := []dkim.KeyEntry{
		{Domain: "example.test", Selector: "rsa2026", Algo: "rsa", KeyFile: filepath.Join(dir, "rsa.pem")},
		{Domain: "example.test", Selector: "ed2026", Algo: "ed25519", KeyFile: filepath.Join(dir, "ed.pem")},
	}
	for i, k := range []crypto.Signer{r, e} {
		if err := dkim.WriteKeyFile(entries[i].KeyFile, k); err != nil {
			t.Fatal(err)
		}
	}
	kr, err := dkim.LoadKeyring(entries)
	if err != nil {
		t.Fatalf("LoadKeyring: %v", err)
	}
	return kr, entries
}

// records returns the TXT records of every key in kr, keyed by owner name.
func records(kr *dkim.Keyring) map[string]string {
	m := map[string]string{}
	for _, k := range kr.Keys() {
		m[k.Name] = k.Record
	}
	return m
}

func lookupFrom(recs map[string]string) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		for _, n := range []string{name, name + ".", strings.TrimSuffix(name, ".")} {
			if v, ok := recs[n]; ok {
				return []string{v}, nil
			}
		}
		return nil, errors.New("no such record: " + name)
	}
}

type goResult struct {
	Domain, Selector, Algo string
	Err                    error
}

// goVerify runs go-msgauth's verifier; results are in header order, like
// dkimtest.PyVerify's.
func goVerify(t testing.TB, msg []byte, recs map[string]string) []goResult {
	t.Helper()
	vs, err := msgdkim.VerifyWithOptions(strings.NewReader(string(msg)), &msgdkim.VerifyOptions{LookupTXT: lookupFrom(recs)})
	if err != nil {
		t.Fatalf("dkim.Verify: %v", err)
	}
	tags := sigTags(msg)
	if len(tags) != len(vs) {
		t.Fatalf("go-msgauth returned %d verifications for %d signatures", len(vs), len(tags))
	}
	out := make([]goResult, len(vs))
	for i, v := range vs {
		out[i] = goResult{Domain: v.Domain, Selector: tags[i]["s"], Algo: tags[i]["a"], Err: v.Err}
	}
	return out
}

// sigTags parses the tags of each DKIM-Signature header of msg, in order.
func sigTags(msg []byte) []map[string]string {
	head, _, _ := strings.Cut(string(msg), "\r\n\r\n")
	var fields []string
	for _, line := range strings.Split(head, "\r\n") {
		if line != "" && (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += line
		} else {
			fields = append(fields, line)
		}
	}
	var out []map[string]string
	for _, f := range fields {
		name, val, _ := strings.Cut(f, ":")
		if !strings.EqualFold(name, "DKIM-Signature") {
			continue
		}
		m := map[string]string{}
		for _, tv := range strings.Split(val, ";") {
			k, v, _ := strings.Cut(tv, "=")
			m[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), "")
		}
		out = append(out, m)
	}
	return out
}

// testMessage is a ~4 KB multipart/alternative password-reset mail, CRLF.
func testMessage() []byte {
	var b strings.Builder
	w := func(s string) { b.WriteString(s + "\r\n") }
	w("From: Acme Support <support@example.test>")
	w("To: Jane Doe <jane@customer.test>")
	w("Subject: Reset your password")
	w("Date: Mon, 02 Mar 2026 10:00:00 +0000")
	w("Message-ID: <reset-1234@example.test>")
	w("MIME-Version: 1.0")
	w("Content-Type: multipart/alternative;")
	w("\tboundary=\"b1\"")
	w("X-SFDC-LK: 00D000000000001")
	w("")
	w("--b1")
	w("Content-Type: text/plain; charset=utf-8")
	w("Content-Transfer-Encoding: 7bit")
	w("")
	for i := 0; i < 20; i++ {
		w(fmt.Sprintf("Line %02d of the plain text part, with a link https://acme.test/r/%d  ", i, i))
	}
	w("")
	w("--b1")
	w("Content-Type: text/html; charset=utf-8")
	w("Content-Transfer-Encoding: 7bit")
	w("")
	w("<html><body>")
	for i := 0; i < 20; i++ {
		w(fmt.Sprintf("<p>Paragraph %02d of the HTML part: <a href=\"https://acme.test/r/%d\">reset</a></p>", i, i))
	}
	w("</body></html>")
	w("--b1--")
	return []byte(b.String())
}
