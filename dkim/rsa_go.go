//go:build !(openssl && cgo)

package dkim

import (
	"crypto"
	"crypto/rsa"
)

// RSAEngine names what signs RSA: Go's crypto/rsa in this build, OpenSSL's
// libcrypto in one with the openssl build tag (see rsa_openssl.go).
const RSAEngine = "go"

func fastRSA(k *rsa.PrivateKey) crypto.Signer { return k }
