package deliver

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/dkim/dkimtest"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// A signed message must reach the MX byte for byte, dot-stuffing undone, so
// that both signatures still verify there (checked by dkimpy, not by the
// library that signed).
func TestReviewSignedMessageArrivesByteIdentical(t *testing.T) {
	dir := t.TempDir()
	var entries []dkim.KeyEntry
	for _, a := range []string{dkim.AlgoRSA, dkim.AlgoEd25519} {
		e := dkim.KeyEntry{Domain: "sender.test", Selector: "s" + a, Algo: a, KeyFile: filepath.Join(dir, a+".pem")}
		entries = append(entries, e)
	}
	if _, err := dkim.EnsureKeys(entries, 2048); err != nil {
		t.Fatal(err)
	}
	kr, err := dkim.LoadKeyring(entries)
	if err != nil {
		t.Fatal(err)
	}
	recs := map[string]string{}
	for _, k := range kr.Keys() {
		recs[k.Name] = k.Record
	}

	body := ".\r\n..\r\n.leading dot\r\n. \r\nend.\r\n.\r\n\r\n" +
		strings.Repeat("x", 990) + "\r\n" + "caf\xc3\xa9 \t\r\n" + ".\r\n"
	unsigned := []byte("From: Acme <a@sender.test>\r\nTo: b@example.test\r\nSubject: reset\r\n" +
		"\tfolded\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\n" + body)
	sig, err := kr.Sign("sender.test", unsigned)
	if err != nil {
		t.Fatal(err)
	}
	signed := append(sig, unsigned...)

	sink, d := domainSetup(t, smtpsink.Options{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := d.Deliver(ctx, "b@bounce.sender.test", []string{"b@example.test"}, signed)
	wantDelivered(t, r[0])
	got := sink.Wait(1, 5*time.Second)
	if len(got) != 1 {
		t.Fatalf("%d messages arrived", len(got))
	}
	if !bytes.Equal(got[0].Data, signed) {
		t.Fatalf("message changed on the way:\nsent %q\ngot  %q", signed, got[0].Data)
	}
	res := dkimtest.PyVerify(t, got[0].Data, recs)
	if len(res) != 2 {
		t.Fatalf("%d signatures verified, want 2", len(res))
	}
	for _, v := range res {
		if !v.OK {
			t.Errorf("%s/%s: %s", v.Selector, v.Algorithm, v.Error)
		}
	}
}
