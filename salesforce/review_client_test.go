package salesforce_test

import (
	"context"
	"testing"

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
