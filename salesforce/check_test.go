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

// A version the org does not serve is named once, with the versions it
// serves; the reset object's fields are checked when the lifecycle is on.
func TestCheckVersionAndLifecycle(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	res := newClient(t, fake, func(cfg *salesforce.Config) { cfg.APIVersion = "v99.0" }).Check(context.Background())
	if len(res) != 2 || res[1].Name != "API version" || res[1].OK ||
		!strings.Contains(res[1].Detail, `api_version "v99.0" is not served by this org, which serves v31.0 to v68.0`) {
		t.Errorf("Check with an unknown version = %+v", res)
	}
	ok := newClient(t, fake, func(cfg *salesforce.Config) { cfg.Lifecycle.Enabled = true })
	for _, r := range ok.Check(context.Background()) {
		if !r.OK {
			t.Errorf("check %s failed: %s", r.Name, r.Detail)
		}
	}
	bad := newClient(t, fake, func(cfg *salesforce.Config) {
		cfg.Lifecycle.Enabled = true
		cfg.Lifecycle.Fields = map[string]string{"status": "Reset_Status__c", "latchkey_id": "Recipient__c"}
	})
	failed := map[string]string{}
	for _, r := range bad.Check(context.Background()) {
		if !r.OK {
			failed[r.Name] = r.Detail
		}
	}
	if d := failed["fields of Latchkey_Reset__c"]; !strings.Contains(d, "has no field Reset_Status__c (status)") || !strings.Contains(d, "Recipient__c is not an External ID") {
		t.Errorf("lifecycle fields check: %q", d)
	}
	missing := newClient(t, fake, func(cfg *salesforce.Config) { cfg.Lifecycle.Enabled = true; cfg.Lifecycle.Object = "Reset__c" })
	seen := false
	for _, r := range missing.Check(context.Background()) {
		if r.Name == "describe Reset__c" {
			seen = true
			if r.OK || !strings.Contains(r.Detail, "not deployed") {
				t.Errorf("undeployed object: %+v", r)
			}
		}
	}
	if !seen {
		t.Error("no check of the reset object")
	}
}
