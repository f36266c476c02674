package dkim_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"testing"

	"github.com/latchkey/latchkey/dkim"
)

// The machine's limits, to set beside BenchmarkSignRSA2048/Ed25519: the raw
// signature alone (what no implementation can avoid) and the keyring's
// signing on every core at once (what the relay can reach when signing is
// its only work). Run with -cpu=1,2 to see the per-core rate and scaling.

func BenchmarkRawRSA2048(b *testing.B) {
	key, _, _ := testKeys(b)
	digest := sha256.Sum256([]byte("a DKIM header hash input"))
	rk := key.(*rsa.PrivateKey)
	for b.Loop() {
		if _, err := rsa.SignPKCS1v15(rand.Reader, rk, crypto.SHA256, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawEd25519(b *testing.B) {
	_, key, _ := testKeys(b)
	digest := sha256.Sum256([]byte("a DKIM header hash input"))
	ek := key.(ed25519.PrivateKey)
	for b.Loop() {
		ed25519.Sign(ek, digest[:])
	}
}

func benchSignParallel(b *testing.B, algo string) {
	r, e, _ := testKeys(b)
	key := r
	if algo == "ed25519" {
		key = e
	}
	entry := dkim.KeyEntry{Domain: "example.test", Selector: "s1", Algo: algo, KeyFile: b.TempDir() + "/k.pem"}
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
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := kr.Sign("example.test", msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkSignParallelRSA2048(b *testing.B) { benchSignParallel(b, "rsa") }
func BenchmarkSignParallelEd25519(b *testing.B) { benchSignParallel(b, "ed25519") }
