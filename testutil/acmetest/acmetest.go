// Package acmetest runs Pebble, Let's Encrypt's ACME test server, in the
// test process on loopback: a real RFC 8555 CA whose validation authority
// really connects to the challenge port, resolving names through the test's
// DNS server. Refuse and BreakChallenges make it fail as a real CA does.
package acmetest

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// Server is one Pebble.
type Server struct {
	// Directory is the ACME directory URL.
	Directory string
	// ServerRootFile is a PEM file of the certificate of the ACME server's
	// own HTTPS (the client's ca_root).
	ServerRootFile string
	// Roots holds the root of the certificates Pebble issues.
	Roots *x509.CertPool

	ca      *ca.CAImpl
	refuse  atomic.Bool
	mu      sync.Mutex
	authzs  []string     // IDs of the authorisations of the orders so far
	Orders  atomic.Int64 // new-order requests seen
	Refused atomic.Int64 // of which refused
}

// Options for Start.
type Options struct {
	// DNS is the "host:port" of the DNS server the validation authority
	// resolves challenge names with (TCP).
	DNS string
	// HTTPPort and TLSPort are where the validation authority connects for
	// HTTP-01 and TLS-ALPN-01.
	HTTPPort, TLSPort int
	// Validity is the lifetime of issued certificates in seconds (0: Pebble's
	// default, about five years).
	Validity uint64
}

// Start runs Pebble until the test ends. It sets Pebble's environment for a
// deterministic run: no random validation sleeps and no bad-nonce
// rejections. Every order is validated anew: Pebble is told to reuse valid
// authorisations always, and the server expires them before each new order
// (PEBBLE_AUTHZREUSE=0 still reuses 1% of the time), so a test whose
// challenge must fail fails on every run, not on 99 of 100.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	for k, v := range map[string]string{"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "100"} {
		t.Setenv(k, v)
	}
	logger := log.New(io.Discard, "", 0)
	if testing.Verbose() {
		logger = log.New(os.Stderr, "pebble ", log.Lmicroseconds)
	}
	store := db.NewMemoryStore()
	profiles := map[string]ca.Profile{"default": {Description: "test", ValidityPeriod: o.Validity}}
	c := ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	v := va.New(logger, o.HTTPPort, o.TLSPort, false, o.DNS, store)
	w := wfe.New(logger, store, v, c, []string{"pebble.letsencrypt.org"}, false, false, 1, 1)
	s := &Server{ca: c}
	h := w.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/order-plz") && r.Method == http.MethodPost {
			s.Orders.Add(1)
			if s.refuse.Load() {
				s.Refused.Add(1)
				// What Let's Encrypt answers over its limits (RFC 8555
				// section 6.6).
				rw.Header().Set("Content-Type", "application/problem+json")
				rw.Header().Set("Retry-After", "3600")
				rw.WriteHeader(http.StatusTooManyRequests)
				io.WriteString(rw, `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates already issued for \"latchkey.test\"","status":429}`)
				return
			}
		}
		if strings.HasSuffix(r.URL.Path, "/order-plz") && r.Method == http.MethodPost {
			// See Start: no earlier authorisation may be reused.
			s.expireAuthorizations(store)
			rec := &captureWriter{ResponseWriter: rw}
			h.ServeHTTP(rec, r)
			s.noteAuthorizations(rec.body.Bytes())
			return
		}
		h.ServeHTTP(rw, r)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.Directory = srv.URL + "/dir"
	s.ServerRootFile = filepath.Join(t.TempDir(), "acme-server-root.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(s.ServerRootFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	s.Roots = x509.NewCertPool()
	s.Roots.AddCert(c.GetRootCert(0).Cert)
	return s
}

// Refuse makes new orders fail with a rate-limit problem (on) or succeed
// again (off).
func (s *Server) Refuse(on bool) { s.refuse.Store(on) }

// captureWriter keeps a copy of the response body.
type captureWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (c *captureWriter) Write(p []byte) (int, error) {
	c.body.Write(p)
	return c.ResponseWriter.Write(p)
}

// noteAuthorizations records the authorisation IDs of a new order.
func (s *Server) noteAuthorizations(body []byte) {
	var order struct {
		Authorizations []string `json:"authorizations"`
	}
	if json.Unmarshal(body, &order) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range order.Authorizations {
		s.authzs = append(s.authzs, u[strings.LastIndex(u, "/")+1:])
	}
}

// expireAuthorizations makes every authorisation seen so far expired, so
// that Pebble cannot reuse it for a new order.
func (s *Server) expireAuthorizations(store *db.MemoryStore) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range s.authzs {
		if a := store.GetAuthorizationByID(id); a != nil {
			a.Lock()
			a.ExpiresDate = time.Now().Add(-time.Minute)
			a.Unlock()
		}
	}
}
