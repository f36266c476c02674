//go:build openssl && cgo

package dkim

/*
#cgo LDFLAGS: -lcrypto
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

static EVP_PKEY *lk_load(const unsigned char *der, long n) {
	const unsigned char *p = der;
	return d2i_AutoPrivateKey(NULL, &p, n);
}

// lk_sign signs a SHA-256 digest with PKCS #1 v1.5 padding; 1 on success.
// A context per call: an EVP_PKEY may be shared between threads that only
// read it, a context may not.
static int lk_sign(EVP_PKEY *k, const unsigned char *dg, size_t dn, unsigned char *sig, size_t *sn) {
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
	if (c == NULL) return 0;
	int ok = EVP_PKEY_sign_init(c) == 1 &&
		EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1 &&
		EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) == 1 &&
		EVP_PKEY_sign(c, sig, sn, dg, dn) == 1;
	EVP_PKEY_CTX_free(c);
	return ok;
}

static int lk_size(EVP_PKEY *k) { return EVP_PKEY_size(k); }
static void lk_free(EVP_PKEY *k) { EVP_PKEY_free(k); }
*/
import "C"

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"io"
	"runtime"
	"unsafe"
)

// RSAEngine names what signs RSA: OpenSSL's libcrypto in this build (the
// openssl build tag). Go's constant-time RSA took 0.9–1.0 ms per 2048-bit
// signature on the benchmark machine, OpenSSL's 0.25 ms, and the signature
// was half of the relay's CPU per message (docs/benchmarks.md).
const RSAEngine = "openssl"

// opensslRSA signs SHA-256 digests with PKCS #1 v1.5 through libcrypto;
// anything else goes to the Go key.
type opensslRSA struct {
	goKey *rsa.PrivateKey
	pkey  *C.EVP_PKEY
	size  int
}

// fastRSA returns an OpenSSL signer for k, or k itself if libcrypto cannot
// take the key or its first signature differs from Go's: PKCS #1 v1.5 is
// deterministic, so the two must agree byte for byte.
func fastRSA(k *rsa.PrivateKey) crypto.Signer {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return k
	}
	pkey := C.lk_load((*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)))
	clear(der)
	if pkey == nil {
		return k
	}
	s := &opensslRSA{goKey: k, pkey: pkey, size: int(C.lk_size(pkey))}
	runtime.AddCleanup(s, func(p *C.EVP_PKEY) { C.lk_free(p) }, pkey)
	probe := sha256.Sum256([]byte("latchkey dkim openssl self-test"))
	got, err1 := s.Sign(nil, probe[:], crypto.SHA256)
	want, err2 := rsa.SignPKCS1v15(nil, k, crypto.SHA256, probe[:])
	if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
		return k
	}
	return s
}

func (s *opensslRSA) Public() crypto.PublicKey { return &s.goKey.PublicKey }

func (s *opensslRSA) Sign(r io.Reader, digest []byte, o crypto.SignerOpts) ([]byte, error) {
	if _, pss := o.(*rsa.PSSOptions); pss || o.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		if r == nil {
			r = rand.Reader
		}
		return s.goKey.Sign(r, digest, o)
	}
	sig := make([]byte, s.size)
	n := C.size_t(len(sig))
	ok := C.lk_sign(s.pkey, (*C.uchar)(unsafe.Pointer(&digest[0])), C.size_t(len(digest)),
		(*C.uchar)(unsafe.Pointer(&sig[0])), &n)
	runtime.KeepAlive(s)
	if ok != 1 {
		return nil, errors.New("dkim: openssl: RSA signature failed")
	}
	return sig[:n], nil
}
