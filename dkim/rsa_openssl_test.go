//go:build openssl && cgo

package dkim

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"sync"
	"testing"
)

// The libcrypto signer gives Go's signature byte for byte (PKCS #1 v1.5 is
// deterministic), from several goroutines at once, and leaves what it does
// not do (PSS, other hashes) to the Go key.
func TestOpenSSLRSA(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := fastRSA(k).(*opensslRSA)
	if !ok {
		t.Fatal("libcrypto did not take the key: this build would sign with Go")
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				var msg [64]byte
				rand.Read(msg[:])
				d := sha256.Sum256(msg[:])
				got, err := s.Sign(nil, d[:], crypto.SHA256)
				want, _ := rsa.SignPKCS1v15(nil, k, crypto.SHA256, d[:])
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("signature differs from Go's (err %v)", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	d := sha256.Sum256([]byte("pss"))
	sig, err := s.Sign(rand.Reader, d[:], &rsa.PSSOptions{Hash: crypto.SHA256})
	if err != nil || rsa.VerifyPSS(&k.PublicKey, crypto.SHA256, d[:], sig, nil) != nil {
		t.Errorf("PSS through the Go key: %v", err)
	}
	if RSAEngine != "openssl" {
		t.Errorf("RSAEngine = %q", RSAEngine)
	}
}
