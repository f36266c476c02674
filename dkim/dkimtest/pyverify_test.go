package dkimtest_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/latchkey/latchkey/dkim/dkimtest"
)

const msg = "From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nHello.\r\n"

func TestPyVerify(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var signed bytes.Buffer
	for _, sel := range []string{"second", "first"} { // prepended, so "first" ends up on top
		var out bytes.Buffer
		in := msg
		if signed.Len() > 0 {
			in = signed.String()
		}
		err := msgdkim.Sign(&out, strings.NewReader(in), &msgdkim.SignOptions{
			Domain: "example.test", Selector: sel, Signer: priv,
			HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
			BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
		})
		if err != nil {
			t.Fatal(err)
		}
		signed = out
	}
	rec := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)

	// Names with and without the trailing dot are both answered; "second"
	// has no record, so only "first" verifies.
	res := dkimtest.PyVerify(t, signed.Bytes(), map[string]string{"first._domainkey.example.test": rec})
	if len(res) != 2 {
		t.Fatalf("got %d results, want 2: %+v", len(res), res)
	}
	if r := res[0]; !r.OK || r.Selector != "first" || r.Domain != "example.test" || r.Algorithm != "ed25519-sha256" || r.Error != "" {
		t.Errorf("first: %+v", r)
	}
	if r := res[1]; r.OK || r.Selector != "second" || !strings.Contains(r.Error, "second._domainkey.example.test") {
		t.Errorf("second (no record): %+v", r)
	}
	res = dkimtest.PyVerify(t, signed.Bytes(), map[string]string{
		"first._domainkey.example.test.":  rec,
		"second._domainkey.example.test.": rec,
	})
	for _, r := range res {
		if !r.OK {
			t.Errorf("%s: %s", r.Selector, r.Error)
		}
	}

	if res := dkimtest.PyVerify(t, []byte(msg), nil); len(res) != 0 {
		t.Errorf("unsigned message: %+v", res)
	}
}
