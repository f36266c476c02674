package salesforce_test

import (
	"context"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/salesforce"
	"github.com/latchkey/latchkey/salesforce/sftest"
)

func TestCheck(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{CustomFields: map[string][]string{"Contact": {"Backup_Email__c"}, "Lead": {"Backup_Email__c"}}})
	fake.AddContact("jane@example.com", nil)
	c := newClient(t, fake, func(cfg *salesforce.Config) { cfg.BackupEmailFields = []string{"Backup_Email__c"} })
	for _, r := range c.Check(context.Background()) {
		if !r.OK {
			t.Errorf("check %s failed: %s", r.Name, r.Detail)
		}
	}

	bad := newClient(t, fake, func(cfg *salesforce.Config) {
		cfg.LookupObjects = []string{"Contact", "Nope__c"}
		cfg.BackupEmailFields = []string{"Alt_Email__c"}
		cfg.Case.Origin = "Carrier pigeon"
	})
	failed := map[string]string{}
	for _, r := range bad.Check(context.Background()) {
		if !r.OK {
			failed[r.Name] = r.Detail
		}
	}
	for name, want := range map[string]string{
		"fields of Contact": "Contact has no field Alt_Email__c",
		"read Nope__c":      "check lookup_objects",
		"Case fields":       `case.origin = "Carrier pigeon" is not a value of Case.Origin (choose one of Phone, Email, Web)`,
	} {
		if !strings.Contains(failed[name], want) {
			t.Errorf("check %q: detail %q, want it to say %q", name, failed[name], want)
		}
	}

	noRunAs := sftest.Start(t, sftest.Options{NoRunAsUser: true})
	res := newClient(t, noRunAs, nil).Check(context.Background())
	if len(res) != 1 || res[0].OK || !strings.Contains(res[0].Detail, "set a Run-As user") {
		t.Errorf("Check without a Run-As user = %+v", res)
	}
}
