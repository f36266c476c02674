package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Algorithm names, as used in KeyEntry.Algo and in the k= tag of the record.
const (
	AlgoRSA     = "rsa"
	AlgoEd25519 = "ed25519"
)

const (
	// DefaultRSABits is the RSA key size used when none is asked for.
	DefaultRSABits = 2048
	// MinRSABits is the smallest RSA key accepted: RFC 8301 section 3.2 has
	// verifiers reject anything shorter, so signing with it would be useless.
	MinRSABits = 1024
	// maxRSABits bounds key generation time; larger keys also do not fit a
	// DNS answer comfortably.
	maxRSABits = 8192
)

// GenerateKey makes a new private key. algo is "rsa" or "ed25519"; for RSA
// bits 0 means DefaultRSABits, and sizes below MinRSABits are refused. bits
// is ignored for ed25519.
func GenerateKey(algo string, bits int) (crypto.Signer, error) {
	switch normAlgo(algo) {
	case AlgoRSA:
		if bits == 0 {
			bits = DefaultRSABits
		}
		if bits < MinRSABits {
			return nil, fmt.Errorf("dkim: RSA key of %d bits refused: at least %d are needed", bits, MinRSABits)
		}
		if bits > maxRSABits {
			return nil, fmt.Errorf("dkim: RSA key of %d bits refused: at most %d are supported", bits, maxRSABits)
		}
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate RSA key: %w", err)
		}
		return k, nil
	case AlgoEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate ed25519 key: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("dkim: unknown key algorithm %q (want %q or %q)", algo, AlgoRSA, AlgoEd25519)
	}
}

func normAlgo(algo string) string {
	return strings.ToLower(strings.TrimSpace(algo))
}

// KeyAlgo names the DKIM algorithm ("rsa" or "ed25519") of a public key, or
// returns an error for any other kind of key.
func KeyAlgo(pub crypto.PublicKey) (string, error) {
	switch pub.(type) {
	case *rsa.PublicKey:
		return AlgoRSA, nil
	case ed25519.PublicKey:
		return AlgoEd25519, nil
	default:
		return "", fmt.Errorf("dkim: unsupported public key type %T", pub)
	}
}

// WriteKeyFile stores key as a PKCS#8 PEM file readable only by its owner.
// The file is written under a temporary name and renamed into place, so a
// crash or a concurrent reader never sees half a key; an existing file at
// path is replaced. The parent directory is created (mode 0700) if missing.
func WriteKeyFile(path string, key crypto.Signer) error {
	if key == nil {
		return errors.New("dkim: write key file: no key")
	}
	if _, err := KeyAlgo(key.Public()); err != nil {
		return fmt.Errorf("dkim: write key file %s: %w", path, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("dkim: write key file %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})

	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("dkim: write key file: %w", err)
	}
	// CreateTemp makes the file 0600 from the start, so the key is never
	// readable by others, not even briefly.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("dkim: write key file: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("dkim: write key file: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("dkim: write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("dkim: write key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("dkim: write key file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("dkim: write key file: %w", err)
	}
	ok = true
	// Sync the directory so the rename itself survives a power loss; a
	// failure here is not worth failing the write for (some filesystems
	// refuse to fsync directories).
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// LoadKeyFile reads a PEM private key file (see ParsePrivateKey).
func LoadKeyFile(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim: key file: %w", err)
	}
	k, err := parsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("dkim: key file %s: %w", path, err)
	}
	return k, nil
}

// ParsePrivateKey decodes the first PEM block of pemBytes: a PKCS#8
// "PRIVATE KEY" (RSA or Ed25519) or a PKCS#1 "RSA PRIVATE KEY". RSA keys
// shorter than MinRSABits are refused.
func ParsePrivateKey(pemBytes []byte) (crypto.Signer, error) {
	k, err := parsePrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	return k, nil
}

func parsePrivateKey(pemBytes []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM block found (want a PKCS#8 \"PRIVATE KEY\" or PKCS#1 \"RSA PRIVATE KEY\")")
	}
	if _, enc := block.Headers["Proc-Type"]; enc {
		return nil, errors.New("encrypted PEM keys are not supported")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#8 key: %w", err)
		}
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#1 RSA key: %w", err)
		}
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("encrypted PKCS#8 keys are not supported")
	default:
		return nil, fmt.Errorf("unsupported PEM block type %q (want \"PRIVATE KEY\" or \"RSA PRIVATE KEY\")", block.Type)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("RSA key of %d bits refused: at least %d are needed", bits, MinRSABits)
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported private key type %T (want RSA or Ed25519)", key)
	}
}

// publicKeyBytes is what goes into p= and into the fingerprint: the DER
// SubjectPublicKeyInfo for RSA (what RFC 6376 examples publish), the raw
// 32-byte key for Ed25519 (RFC 8463 section 4.2).
func publicKeyBytes(pub crypto.PublicKey) (algo string, b []byte, err error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		b, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", nil, fmt.Errorf("dkim: encode RSA public key: %w", err)
		}
		return AlgoRSA, b, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", nil, fmt.Errorf("dkim: ed25519 public key of %d bytes, want %d", len(k), ed25519.PublicKeySize)
		}
		return AlgoEd25519, []byte(k), nil
	default:
		return "", nil, fmt.Errorf("dkim: unsupported public key type %T", pub)
	}
}

// PublicRecord returns the TXT record value to publish at
// <selector>._domainkey.<domain>: "v=DKIM1; k=rsa; p=…" or
// "v=DKIM1; k=ed25519; p=…".
func PublicRecord(pub crypto.PublicKey) (string, error) {
	algo, b, err := publicKeyBytes(pub)
	if err != nil {
		return "", err
	}
	return "v=DKIM1; k=" + algo + "; p=" + base64.StdEncoding.EncodeToString(b), nil
}

// Fingerprint returns the hex SHA-256 of the public key bytes (DER for RSA,
// raw for Ed25519), so admins can tell keys apart without comparing whole
// records. It returns "" for an unsupported key type.
func Fingerprint(pub crypto.PublicKey) string {
	_, b, err := publicKeyBytes(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ZoneTTL is the TTL written by ZoneLine.
const ZoneTTL = 3600

// ZoneLine formats the record as a zone-file line, e.g.
//
//	sel._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=rsa; p=…" "…"
//
// A TXT character-string holds at most 255 bytes, so longer values (any
// RSA-2048 record) are split; resolvers join the strings back together.
func ZoneLine(selector, domain, record string) string {
	var b strings.Builder
	b.WriteString(selector)
	b.WriteString("._domainkey.")
	b.WriteString(strings.TrimSuffix(domain, "."))
	b.WriteString(". ")
	fmt.Fprintf(&b, "%d IN TXT", ZoneTTL)
	if record == "" {
		b.WriteString(` ""`)
	}
	for len(record) > 0 {
		n := min(len(record), 255)
		b.WriteString(` "`)
		for i := 0; i < n; i++ {
			c := record[i]
			if c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteByte('"')
		record = record[n:]
	}
	return b.String()
}
