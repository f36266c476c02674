package salesforce_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/salesforce"
	"github.com/latchkey/latchkey/salesforce/sftest"
)

// Salesforce API names are case-insensitive: a query may name a field in
// any case, and the answer keys it by its real API name. A backup field
// configured in another case must still be read.
func TestBackupFieldNamedInOtherCase(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{CustomFields: map[string][]string{"Contact": {"Backup_Email__c"}}})
	fake.AddContact("jane@example.com", sftest.Record{"Backup_Email__c": "jane@home.example"})
	c := newClient(t, fake, func(cfg *salesforce.Config) { cfg.BackupEmailFields = []string{"backup_email__c"} })
	got, err := c.BackupAddress(context.Background(), "jane@example.com")
	if err != nil || got != "jane@home.example" {
		t.Errorf("BackupAddress = %q, %v; want jane@home.example", got, err)
	}
}

// case.subject_prefix is limited to 100 characters, not bytes: a prefix in
// a language with accents or another script must not be refused early.
func TestSubjectPrefixLimitCountsCharacters(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	prefix := strings.Repeat("é", 60) + ":"
	c := newClient(t, fake, func(cfg *salesforce.Config) { cfg.Case.SubjectPrefix = prefix })
	if _, err := c.CreateCase(context.Background(), salesforce.CaseRequest{Ref: "pfx-1", Subject: "s"}); err != nil {
		t.Fatal(err)
	}
	if cs := fake.Cases(); len(cs) != 1 || !strings.HasPrefix(cs[0]["Subject"].(string), prefix) {
		t.Errorf("cases = %v", cs)
	}
	cfg, err := fake.ClientConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Case.SubjectPrefix = strings.Repeat("é", 101)
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "subject_prefix") {
		t.Errorf("Validate with a 101-character prefix = %v, want the limit", err)
	}
}

// Backup fields are often free text (Alt_Email__c as a Text field): what is
// not one plain address must not become the reset's new recipient.
func TestBackupAddressSkipsWhatIsNotAnAddress(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{CustomFields: map[string][]string{"Contact": {"Alt_Email__c", "Backup_Email__c"}}})
	for i, junk := range []string{"call her mobile", "a@x.example; b@y.example", "Jane <jane@home.example>", "jane@home.example\r\nDATA", "@"} {
		fake.AddContact(fmt.Sprintf("p%d@example.com", i), sftest.Record{"Alt_Email__c": junk, "Backup_Email__c": "ok@backup.example"})
	}
	c := newClient(t, fake, func(cfg *salesforce.Config) { cfg.BackupEmailFields = []string{"Alt_Email__c", "Backup_Email__c"} })
	for i := range 5 {
		got, err := c.BackupAddress(context.Background(), fmt.Sprintf("p%d@example.com", i))
		if err != nil || got != "ok@backup.example" {
			t.Errorf("contact %d: BackupAddress = %q, %v; want the valid ok@backup.example", i, got, err)
		}
	}
}

// A caller with a short deadline (the backup look-up at acceptance) must
// not wait behind another caller's slow token request beyond its deadline.
func TestTokenWaitHonoursCallerDeadline(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	cfg, err := fake.ClientConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 10)
	c, err := salesforce.New(cfg, &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		started <- struct{}{}
		return http.DefaultTransport.RoundTrip(r)
	})})
	if err != nil {
		t.Fatal(err)
	}
	fake.SetDelay(time.Second)
	slow := make(chan error, 1)
	go func() { _, err := c.FindPerson(context.Background(), "a@example.com"); slow <- err }()
	<-started // the slow token request is on its way
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	quick := make(chan error, 1)
	go func() { _, err := c.BackupAddress(ctx, "b@example.com"); quick <- err }()
	err = <-quick
	// The fake counts a token request when it answers it, 1s in.
	if n := fake.TokenRequests(); n != 0 {
		t.Errorf("the caller with a 50ms deadline waited for the other's token request to be answered (%v)", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("quick caller: %v, want its deadline", err)
	}
	<-slow
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
