package salesforce_test

import (
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/latchkey/latchkey/salesforce"
)

func TestConfigDecodeAndValidate(t *testing.T) {
	src := `
enabled = true
auth = "jwt"
my_domain_url = "https://acme.my.salesforce.com"
client_id_env = "SF_CLIENT_ID"
jwt_key_file = "/etc/latchkey/sf.pem"
username = "relay@acme.example"
backup_email_fields = ["Backup_Email__c", "Contact.npe01__AlternateEmail__c"]
timeout = "15s"
backup_cache_ttl = "5m"
[case]
priority = "High"
record_type_id = "0125g000000ABCDAAA"
`
	cfg := salesforce.DefaultConfig()
	if _, err := toml.Decode(src, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if cfg.Timeout != 15*time.Second || cfg.BackupCacheTTL != 5*time.Minute || cfg.APIVersion != "v68.0" || cfg.Case.Origin != "Email" {
		t.Errorf("decoded %+v", cfg)
	}

	bad := salesforce.DefaultConfig()
	bad.Enabled = true
	bad.MyDomainURL = "https://login.salesforce.com"
	bad.APIVersion = "68"
	bad.LookupObjects = []string{"Contact; DELETE"}
	bad.BackupEmailFields = []string{"Backup Email"}
	bad.ClientSecretEnv = "SECRET"
	bad.MaxAttempts = 0
	bad.Case.RecordTypeID = "xyz"
	err := bad.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, want := range []string{
		"salesforce.my_domain_url: token URL must be your My Domain",
		"salesforce.api_version:",
		"salesforce.lookup_objects:",
		"salesforce.backup_email_fields:",
		"salesforce.client_id_file:",
		"salesforce.max_attempts:",
		"salesforce.case.record_type_id:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
	for _, u := range []string{"http://acme.my.salesforce.com", "https://acme.my.salesforce.com/path", "acme.my.salesforce.com"} {
		c := salesforce.DefaultConfig()
		c.Enabled, c.MyDomainURL, c.ClientIDEnv, c.ClientSecretEnv = true, u, "A", "B"
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "my_domain_url") {
			t.Errorf("my_domain_url %q: %v", u, err)
		}
	}
	if _, err := salesforce.New(salesforce.DefaultConfig(), nil); err == nil {
		t.Error("New accepted a disabled config")
	}
}

func TestSecretsFromEnv(t *testing.T) {
	c := salesforce.DefaultConfig()
	c.Enabled, c.MyDomainURL, c.ClientIDEnv, c.ClientSecretEnv = true, "https://acme.my.salesforce.com", "LK_TEST_SF_ID", "LK_TEST_SF_SECRET"
	t.Setenv("LK_TEST_SF_ID", "id")
	t.Setenv("LK_TEST_SF_SECRET", "")
	if _, err := salesforce.New(c, nil); err == nil || !strings.Contains(err.Error(), "LK_TEST_SF_SECRET") {
		t.Errorf("empty secret env: %v", err)
	}
	t.Setenv("LK_TEST_SF_SECRET", "s")
	if _, err := salesforce.New(c, nil); err != nil {
		t.Errorf("New: %v", err)
	}
}

func TestLifecycleConfig(t *testing.T) {
	src := `
enabled = true
my_domain_url = "https://acme.my.salesforce.com"
client_id_env = "SF_CLIENT_ID"
client_secret_env = "SF_SECRET"
[lifecycle]
enabled = true
interval = "2s"
backup = "hashed"
[lifecycle.fields]
status = "Reset_Status__c"
attempts = ""
`
	cfg := salesforce.DefaultConfig()
	if _, err := toml.Decode(src, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	lc := cfg.Lifecycle
	if lc.Interval != 2*time.Second || lc.Batch != 200 || lc.Backup != "hashed" || lc.Classes[0] != "reset" || lc.Fields["status"] != "Reset_Status__c" {
		t.Errorf("decoded %+v", lc)
	}
	cfg.Lifecycle.Batch = 500
	cfg.Lifecycle.Backup = "plain"
	cfg.Lifecycle.Fields = map[string]string{"colour": "X__c", "latchkey_id": "", "status": "not a name"}
	cfg.Lifecycle.LimitReserve = 1
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad lifecycle table")
	}
	for _, want := range []string{"salesforce.lifecycle.batch: must be from 1 to 200", "salesforce.lifecycle.backup:",
		`salesforce.lifecycle.fields: "colour" is not a field latchkey writes`, "latchkey_id is the External ID",
		`status: "not a name" is not a field API name`, "salesforce.lifecycle.limit_reserve:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
