package deliver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// TLS policies.
const (
	// TLSOpportunistic uses STARTTLS when the server offers it. A certificate
	// that does not verify is still used (encryption without authentication
	// beats clear text) and the failure is recorded in the Result.
	TLSOpportunistic = "opportunistic"
	// TLSRequired never sends a message in clear: a server without STARTTLS,
	// or whose handshake fails, gets a temporary (4.7.x) result.
	TLSRequired = "required"
	// TLSVerify is TLSRequired plus a certificate that verifies for the MX
	// host name.
	TLSVerify = "verify"
)

// Config is the [deliver] section of latchkey.toml.
type Config struct {
	// Hostname is the name given in EHLO; it should have matching forward and
	// reverse DNS for the sending IP.
	Hostname string `toml:"hostname"`
	// Resolver is the DNS server ("host:port") used for MX and address
	// look-ups; "" means the first nameserver of /etc/resolv.conf.
	Resolver string `toml:"resolver"`
	// Port is the TCP port of the recipients' MX hosts: 25 except in tests.
	Port int `toml:"port"`
	// TLS is the STARTTLS policy: "opportunistic", "required" or "verify".
	TLS string `toml:"tls"`
	// ConnectTimeout bounds the TCP connect to one MX address.
	ConnectTimeout time.Duration `toml:"connect_timeout"`
	// CommandTimeout bounds the wait for each reply (greeting, EHLO, MAIL,
	// RCPT, DATA's 354) and the TLS handshake.
	CommandTimeout time.Duration `toml:"command_timeout"`
	// DataTimeout bounds sending the message and the wait for the final reply.
	DataTimeout time.Duration `toml:"data_timeout"`
	// MaxPerDomain is the most deliveries (so connections in use) to one
	// recipient domain at once.
	MaxPerDomain int `toml:"max_per_domain"`
	// MaxIdle is the most idle connections kept per MX address for reuse;
	// 0 disables reuse.
	MaxIdle int `toml:"max_idle"`
	// IdleTimeout is how long an idle connection is kept.
	IdleTimeout time.Duration `toml:"idle_timeout"`
	// MaxMessagesPerConn is the most messages sent over one connection before
	// it is closed; 0 means no limit.
	MaxMessagesPerConn int `toml:"max_messages_per_conn"`
	// DNSTimeout bounds each DNS query.
	DNSTimeout time.Duration `toml:"dns_timeout"`
	// InsecureSkipVerify accepts any certificate even under "verify"; for
	// tests only.
	InsecureSkipVerify bool `toml:"insecure_skip_verify"`
	// MTASTS honours the recipient domains' MTA-STS policies (RFC 8461): under
	// a policy in enforce mode, only the policy's MX hosts are tried, over
	// TLS with a certificate that verifies, whatever TLS says.
	MTASTS bool `toml:"mta_sts"`
	// SourceIP, if set, is the local address outbound connections come from.
	SourceIP string `toml:"source_ip"`
	// Maildir, if set, is a local Maildir that receives every message
	// instead of the recipients' MX (no DNS, no network): the trial's
	// destination, and a way to see what latchkey would send.
	Maildir string `toml:"maildir"`
	// Pipelining sends MAIL, RCPT and DATA in one write to servers that
	// offer PIPELINING (RFC 2920), saving two round trips per message.
	Pipelining bool `toml:"pipelining"`
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return Config{
		Hostname:       host,
		Port:           25,
		TLS:            TLSOpportunistic,
		ConnectTimeout: 30 * time.Second,
		// RFC 5321 4.5.3.2 recommends minutes per reply; a password reset
		// that waits that long is lost anyway, and the queue retries.
		CommandTimeout:     2 * time.Minute,
		DataTimeout:        5 * time.Minute,
		MaxPerDomain:       10,
		MaxIdle:            10,
		IdleTimeout:        30 * time.Second,
		MaxMessagesPerConn: 100,
		DNSTimeout:         5 * time.Second,
		MTASTS:             true,
		Pipelining:         true,
	}
}

// Validate reports every problem, each as "key: problem" with the TOML key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch {
	case c.Hostname == "":
		bad("hostname", "required")
	case strings.ContainsAny(c.Hostname, " \t\r\n") || strings.HasSuffix(c.Hostname, "."):
		bad("hostname", "%q is not a host name", c.Hostname)
	}
	if c.Resolver != "" {
		if host, port, err := net.SplitHostPort(c.Resolver); err != nil || host == "" || port == "" {
			bad("resolver", "%q is not host:port", c.Resolver)
		}
	}
	if c.Port < 1 || c.Port > 65535 {
		bad("port", "%d is out of range 1-65535", c.Port)
	}
	switch c.TLS {
	case TLSOpportunistic, TLSRequired, TLSVerify:
	default:
		bad("tls", "%q is not one of opportunistic, required, verify", c.TLS)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"connect_timeout", c.ConnectTimeout}, {"command_timeout", c.CommandTimeout},
		{"data_timeout", c.DataTimeout}, {"dns_timeout", c.DNSTimeout},
	} {
		if d.v <= 0 {
			bad(d.key, "must be positive")
		}
	}
	if c.MaxPerDomain < 1 {
		bad("max_per_domain", "must be at least 1")
	}
	if c.MaxIdle < 0 {
		bad("max_idle", "must not be negative")
	}
	if c.MaxIdle > 0 && c.IdleTimeout <= 0 {
		bad("idle_timeout", "must be positive when max_idle > 0")
	}
	if c.MaxMessagesPerConn < 0 {
		bad("max_messages_per_conn", "must not be negative")
	}
	if c.SourceIP != "" && net.ParseIP(c.SourceIP) == nil {
		bad("source_ip", "%q is not an IP address", c.SourceIP)
	}
	return errors.Join(errs...)
}
