package relay

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/cluster"
	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/testutil/netports"
)

// TestBootClusterOwnKeys: a clustered node that generates its VERP or DKIM
// key warns that the key is its own (every node must hold the same), and
// says nothing of the kind once the files exist, as when copied.
func TestBootClusterOwnKeys(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cluster.secret"), []byte("a secret of a one-node cluster\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A node and its one peer (JetStream needs routes): replicas = 1.
	ports := netports.Free(t, 2)
	peerCfg := cluster.Config{Enabled: true, Node: "lk2", Listen: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		Peers: []string{fmt.Sprintf("127.0.0.1:%d", ports[0])}, Replicas: 1, SecretFile: filepath.Join(dir, "cluster.secret")}
	peerCfg.Defaults("lk2")
	peerUp := make(chan *cluster.Node, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		n, err := cluster.Start(ctx, peerCfg, filepath.Join(dir, "lk2"), zerolog.Nop())
		if err != nil {
			t.Error(err)
		}
		peerUp <- n
	}()
	defer func() {
		if n := <-peerUp; n != nil {
			n.Close()
		}
	}()
	text := fmt.Sprintf(`hostname = "lk1.relay.test"
data_dir = %q
[submission]
listen = ["127.0.0.1:0"]
[[domains]]
name = "example.com"
[[domains.dkim]]
selector = "ed1"
algo = "ed25519"
key_file = "dkim/ed1.pem"
[delivery]
maildir = "mail"
[admin]
listen = ""
[cluster]
enabled = true
listen = "127.0.0.1:%d"
peers = ["127.0.0.1:%d"]
replicas = 1
secret_file = %q
heartbeat = "200ms"
dead_after = "2s"
`, filepath.Join(dir, "lk1"), ports[0], ports[1], filepath.Join(dir, "cluster.secret"))
	boot := func() string {
		t.Helper()
		cfg, err := conf.Parse("lk1.toml", []byte(text), false)
		if err != nil {
			t.Fatal(err)
		}
		var log syncBuffer
		s, err := Boot(cfg, zerolog.New(&log))
		if err != nil {
			t.Fatalf("boot: %v\n%s", err, log.String())
		}
		if err := s.Shutdown(); err != nil {
			t.Fatal(err)
		}
		return log.String()
	}
	first := boot()
	for _, want := range []string{"this key is this node's alone", "generated a VERP key of this node's own", "the nodes hold the same keys and policy"} {
		if !strings.Contains(first, want) {
			t.Errorf("first start: no %q in the log:\n%s", want, first)
		}
	}
	if again := boot(); strings.Contains(again, "[cluster]: ") {
		t.Errorf("second start, keys present: warned anyway:\n%s", again)
	}
}
