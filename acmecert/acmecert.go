// Package acmecert obtains and renews the relay's TLS certificate from an
// ACME certificate authority (Let's Encrypt, or any RFC 8555 CA), so that a
// Salesforce Email Relay set to RequiredVerify keeps finding a publicly
// trusted certificate for the relay's host name without anyone running
// certbot. It wraps github.com/caddyserver/certmagic, which does the ACME
// conversation, the HTTP-01 and TLS-ALPN-01 challenges, storage and the
// renewal schedule; this package chooses its settings, bridges its events to
// the relay's log and metrics, and serves the certificate to listeners that
// see no SNI (SMTP clients rarely send it).
package acmecert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/rs/zerolog"
	"go.uber.org/zap"
)

// Challenge types.
const (
	HTTP01    = "http-01"
	TLSALPN01 = "tls-alpn-01"
)

// LetsEncrypt is the default CA directory.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Config is the [tls.acme] section of latchkey.toml.
type Config struct {
	// Enabled turns ACME on; the certificate files of [submission] are then
	// not used.
	Enabled bool `toml:"enabled"`
	// Email is the ACME account's contact: the CA writes there before a
	// certificate expires that latchkey failed to renew.
	Email string `toml:"email"`
	// CA is the ACME directory URL.
	CA string `toml:"ca"`
	// Names are host names the certificate covers besides hostname (for
	// example each name Salesforce connects to behind a load balancer).
	Names []string `toml:"names"`
	// Challenge is "http-01" (a listener on HTTPPort, 80 unless a proxy
	// forwards it) or "tls-alpn-01" (on TLSALPNPort, 443).
	Challenge string `toml:"challenge"`
	// ListenHost is the address the challenge listener binds ("" for all).
	ListenHost string `toml:"listen_host"`
	// HTTPPort and TLSALPNPort are the local ports the challenge listener
	// binds: 80 and 443 unless a NAT or proxy forwards those to others.
	HTTPPort    int `toml:"http_port"`
	TLSALPNPort int `toml:"tls_alpn_port"`
	// CARoot is a PEM file of root certificates to trust for the ACME
	// server's own HTTPS (a private CA); "" means the system's roots.
	CARoot string `toml:"ca_root"`
}

// DefaultConfig is ACME off, with Let's Encrypt and HTTP-01 on port 80 for
// when it is turned on.
func DefaultConfig() Config {
	return Config{CA: LetsEncrypt, Challenge: HTTP01, HTTPPort: 80, TLSALPNPort: 443}
}

// Validate checks what can be checked without the network; it is part of
// `latchkey config check`.
func (c Config) Validate(hostname string) error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	bad := func(key, f string, a ...any) { errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(f, a...))) }
	if c.Email == "" {
		bad("email", "required with ACME: the CA writes there when a certificate nears expiry unrenewed")
	} else if at := strings.LastIndexByte(c.Email, '@'); at < 1 || !strings.Contains(c.Email[at:], ".") || strings.ContainsAny(c.Email, " <>,") {
		bad("email", "%q is not an e-mail address", c.Email)
	}
	if u, err := url.Parse(c.CA); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("ca", "%q is not an https:// ACME directory URL", c.CA)
	}
	switch c.Challenge {
	case HTTP01:
		if c.HTTPPort < 1 || c.HTTPPort > 65535 {
			bad("http_port", "%d is not a port", c.HTTPPort)
		}
	case TLSALPN01:
		if c.TLSALPNPort < 1 || c.TLSALPNPort > 65535 {
			bad("tls_alpn_port", "%d is not a port", c.TLSALPNPort)
		}
	default:
		bad("challenge", "%q: want %q or %q (DNS-01 is not supported)", c.Challenge, HTTP01, TLSALPN01)
	}
	for _, n := range append([]string{hostname}, c.Names...) {
		// A public CA validates only public names; a private one
		// (ca_root set) may know internal ones.
		if err := certName(n, c.CARoot == ""); err != nil {
			if n == hostname {
				bad("names", "hostname %q, the certificate's first name: %v", n, err)
			} else {
				bad("names", "%q: %v", n, err)
			}
		}
	}
	if c.CARoot != "" {
		if _, err := loadRoots(c.CARoot); err != nil {
			bad("ca_root", "%v", err)
		}
	}
	return errors.Join(errs...)
}

// CheckPort reports whether the challenge port can be bound now: a port
// another server holds means every challenge, so every renewal, fails.
// (certmagic itself assumes that whoever holds the port forwards the
// challenge to it, which for a mail relay is rarely so.)
func (c Config) CheckPort() error {
	if !c.Enabled {
		return nil
	}
	key, port := "http_port", c.HTTPPort
	if c.Challenge == TLSALPN01 {
		key, port = "tls_alpn_port", c.TLSALPNPort
	}
	l, err := net.Listen("tcp", net.JoinHostPort(c.ListenHost, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("%s: cannot listen on port %d for the %s challenge: %w", key, port, c.Challenge, err)
	}
	l.Close()
	return nil
}

// certName refuses names no CA (or, when public, no public CA) can issue
// a certificate for through HTTP-01 or TLS-ALPN-01.
func certName(n string, public bool) error {
	n = strings.TrimSuffix(strings.ToLower(n), ".")
	switch {
	case n == "":
		return errors.New("empty")
	case net.ParseIP(n) != nil:
		return errors.New("an IP address: ACME certificates here name hosts")
	case strings.Contains(n, "*"):
		return errors.New("a wildcard needs DNS-01, which is not supported")
	case !public:
	case !strings.Contains(n, "."), n == "localhost", strings.HasSuffix(n, ".localhost"), strings.HasSuffix(n, ".local"),
		strings.HasSuffix(n, ".internal"), strings.HasSuffix(n, ".invalid"), strings.HasSuffix(n, ".test"), strings.HasSuffix(n, ".example"):
		return errors.New("not a public DNS name: a public CA cannot validate it (set ca_root for a private CA)")
	}
	return nil
}

func loadRoots(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}

// Options are what the relay supplies besides the configuration.
type Options struct {
	// Hostname is the relay's host name: the certificate's first name and
	// the one served to clients that send no SNI.
	Hostname string
	// Dir is where account, keys and certificates live (data_dir/acme).
	Dir string
	Log zerolog.Logger
	// RenewCheckEvery and RenewWindow tune the renewal schedule: a
	// certificate is renewed once less than RenewWindow of its lifetime is
	// left (certmagic's default: a third, so 30 days of a 90-day
	// certificate), checked every RenewCheckEvery (default 10 minutes).
	RenewCheckEvery time.Duration
	RenewWindow     float64
	// NoARI ignores the CA's renewal information (RFC 9773), which
	// otherwise picks a random moment in a window the CA suggests; tests
	// set it to renew on RenewWindow alone.
	NoARI bool
	// OnRenewal, if set, hears of each attempt to obtain or renew, and its
	// error (nil on success); for metrics.
	OnRenewal func(renewal bool, err error)
}

// Manager serves and renews one certificate for the relay's names.
type Manager struct {
	names []string
	cache *certmagic.Cache
	cfg   *certmagic.Config
	log   zerolog.Logger
	on    func(bool, error)

	stop sync.Once

	mu      sync.Mutex
	lastErr error
}

// New prepares a Manager; nothing is fetched until Start.
func New(c Config, o Options) (*Manager, error) {
	if err := c.Validate(o.Hostname); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	var roots *x509.CertPool
	if c.CARoot != "" {
		var err error
		if roots, err = loadRoots(c.CARoot); err != nil {
			return nil, fmt.Errorf("acme: ca_root: %w", err)
		}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme: storage: %w", err)
	}
	m := &Manager{log: o.Log, on: o.OnRenewal}
	seen := map[string]bool{}
	for _, n := range append([]string{o.Hostname}, c.Names...) {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		if !seen[n] {
			seen[n] = true
			m.names = append(m.names, n)
		}
	}
	// certmagic logs through zap; the relay's log gets the events that
	// matter (below) in its own format instead of a second log stream.
	nop := zap.NewNop()
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.cfg, nil },
		RenewCheckInterval: o.RenewCheckEvery,
		Logger:             nop,
	})
	m.cfg = certmagic.New(m.cache, certmagic.Config{
		Storage:            &certmagic.FileStorage{Path: o.Dir},
		DefaultServerName:  m.names[0],
		RenewalWindowRatio: o.RenewWindow,
		DisableARI:         o.NoARI,
		// The CA may offer OCSP; SMTP clients do not ask for staples.
		OCSP:    certmagic.OCSPConfig{DisableStapling: true},
		OnEvent: m.event,
		Logger:  nop,
	})
	m.cfg.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(m.cfg, certmagic.ACMEIssuer{
		CA:                      c.CA,
		Email:                   c.Email,
		Agreed:                  true,
		DisableHTTPChallenge:    c.Challenge != HTTP01,
		DisableTLSALPNChallenge: c.Challenge != TLSALPN01,
		ListenHost:              c.ListenHost,
		AltHTTPPort:             c.HTTPPort,
		AltTLSALPNPort:          c.TLSALPNPort,
		TrustedRoots:            roots,
		Logger:                  nop,
	})}
	return m, nil
}

// event turns certmagic's events into log lines and metrics.
func (m *Manager) event(_ context.Context, ev string, data map[string]any) error {
	renewal, _ := data["renewal"].(bool)
	switch ev {
	case "cert_obtained":
		m.mu.Lock()
		m.lastErr = nil
		m.mu.Unlock()
		m.log.Info().Bool("renewal", renewal).Any("identifier", data["identifier"]).Msg("ACME: certificate obtained; served from now on")
		if m.on != nil {
			m.on(renewal, nil)
		}
	case "cert_failed":
		err, _ := data["error"].(error)
		if err == nil {
			err = errors.New("unknown error")
		}
		m.mu.Lock()
		m.lastErr = err
		m.mu.Unlock()
		l := m.log.Error().Err(err).Bool("renewal", renewal).Any("identifier", data["identifier"])
		if left, ok := data["remaining"].(time.Duration); ok {
			l = l.Dur("remaining", left)
		}
		if renewal {
			l.Msg("ACME: could not renew the certificate; the one in service stays, and renewal is tried again with back-off")
		} else {
			l.Msg("ACME: could not obtain a certificate yet; tried again with back-off, the fallback certificate is served meanwhile")
		}
		if m.on != nil {
			m.on(renewal, err)
		}
	}
	return nil
}

// Names returns the names the certificate covers, the host name first.
func (m *Manager) Names() []string { return append([]string(nil), m.names...) }

// Start loads the certificate from storage or obtains it, within ctx, and
// starts the renewal loop. An error means there is no certificate yet;
// certmagic keeps trying in the background, and the caller serves another
// certificate until GetCertificate has one.
func (m *Manager) Start(ctx context.Context) error {
	err := m.cfg.ManageSync(ctx, m.names)
	if err != nil {
		// Keep trying with back-off (certmagic's retry schedule).
		if aerr := m.cfg.ManageAsync(context.Background(), m.names); aerr != nil {
			return errors.Join(err, aerr)
		}
		return fmt.Errorf("acme: no certificate for %s yet: %w", strings.Join(m.names, ", "), err)
	}
	return nil
}

// GetCertificate is tls.Config.GetCertificate. A client without SNI gets
// the host name's certificate. It returns nil, nil when there is none yet,
// so that the caller can fall back.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	h := *hello
	if h.ServerName == "" {
		h.ServerName = m.names[0]
	}
	c, err := m.cfg.GetCertificate(&h)
	if err != nil {
		return nil, nil
	}
	return c, nil
}

// Certificate returns the certificate in service for the host name (nil
// before the first one is obtained).
func (m *Manager) Certificate() *x509.Certificate {
	c, err := m.cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: m.names[0]})
	if err != nil || c == nil || len(c.Certificate) == 0 {
		return nil
	}
	if c.Leaf != nil {
		return c.Leaf
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}

// LastError is the error of the last failed attempt since the last
// success, or nil.
func (m *Manager) LastError() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr
}

// Stop ends the renewal loop; calling it again does nothing.
func (m *Manager) Stop() { m.stop.Do(m.cache.Stop) }
