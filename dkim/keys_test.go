package dkim_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/testutil/dnstest"
)

func TestGenerateKey(t *testing.T) {
	r, e, _ := testKeys(t) // r came from GenerateKey("rsa", 0)
	if bits := r.(*rsa.PrivateKey).N.BitLen(); bits != 2048 {
		t.Errorf("default RSA key has %d bits, want 2048", bits)
	}
	if _, ok := e.Public().(ed25519.PublicKey); !ok {
		t.Errorf("ed25519 key is %T", e.Public())
	}
	for _, c := range []struct {
		algo string
		bits int
	}{{"rsa", 512}, {"rsa", 1023}, {"rsa", 16384}, {"dsa", 0}, {"", 0}} {
		if _, err := dkim.GenerateKey(c.algo, c.bits); err == nil || !strings.HasPrefix(err.Error(), "dkim: ") {
			t.Errorf("GenerateKey(%q, %d) error = %v, want a dkim: error", c.algo, c.bits, err)
		}
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	r, e, _ := testKeys(t)
	dir := filepath.Join(t.TempDir(), "keys", "sub") // parents created
	for name, key := range map[string]crypto.Signer{"rsa": r, "ed25519": e} {
		path := filepath.Join(dir, name+".pem")
		if err := dkim.WriteKeyFile(path, key); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", name, fi.Mode().Perm())
		}
		data, _ := os.ReadFile(path)
		if !bytes.HasPrefix(data, []byte("-----BEGIN PRIVATE KEY-----\n")) {
			t.Errorf("%s: not PKCS#8 PEM:\n%s", name, data)
		}
		got, err := dkim.LoadKeyFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
			t.Errorf("%s: loaded key differs", name)
		}
		// Overwriting is atomic and leaves no temporary file behind.
		if err := dkim.WriteKeyFile(path, key); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("key dir: %v, %v; want mode 0700", fi.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("key dir holds %d files, want 2 (temporary files left?)", len(ents))
	}
}

func TestParsePrivateKey(t *testing.T) {
	r, _, _ := testKeys(t)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(r.(*rsa.PrivateKey))})
	k, err := dkim.ParsePrivateKey(pkcs1)
	if err != nil {
		t.Fatalf("PKCS#1: %v", err)
	}
	if !k.Public().(*rsa.PublicKey).Equal(r.Public()) {
		t.Error("PKCS#1 key differs")
	}

	// Go itself refuses to make short keys; let it, to test that we refuse
	// to load them.
	t.Setenv("GODEBUG", "rsa1024min=0")
	small, err := rsa.GenerateKey(bytesReader(), 512)
	if err != nil {
		t.Fatal(err)
	}
	smallDER, _ := x509.MarshalPKCS8PrivateKey(small)
	bad := map[string]struct {
		in   []byte
		want string
	}{
		"empty":       {nil, "no PEM block"},
		"not PEM":     {[]byte("hello"), "no PEM block"},
		"certificate": {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), `unsupported PEM block type "CERTIFICATE"`},
		"encrypted":   {pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "encrypted"},
		"garbage DER": {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 1, 2}}), "parse PKCS#8"},
		"short RSA":   {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: smallDER}), "512 bits refused"},
	}
	for name, c := range bad {
		_, err := dkim.ParsePrivateKey(c.in)
		if err == nil || !strings.HasPrefix(err.Error(), "dkim: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error = %v, want a dkim: error containing %q", name, err, c.want)
		}
	}

	path := filepath.Join(t.TempDir(), "broken.pem")
	os.WriteFile(path, []byte("nope"), 0o600)
	if _, err := dkim.LoadKeyFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("LoadKeyFile error %v does not name the file", err)
	}
}

// bytesReader is a deterministic "random" source: a 512-bit key only feeds
// the negative test, and it keeps that test fast and reproducible.
func bytesReader() *bytes.Reader {
	b := make([]byte, 1<<16)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return bytes.NewReader(b)
}

// PublicRecord's output is what a verifier fetches: sign with go-msgauth's
// own API and let it verify against the record.
func TestPublicRecordAcceptedByGoMsgauth(t *testing.T) {
	r, e, _ := testKeys(t)
	for _, key := range []crypto.Signer{r, e} {
		rec, err := dkim.PublicRecord(key.Public())
		if err != nil {
			t.Fatal(err)
		}
		algo, _ := dkim.KeyAlgo(key.Public())
		if !strings.HasPrefix(rec, "v=DKIM1; k="+algo+"; p=") {
			t.Errorf("record %q", rec)
		}
		var out bytes.Buffer
		err = msgdkim.Sign(&out, bytes.NewReader(testMessage()), &msgdkim.SignOptions{Domain: "example.test", Selector: "s", Signer: key})
		if err != nil {
			t.Fatal(err)
		}
		vs, err := msgdkim.VerifyWithOptions(&out, &msgdkim.VerifyOptions{LookupTXT: lookupFrom(map[string]string{"s._domainkey.example.test": rec})})
		if err != nil || len(vs) != 1 || vs[0].Err != nil {
			t.Errorf("%s: verify with published record: %v %+v", algo, err, vs)
		}
	}
	if _, err := dkim.PublicRecord("not a key"); err == nil {
		t.Error("PublicRecord accepted a string")
	}
	// RFC 8463: the Ed25519 p= is the bare 32-byte key, not SPKI.
	rec, _ := dkim.PublicRecord(e.Public())
	if p := rec[strings.Index(rec, "p=")+2:]; len(p) != 44 {
		t.Errorf("ed25519 p= is %d base64 chars, want 44", len(p))
	}
}

func TestFingerprint(t *testing.T) {
	r, e, other := testKeys(t)
	der, _ := x509.MarshalPKIXPublicKey(r.Public())
	sum := sha256.Sum256(der)
	if got := dkim.Fingerprint(r.Public()); got != hex.EncodeToString(sum[:]) {
		t.Errorf("RSA fingerprint %s", got)
	}
	sum = sha256.Sum256(e.Public().(ed25519.PublicKey))
	if got := dkim.Fingerprint(e.Public()); got != hex.EncodeToString(sum[:]) {
		t.Errorf("ed25519 fingerprint %s", got)
	}
	if dkim.Fingerprint(r.Public()) == dkim.Fingerprint(other.Public()) {
		t.Error("different keys, same fingerprint")
	}
	if dkim.Fingerprint(42) != "" {
		t.Error("fingerprint of a non-key")
	}
}

// The zone line must load in a real DNS server and come back, over the
// wire, as the record go-msgauth then verifies with.
func TestZoneLineServedAndVerified(t *testing.T) {
	r, _, _ := testKeys(t)
	rec, _ := dkim.PublicRecord(r.Public())
	line := dkim.ZoneLine("rsa2026", "example.test.", rec)
	if !strings.HasPrefix(line, "rsa2026._domainkey.example.test. 3600 IN TXT \"v=DKIM1; k=rsa; p=") {
		t.Errorf("zone line %q", line)
	}
	rr, err := dns.NewRR(line)
	if err != nil {
		t.Fatalf("zone line does not parse: %v\n%s", err, line)
	}
	txt := rr.(*dns.TXT).Txt
	if len(txt) < 2 || strings.Join(txt, "") != rec {
		t.Errorf("TXT strings %q do not join to the record", txt)
	}
	for _, s := range txt {
		if len(s) > 255 {
			t.Errorf("TXT string of %d bytes", len(s))
		}
	}
	if got := dkim.ZoneLine("s", "d.test", `a"b\c`); got != `s._domainkey.d.test. 3600 IN TXT "a\"b\\c"` {
		t.Errorf("escaping: %s", got)
	}

	srv := dnstest.Start(t, line)
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", srv.Addr)
	}}
	var out bytes.Buffer
	err = msgdkim.Sign(&out, bytes.NewReader(testMessage()), &msgdkim.SignOptions{Domain: "example.test", Selector: "rsa2026", Signer: r})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := msgdkim.VerifyWithOptions(&out, &msgdkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		return res.LookupTXT(context.Background(), name)
	}})
	if err != nil || len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("verify via DNS: %v %+v", err, vs)
	}
}
