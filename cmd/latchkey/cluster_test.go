package main

// The cluster test of issue 18: three latchkey processes with embedded NATS
// on loopback, 2,000 messages submitted round-robin, one node killed with
// SIGKILL in the middle; every acknowledged message must be delivered, a
// newer reset on one node supersedes an older one queued on another, and
// the audit trails of all nodes verify.

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/latchkey/latchkey/cluster"
	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/salesforce/sftest"
	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/latchkey/latchkey/testutil/netports"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

const clusterPolicy = `default_class = "reset"

[[classes]]
name = "reset"
expiry = "10m"
margin = "0s"
retry = ["300ms"]
supersede = true
supersede_key = ["recipient"]
dedupe_window = "10m"
workers = 4
`

// clusterNode is one latchkey process of the test cluster.
type clusterNode struct {
	name, dir, cfgPath, admin string
	proc                      *relayProc
	runs                      []*relayProc
}

type clusterEnv struct {
	t     *testing.T
	nodes []*clusterNode
	sink  *smtpsink.Sink
	// held recipients are deferred (451) while set; unknown ones refused
	// (550 5.1.1).
	held, unknown sync.Map
	base          map[string]string // node → its configuration before additions
}

func newClusterEnv(t *testing.T) *clusterEnv { return newNodesEnv(t, 3, true) }

// newNodesEnv writes the configuration of count nodes, in one cluster or
// (clustered false, count 1) a single node without [cluster].
func newNodesEnv(t *testing.T, count int, clustered bool) *clusterEnv {
	t.Helper()
	latchkeyBin(t)
	e := &clusterEnv{t: t, base: map[string]string{}}
	dns := dnstest.Start(t, "dest.test. 300 IN MX 10 mx.dest.test.\nmx.dest.test. 300 IN A 127.0.0.2\n")
	e.sink = smtpsink.Start(t, smtpsink.Options{Addr: "127.0.0.2:0", TLS: true, Rcpt: func(rcpt string) *smtp.SMTPError {
		if _, held := e.held.Load(rcpt); held {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		if _, unknown := e.unknown.Load(rcpt); unknown {
			return unknownUser(rcpt)
		}
		return nil
	}})
	_, sinkPort, _ := net.SplitHostPort(e.sink.Addr)
	hash, err := bcrypt.GenerateFromPassword([]byte(durPass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	secret := filepath.Join(base, "cluster.secret")
	if err := os.WriteFile(secret, []byte("the test cluster's shared secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	policyPath := filepath.Join(base, "policy.toml")
	if err := os.WriteFile(policyPath, []byte(clusterPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	// The nodes share the VERP key and the DKIM key, as a real cluster
	// must (a bounce may reach any node; every node signs for the same
	// selector), or `cluster status` reports them different.
	verp := filepath.Join(base, "verp.key")
	if err := os.WriteFile(verp, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	dkimKey := filepath.Join(base, "ed1.pem")
	if k, err := dkim.GenerateKey("ed25519", 0); err != nil {
		t.Fatal(err)
	} else if err := dkim.WriteKeyFile(dkimKey, k); err != nil {
		t.Fatal(err)
	}
	ports := netports.Free(t, 6)
	for i := range count {
		n := &clusterNode{name: fmt.Sprintf("n%d", i+1), dir: filepath.Join(base, fmt.Sprintf("n%d", i+1)),
			admin: fmt.Sprintf("127.0.0.1:%d", ports[3+i])}
		var peers []string
		for j := range count {
			if j != i {
				peers = append(peers, fmt.Sprintf("%q", fmt.Sprintf("127.0.0.1:%d", ports[j])))
			}
		}
		cfg := fmt.Sprintf(`hostname = "%s.relay.test"
data_dir = %q
log_level = "debug"
log_format = "json"
policy_file = %q

[submission]
listen = ["127.0.0.1:0"]
[[submission.users]]
name = %q
password_hash = %q

[[domains]]
name = "example.com"
[[domains.dkim]]
selector = "ed1"
algo = "ed25519"
key_file = %q

[delivery]
resolver = %q
port = %s
insecure_skip_verify = true
connect_timeout = "2s"
command_timeout = "10s"
dns_timeout = "2s"

[verp]
key_file = %q

[admin]
listen = %q
console = false

[cluster]
enabled = %v
node = %q
listen = "127.0.0.1:%d"
peers = [%s]
replicas = %d
secret_file = %q
heartbeat = "300ms"
dead_after = "3s"
`, n.name, filepath.Join(n.dir, "data"), policyPath, durUser, hash, dkimKey, dns.Addr, sinkPort, verp, n.admin, clustered, n.name, ports[i], strings.Join(peers, ", "), count, secret)
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		n.cfgPath = filepath.Join(n.dir, "latchkey.toml")
		if err := os.WriteFile(n.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		e.base[n.name] = cfg
		if out, err := execLatchkey(t, "config", "check", "-config", n.cfgPath); err != nil {
			t.Fatalf("config check %s: %v\n%s", n.name, err, out)
		}
		e.nodes = append(e.nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range e.nodes {
			if n.proc != nil {
				n.proc.cmd.Process.Signal(syscall.SIGKILL)
				<-n.proc.done
			}
			if t.Failed() {
				for i, p := range n.runs {
					t.Logf("%s run %d, last lines of its log:\n%s", n.name, i+1, tail(p.log.String(), 30))
				}
			}
		}
	})
	return e
}

// start runs the node's binary; wait waits until it listens (the cluster
// needs a quorum of nodes up before any of them starts).
func (e *clusterEnv) start(n *clusterNode) {
	l := &lineLog{started: make(chan string, 1)}
	cmd := exec.Command(latchkeyBin(e.t), "serve", "-config", n.cfgPath)
	cmd.Stdout, cmd.Stderr = io.Discard, l
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p := &relayProc{cmd: cmd, log: l, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	n.proc = p
	n.runs = append(n.runs, p)
}

func (e *clusterEnv) wait(n *clusterNode) {
	e.t.Helper()
	select {
	case n.proc.addr = <-n.proc.log.started:
	case <-n.proc.done:
		e.t.Fatalf("%s exited before starting: %v\n%s", n.name, n.proc.cmd.ProcessState, tail(n.proc.log.String(), 30))
	case <-time.After(90 * time.Second):
		e.t.Fatalf("%s did not start within 90s\n%s", n.name, tail(n.proc.log.String(), 30))
	}
}

func (e *clusterEnv) kill(n *clusterNode) {
	n.proc.cmd.Process.Signal(syscall.SIGKILL)
	<-n.proc.done
	n.proc = nil
}

// stop ends a node with SIGTERM (a clean shutdown).
func (e *clusterEnv) stop(n *clusterNode) {
	e.t.Helper()
	n.proc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.proc.done:
	case <-time.After(30 * time.Second):
		e.t.Errorf("%s did not stop within 30s", n.name)
		n.proc.cmd.Process.Signal(syscall.SIGKILL)
		<-n.proc.done
	}
	n.proc = nil
}

func dialRelay(addr string) (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.Auth(sasl.NewPlainClient("", durUser, durPass)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (e *clusterEnv) submitTo(n *clusterNode, to, msgID string) (string, error) {
	c, err := dialRelay(n.proc.addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return submit(c, to, msgID)
}

func TestClusterThreeNodesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three relays and a NATS cluster")
	}
	e := newClusterEnv(t)
	for _, n := range e.nodes {
		e.start(n)
	}
	for _, n := range e.nodes {
		e.wait(n)
	}
	n1, n2, n3 := e.nodes[0], e.nodes[1], e.nodes[2]

	// Supersede across nodes: an older reset queued on n1 (its MX defers
	// it), a newer one for the same recipient accepted on n2.
	e.held.Store("jane@dest.test", true)
	olderID, err := e.submitTo(n1, "jane@dest.test", "older@example.com")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // n1 has tried and been deferred
	newerID, err := e.submitTo(n2, "jane@dest.test", "newer@example.com")
	if err != nil {
		t.Fatal(err)
	}
	// Dedupe across nodes: the newer one again, on n3, gets n2's id.
	if id, err := e.submitTo(n3, "jane@dest.test", "newer@example.com"); err != nil || id != newerID {
		t.Fatalf("resubmission on n3: %q, %v; want %s (n2's)", id, err, newerID)
	}
	if olderID == newerID {
		t.Fatalf("older and newer reset share the id %s", olderID)
	}
	e.held.Delete("jane@dest.test")

	// A suppression added on n1 is on n2's list too.
	if out, err := execLatchkey(t, "suppress", "add", "-config", n1.cfgPath, "-list", "bounce", "-reason", "test", "gone@dest.test"); err != nil {
		t.Fatalf("suppress add on n1: %v\n%s", err, out)
	}
	if !waitFor(15*time.Second, func() bool {
		out, err := execLatchkey(t, "suppress", "list", "-config", n2.cfgPath, "-list", "bounce")
		return err == nil && strings.Contains(string(out), "gone@dest.test")
	}) {
		out, _ := execLatchkey(t, "suppress", "list", "-config", n2.cfgPath, "-list", "bounce")
		t.Errorf("n2's bounce list does not have the address added on n1:\n%s", out)
	}

	// 2,000 messages round-robin from 8 clients; n3 is killed once 1,000
	// are acknowledged. A client whose node is gone resubmits the same
	// message to the next node, as Salesforce behind a load balancer
	// would: the first 250 counts.
	const total = 2000
	var (
		next, acked, resent atomic.Int64
		mu                  sync.Mutex
		ackedIDs            = map[string]bool{}
		killOnce            sync.Once
		dead                atomic.Bool
		wg                  sync.WaitGroup
	)
	start := time.Now()
	var killedAt time.Duration
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				msgID := fmt.Sprintf("m%04d@example.com", i)
				to := fmt.Sprintf("u%04d@dest.test", i)
				for try := 0; ; try++ {
					n := e.nodes[(i+try)%3]
					if n == n3 && dead.Load() {
						continue
					}
					p := n.proc
					if p == nil {
						continue
					}
					c, err := dialRelay(p.addr)
					if err == nil {
						_, err = submit(c, to, msgID)
						c.Close()
					}
					if err == nil {
						mu.Lock()
						ackedIDs[msgID] = true
						mu.Unlock()
						if acked.Add(1) == total/2 {
							killOnce.Do(func() {
								dead.Store(true)
								n3.proc.cmd.Process.Signal(syscall.SIGKILL)
								killedAt = time.Since(start)
							})
						}
						break
					}
					// A 451 while the cluster elects a new leader after
					// the kill: Salesforce tries again later, and so do we.
					if try > 100 {
						t.Errorf("client %d: %s not accepted by any node in 100 tries: %v", w, msgID, err)
						return
					}
					resent.Add(1)
					time.Sleep(200 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	submitted := time.Since(start)
	<-n3.proc.done
	n3.proc = nil
	t.Logf("cluster: %d acknowledged in %v (%.0f msg/s; n3 killed at %v), %d resubmissions after a failed try",
		acked.Load(), submitted.Round(time.Millisecond), float64(acked.Load())/submitted.Seconds(), killedAt.Round(time.Millisecond), resent.Load())

	// Every acknowledged message arrives: n3's unfinished ones through
	// the survivor that adopts its queue.
	if !waitFor(2*time.Minute, func() bool {
		got := arrivals(e.sink.Messages())
		for id := range ackedIDs {
			if got[id] == 0 {
				return false
			}
		}
		return got["newer@example.com"] > 0
	}) {
		got := arrivals(e.sink.Messages())
		var missing []string
		for id := range ackedIDs {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		if dir := os.Getenv("LATCHKEY_CLUSTER_LOGS"); dir != "" {
			for _, n := range e.nodes {
				for i, p := range n.runs {
					os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d.log", n.name, i+1)), []byte(p.log.String()), 0o644)
				}
			}
		}
		t.Fatalf("%d acknowledged messages never arrived, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	// The adoption has finished queueing (it may still be recording).
	var out []byte
	if !waitFor(time.Minute, func() bool {
		out, err = exec.Command(latchkeyBin(t), "cluster", "status", "-config", n1.cfgPath).CombinedOutput()
		return strings.Contains(string(out), "NO HEARTBEAT") && regexp.MustCompile(`n3\.\S+ +done n[12]`).Match(out)
	}) || err == nil {
		t.Errorf("cluster status with n3 down and adopted: %v\n%s", err, out)
	}

	// The adopter has delivered what it adopted once nothing more
	// arrives for two seconds (no retries are pending: the MX accepts).
	last, since := e.sink.Count(), time.Now()
	for time.Since(since) < 2*time.Second {
		time.Sleep(100 * time.Millisecond)
		if c := e.sink.Count(); c != last {
			last, since = c, time.Now()
		}
	}
	// n3 comes back and hands over what was adopted: no further copies.
	before := arrivals(e.sink.Messages())
	e.start(n3)
	e.wait(n3)
	time.Sleep(3 * time.Second)
	got := arrivals(e.sink.Messages())
	for id, k := range got {
		if k != before[id] {
			t.Errorf("%s arrived again after n3's restart (%d → %d)", id, before[id], k)
		}
	}
	dups := 0
	for id := range ackedIDs {
		if got[id] > 1 {
			dups += got[id] - 1
		}
	}
	t.Logf("duplicates: %d of %d acknowledged (delivered by n3 just before the kill, its outcome not yet shared)", dups, len(ackedIDs))
	if dups > total/50 {
		t.Errorf("%d duplicate deliveries, more than 2%%", dups)
	}
	if got["older@example.com"] != 0 || got["newer@example.com"] != 1 {
		t.Errorf("supersede across nodes: older arrived %d times, newer %d; want 0 and 1", got["older@example.com"], got["newer@example.com"])
	}
	// Asked again while it fails: a read can fail while n3's return moves
	// a stream's leader (the status then exits 1 with that error).
	if !waitFor(20*time.Second, func() bool {
		out, err = exec.Command(latchkeyBin(t), "cluster", "status", "-config", n2.cfgPath).CombinedOutput()
		return err == nil
	}) {
		t.Errorf("cluster status with every node up: %v\n%s", err, out)
	}

	// Each node's own audit chain verifies.
	for _, n := range e.nodes {
		e.stop(n)
	}
	for _, n := range e.nodes {
		if out, err := exec.Command(latchkeyBin(t), "audit", "verify", "-config", n.cfgPath).CombinedOutput(); err != nil {
			t.Errorf("audit verify on %s: %v\n%s", n.name, err, out)
		}
	}
}

// useSalesforce points node n at sf, retrying a second apart: its
// configuration is the base one with a [salesforce] table (secrets in
// files).
func (e *clusterEnv) useSalesforce(n *clusterNode, sf *sftest.Server) {
	t := e.t
	t.Helper()
	sfc, err := sf.ClientConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sfc.Timeout = 5 * time.Second
	sfc.RetryBackoff, sfc.MaxBackoff = time.Second, 2*time.Second
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{"salesforce": sfc}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.cfgPath, []byte(e.base[n.name]+"\n"+buf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestClusterEscalationAdopted: a node dies with a Case it could not open
// yet (its Salesforce refuses the Case, 500); the survivor that adopts
// its queue opens it, and the node, restarted, hands its own copy over
// instead of sending it too: one Case.
func TestClusterEscalationAdopted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three relays and a NATS cluster")
	}
	sfOK := sftest.Start(t, sftest.Options{})
	sfBad := sftest.Start(t, sftest.Options{})
	sfBad.Inject(sftest.Fault{Kind: sftest.ServerError, Count: 1 << 30, Method: "POST", PathContains: "/services/data/"})
	e := newClusterEnv(t)
	n1, n2, n3 := e.nodes[0], e.nodes[1], e.nodes[2]
	policy := filepath.Join(filepath.Dir(n1.dir), "policy.toml")
	if err := os.WriteFile(policy, []byte(clusterPolicy+"\n[classes.escalate]\nhard_bounce = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.unknown.Store("gone@dest.test", true)
	e.useSalesforce(n1, sfOK)
	e.useSalesforce(n2, sfOK)
	e.useSalesforce(n3, sfBad)
	for _, n := range e.nodes {
		e.start(n)
	}
	for _, n := range e.nodes {
		e.wait(n)
	}
	id, err := e.submitTo(n3, "gone@dest.test", "lost-case@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !waitFor(30*time.Second, func() bool {
		return strings.Contains(n3.proc.log.String(), `"message":"salesforce escalation failed"`)
	}) {
		t.Fatalf("n3 did not try to open the Case:\n%s", tail(n3.proc.log.String(), 20))
	}
	// Shared with the cluster before n3 dies.
	var st cluster.Status
	if !waitFor(10*time.Second, func() bool {
		out, err := exec.Command(latchkeyBin(t), "cluster", "status", "-json", "-config", n1.cfgPath).Output()
		return err == nil && json.Unmarshal(out, &st) == nil && st.Escalations["n3"] == 1
	}) {
		t.Fatalf("n3's escalation is not in the cluster: %+v", st.Escalations)
	}
	e.kill(n3)

	if !waitFor(time.Minute, func() bool { return len(sfOK.Cases()) >= 1 }) {
		t.Fatalf("no survivor opened n3's Case within a minute\nn1:\n%s\nn2:\n%s", tail(n1.proc.log.String(), 15), tail(n2.proc.log.String(), 15))
	}
	c := sfOK.Cases()[0]
	if c["SuppliedEmail"] != "gone@dest.test" || !regexp.MustCompile(`\[latchkey:`+id+`..-hard_bounce\]`).MatchString(fmt.Sprint(c["Subject"])) {
		t.Errorf("Case = %v; want one for gone@dest.test referencing %s", c, id)
	}
	// n3 comes back, now with a Salesforce that works: it hands its copy
	// over to the adopter instead of opening a second Case. Its VERP key
	// is a copy of its own (one forgotten in step 2 of "Several nodes"):
	// the cluster's status names it.
	e.useSalesforce(n3, sfOK)
	ownVERP := filepath.Join(n3.dir, "own-verp.key")
	if err := os.WriteFile(ownVERP, []byte("not the key the other nodes have"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(n3.cfgPath); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(n3.cfgPath, regexp.MustCompile(`(?m)^\[verp\]\nkey_file = .*$`).ReplaceAll(b, []byte(fmt.Sprintf("[verp]\nkey_file = %q", ownVERP))), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start(n3)
	e.wait(n3)
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(n3.proc.log.String(), "escalation handed over to the node that took it over")
	}) {
		t.Errorf("n3 did not hand its escalation over:\n%s", tail(n3.proc.log.String(), 20))
	}
	time.Sleep(3 * time.Second) // a second Case would be opened by now
	if got := len(sfOK.Cases()); got != 1 || len(sfBad.Cases()) != 0 {
		t.Errorf("%d Cases opened, %d on the failing org; want exactly 1 and 0", got, len(sfBad.Cases()))
	}
	out, err := exec.Command(latchkeyBin(t), "outbox", "list", "-state", "all", "-config", n3.cfgPath).CombinedOutput()
	if err != nil || !regexp.MustCompile(id+`..-hard_bounce +done .*\(handed to cluster node n[12]\)`).Match(out) {
		t.Errorf("n3's outbox: %v\n%s", err, out)
	}
	var after cluster.Status
	waitFor(20*time.Second, func() bool { // an answer, right or wrong
		out, err = exec.Command(latchkeyBin(t), "cluster", "status", "-json", "-config", n2.cfgPath).Output()
		after = cluster.Status{}
		return json.Unmarshal(out, &after) == nil
	})
	if len(after.Escalations) != 0 || after.Node == "" {
		t.Errorf("escalations waiting once the Case is open: %v, %+v\n%s", err, after.Escalations, out)
	}
	// Exit 1 for the VERP key, and only for it: n1 and n2 alike, n3 not.
	// Waited for: a node whose heartbeat is late (a loaded machine) is
	// left out of the comparison.
	if !waitFor(20*time.Second, func() bool {
		out, err = exec.Command(latchkeyBin(t), "cluster", "status", "-json", "-config", n2.cfgPath).Output()
		after = cluster.Status{} // not a map left from the last try
		return json.Unmarshal(out, &after) == nil && err != nil && len(after.Differs) == 1 && after.Differs[0].Name == "verp key" &&
			after.Differs[0].Values["n1"] == after.Differs[0].Values["n2"] && after.Differs[0].Values["n3"] != after.Differs[0].Values["n1"]
	}) {
		t.Errorf("cluster status with n3's own VERP key: %v, differs %+v; want exit 1 and the VERP key", err, after.Differs)
	}
	differs := regexp.MustCompile(`DIFFERENT ON THE NODES.*\n  verp key\n    n1 +[0-9a-f]{16}\n    n2 +[0-9a-f]{16}\n    n3 +[0-9a-f]{16}\n`)
	if !waitFor(20*time.Second, func() bool {
		out, _ = exec.Command(latchkeyBin(t), "cluster", "status", "-config", n1.cfgPath).CombinedOutput()
		return differs.Match(out)
	}) {
		t.Errorf("cluster status on n1 does not name n3's VERP key:\n%s", out)
	}
	if !strings.Contains(n3.proc.log.String(), `"what":"verp key"`) {
		t.Errorf("n3 did not log that its VERP key differs:\n%s", tail(n3.proc.log.String(), 20))
	}
	if strings.Contains(n1.proc.log.String()+n2.proc.log.String()+n3.proc.log.String(), "0123456789abcdef") {
		t.Error("a node logged the VERP key itself")
	}
	for _, n := range e.nodes {
		e.stop(n)
	}
	for _, n := range e.nodes {
		if out, err := exec.Command(latchkeyBin(t), "audit", "verify", "-config", n.cfgPath).CombinedOutput(); err != nil {
			t.Errorf("audit verify on %s: %v\n%s", n.name, err, out)
		}
	}
}

// TestClusterThroughput measures acceptance and delivery of 2,000 resets
// over 8 kept-open connections, round-robin over three clustered nodes,
// against one node without [cluster] on the same machine. A measurement,
// not a check: it runs only with LATCHKEY_BENCH_CLUSTER=1 and logs the
// figures (docs/benchmarks.md).
func TestClusterThroughput(t *testing.T) {
	if os.Getenv("LATCHKEY_BENCH_CLUSTER") == "" {
		t.Skip("set LATCHKEY_BENCH_CLUSTER=1 to measure")
	}
	for _, c := range []struct {
		name      string
		count     int
		clustered bool
	}{{"one node", 1, false}, {"three nodes, replicas 3", 3, true}} {
		e := newNodesEnv(t, c.count, c.clustered)
		for _, n := range e.nodes {
			e.start(n)
		}
		for _, n := range e.nodes {
			e.wait(n)
		}
		const total = 2000
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := e.nodes[w%len(e.nodes)]
				cl, err := dialRelay(n.proc.addr)
				if err != nil {
					t.Error(err)
					return
				}
				defer cl.Close()
				for {
					i := int(next.Add(1)) - 1
					if i >= total {
						return
					}
					if _, err := submit(cl, fmt.Sprintf("u%04d@dest.test", i), fmt.Sprintf("%s-%04d@example.com", strings.ReplaceAll(c.name, " ", ""), i)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		accepted := time.Since(start)
		e.sink.Wait(total, 2*time.Minute)
		delivered := time.Since(start)
		t.Logf("%s: accepted %d in %v = %.0f msg/s; all delivered after %v = %.0f msg/s", c.name, total,
			accepted.Round(time.Millisecond), total/accepted.Seconds(), delivered.Round(time.Millisecond), total/delivered.Seconds())
		for _, n := range e.nodes {
			e.stop(n)
		}
	}
}
