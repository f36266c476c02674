package salesforce_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/salesforce"
	"github.com/latchkey/latchkey/salesforce/sftest"
)

func TestClientCredentialsAndTokenReuse(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	id := fake.AddContact("jane@example.com", nil)
	c := newClient(t, fake, nil)
	ctx := context.Background()
	for range 3 {
		p, err := c.FindPerson(ctx, "Jane@Example.com")
		if err != nil {
			t.Fatalf("FindPerson: %v", err)
		}
		if p.ID != id || p.Object != "Contact" || p.Email != "jane@example.com" {
			t.Fatalf("FindPerson = %+v, want Contact %s", p, id)
		}
	}
	if n := fake.TokenRequests(); n != 1 {
		t.Errorf("token requests = %d, want 1 (token cached: Salesforce sends no expiry)", n)
	}
	used, limit := c.APIUsage()
	if used != fake.APICalls() || limit != 100000 {
		t.Errorf("APIUsage = %d/%d, want %d/100000", used, limit, fake.APICalls())
	}
}

func writeKey(t *testing.T) (*rsa.PrivateKey, string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jwt.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, path
}

func TestJWTBearer(t *testing.T) {
	key, keyFile := writeKey(t)
	fake := sftest.Start(t, sftest.Options{JWTPublicKey: &key.PublicKey, Username: "relay@acme.example"})
	fake.AddLead("lead@example.com", nil)
	jwtCfg := func(user, aud string) func(*salesforce.Config) {
		return func(c *salesforce.Config) {
			c.Auth = salesforce.AuthJWT
			c.ClientSecretFile = ""
			c.JWTKeyFile = keyFile
			c.Username = user
			c.LoginURL = aud
		}
	}
	c := newClient(t, fake, jwtCfg("relay@acme.example", "https://login.salesforce.com"))
	p, err := c.FindPerson(context.Background(), "lead@example.com")
	if err != nil {
		t.Fatalf("FindPerson with JWT: %v", err)
	}
	if p.Object != "Lead" || !strings.HasPrefix(p.ID, "00Q") {
		t.Errorf("person = %+v, want a Lead", p)
	}

	for _, tc := range []struct{ user, aud, hint string }{
		{"someone@else.example", "https://login.salesforce.com", "pre-authorize the user"},
		{"relay@acme.example", "https://acme.example", "login_url (the JWT audience)"},
	} {
		c := newClient(t, fake, jwtCfg(tc.user, tc.aud))
		_, err := c.FindPerson(context.Background(), "lead@example.com")
		var ae *salesforce.AuthError
		if !errors.As(err, &ae) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("user %s aud %s: err = %v, want AuthError saying %q", tc.user, tc.aud, err, tc.hint)
		}
	}

	// A key that does not match the uploaded certificate.
	_, otherKey := writeKey(t)
	c = newClient(t, fake, func(cfg *salesforce.Config) {
		jwtCfg("relay@acme.example", "https://login.salesforce.com")(cfg)
		cfg.JWTKeyFile = otherKey
	})
	if _, err := c.FindPerson(context.Background(), "lead@example.com"); err == nil || !strings.Contains(err.Error(), "jwt_key_file must match") {
		t.Errorf("wrong key: err = %v", err)
	}
}

// hostRewriter sends token requests with another Host header, as a
// vanity name pointing at login.salesforce.com would.
type hostRewriter struct{ host string }

func (h hostRewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/services/oauth2/token" {
		r = r.Clone(r.Context())
		r.Host = h.host
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestTokenErrorsInPlainWords(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	cfg, err := fake.ClientConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := salesforce.New(cfg, &http.Client{Transport: hostRewriter{"login.salesforce.com"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.FindPerson(context.Background(), "jane@example.com")
	want := "token URL must be your My Domain, not login.salesforce.com"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("login host: err = %v, want %q", err, want)
	}

	noRunAs := sftest.Start(t, sftest.Options{NoRunAsUser: true})
	c = newClient(t, noRunAs, nil)
	if _, err := c.FindPerson(context.Background(), "jane@example.com"); err == nil || !strings.Contains(err.Error(), "set a Run-As user on the connected app") {
		t.Errorf("no run-as user: err = %v", err)
	}

	for _, edit := range []func(dir string, cfg *salesforce.Config){
		func(dir string, cfg *salesforce.Config) { os.WriteFile(cfg.ClientSecretFile, []byte("wrong"), 0o600) },
		func(dir string, cfg *salesforce.Config) { os.WriteFile(cfg.ClientIDFile, []byte("wrong"), 0o600) },
	} {
		dir := t.TempDir()
		cfg, _ := fake.ClientConfig(dir)
		edit(dir, &cfg)
		c, err := salesforce.New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.FindPerson(context.Background(), "jane@example.com"); err == nil || !strings.Contains(err.Error(), "bad consumer key/secret") {
			t.Errorf("bad credentials: err = %v", err)
		}
	}
}

func TestTokenExpiryReauthenticatesOnce(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	contact := fake.AddContact("jane@example.com", nil)
	c := newClient(t, fake, nil)
	ctx := context.Background()
	if _, err := c.FindPerson(ctx, "jane@example.com"); err != nil {
		t.Fatal(err)
	}
	fake.ExpireTokens()
	id, err := c.CreateCase(ctx, salesforce.CaseRequest{Ref: "exp-1", Subject: "s", ContactID: contact})
	if err != nil {
		t.Fatalf("CreateCase after expiry: %v", err)
	}
	if n := fake.TokenRequests(); n != 2 {
		t.Errorf("token requests = %d, want 2 (one re-authentication)", n)
	}
	if cs := fake.Cases(); len(cs) != 1 || cs[0]["Id"] != id {
		t.Errorf("cases = %v, want exactly the one created", cs)
	}

	// Refused twice in a row: one refresh, one retry, then the error.
	fake.FailNext(sftest.Unauthorized, 2)
	before := fake.TokenRequests()
	_, err = c.FindPerson(ctx, "jane@example.com")
	var ae *salesforce.APIError
	if !errors.As(err, &ae) || ae.Status != 401 || ae.Code != "INVALID_SESSION_ID" {
		t.Fatalf("err = %v, want 401 INVALID_SESSION_ID", err)
	}
	if n := fake.TokenRequests() - before; n != 1 {
		t.Errorf("token requests for a doubly refused call = %d, want 1", n)
	}
}

func TestSOQLEscaping(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	quoted := fake.AddContact("o'brien@example.com", nil)
	fake.AddContact("victim@example.com", nil)
	c := newClient(t, fake, nil)
	ctx := context.Background()
	p, err := c.FindPerson(ctx, "o'brien@example.com")
	if err != nil || p.ID != quoted {
		t.Fatalf("FindPerson(o'brien) = %+v, %v; want %s", p, err, quoted)
	}
	for _, evil := range []string{
		`x' OR Email LIKE '%@example.com`,
		`x\' OR Email LIKE '%@example.com`,
		`x\\' OR Email != '@`,
	} {
		if p, err := c.FindPerson(ctx, evil); !errors.Is(err, salesforce.ErrNotFound) {
			t.Errorf("FindPerson(%q) = %+v, %v; want ErrNotFound", evil, p, err)
		}
	}
}

func TestBackupAddressCached(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{CustomFields: map[string][]string{
		"Contact": {"Backup_Email__c", "Alt_Email__c"}, "Lead": {"Backup_Email__c"},
	}})
	fake.AddContact("jane@example.com", sftest.Record{"Backup_Email__c": "", "Alt_Email__c": "jane@home.example"})
	fake.AddContact("same@example.com", sftest.Record{"Backup_Email__c": "SAME@example.com"})
	fake.AddLead("lead@example.com", sftest.Record{"Backup_Email__c": "lead@backup.example"})
	c := newClient(t, fake, func(cfg *salesforce.Config) {
		cfg.BackupEmailFields = []string{"Backup_Email__c", "Contact.Alt_Email__c"}
	})
	ctx := context.Background()
	for _, tc := range []struct{ email, want string }{
		{"jane@example.com", "jane@home.example"},
		{"lead@example.com", "lead@backup.example"},
		{"same@example.com", ""},
		{"nobody@example.com", ""},
	} {
		got, err := c.BackupAddress(ctx, tc.email)
		if tc.want == "" {
			if !errors.Is(err, salesforce.ErrNotFound) {
				t.Errorf("BackupAddress(%s) = %q, %v; want ErrNotFound", tc.email, got, err)
			}
		} else if err != nil || got != tc.want {
			t.Errorf("BackupAddress(%s) = %q, %v; want %q", tc.email, got, err, tc.want)
		}
	}
	calls := fake.APICalls()
	for _, e := range []string{"jane@example.com", "nobody@example.com"} {
		c.BackupAddress(ctx, e)
	}
	if fake.APICalls() != calls {
		t.Errorf("cached answers cost %d API calls, want 0", fake.APICalls()-calls)
	}
}

func TestCreateCaseIdempotentAndLimits(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	c := newClient(t, fake, nil)
	ctx := context.Background()
	long := strings.Repeat("é", 400) + "@example.com"
	req := salesforce.CaseRequest{Ref: "ref_1.x", Subject: "bounce to " + long, Description: strings.Repeat("d", 40000), SuppliedEmail: long}
	id1, err := c.CreateCase(ctx, req)
	if err != nil {
		t.Fatalf("CreateCase: %v", err)
	}
	// A reference that differs only where a LIKE wildcard would match.
	id2, err := c.CreateCase(ctx, salesforce.CaseRequest{Ref: "refX1.x", Subject: "other"})
	if err != nil || id2 == id1 {
		t.Fatalf("CreateCase(refX1.x) = %s, %v; want a new Case", id2, err)
	}
	again, err := c.CreateCase(ctx, req)
	if err != nil || again != id1 {
		t.Fatalf("CreateCase again = %s, %v; want the existing %s", again, err, id1)
	}
	cs := fake.Cases()
	if len(cs) != 2 {
		t.Fatalf("%d cases, want 2", len(cs))
	}
	subj := cs[0]["Subject"].(string)
	if n := len([]rune(subj)); n > 255 || !strings.HasSuffix(subj, " [latchkey:ref_1.x]") {
		t.Errorf("subject (%d chars) = %q", n, subj)
	}
	if n := len([]rune(cs[0]["Description"].(string))); n != 32000 {
		t.Errorf("description is %d chars, want 32000", n)
	}
	if _, ok := cs[0]["SuppliedEmail"]; ok {
		t.Errorf("an address over 80 characters went into SuppliedEmail")
	}
	if !strings.HasPrefix(id1, "500") || len(id1) != 18 {
		t.Errorf("case id %q is not an 18-character Case id", id1)
	}
}

func TestIsRetryable(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	c := newClient(t, fake, func(cfg *salesforce.Config) { cfg.Timeout = 200 * time.Millisecond })
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		fault sftest.FaultKind
		want  bool
	}{
		{"limit", sftest.LimitExceeded, true},
		{"server error", sftest.ServerError, true},
		{"dropped", sftest.Drop, true},
	} {
		fake.Inject(sftest.Fault{Kind: tc.fault, Count: 1, Method: "POST"})
		_, err := c.CreateCase(ctx, salesforce.CaseRequest{Ref: "r-" + strings.ReplaceAll(tc.name, " ", "-"), Subject: "s"})
		if err == nil || salesforce.IsRetryable(err) != tc.want {
			t.Errorf("%s: err = %v, IsRetryable = %v, want %v", tc.name, err, salesforce.IsRetryable(err), tc.want)
		}
	}
	// A malformed request will fail again.
	c2 := newClient(t, fake, func(cfg *salesforce.Config) { cfg.Case.Priority = "Urgent" })
	_, err := c2.CreateCase(ctx, salesforce.CaseRequest{Ref: "bad", Subject: "s"})
	var ae *salesforce.APIError
	if !errors.As(err, &ae) || ae.Code != "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" || ae.Fields[0] != "Priority" || salesforce.IsRetryable(err) {
		t.Errorf("bad picklist: err = %#v, want non-retryable restricted picklist error on Priority", err)
	}
	c3 := newClient(t, fake, func(cfg *salesforce.Config) {
		cfg.LookupObjects = []string{"Contact"}
		cfg.BackupEmailFields = []string{"Nope__c"}
	})
	_, err = c3.FindPerson(ctx, "a@example.com")
	if !errors.As(err, &ae) || ae.Code != "INVALID_FIELD" || salesforce.IsRetryable(err) {
		t.Errorf("unknown field: err = %v, want non-retryable INVALID_FIELD", err)
	}
	// Slow answers time out, which is worth retrying.
	fake.SetDelay(2 * time.Second)
	_, err = c.FindPerson(ctx, "a@example.com")
	fake.SetDelay(0)
	if err == nil || !salesforce.IsRetryable(err) {
		t.Errorf("slow answer: err = %v, want a retryable timeout", err)
	}
	fake.SetDown(true)
	_, err = c.FindPerson(ctx, "a@example.com")
	fake.SetDown(false)
	if err == nil || !salesforce.IsRetryable(err) {
		t.Errorf("down: err = %v, want retryable", err)
	}
}
