package salesforce

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Config is the [salesforce] table of latchkey.toml. Secrets are never
// written in it: each is read from a file or an environment variable named
// here.
type Config struct {
	// Enabled turns escalation to Salesforce on.
	Enabled bool `toml:"enabled"`
	// Auth is the OAuth flow: "client_credentials" (a connected app with a
	// Run-As user) or "jwt" (JWT bearer with a certificate).
	Auth string `toml:"auth"`
	// MyDomainURL is the org's My Domain, e.g. https://acme.my.salesforce.com.
	// Tokens are requested from <my_domain_url>/services/oauth2/token;
	// login.salesforce.com refuses the client credentials flow.
	MyDomainURL string `toml:"my_domain_url"`
	// LoginURL is the JWT audience (aud): https://login.salesforce.com,
	// https://test.salesforce.com for sandboxes, or an Experience Cloud site.
	LoginURL string `toml:"login_url"`
	// APIVersion is the REST API version, e.g. "v68.0".
	APIVersion string `toml:"api_version"`
	// ClientIDFile is a file holding the connected app's consumer key.
	ClientIDFile string `toml:"client_id_file"`
	// ClientIDEnv is an environment variable holding the consumer key,
	// used when client_id_file is empty.
	ClientIDEnv string `toml:"client_id_env"`
	// ClientSecretFile is a file holding the consumer secret
	// (client_credentials only).
	ClientSecretFile string `toml:"client_secret_file"`
	// ClientSecretEnv is an environment variable holding the consumer
	// secret, used when client_secret_file is empty.
	ClientSecretEnv string `toml:"client_secret_env"`
	// JWTKeyFile is the PEM RSA private key whose certificate is uploaded to
	// the connected app (jwt only).
	JWTKeyFile string `toml:"jwt_key_file"`
	// Username is the Salesforce user the JWT speaks for (sub; jwt only).
	Username string `toml:"username"`
	// LookupObjects are searched in order for the bounced address.
	LookupObjects []string `toml:"lookup_objects"`
	// BackupEmailFields are field API names holding a backup address, e.g.
	// "Backup_Email__c". "Contact.Alt_Email__c" limits a field to one object.
	BackupEmailFields []string `toml:"backup_email_fields"`
	// Case sets the fields of the Case opened for an undeliverable reset.
	Case CaseConfig `toml:"case"`
	// SetBounceFields writes EmailBouncedReason and EmailBouncedDate on the
	// Contact or Lead, so the bounce shows in Salesforce's own UI.
	SetBounceFields bool `toml:"set_bounce_fields"`
	// CreateTask adds a Task on the Case, assigned to the person's record,
	// so it shows in the activity timeline.
	CreateTask bool `toml:"create_task"`
	// Timeout bounds one API call, token request and retry included.
	Timeout time.Duration `toml:"timeout"`
	// MaxAttempts is how many times the outbox tries an escalation before
	// moving it to the dead letters.
	MaxAttempts int `toml:"max_attempts"`
	// RetryBackoff is the outbox's wait after a failed attempt; it doubles
	// with each further failure up to MaxBackoff.
	RetryBackoff time.Duration `toml:"retry_backoff"`
	MaxBackoff   time.Duration `toml:"max_backoff"`
	// BackupCacheTTL is how long a backup-address answer (found or not) is
	// reused before Salesforce is asked again.
	BackupCacheTTL time.Duration `toml:"backup_cache_ttl"`
	// Lifecycle reports every reset's life to a Latchkey_Reset__c record.
	Lifecycle LifecycleConfig `toml:"lifecycle"`
}

// CaseConfig is the [salesforce.case] table. Orgs can rename picklist
// values, so all of them are configurable.
type CaseConfig struct {
	// Priority of the Case, a value of the Priority picklist.
	Priority string `toml:"priority"`
	// Origin of the Case, a value of the Origin picklist.
	Origin string `toml:"origin"`
	// Status of the new Case, a value of the Status picklist.
	Status string `toml:"status"`
	// SubjectPrefix starts every Case subject.
	SubjectPrefix string `toml:"subject_prefix"`
	// RecordTypeID is the 15- or 18-character id of the Case record type;
	// empty for the default record type.
	RecordTypeID string `toml:"record_type_id"`
}

// Auth flows.
const (
	AuthClientCredentials = "client_credentials"
	AuthJWT               = "jwt"
)

// DefaultConfig returns the defaults; escalation stays disabled until the
// operator names an org.
func DefaultConfig() Config {
	return Config{
		Auth:          AuthClientCredentials,
		LoginURL:      "https://login.salesforce.com",
		APIVersion:    "v68.0",
		LookupObjects: []string{"Contact", "Lead"},
		Case: CaseConfig{
			Priority:      "High",
			Origin:        "Email",
			Status:        "New",
			SubjectPrefix: "Password reset undeliverable:",
		},
		SetBounceFields: true,
		Timeout:         20 * time.Second,
		MaxAttempts:     12,
		RetryBackoff:    30 * time.Second,
		MaxBackoff:      30 * time.Minute,
		BackupCacheTTL:  10 * time.Minute,
		Lifecycle:       DefaultLifecycleConfig(),
	}
}

var (
	apiVersionRE = regexp.MustCompile(`^v[0-9]{2,3}\.0$`)
	// Object and field API names go into SOQL verbatim, so only names
	// Salesforce itself allows pass.
	apiNameRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,79}$`)
	sfIDRE     = regexp.MustCompile(`^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$`)
	loginHosts = map[string]bool{"login.salesforce.com": true, "test.salesforce.com": true}
)

// Validate reports every problem, each as "key: problem" with the TOML key.
// A disabled config is not checked further.
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("salesforce."+key+": "+format, a...))
	}
	switch c.Auth {
	case AuthClientCredentials:
		if c.ClientSecretFile == "" && c.ClientSecretEnv == "" {
			bad("client_secret_file", "client_credentials needs client_secret_file or client_secret_env")
		}
	case AuthJWT:
		if c.JWTKeyFile == "" {
			bad("jwt_key_file", "jwt needs the private key file")
		}
		if c.Username == "" {
			bad("username", "jwt needs the Salesforce username to act as")
		}
		if err := checkURL(c.LoginURL); err != nil {
			bad("login_url", "%v", err)
		}
	default:
		bad("auth", "must be %q or %q, not %q", AuthClientCredentials, AuthJWT, c.Auth)
	}
	if c.ClientIDFile == "" && c.ClientIDEnv == "" {
		bad("client_id_file", "set client_id_file or client_id_env to the consumer key")
	}
	if c.ClientIDFile != "" && c.ClientIDEnv != "" {
		bad("client_id_env", "set client_id_file or client_id_env, not both")
	}
	if c.ClientSecretFile != "" && c.ClientSecretEnv != "" {
		bad("client_secret_env", "set client_secret_file or client_secret_env, not both")
	}
	if err := checkURL(c.MyDomainURL); err != nil {
		bad("my_domain_url", "%v", err)
	} else if u, _ := url.Parse(c.MyDomainURL); loginHosts[strings.ToLower(u.Hostname())] {
		bad("my_domain_url", "token URL must be your My Domain (https://<name>.my.salesforce.com), not %s", u.Hostname())
	}
	if !apiVersionRE.MatchString(c.APIVersion) {
		bad("api_version", "must look like \"v68.0\", not %q", c.APIVersion)
	}
	if len(c.LookupObjects) == 0 {
		bad("lookup_objects", "name at least one object, e.g. [\"Contact\", \"Lead\"]")
	}
	for _, o := range c.LookupObjects {
		if !apiNameRE.MatchString(o) {
			bad("lookup_objects", "%q is not an object API name", o)
		}
	}
	for _, f := range c.BackupEmailFields {
		obj, field, qualified := strings.Cut(f, ".")
		if !qualified {
			field, obj = obj, ""
		}
		if !apiNameRE.MatchString(field) || (qualified && !apiNameRE.MatchString(obj)) {
			bad("backup_email_fields", "%q is not a field API name", f)
		}
	}
	if c.Case.Priority == "" {
		bad("case.priority", "must not be empty")
	}
	if c.Case.Origin == "" {
		bad("case.origin", "must not be empty")
	}
	if c.Case.Status == "" {
		bad("case.status", "must not be empty")
	}
	if utf8.RuneCountInString(c.Case.SubjectPrefix) > 100 {
		bad("case.subject_prefix", "must be at most 100 characters")
	}
	if c.Case.RecordTypeID != "" && !sfIDRE.MatchString(c.Case.RecordTypeID) {
		bad("case.record_type_id", "%q is not a 15- or 18-character Salesforce id", c.Case.RecordTypeID)
	}
	if c.Timeout <= 0 {
		bad("timeout", "must be positive, e.g. \"20s\"")
	}
	if c.MaxAttempts < 1 {
		bad("max_attempts", "must be at least 1")
	}
	if c.RetryBackoff <= 0 {
		bad("retry_backoff", "must be positive, e.g. \"30s\"")
	}
	if c.MaxBackoff < c.RetryBackoff {
		bad("max_backoff", "must be at least retry_backoff")
	}
	if c.BackupCacheTTL < 0 {
		bad("backup_cache_ttl", "must not be negative")
	}
	c.Lifecycle.validate(bad)
	return errors.Join(errs...)
}

// checkURL accepts https URLs, and plain http only on loopback so that tests
// can run a fake without certificates while production traffic stays
// encrypted.
func checkURL(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not a URL like https://acme.my.salesforce.com", s)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return fmt.Errorf("%q must use https", s)
		}
	default:
		return fmt.Errorf("%q must use https", s)
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("%q must have no path", s)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
