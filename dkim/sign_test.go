package dkim_test

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/dkim/dkimtest"
)

func signed(t testing.TB, kr *dkim.Keyring, domain string, msg []byte) []byte {
	t.Helper()
	hdr, err := kr.Sign(domain, msg)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return append(hdr, msg...)
}

// wantAllOK checks both verifiers accept every signature and that the
// signatures are exactly want (as "domain/selector/algorithm", top first).
func wantAllOK(t *testing.T, msg []byte, recs map[string]string, want []string) {
	t.Helper()
	gores := goVerify(t, msg, recs)
	var got []string
	for _, r := range gores {
		got = append(got, r.Domain+"/"+r.Selector+"/"+r.Algo)
		if r.Err != nil {
			t.Errorf("go-msgauth: %s/%s: %v", r.Domain, r.Selector, r.Err)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("go-msgauth signatures = %v, want %v", got, want)
	}
	py := dkimtest.PyVerify(t, msg, recs)
	got = nil
	for _, r := range py {
		got = append(got, r.Domain+"/"+r.Selector+"/"+r.Algorithm)
		if !r.OK {
			t.Errorf("python3-dkim: %s/%s (%s): %s", r.Domain, r.Selector, r.Algorithm, r.Error)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("python3-dkim signatures = %v, want %v", got, want)
	}
}

var ours = []string{"example.test/rsa2026/rsa-sha256", "example.test/ed2026/ed25519-sha256"}

func TestSignDualVerifiesInBothVerifiers(t *testing.T) {
	t.Parallel()
	kr, _ := dualKeyring(t, t.TempDir())
	msg := testMessage()
	hdr, err := kr.Sign("Example.TEST.", msg) // domain matching ignores case and the root dot
	if err != nil {
		t.Fatal(err)
	}

	// The block must be ready to prepend: header fields only, CRLF
	// everywhere, folded, within the RFC 5322 line limit.
	if !bytes.HasPrefix(hdr, []byte("DKIM-Signature: ")) || !bytes.HasSuffix(hdr, []byte("\r\n")) {
		t.Fatalf("header block not a header field:\n%s", hdr)
	}
	if n := bytes.Count(hdr, []byte("DKIM-Signature:")); n != 2 {
		t.Errorf("%d DKIM-Signature fields, want 2", n)
	}
	if bytes.Count(hdr, []byte("\n")) != bytes.Count(hdr, []byte("\r\n")) || bytes.Contains(hdr, []byte("\r\n\r\n")) {
		t.Errorf("bad line endings in:\n%q", hdr)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(hdr), "\r\n"), "\r\n") {
		if len(line) > 998 {
			t.Errorf("line of %d bytes", len(line))
		}
		if !strings.HasPrefix(line, "DKIM-Signature: ") && !strings.HasPrefix(line, " ") {
			t.Errorf("line neither a field start nor a continuation: %q", line)
		}
	}

	full := append(hdr, msg...)
	recs := records(kr)
	wantAllOK(t, full, recs, ours)

	// Control: the verifiers must be able to say no, or the checks above
	// prove nothing.
	tampered := bytes.Replace(full, []byte("Paragraph 03"), []byte("Paragraph 99"), 1)
	for _, r := range goVerify(t, tampered, recs) {
		if r.Err == nil {
			t.Errorf("go-msgauth accepted a tampered body for %s", r.Selector)
		}
	}
	for _, r := range dkimtest.PyVerify(t, tampered, recs) {
		if r.OK {
			t.Errorf("python3-dkim accepted a tampered body for %s", r.Selector)
		}
	}
}

func TestSignAddsToExistingSignature(t *testing.T) {
	t.Parallel()
	kr, _ := dualKeyring(t, t.TempDir())
	_, _, sfKey := testKeys(t)

	// Salesforce signs first with its own key and domain, over all headers.
	var pre bytes.Buffer
	err := msgdkim.Sign(&pre, bytes.NewReader(testMessage()), &msgdkim.SignOptions{
		Domain:                 "sf.example",
		Selector:               "sf2026",
		Signer:                 sfKey,
		HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
		BodyCanonicalization:   msgdkim.CanonicalizationSimple,
	})
	if err != nil {
		t.Fatal(err)
	}
	sfRecord, err := dkim.PublicRecord(sfKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	full := signed(t, kr, "example.test", pre.Bytes())
	recs := records(kr)
	recs["sf2026._domainkey.sf.example"] = sfRecord // no trailing dot on purpose
	wantAllOK(t, full, recs, append(ours[:2:2], "sf.example/sf2026/rsa-sha256"))
}

func TestOverSigning(t *testing.T) {
	t.Parallel()
	kr, _ := dualKeyring(t, t.TempDir())
	msg := testMessage()
	hdr, err := kr.Sign("example.test", msg)
	if err != nil {
		t.Fatal(err)
	}
	recs := records(kr)
	endOfHeader := bytes.Index(msg, []byte("\r\n\r\n")) + 2

	cases := []struct {
		name  string
		field string
		top   bool // insert right below our signatures instead of at the end of the header
		fails bool
	}{
		{"second From at end", "From: Mallory <ceo@example.test>\r\n", false, true},
		{"second From on top", "From: Mallory <ceo@example.test>\r\n", true, true},
		{"second Subject", "Subject: Urgent: wire money\r\n", false, true},
		{"absent Reply-To", "Reply-To: mallory@evil.test\r\n", false, true},
		{"unsigned header is harmless", "X-Mailer: relay\r\n", false, false},
		// A one-click unsubscribe added in transit must not pass as ours.
		{"absent List-Unsubscribe-Post", "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var m []byte
			m = append(m, hdr...)
			if c.top {
				m = append(m, c.field...)
				m = append(m, msg...)
			} else {
				m = append(m, msg[:endOfHeader]...)
				m = append(m, c.field...)
				m = append(m, msg[endOfHeader:]...)
			}
			for _, r := range goVerify(t, m, recs) {
				if failed := r.Err != nil; failed != c.fails {
					t.Errorf("go-msgauth %s: err = %v, want failure %v", r.Selector, r.Err, c.fails)
				}
			}
			for _, r := range dkimtest.PyVerify(t, m, recs) {
				if failed := !r.OK; failed != c.fails {
					t.Errorf("python3-dkim %s: ok = %v (%s), want failure %v", r.Selector, r.OK, r.Error, c.fails)
				}
			}
		})
	}
}

func TestSignUnknownDomain(t *testing.T) {
	kr, _ := dualKeyring(t, t.TempDir())
	_, err := kr.Sign("other.test", testMessage())
	if !errors.Is(err, dkim.ErrNoKey) || !strings.Contains(err.Error(), "other.test") {
		t.Fatalf("Sign(other.test) error = %v, want ErrNoKey naming the domain", err)
	}
	if kr.Has("other.test") || !kr.Has("EXAMPLE.test") {
		t.Error("Has() wrong")
	}
}

func TestSignMalformedMessage(t *testing.T) {
	kr, _ := dualKeyring(t, t.TempDir())
	// No blank line ends the header: go-msgauth cannot tell the body apart.
	if _, err := kr.Sign("example.test", []byte("From: a@example.test\r\nSubject: x")); err == nil {
		t.Error("Sign accepted a message without header terminator")
	}
	if _, err := kr.Sign("example.test", nil); err == nil {
		t.Error("Sign accepted an empty message")
	}
}

// Sign must be usable from many sessions while keys are reloaded.
func TestSignConcurrentWithReload(t *testing.T) {
	kr, _ := dualKeyring(t, t.TempDir())
	msg := testMessage()
	recs := records(kr)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				hdr, err := kr.Sign("example.test", msg)
				if err != nil {
					errs <- err
					return
				}
				vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(append(hdr, msg...)), &msgdkim.VerifyOptions{LookupTXT: lookupFrom(recs)})
				if err != nil {
					errs <- err
					return
				}
				for _, v := range vs {
					if v.Err != nil {
						errs <- v.Err
						return
					}
				}
			}
		}()
	}
	for i := 0; i < 5; i++ {
		if err := kr.Reload(); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func benchSign(b *testing.B, algo string) {
	r, e, _ := testKeys(b)
	key := r
	if algo == "ed25519" {
		key = e
	}
	dir := b.TempDir()
	entry := dkim.KeyEntry{Domain: "example.test", Selector: "s1", Algo: algo, KeyFile: dir + "/k.pem"}
	if err := dkim.WriteKeyFile(entry.KeyFile, key); err != nil {
		b.Fatal(err)
	}
	kr, err := dkim.LoadKeyring([]dkim.KeyEntry{entry})
	if err != nil {
		b.Fatal(err)
	}
	msg := testMessage()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := kr.Sign("example.test", msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignRSA2048(b *testing.B) { benchSign(b, "rsa") }
func BenchmarkSignEd25519(b *testing.B) { benchSign(b, "ed25519") }
