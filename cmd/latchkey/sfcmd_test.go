package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/latchkey/latchkey/salesforce/sftest"
)

// `latchkey salesforce check` against the fake org: all OK with a working
// connected app; with no run-as user it fails and says what to set.
func TestSalesforceCheckCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts sftest.Options
		rc   int
		want string
	}{
		{"working", sftest.Options{CustomFields: map[string][]string{"Contact": {"Backup_Email__c"}}}, 0, "OK"},
		{"no run-as user", sftest.Options{NoRunAsUser: true}, 1, "FAIL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sf := sftest.Start(t, tc.opts)
			sf.AddContact("someone@dest.test", sftest.Record{"LastName": "Doe"})
			dir := t.TempDir()
			sfc, err := sf.ClientConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			buf.WriteString("data_dir = " + `"` + filepath.Join(dir, "data") + `"` + "\n" +
				"[submission]\nlisten = [\"127.0.0.1:0\"]\n[[domains]]\nname = \"example.com\"\n[[domains.dkim]]\nselector = \"ed1\"\nalgo = \"ed25519\"\nkey_file = \"ed1.pem\"\n")
			if err := toml.NewEncoder(&buf).Encode(map[string]any{"salesforce": sfc}); err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(dir, "latchkey.toml")
			if err := os.WriteFile(cfg, buf.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			rc := run([]string{"salesforce", "check", "-config", cfg}, &out, &errb)
			if rc != tc.rc || !strings.Contains(out.String(), tc.want) {
				t.Errorf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", rc, tc.rc, out.String(), errb.String())
			}
			if tc.rc != 0 && !strings.Contains(strings.ToLower(out.String()), "run-as") && !strings.Contains(strings.ToLower(out.String()), "run as") {
				t.Errorf("the failure does not name the run-as user:\n%s", out.String())
			}
		})
	}
}
