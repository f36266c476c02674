package main

// Crash-durability tests of the real binary: the relay answers 250 only after
// the message is synced to Badger, so a kill -9 at any moment after that
// must not lose it. These tests build latchkey, run it as a child process
// against an in-process DNS server and receiving MX, SIGKILL it at chosen
// moments and restart it on the same data directory.

import (
	"bytes"
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

	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

const (
	durUser = "sfrelay"
	durPass = "correct horse battery staple"
)

// durPolicy is the smallest policy that delivers quickly: one class, a
// short retry so a deferred message is retried within a second of the
// restart, and no supersede, dedupe or rate limit that could legitimately
// drop one of many messages to the same domain.
const durPolicy = `default_class = "reset"

[[classes]]
name = "reset"
expiry = "10m"
margin = "0s"
retry = ["300ms"]
workers = 2
`

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// latchkeyBin builds the binary once per test run.
func latchkeyBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "latchkey-durability-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "latchkey")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// durEnv is one relay data directory with its world: DNS, a receiving MX on
// 127.0.0.2 and the configuration file the binary is (re)started with.
type durEnv struct {
	t       *testing.T
	dir     string
	cfgPath string
	sink    *smtpsink.Sink
	dns     *dnstest.Server // the relay's resolver: recipients' MX and anything a test publishes
	proc    *relayProc
	// runs are every run of the binary, for their logs when a test fails.
	runs []*relayProc
}

// relayProc is one run of the binary.
type relayProc struct {
	cmd  *exec.Cmd
	log  *lineLog
	addr string
	done chan struct{}
}

// lineLog collects the child's stderr and reports the submission address
// from the JSON "relay started" line: the config listens on port 0 so that
// parallel test runs never collide on a port.
type lineLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte
	started chan string
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := l.partial[:i]
		l.partial = l.partial[i+1:]
		var rec struct {
			Message    string   `json:"message"`
			Submission []string `json:"submission"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Message == "relay started" && len(rec.Submission) > 0 {
			select {
			case l.started <- rec.Submission[0]:
			default:
			}
		}
	}
	return len(p), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newDurEnv(t *testing.T, sinkOpts smtpsink.Options) *durEnv {
	t.Helper()
	bin := latchkeyBin(t)
	e := &durEnv{t: t, dir: t.TempDir()}
	dns := dnstest.Start(t, "dest.test. 300 IN MX 10 mx.dest.test.\nmx.dest.test. 300 IN A 127.0.0.2\n")
	e.dns = dns
	sinkOpts.Addr, sinkOpts.TLS = "127.0.0.2:0", true
	e.sink = smtpsink.Start(t, sinkOpts)
	_, sinkPort, err := net.SplitHostPort(e.sink.Addr)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(durPass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	policyPath := filepath.Join(e.dir, "policy.toml")
	if err := os.WriteFile(policyPath, []byte(durPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`hostname = "relay.test"
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
key_file = "dkim/ed1.pem"

[delivery]
resolver = %q
port = %s
insecure_skip_verify = true
connect_timeout = "2s"
command_timeout = "10s"
dns_timeout = "2s"

[admin]
listen = ""
`, filepath.Join(e.dir, "data"), policyPath, durUser, hash, dns.Addr, sinkPort)
	e.cfgPath = filepath.Join(e.dir, "latchkey.toml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "config", "check", "-config", e.cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if e.proc != nil {
			e.kill()
		}
		if t.Failed() {
			for i, p := range e.runs {
				t.Logf("relay run %d (pid %d), last lines of its log:\n%s", i+1, p.cmd.Process.Pid, tail(p.log.String(), 40))
			}
		}
	})
	return e
}

// start runs the binary and waits until it listens.
func (e *durEnv) start() {
	t := e.t
	t.Helper()
	if e.proc != nil {
		t.Fatal("start: relay already running")
	}
	l := &lineLog{started: make(chan string, 1)}
	cmd := exec.Command(latchkeyBin(t), "serve", "-config", e.cfgPath)
	cmd.Stdout, cmd.Stderr = io.Discard, l
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &relayProc{cmd: cmd, log: l, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	e.proc = p
	e.runs = append(e.runs, p)
	select {
	case p.addr = <-l.started:
	case <-p.done:
		t.Fatalf("relay exited before starting: %v\n%s", cmd.ProcessState, l)
	case <-time.After(20 * time.Second):
		t.Fatalf("relay did not start within 20s\n%s", l)
	}
}

// kill sends SIGKILL (no chance to flush or close Badger) and reaps the child.
func (e *durEnv) kill() {
	t := e.t
	t.Helper()
	p := e.proc
	e.proc = nil
	p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("relay pid %d did not exit after SIGKILL", p.cmd.Process.Pid)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// client connects as Salesforce Email Relay does: STARTTLS, then AUTH PLAIN.
func (e *durEnv) client() (*smtp.Client, error) { return dialRelay(e.proc.addr) }

// submit sends one message and returns the queue id from the 250 reply.
func submit(c *smtp.Client, to, msgID string) (string, error) {
	msg := fmt.Sprintf("From: Example <noreply@example.com>\r\nTo: <%s>\r\nSubject: Reset your password\r\nMessage-ID: <%s>\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\n\r\nHello, this is message %s.\r\n", to, msgID, msgID)
	if err := c.Mail("noreply@example.com", nil); err != nil {
		return "", fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "", fmt.Errorf("RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return "", fmt.Errorf("DATA write: %w", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", fmt.Errorf("end of DATA: %w", err)
	}
	i := strings.LastIndex(resp.StatusText, "queued as ")
	if i < 0 {
		return "", fmt.Errorf("unexpected 250 text %q", resp.StatusText)
	}
	return strings.TrimSpace(resp.StatusText[i+len("queued as "):]), nil
}

func (e *durEnv) submitOne(to, msgID string) string {
	e.t.Helper()
	c, err := e.client()
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	id, err := submit(c, to, msgID)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

var msgIDRe = regexp.MustCompile(`(?mi)^Message-ID:\s*<([^>]+)>`)

// arrivals counts the messages received by Message-ID.
func arrivals(msgs []smtpsink.Message) map[string]int {
	n := map[string]int{}
	for _, m := range msgs {
		if sm := msgIDRe.FindSubmatch(m.Data); sm != nil {
			n[string(sm[1])]++
		} else {
			n[""]++
		}
	}
	return n
}

// waitFor polls cond every 20ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// TestDurabilityKillBeforeDelivery: a message acknowledged and deferred by
// the MX survives SIGKILL and is delivered exactly once after the restart.
func TestDurabilityKillBeforeDelivery(t *testing.T) {
	var rcpts atomic.Int32
	var defer451 atomic.Bool
	defer451.Store(true)
	e := newDurEnv(t, smtpsink.Options{Rcpt: func(string) *smtp.SMTPError {
		rcpts.Add(1)
		if defer451.Load() {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}})
	e.start()
	e.submitOne("jane@dest.test", "kill-before@example.com")
	// Wait for the first deferred attempt so the kill hits a message the relay
	// has already worked on (its state was updated on disk), not just a
	// fresh one.
	if !waitFor(10*time.Second, func() bool { return rcpts.Load() >= 1 }) {
		t.Fatal("the relay never tried to deliver")
	}
	e.kill()
	if n := e.sink.Count(); n != 0 {
		t.Fatalf("sink received %d messages while deferring", n)
	}
	defer451.Store(false)
	e.start()
	e.sink.Wait(1, 15*time.Second)
	// Give a duplicate a chance to show up before counting.
	time.Sleep(1500 * time.Millisecond)
	got := arrivals(e.sink.Messages())
	if got["kill-before@example.com"] != 1 || len(got) != 1 {
		t.Fatalf("arrivals after restart = %v, want the message exactly once", got)
	}
}

// TestDurabilityKillDuringDelivery: SIGKILL while the MX holds the reply to
// the end of DATA. The relay never learnt the outcome, so the restarted relay
// must deliver it again: at least once, at most twice in all (once if the MX
// dropped the orphaned transaction, twice if it kept it, as this sink does).
func TestDurabilityKillDuringDelivery(t *testing.T) {
	var (
		calls       atomic.Int32 // Data hook calls
		afterKill   atomic.Bool
		redelivered atomic.Int32 // Data hook calls accepted after the restart
	)
	e := newDurEnv(t, smtpsink.Options{Data: func(string, []string, []byte) *smtp.SMTPError {
		if calls.Add(1) == 1 {
			// Hold the first transaction open across the kill, then accept it as
			// an MX that does not notice its client is gone would.
			time.Sleep(3 * time.Second)
			return nil
		}
		if afterKill.Load() {
			redelivered.Add(1)
		}
		return nil
	}})
	e.start()
	e.submitOne("jane@dest.test", "kill-during@example.com")
	if !waitFor(10*time.Second, func() bool { return calls.Load() >= 1 }) {
		t.Fatal("the sink never received the message body")
	}
	e.kill()
	afterKill.Store(true)
	e.start()
	if !waitFor(15*time.Second, func() bool { return redelivered.Load() >= 1 && e.sink.Count() >= 2 }) {
		t.Logf("waited 15s: redelivered=%d sink count=%d", redelivered.Load(), e.sink.Count())
	}
	time.Sleep(1500 * time.Millisecond)
	got := arrivals(e.sink.Messages())
	n := got["kill-during@example.com"]
	t.Logf("observed: %d arrivals in all (%d from the restarted relay)", n, redelivered.Load())
	if redelivered.Load() != 1 {
		t.Errorf("restarted relay delivered %d times, want exactly 1 (it never saw the first attempt's reply)", redelivered.Load())
	}
	if n < 1 || n > 2 || len(got) != 1 {
		t.Fatalf("arrivals = %v, want kill-during@example.com once or twice", got)
	}
}

// TestDurabilityManyMessages: 50 messages from 4 concurrent clients against
// a deferring MX, SIGKILL right after the last 250; every acknowledged
// message arrives exactly once after the restart (none can have been
// delivered before: the MX deferred every RCPT).
func TestDurabilityManyMessages(t *testing.T) {
	const total, clients = 50, 4
	var defer451 atomic.Bool
	defer451.Store(true)
	e := newDurEnv(t, smtpsink.Options{Rcpt: func(string) *smtp.SMTPError {
		if defer451.Load() {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}})
	e.start()

	var (
		mu    sync.Mutex
		acked = map[string]string{} // Message-ID -> queue id
		next  atomic.Int32
		wg    sync.WaitGroup
		errs  = make(chan error, clients)
	)
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.client()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for {
				i := int(next.Add(1))
				if i > total {
					return
				}
				mid := fmt.Sprintf("many-%02d@example.com", i)
				id, err := submit(c, fmt.Sprintf("user%02d@dest.test", i), mid)
				if err != nil {
					errs <- fmt.Errorf("message %d: %w", i, err)
					return
				}
				mu.Lock()
				acked[mid] = id
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	e.kill()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := e.sink.Count(); n != 0 {
		t.Fatalf("sink received %d messages while deferring", n)
	}
	if len(acked) != total {
		t.Fatalf("%d of %d messages acknowledged", len(acked), total)
	}

	defer451.Store(false)
	e.start()
	e.sink.Wait(len(acked), 20*time.Second)
	time.Sleep(1 * time.Second)
	got := arrivals(e.sink.Messages())
	var missing, dup []string
	for mid, qid := range acked {
		switch n := got[mid]; {
		case n == 0:
			missing = append(missing, mid+" ("+qid+")")
		case n > 1:
			dup = append(dup, fmt.Sprintf("%s x%d", mid, n))
		}
	}
	if len(missing) > 0 || len(dup) > 0 || len(got) != len(acked) {
		t.Fatalf("after restart: %d distinct arrivals of %d acknowledged; missing %v; duplicated %v",
			len(got), len(acked), missing, dup)
	}
}
