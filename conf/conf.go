// Package conf holds latchkey's server configuration: the shipped
// latchkey.toml and policy.toml (embedded, so the binary runs with no files
// at all), and the strict loader that reports every problem with file, line
// and key.
package conf

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/dustin/go-humanize"

	"github.com/latchkey/latchkey/acmecert"
	"github.com/latchkey/latchkey/cluster"
	"github.com/latchkey/latchkey/conf/tomlconf"
	"github.com/latchkey/latchkey/deliver"
	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/salesforce"
)

// DefaultServer is the shipped latchkey.toml: the trial configuration.
//
//go:embed latchkey.toml
var DefaultServer []byte

// DefaultPolicy is the shipped policy.toml.
//
//go:embed policy.toml
var DefaultPolicy []byte

// Config is latchkey.toml.
type Config struct {
	Hostname   string `toml:"hostname"`
	DataDir    string `toml:"data_dir"`
	LogLevel   string `toml:"log_level"`
	LogFormat  string `toml:"log_format"`
	PolicyFile string `toml:"policy_file"`
	// MemoryLimit is the Go runtime's soft memory limit, e.g. "256MiB"
	// (runtime/debug.SetMemoryLimit); empty leaves it to GOMEMLIMIT.
	MemoryLimit string `toml:"memory_limit"`

	Submission Submission        `toml:"submission"`
	TLS        TLS               `toml:"tls"`
	Inbound    Inbound           `toml:"inbound"`
	Domains    []Domain          `toml:"domains"`
	Delivery   deliver.Config    `toml:"delivery"`
	VERP       VERP              `toml:"verp"`
	Admin      Admin             `toml:"admin"`
	Audit      Audit             `toml:"audit"`
	Salesforce salesforce.Config `toml:"salesforce"`
	Cluster    cluster.Config    `toml:"cluster"`

	// File is the file the configuration was read from ("(embedded)
	// latchkey.toml" for the shipped one); Trial is true for the shipped one.
	File  string `toml:"-"`
	Trial bool   `toml:"-"`
}

// TLS is how the listeners get their certificate when not from
// [submission] tls_cert/tls_key.
type TLS struct {
	// ACME obtains and renews it from an ACME CA.
	ACME acmecert.Config `toml:"acme"`
}

// Submission is the listener Salesforce submits to.
type Submission struct {
	Listen            []string      `toml:"listen"`
	TLSCert           string        `toml:"tls_cert"`
	TLSKey            string        `toml:"tls_key"`
	MinTLS            string        `toml:"min_tls"`
	UsersFile         string        `toml:"users_file"`
	Users             []User        `toml:"users"`
	AllowCIDRs        []string      `toml:"allow_cidrs"`
	OrgIDs            []string      `toml:"org_ids"`
	MaxMessageBytes   int64         `toml:"max_message_bytes"`
	MaxRecipients     int           `toml:"max_recipients"`
	CommandTimeout    time.Duration `toml:"command_timeout"`
	DataTimeout       time.Duration `toml:"data_timeout"`
	MaxAuthFailures   int           `toml:"max_auth_failures"`
	AuthFailureWindow time.Duration `toml:"auth_failure_window"`
	BareLineEndings   string        `toml:"bare_line_endings"`
	// MaxConnections caps open connections in all, MaxConnectionsPerIP
	// per client address; 0 is no limit. More are answered 421 4.7.0.
	MaxConnections      int `toml:"max_connections"`
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`

	// Prefixes is AllowCIDRs parsed.
	Prefixes []netip.Prefix `toml:"-"`
}

// User is a submission user whose password is stored as a hash.
type User struct {
	Name         string `toml:"name"`
	PasswordHash string `toml:"password_hash"`
}

// Inbound is the bounce listener.
type Inbound struct {
	Listen          []string `toml:"listen"`
	MaxMessageBytes int64    `toml:"max_message_bytes"`
	NotifySender    bool     `toml:"notify_sender"`
	BackupHeader    string   `toml:"backup_header"`
	// As in Submission: caps on open connections, 0 is no limit.
	MaxConnections      int `toml:"max_connections"`
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
}

// Domain is a transactional domain.
type Domain struct {
	Name string     `toml:"name"`
	DKIM []Selector `toml:"dkim"`

	// BounceDomain is bounce.<Name>: the envelope domain and the MX that
	// receives DSNs at the VERP addresses.
	BounceDomain string `toml:"-"`
}

// Selector is one DKIM key of a domain.
type Selector struct {
	Selector string `toml:"selector"`
	Algo     string `toml:"algo"`
	KeyFile  string `toml:"key_file"`
}

// VERP configures the bounce address MAC.
type VERP struct {
	KeyFile string `toml:"key_file"`
}

// Admin is the admin HTTP API.
type Admin struct {
	Listen    string `toml:"listen"`
	TokenFile string `toml:"token_file"`
	// Console serves the web console under /console/ on the same listener.
	Console bool `toml:"console"`
	// ConsoleUsersFile holds the console's users, name:role:bcrypt-hash
	// (role admin or auditor); without it only the admin token signs in.
	ConsoleUsersFile string `toml:"console_users_file"`
	// ConsoleSecureCookie marks the session cookie Secure on plain HTTP:
	// for a listener behind a TLS proxy.
	ConsoleSecureCookie bool `toml:"console_secure_cookie"`
}

// Audit configures the audit trail.
type Audit struct {
	Retention time.Duration `toml:"retention"`
	KeyFile   string        `toml:"key_file"`
}

// Defaults returns the configuration every file is decoded over.
func Defaults() Config {
	d := deliver.DefaultConfig()
	return Config{
		Hostname:  "localhost",
		DataDir:   "./var",
		LogLevel:  "info",
		LogFormat: "auto",
		Submission: Submission{
			MinTLS:            "1.2",
			MaxMessageBytes:   10 << 20,
			MaxRecipients:     100,
			CommandTimeout:    5 * time.Minute,
			DataTimeout:       10 * time.Minute,
			MaxAuthFailures:   5,
			AuthFailureWindow: 15 * time.Minute,
			BareLineEndings:   "reject",
			MaxConnections:    100,
		},
		Inbound: Inbound{MaxMessageBytes: 10 << 20, BackupHeader: "X-LK-Backup-Email",
			MaxConnections: 200, MaxConnectionsPerIP: 20},
		Delivery:   d,
		TLS:        TLS{ACME: acmecert.DefaultConfig()},
		Admin:      Admin{Listen: "127.0.0.1:8025", Console: true},
		Audit:      Audit{Retention: 400 * 24 * time.Hour},
		Salesforce: salesforce.DefaultConfig(),
	}
}

// TrialMaildir is where the trial configuration delivers, under data_dir.
const TrialMaildir = "trial-mail"

// Load reads the configuration from path, or the shipped trial
// configuration when path is "". The error, if any, is a tomlconf.Errors
// listing every problem with file, line and key.
func Load(path string) (*Config, error) {
	src, file := DefaultServer, "(embedded) latchkey.toml"
	if path != "" {
		var err error
		if src, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("conf: %w", err)
		}
		file = path
	}
	return Parse(file, src, path == "")
}

// Parse decodes and validates src, read from file.
func Parse(file string, src []byte, trial bool) (*Config, error) {
	c := Defaults()
	var errs tomlconf.Errors
	md, err := tomlconf.Decode(file, src, &c)
	if err != nil {
		// Unknown keys still leave a decoded value: go on, so that every
		// problem is reported at once. Syntax and type errors stop here.
		if !errors.As(err, &errs) || !onlyUnknownKeys(errs) {
			return nil, err
		}
	}
	c.File, c.Trial = file, trial
	if c.PolicyFile != "" && !filepath.IsAbs(c.PolicyFile) && !trial {
		// Next to latchkey.toml, wherever the relay was started from
		// (systemd starts it in /).
		c.PolicyFile = filepath.Join(filepath.Dir(file), c.PolicyFile)
	}
	if trial && c.Delivery.Maildir == "" {
		// The trial delivers to a local Maildir: its keys are unpublished
		// and its host name is localhost, so mail sent to the internet
		// would bounce (and be escalated) or be filed as spam.
		c.Delivery.Maildir = TrialMaildir
	}
	c.Delivery.Maildir = c.Path(c.Delivery.Maildir)
	if c.Delivery.Hostname == "" || c.Delivery.Hostname != c.Hostname {
		// One name for the relay: EHLO on delivery is the configured hostname.
		c.Delivery.Hostname = c.Hostname
	}
	errs = append(errs, tomlconf.FromValidation(file, src, "", errors.Join(bareDurations(md, reflect.TypeOf(c), nil)...))...)
	errs = append(errs, tomlconf.FromValidation(file, src, "", c.validate())...)
	errs = append(errs, tomlconf.FromValidation(file, src, "delivery", c.Delivery.Validate())...)
	errs = append(errs, tomlconf.FromValidation(file, src, "tls.acme", c.TLS.ACME.Validate(c.Hostname))...)
	if c.Salesforce.Enabled {
		errs = append(errs, tomlconf.FromValidation(file, src, "salesforce", c.Salesforce.Validate())...)
	}
	if c.Cluster.Enabled {
		c.Cluster.Defaults(c.Hostname)
		c.Cluster.SecretFile = c.Path(c.Cluster.SecretFile)
		c.Cluster.TLSCert, c.Cluster.TLSKey, c.Cluster.TLSCA = c.Path(c.Cluster.TLSCert), c.Path(c.Cluster.TLSKey), c.Path(c.Cluster.TLSCA)
		errs = append(errs, tomlconf.FromValidation(file, src, "cluster", c.Cluster.Validate())...)
	}
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
		return nil, errs
	}
	return &c, nil
}

var durationType = reflect.TypeOf(time.Duration(0))

// bareDurations finds duration keys written as a bare number. The decoder
// reads an integer into a time.Duration as nanoseconds, so
// command_timeout = 300 would time out every command at once.
func bareDurations(md toml.MetaData, t reflect.Type, path []string) []error {
	var errs []error
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		p := append(path[:len(path):len(path)], name)
		switch {
		case f.Type == durationType:
			if md.Type(p...) == "Integer" {
				errs = append(errs, fmt.Errorf("%s: a bare number is read as nanoseconds; give the unit, e.g. \"30s\", \"5m\", \"24h\"", strings.Join(p, ".")))
			}
		case f.Type.Kind() == reflect.Struct:
			errs = append(errs, bareDurations(md, f.Type, p)...)
		}
	}
	return errs
}

func onlyUnknownKeys(errs tomlconf.Errors) bool {
	for _, e := range errs {
		if e.Msg != "unknown key" {
			return false
		}
	}
	return true
}

// MemoryLimitBytes parses memory_limit (0 when empty).
func (c *Config) MemoryLimitBytes() (int64, error) {
	if c.MemoryLimit == "" {
		return 0, nil
	}
	n, err := humanize.ParseBytes(c.MemoryLimit)
	if err != nil {
		return 0, err
	}
	if n > 1<<50 {
		return 0, fmt.Errorf("%s is too large", c.MemoryLimit)
	}
	return int64(n), nil
}

func (c *Config) validate() error {
	var errs []error
	add := func(key, f string, a ...any) { errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(f, a...))) }
	if c.Hostname == "" || strings.ContainsAny(c.Hostname, " /@") {
		add("hostname", "must be a host name, got %q", c.Hostname)
	}
	if c.DataDir == "" {
		add("data_dir", "must not be empty")
	}
	if c.MemoryLimit != "" {
		if n, err := c.MemoryLimitBytes(); err != nil {
			add("memory_limit", "want a size such as \"256MiB\" or \"1GiB\": %v", err)
		} else if n < 64<<20 {
			add("memory_limit", "%s is below 64 MiB: the relay would spend its time collecting garbage", c.MemoryLimit)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("log_level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "auto", "json", "console":
	default:
		add("log_format", "must be auto, json or console, got %q", c.LogFormat)
	}
	s := &c.Submission
	if len(s.Listen) == 0 {
		add("submission.listen", "at least one address is needed")
	}
	for _, a := range s.Listen {
		if _, _, err := net.SplitHostPort(a); err != nil {
			add("submission.listen", "%q is not host:port", a)
		}
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		add("submission.tls_cert", "tls_cert and tls_key go together")
	}
	if c.TLS.ACME.Enabled && s.TLSCert != "" {
		add("submission.tls_cert", "not used with [tls.acme] enabled: remove one of them")
	}
	if s.MinTLS != "1.2" && s.MinTLS != "1.3" {
		add("submission.min_tls", "must be \"1.2\" or \"1.3\", got %q", s.MinTLS)
	}
	s.Prefixes = nil
	for _, a := range s.AllowCIDRs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			if ip, err2 := netip.ParseAddr(a); err2 == nil {
				p = netip.PrefixFrom(ip, ip.BitLen())
			} else {
				add("submission.allow_cidrs", "%q is not a CIDR block", a)
				continue
			}
		}
		s.Prefixes = append(s.Prefixes, p.Masked())
	}
	users := map[string]bool{}
	for i, u := range s.Users {
		if u.Name == "" {
			add(fmt.Sprintf("submission.users.%d.name", i), "must not be empty")
		} else if users[u.Name] {
			add(fmt.Sprintf("submission.users.%d.name", i), "user %q is listed twice", u.Name)
		}
		users[u.Name] = true
		if !strings.HasPrefix(u.PasswordHash, "$2") {
			add(fmt.Sprintf("submission.users.%d.password_hash", i), "must be a bcrypt hash (make one with `latchkey passwd`), never a password")
		}
	}
	if s.MaxMessageBytes < 1024 {
		add("submission.max_message_bytes", "must be at least 1024")
	}
	if s.MaxRecipients < 1 {
		add("submission.max_recipients", "must be at least 1")
	}
	if s.CommandTimeout <= 0 {
		add("submission.command_timeout", "must be positive")
	}
	if s.DataTimeout <= 0 {
		add("submission.data_timeout", "must be positive")
	}
	if s.MaxAuthFailures < 1 {
		add("submission.max_auth_failures", "must be at least 1")
	}
	if s.AuthFailureWindow <= 0 {
		// Failures would age out before the next one is counted.
		add("submission.auth_failure_window", "must be positive")
	}
	if s.BareLineEndings != "reject" && s.BareLineEndings != "normalize" {
		add("submission.bare_line_endings", "must be \"reject\" or \"normalize\", got %q", s.BareLineEndings)
	}
	for _, a := range c.Inbound.Listen {
		if _, _, err := net.SplitHostPort(a); err != nil {
			add("inbound.listen", "%q is not host:port", a)
		}
	}
	for _, l := range []struct {
		key string
		n   int
	}{
		{"submission.max_connections", s.MaxConnections}, {"submission.max_connections_per_ip", s.MaxConnectionsPerIP},
		{"inbound.max_connections", c.Inbound.MaxConnections}, {"inbound.max_connections_per_ip", c.Inbound.MaxConnectionsPerIP},
	} {
		if l.n < 0 {
			add(l.key, "must be 0 (no limit) or more, got %d", l.n)
		}
	}
	if len(c.Domains) == 0 {
		add("domains", "at least one transactional domain is needed")
	}
	seen := map[string]bool{}
	for i, d := range c.Domains {
		k := fmt.Sprintf("domains.%d", i)
		d.Name = strings.ToLower(strings.TrimSuffix(d.Name, "."))
		if d.Name == "" || !strings.Contains(d.Name, ".") {
			add(k+".name", "must be a domain name, got %q", d.Name)
		}
		if seen[d.Name] {
			add(k+".name", "domain %q is listed twice", d.Name)
		}
		seen[d.Name] = true
		d.BounceDomain = "bounce." + d.Name
		if len(d.DKIM) == 0 {
			add(k+".dkim", "at least one DKIM selector is needed")
		}
		for j, sel := range d.DKIM {
			sk := fmt.Sprintf("%s.dkim.%d", k, j)
			if sel.Selector == "" || strings.ContainsAny(sel.Selector, " ;=") {
				add(sk+".selector", "must be a DNS label, got %q", sel.Selector)
			}
			if sel.Algo != "rsa" && sel.Algo != "ed25519" {
				add(sk+".algo", "must be \"rsa\" or \"ed25519\", got %q", sel.Algo)
			}
			if sel.KeyFile == "" {
				add(sk+".key_file", "must name the private key file")
			}
		}
		c.Domains[i] = d
	}
	if _, _, err := net.SplitHostPort(c.Admin.Listen); c.Admin.Listen != "" && err != nil {
		add("admin.listen", "%q is not host:port", c.Admin.Listen)
	}
	if c.Audit.Retention < 24*time.Hour {
		add("audit.retention", "must be at least a day (24h)")
	}
	return errors.Join(errs...)
}

// Path resolves p against the data directory (absolute paths stay).
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.DataDir, p)
}

// Domain returns the transactional domain named d (nil when not configured).
func (c *Config) Domain(d string) *Domain {
	d = strings.ToLower(d)
	for i := range c.Domains {
		if c.Domains[i].Name == d {
			return &c.Domains[i]
		}
	}
	return nil
}

// KeyEntries lists the DKIM keys for the dkim package, paths resolved.
func (c *Config) KeyEntries() []dkim.KeyEntry {
	var out []dkim.KeyEntry
	for _, d := range c.Domains {
		for _, s := range d.DKIM {
			out = append(out, dkim.KeyEntry{Domain: d.Name, Selector: s.Selector, Algo: s.Algo, KeyFile: c.Path(s.KeyFile)})
		}
	}
	return out
}
