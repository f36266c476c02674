package conf

import (
	"fmt"
	"strings"
	"testing"
)

func TestShippedConfigIsValid(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatalf("shipped latchkey.toml: %v", err)
	}
	if !c.Trial || c.Submission.Listen[0] != "127.0.0.1:2525" || c.Domains[0].BounceDomain != "bounce.example.com" {
		t.Errorf("shipped config = %+v", c)
	}
	for _, a := range c.Submission.Listen {
		if !strings.HasPrefix(a, "127.") {
			t.Errorf("trial listens on %s, not loopback only", a)
		}
	}
}

// The trial delivers to data_dir/trial-mail; the same file given with
// -config (a copy for a real deployment) delivers to the MX.
func TestTrialDeliversToMaildirOnly(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if want := c.Path(TrialMaildir); c.Delivery.Maildir != want {
		t.Errorf("trial maildir %q, want %q", c.Delivery.Maildir, want)
	}
	real, err := Parse("latchkey.toml", DefaultServer, false)
	if err != nil {
		t.Fatal(err)
	}
	if real.Delivery.Maildir != "" {
		t.Errorf("a copy of the shipped file delivers to maildir %q, not to the MX", real.Delivery.Maildir)
	}
}

// Each broken configuration is refused with every problem, each with file,
// line and key.
func TestBadConfigs(t *testing.T) {
	base := `hostname = "relay.example.com"
[submission]
listen = ["127.0.0.1:2525"]
[[domains]]
name = "example.com"
[[domains.dkim]]
selector = "s1"
algo = "rsa"
key_file = "k.pem"
`
	cases := []struct {
		name, src string
		want      []string
	}{
		{"unknown key", "bogus = 1\n" + base, []string{"t.toml:1: bogus: unknown key"}},
		{"unknown nested key", strings.Replace(base, "algo = \"rsa\"", "algo = \"rsa\"\nalgorithm = \"rsa\"", 1), []string{"t.toml:9: domains.dkim.algorithm: unknown key"}},
		{"syntax", base + "x = = 1\n", []string{"t.toml:10"}},
		{"type", strings.Replace(base, `["127.0.0.1:2525"]`, `"127.0.0.1:2525"`, 1), []string{"t.toml:3", "listen"}},
		{"bad listen and algo together", strings.Replace(strings.Replace(base, "127.0.0.1:2525", "nope", 1), `algo = "rsa"`, `algo = "dsa"`, 1),
			[]string{`t.toml:3: submission.listen: "nope" is not host:port`, `t.toml:8: domains.0.dkim.0.algo: must be "rsa" or "ed25519", got "dsa"`}},
		{"plain password", base + "[[submission.users]]\nname = \"sf\"\npassword_hash = \"hunter2\"\n", []string{"t.toml:12: submission.users.0.password_hash: must be a bcrypt hash"}},
		{"no domains", "hostname = \"h.example\"\n[submission]\nlisten = [\"127.0.0.1:1\"]\n", []string{"domains: at least one transactional domain is needed"}},
		{"bad delivery tls", base + "[delivery]\ntls = \"maybe\"\n", []string{"t.toml:11: delivery.tls:"}},
		{"bad duration", base + "[audit]\nretention = \"1h\"\n", []string{"t.toml:11: audit.retention: must be at least a day"}},
		{"memory limit not a size", "memory_limit = \"lots\"\n" + base, []string{"t.toml:1: memory_limit: want a size such as"}},
		{"memory limit too small", "memory_limit = \"16MiB\"\n" + base, []string{"t.toml:1: memory_limit: 16MiB is below 64 MiB"}},
		{"cluster: peers, replicas and secret", base + "[cluster]\nenabled = true\nlisten = \"127.0.0.1:6222\"\npeers = [\"nope\"]\n",
			[]string{`t.toml:13: cluster.peers.0: "nope" is not host:port`, "t.toml:10: cluster.replicas: 3 replicas need at least 3 nodes; 2 are listed", "cluster.secret_file: is needed"}},
		{"cluster: no peers", base + "[cluster]\nenabled = true\nlisten = \"127.0.0.1:6222\"\nreplicas = 1\nsecret_file = \"s\"\n",
			[]string{"cluster.peers: empty: list the other nodes' route addresses"}},
		{"cluster: heartbeat", base + "[cluster]\nenabled = true\nnode = \"a.b\"\nlisten = \"127.0.0.1:6222\"\nreplicas = 1\nsecret_file = \"s\"\nheartbeat = \"5s\"\n",
			[]string{`t.toml:12: cluster.node: must be letters, digits`, "cluster.dead_after: must be at least three heartbeats (15s), got 10s"}},
		{"cluster: tls_cert without tls_key and tls_ca", base + "[cluster]\nenabled = true\nlisten = \"127.0.0.1:6222\"\nreplicas = 1\nsecret_file = \"s\"\ntls_cert = \"/etc/latchkey/route.crt\"\n",
			[]string{"t.toml:10: cluster.tls_key: is needed with tls_cert", "t.toml:10: cluster.tls_ca: is needed with tls_cert"}},
		{"cluster: tls with external", base + "[cluster]\nenabled = true\nexternal = [\"nats://10.0.0.5:4222\"]\nreplicas = 1\nsecret_file = \"s\"\ntls_ca = \"/ca.pem\"\n",
			[]string{"t.toml:15: cluster.tls_ca: does not apply with external"}},
		{"negative connection limit", base + "[inbound]\nmax_connections_per_ip = -1\n", []string{"t.toml:11: inbound.max_connections_per_ip: must be 0 (no limit) or more, got -1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tc.src), false)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%s\nlacks %q", err, w)
				}
			}
		})
	}
}

// Relative [cluster] file paths are in data_dir, as every other file's.
func TestClusterPathsInDataDir(t *testing.T) {
	src := `hostname = "relay.example.com"
data_dir = "/var/lib/latchkey"
[submission]
listen = ["127.0.0.1:2525"]
[[domains]]
name = "example.com"
[[domains.dkim]]
selector = "s1"
algo = "rsa"
key_file = "k.pem"
[cluster]
enabled = true
listen = "127.0.0.1:6222"
peers = ["127.0.0.1:6223"]
replicas = 1
secret_file = "cluster.secret"
tls_cert = "route.pem"
tls_key = "route.key"
tls_ca = "/etc/latchkey/ca.pem"
`
	c, err := Parse("t.toml", []byte(src), false)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{c.Cluster.SecretFile, c.Cluster.TLSCert, c.Cluster.TLSKey, c.Cluster.TLSCA}
	want := []string{"/var/lib/latchkey/cluster.secret", "/var/lib/latchkey/route.pem", "/var/lib/latchkey/route.key", "/etc/latchkey/ca.pem"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("paths %v, want %v", got, want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(string(DefaultServer))
	f.Add("hostname = 1\n[[domains]]\n[[domains.dkim]]\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse("f.toml", []byte(s), false)
		if err == nil && (c == nil || len(c.Domains) == 0) {
			t.Fatalf("accepted a config without domains: %q", s)
		}
	})
}

func TestMemoryLimit(t *testing.T) {
	c, err := Parse("t.toml", []byte("memory_limit = \"256MiB\"\n"+`hostname = "relay.example.com"
[submission]
listen = ["127.0.0.1:2525"]
[[domains]]
name = "example.com"
[[domains.dkim]]
selector = "s1"
algo = "rsa"
key_file = "k.pem"
`), false)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.MemoryLimitBytes(); err != nil || n != 256<<20 {
		t.Errorf("memory_limit 256MiB = %d, %v", n, err)
	}
}
