package deliver

import (
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestDefaultConfigValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !c.MTASTS {
		t.Fatal("MTA-STS is off by default")
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.Hostname = ""
	c.Resolver = "nope"
	c.Port = 0
	c.TLS = "sometimes"
	c.ConnectTimeout = 0
	c.DNSTimeout = -time.Second
	c.MaxPerDomain = 0
	c.MaxIdle = -1
	c.MaxMessagesPerConn = -1
	c.SourceIP = "300.1.1.1"
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, key := range []string{"hostname:", "resolver:", "port:", "tls:", "connect_timeout:", "dns_timeout:",
		"max_per_domain:", "max_idle:", "max_messages_per_conn:", "source_ip:"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("no %q in %v", key, err)
		}
	}
	if _, err := New(c, testLogger(t)); err == nil {
		t.Fatal("New accepted a bad config")
	}
}

func TestConfigFromTOML(t *testing.T) {
	c := DefaultConfig()
	md, err := toml.Decode(`
hostname = "relay.example.com"
resolver = "127.0.0.1:53"
port = 2525
tls = "verify"
connect_timeout = "10s"
command_timeout = "1m"
data_timeout = "2m"
max_per_domain = 4
max_idle = 2
idle_timeout = "15s"
max_messages_per_conn = 50
dns_timeout = "3s"
insecure_skip_verify = false
source_ip = "127.0.0.9"
mta_sts = false
`, &c)
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Undecoded()) != 0 {
		t.Fatalf("keys without a field: %v", md.Undecoded())
	}
	if c.Port != 2525 || c.TLS != TLSVerify || c.CommandTimeout != time.Minute || c.IdleTimeout != 15*time.Second ||
		c.MaxPerDomain != 4 || c.SourceIP != "127.0.0.9" || c.MTASTS {
		t.Fatalf("decoded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
