package dkim_test

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/latchkey/latchkey/dkim"
)

// Key files come from admins and other tools; a malformed one must give an
// error, never a panic or a key that cannot sign.
func FuzzParsePrivateKey(f *testing.F) {
	r, e, other := testKeys(f)
	for _, k := range []any{r, e, other} {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other.(*rsa.PrivateKey))}))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, in []byte) {
		k, err := dkim.ParsePrivateKey(in)
		if err != nil {
			if k != nil {
				t.Error("key returned with an error")
			}
			return
		}
		if _, err := dkim.PublicRecord(k.Public()); err != nil {
			t.Errorf("parsed key has no record: %v", err)
		}
		if dkim.Fingerprint(k.Public()) == "" {
			t.Error("parsed key has no fingerprint")
		}
	})
}
