package conf

import (
	"os"
	"path/filepath"
	"testing"
)

// A relative policy_file is found next to latchkey.toml, not in the
// directory the relay happens to be started from (systemd: /).
func TestPolicyFileRelativeToConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "latchkey.toml")
	src := `hostname = "relay.example.com"
policy_file = "policy.toml"
[submission]
listen = ["127.0.0.1:2525"]
[[domains]]
name = "example.com"
[[domains.dkim]]
selector = "s1"
algo = "rsa"
key_file = "k.pem"
`
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "policy.toml"); c.PolicyFile != want {
		t.Errorf("policy_file = %q, want %q", c.PolicyFile, want)
	}
	abs := filepath.Join(t.TempDir(), "p.toml")
	c, err = Parse(file, []byte(src[:len("hostname = \"relay.example.com\"\n")]+"policy_file = \""+abs+"\"\n"+src[len("hostname = \"relay.example.com\"\npolicy_file = \"policy.toml\"\n"):]), false)
	if err != nil || c.PolicyFile != abs {
		t.Errorf("absolute policy_file: %q, %v", c.PolicyFile, err)
	}
}
