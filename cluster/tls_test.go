package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/testutil/netports"
)

// testCA is a private CA that issues route certificates in a test.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string
}

// newTestCA makes a CA named name, its certificate in dir/file.
func newTestCA(t *testing.T, dir, file, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, pemFile: filepath.Join(dir, file)}
	writePEM(t, ca.pemFile, "CERTIFICATE", der)
	return ca
}

// issue writes a certificate for node with the given IP SANs and extended
// key usages (default: serverAuth and clientAuth, as a route needs), and
// its key; it returns the two files.
func (ca *testCA) issue(t *testing.T, dir, node string, ips []net.IP, eku ...x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if eku == nil {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: node},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: eku, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, node+".crt"), filepath.Join(dir, node+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

func serial(t *testing.T) *big.Int {
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

var loopback = []net.IP{net.IPv4(127, 0, 0, 1)}

// syncBuffer collects log lines written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRouteTLS: three nodes whose routes are mutual TLS with certificates
// of one private CA form the cluster and decide together; the route port
// speaks nothing but TLS and wants a client certificate; and a node whose
// certificate another CA signed is refused, though it has the secret and
// trusts the cluster's CA, while the same node with a certificate of the
// cluster's CA joins.
func TestRouteTLS(t *testing.T) {
	base := t.TempDir()
	ca := newTestCA(t, base, "ca.pem", "latchkey route CA")
	// An impostor: another key under the same name, so that a node's TLS
	// client offers its certificate to the cluster (a Go client offers
	// only a certificate of an issuer the server names as acceptable).
	other := newTestCA(t, base, "impostor-ca.pem", "latchkey route CA")
	secretFile := filepath.Join(base, "secret")
	if err := os.WriteFile(secretFile, []byte("a shared secret of the test cluster\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ports := netports.Free(t, 5) // three nodes, the foreign one, the control
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	// Each node's log, its embedded server's included.
	logs := []*syncBuffer{{}, {}, {}}
	cfgs := make([]Config, 3)
	for i := range 3 {
		var peers []string
		for j := range 3 {
			if j != i {
				peers = append(peers, addr(j))
			}
		}
		name := fmt.Sprintf("t%d", i+1)
		cert, key := ca.issue(t, base, name, loopback)
		// One replica: the meta group (three nodes) and every request to
		// a stream on another node still go over the TLS routes, and the
		// cluster is up in about 6 s instead of 11 to 60 s with three
		// (each replicated stream's first leader election; the other tests
		// cover replication).
		c := Config{Enabled: true, Node: name, Listen: addr(i), Peers: peers, SecretFile: secretFile, Replicas: 1,
			TLSCert: cert, TLSKey: key, TLSCA: ca.pemFile, Heartbeat: 200 * time.Millisecond, DeadAfter: 2 * time.Second}
		c.Defaults("unused")
		if err := c.Validate(); err != nil {
			t.Fatalf("config %d: %v", i, err)
		}
		cfgs[i] = c
	}
	began := time.Now()
	nodes := make([]*Node, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			nodes[i], errs[i] = Start(ctx, cfgs[i], filepath.Join(base, cfgs[i].Node), zerolog.New(logs[i]).Level(zerolog.WarnLevel))
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, n := range nodes {
			if n != nil {
				n.Close()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v\nlog:\n%s", i+1, err, logs[i].String())
		}
	}
	t.Logf("TLS cluster up in %v", time.Since(began).Round(time.Millisecond))
	for i, n := range nodes {
		if got := n.ns.NumRemotes(); got != 2 {
			t.Errorf("node %d: routes to %d nodes, want 2", i+1, got)
		}
	}

	// The cluster decides as one: a newer reset on t2 supersedes t1's,
	// seen from t3, and a resubmission on t3 is t1's duplicate.
	ctx := context.Background()
	t0 := time.Now()
	older := resetMsg(queue.NewMsgID(t0), "tls@dest.test", t0)
	if adm, err := nodes[0].Admit(ctx, older); err != nil || adm.Duplicate != "" {
		t.Fatalf("admit on t1: %+v, %v", adm, err)
	}
	nodes[0].Admitted(ctx, older)
	newer := resetMsg(queue.NewMsgID(t0.Add(time.Second)), "tls@dest.test", t0.Add(time.Second))
	if _, err := nodes[1].Admit(ctx, newer); err != nil {
		t.Fatalf("admit on t2: %v", err)
	}
	if got, err := nodes[2].Newer(ctx, older.Items[0]); err != nil || got != newer.Items[0].ID {
		t.Errorf("t3: newer than t1's reset = %q, %v; want %s (accepted on t2)", got, err, newer.Items[0].ID)
	}
	again := resetMsg(queue.NewMsgID(t0.Add(2*time.Second)), "tls2@dest.test", t0.Add(2*time.Second))
	again.DedupeKeys = older.DedupeKeys
	if adm, err := nodes[2].Admit(ctx, again); err != nil || adm.Duplicate != older.MsgID {
		t.Errorf("resubmission on t3: %+v, %v; want a duplicate of %s", adm, err, older.MsgID)
	}

	// The route port: plain text gets no INFO; TLS without a client
	// certificate is refused; with one of the CA's, the route protocol
	// answers.
	if got := routeGreeting(t, addr(0), nil); strings.HasPrefix(got, "INFO") {
		t.Errorf("plain connection to the route port: got %q", got)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	if got := routeGreeting(t, addr(0), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}); strings.HasPrefix(got, "INFO") {
		t.Errorf("TLS without a client certificate: got %q", got)
	}
	cert, key := ca.issue(t, base, "probe", loopback)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if got := routeGreeting(t, addr(0), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{pair}}); !strings.HasPrefix(got, "INFO") {
		t.Errorf("TLS with a certificate of the CA: got %q, want the route's INFO", got)
	}

	// The foreign node: the secret, the cluster's CA as its tls_ca (so it
	// accepts the nodes' certificates: the refusal is theirs), and a
	// certificate of another CA. The control is the same with a
	// certificate of the cluster's CA.
	secret, err := readSecret(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	joiner := func(i int, name string, signer *testCA) Config {
		cert, key := signer.issue(t, base, name, loopback)
		return Config{Enabled: true, Node: name, Listen: addr(i), Peers: []string{addr(0), addr(1), addr(2)},
			SecretFile: secretFile, TLSCert: cert, TLSKey: key, TLSCA: ca.pemFile}
	}
	began = time.Now()
	logged := make([]int, 3)
	for i, l := range logs {
		logged[i] = len(l.String())
	}
	foreignCfg := joiner(3, "foreign", other)
	// A node refuses to start with a certificate that does not chain to
	// its own tls_ca: the foreign node trusts both CAs.
	foreignCfg.TLSCA = filepath.Join(base, "both-cas.pem")
	caPEM, _ := os.ReadFile(ca.pemFile)
	otherPEM, _ := os.ReadFile(other.pemFile)
	if err := os.WriteFile(foreignCfg.TLSCA, append(caPEM, otherPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign, err := startServer(foreignCfg, filepath.Join(base, "foreign"), secret, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Shutdown()
	control, err := startServer(joiner(4, "control", ca), filepath.Join(base, "control"), secret, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer control.Shutdown()
	if !waitUntil(15*time.Second, func() bool { return control.NumRemotes() == 3 }) {
		t.Fatalf("the control node (a certificate of the cluster's CA) has routes to %d nodes, want 3", control.NumRemotes())
	}
	// Each node refuses the foreign certificate (the foreign node dials
	// all three).
	for i, l := range logs {
		since := func() string { return l.String()[logged[i]:] }
		if !waitUntil(15*time.Second, func() bool {
			return strings.Contains(since(), "TLS route handshake error: tls: failed to verify certificate: x509: certificate signed by unknown authority")
		}) {
			t.Errorf("node %d did not log refusing the foreign certificate; its log since:\n%s", i+1, since())
		}
	}
	if got := foreign.NumRemotes(); got != 0 {
		t.Errorf("the foreign node has routes to %d nodes, want none", got)
	}
	for i, n := range nodes {
		// The control's routes count on both ends, not at once.
		if !waitUntil(15*time.Second, func() bool { return n.ns.NumRemotes() == 3 }) {
			t.Errorf("node %d: routes to %d nodes, want 3 (the other two and the control)", i+1, n.ns.NumRemotes())
		}
	}
	t.Logf("control joined, foreign node refused, in %v", time.Since(began).Round(time.Millisecond))
}

// routeGreeting connects to a route port (with TLS when tc is set) and
// returns the first line it sends, or the error.
func routeGreeting(t *testing.T, addr string, tc *tls.Config) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if tc != nil {
		c = tls.Client(c, tc)
	} else {
		// What a plain route would send first, were it the dialler.
		io.WriteString(c, "CONNECT {}\r\nPING\r\n")
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "error: " + err.Error()
	}
	return line
}

// TestRouteTLSConfig: the three keys go together and
// do not apply with external; a file that is missing, not PEM, or holds a
// certificate the peers would refuse, stops Start with an error naming it.
func TestRouteTLSConfig(t *testing.T) {
	dir := t.TempDir()
	valid := func() Config {
		c := Config{Enabled: true, Node: "v", Listen: "127.0.0.1:1", Peers: []string{"127.0.0.1:2"}, SecretFile: "s", Replicas: 1}
		c.Defaults("unused")
		return c
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"cert only", func(c *Config) { c.TLSCert = "/c.pem" }, []string{"tls_key: is needed with tls_cert", "tls_ca: is needed with tls_cert"}},
		{"ca only", func(c *Config) { c.TLSCA = "/ca.pem" }, []string{"tls_cert: is needed with tls_ca", "tls_key: is needed with tls_ca"}},
		{"cert and key", func(c *Config) { c.TLSCert, c.TLSKey = "/c.pem", "/k.pem" }, []string{"tls_ca: is needed with tls_cert and tls_key"}},
		{"external", func(c *Config) { c.External = []string{"nats://h:4222"}; c.TLSCA = "/ca.pem" }, []string{"tls_ca: does not apply with external"}},
	} {
		c := valid()
		tc.edit(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error\n%s\nlacks %q", tc.name, err, w)
			}
		}
		if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.want) {
			t.Errorf("%s: %d errors, want %d:\n%s", tc.name, n, len(tc.want), err)
		}
	}
	c := valid()
	c.TLSCert, c.TLSKey, c.TLSCA = "/c.pem", "/k.pem", "/ca.pem"
	if err := c.Validate(); err != nil {
		t.Errorf("the three keys: %v", err)
	}

	ca := newTestCA(t, dir, "ca.pem", "latchkey route CA")
	other := newTestCA(t, dir, "other-ca.pem", "another CA")
	cert, key := ca.issue(t, dir, "good", loopback)
	foreign, _ := other.issue(t, dir, "foreign", loopback)
	serverOnly, serverOnlyKey := ca.issue(t, dir, "server-only", loopback, x509.ExtKeyUsageServerAuth)
	otherKeyCert, _ := ca.issue(t, dir, "other-key", loopback)
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate\n"), 0o600)
	missing := filepath.Join(dir, "missing.pem")
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("a shared secret of the test cluster\n"), 0o600)
	port := netports.Free(t, 1)[0]
	for _, tc := range []struct {
		name           string
		cert, key, cas string
		want           []string
	}{
		{"missing cert", missing, key, ca.pemFile, []string{"tls_cert", missing, "no such file"}},
		{"missing key", cert, missing, ca.pemFile, []string{"tls_key", missing}},
		{"missing ca", cert, key, missing, []string{"tls_ca", missing}},
		{"junk cert", junk, key, ca.pemFile, []string{"tls_cert " + junk, "tls_key " + key}},
		{"key of another certificate", otherKeyCert, key, ca.pemFile, []string{"tls_cert " + otherKeyCert, "private key does not match"}},
		{"junk ca", cert, key, junk, []string{"tls_ca " + junk, "no PEM certificate"}},
		{"another CA's certificate", foreign, filepath.Join(dir, "foreign.key"), ca.pemFile, []string{"tls_cert " + foreign, "tls_ca " + ca.pemFile, "unknown authority"}},
		{"no clientAuth", serverOnly, serverOnlyKey, ca.pemFile, []string{"tls_cert " + serverOnly, "for clientAuth", "key usage"}},
	} {
		c := valid()
		c.Listen = fmt.Sprintf("127.0.0.1:%d", port)
		c.SecretFile, c.TLSCert, c.TLSKey, c.TLSCA = secret, tc.cert, tc.key, tc.cas
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := Start(ctx, c, filepath.Join(dir, "node"), testLog())
		cancel()
		if err == nil {
			n.Close()
			t.Errorf("%s: started", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
	}
}

// TestStartReason: an embedded server that cannot start (its route port
// taken) fails Start with the server's own reason.
func TestStartReason(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("a shared secret of the test cluster\n"), 0o600)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := Config{Enabled: true, Node: "v", Listen: l.Addr().String(), Peers: []string{"127.0.0.1:2"}, SecretFile: secret, Replicas: 1}
	c.Defaults("unused")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := Start(ctx, c, filepath.Join(dir, "node"), testLog())
	if err == nil {
		n.Close()
		t.Fatal("started on a taken port")
	}
	if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("error %q; want the server's reason (address already in use) and the address", err)
	}
}
