package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/relay"
)

// relayEnv is a latchkey configuration written for a load run: one
// transactional domain (example.com) signed with the chosen DKIM keys, one
// submission user, delivery pointed at the tool's DNS and sink.
type relayEnv struct {
	dir     string
	cfgPath string
	user    string
	pass    string
	// records are the DKIM TXT records as "name=value", for the sink.
	records []string
	logPath string
}

// relaySetup describes the relay to configure.
type relaySetup struct {
	dir      string
	dkimAlgo string // rsa, ed25519 or both
	policy   string // policy file; "": the shipped policy
	resolver string
	mxPort   string
	logLevel string
	// memoryLimit is the relay's memory_limit ("": none).
	memoryLimit string
}

// writeRelayEnv writes (or, when dir already holds one, reuses) the
// configuration, keys and password of a load-test relay.
func writeRelayEnv(rs relaySetup) (*relayEnv, error) {
	e := &relayEnv{dir: rs.dir, cfgPath: filepath.Join(rs.dir, "latchkey.toml"), user: "load",
		logPath: filepath.Join(rs.dir, "relay.log")}
	if err := os.MkdirAll(filepath.Join(rs.dir, "data", "dkim"), 0o700); err != nil {
		return nil, fmt.Errorf("latchkey-load: %w", err)
	}
	passPath := filepath.Join(rs.dir, "password")
	if b, err := os.ReadFile(passPath); err == nil {
		e.pass = strings.TrimSpace(string(b))
	} else {
		var r [16]byte
		rand.Read(r[:])
		e.pass = hex.EncodeToString(r[:])
		if err := os.WriteFile(passPath, []byte(e.pass+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("latchkey-load: %w", err)
		}
	}
	// MinCost: AUTH happens once per connection, and the tool keeps its
	// connections, so the cost would not show in the figures anyway.
	hash, err := bcrypt.GenerateFromPassword([]byte(e.pass), bcrypt.MinCost)
	if err != nil {
		return nil, fmt.Errorf("latchkey-load: %w", err)
	}
	var sels []struct{ sel, algo string }
	switch rs.dkimAlgo {
	case "rsa":
		sels = append(sels, struct{ sel, algo string }{"lk1", "rsa"})
	case "ed25519":
		sels = append(sels, struct{ sel, algo string }{"lk1e", "ed25519"})
	case "both":
		sels = append(sels, struct{ sel, algo string }{"lk1", "rsa"}, struct{ sel, algo string }{"lk1e", "ed25519"})
	default:
		return nil, fmt.Errorf("latchkey-load: -dkim %q: want rsa, ed25519 or both", rs.dkimAlgo)
	}
	var dkimConf strings.Builder
	for _, s := range sels {
		kf := filepath.Join(rs.dir, "data", "dkim", s.sel+".pem")
		key, err := dkim.LoadKeyFile(kf)
		if err != nil {
			if key, err = dkim.GenerateKey(s.algo, 2048); err != nil {
				return nil, err
			}
			if err := dkim.WriteKeyFile(kf, key); err != nil {
				return nil, err
			}
		}
		rec, err := dkim.PublicRecord(key.Public())
		if err != nil {
			return nil, err
		}
		e.records = append(e.records, s.sel+"._domainkey.example.com="+rec)
		fmt.Fprintf(&dkimConf, "[[domains.dkim]]\nselector = %q\nalgo = %q\nkey_file = %q\n", s.sel, s.algo, kf)
	}
	lvl := rs.logLevel
	if lvl == "" {
		lvl = "info"
	}
	memLine := ""
	if rs.memoryLimit != "" {
		memLine = fmt.Sprintf("memory_limit = %q\n", rs.memoryLimit)
	}
	cfg := fmt.Sprintf(`# Written by latchkey-load for a load run; loopback only.
hostname = "relay.test"
data_dir = %q
log_level = %q
%slog_format = "json"
policy_file = %q

[submission]
listen = ["127.0.0.1:0"]
[[submission.users]]
name = %q
password_hash = %q

[[domains]]
name = "example.com"
%s
[delivery]
resolver = %q
port = %s
insecure_skip_verify = true
connect_timeout = "5s"
command_timeout = "30s"
dns_timeout = "5s"

[admin]
listen = ""
`, filepath.Join(rs.dir, "data"), lvl, memLine, rs.policy, e.user, hash, dkimConf.String(), rs.resolver, rs.mxPort)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("latchkey-load: %w", err)
	}
	return e, nil
}

// relayProc is a running relay: a child process, or the relay booted inside
// this process (for profiling).
type relayProc struct {
	addr    string
	pid     int
	cmd     *exec.Cmd
	done    chan struct{}
	srv     *relay.Server
	cancel  context.CancelFunc
	logFile *os.File
	// ready is how long the start took: until the submission listener
	// answered EHLO.
	ready time.Duration
}

// startRelayBin runs `latchkey serve` and waits for its submission listener.
func startRelayBin(bin string, e *relayEnv, timeout time.Duration) (*relayProc, error) {
	lf, err := os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("latchkey-load: %w", err)
	}
	t0 := time.Now()
	cmd := exec.Command(bin, "serve", "-config", e.cfgPath)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = io.Discard, pw
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("latchkey-load: start %s: %w", bin, err)
	}
	p := &relayProc{pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{}), logFile: lf}
	started := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			lf.Write(append(line, '\n'))
			var rec struct {
				Message    string   `json:"message"`
				Submission []string `json:"submission"`
			}
			if bytesContains(line, "relay started") && json.Unmarshal(line, &rec) == nil && len(rec.Submission) > 0 {
				select {
				case started <- rec.Submission[0]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() { cmd.Wait(); pw.Close(); close(p.done) }()
	select {
	case p.addr = <-started:
	case <-p.done:
		return nil, fmt.Errorf("latchkey-load: relay exited before starting (%v); see %s", cmd.ProcessState, e.logPath)
	case <-time.After(timeout):
		p.stop()
		return nil, fmt.Errorf("latchkey-load: relay did not start within %v; see %s", timeout, e.logPath)
	}
	if err := waitEHLO(p.addr, timeout); err != nil {
		p.stop()
		return nil, err
	}
	p.ready = time.Since(t0)
	return p, nil
}

// startRelayInProcess boots the relay inside this process, so that a CPU
// profile of the tool shows the relay's hot path.
func startRelayInProcess(e *relayEnv) (*relayProc, error) {
	cfg, err := conf.Load(e.cfgPath)
	if err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("latchkey-load: %w", err)
	}
	lvl, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	t0 := time.Now()
	log := zerolog.New(lf).Level(lvl).With().Timestamp().Logger()
	srv, err := relay.Boot(cfg, log)
	if err != nil {
		lf.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		srv.Store.Close()
		lf.Close()
		return nil, err
	}
	p := &relayProc{addr: srv.SubmissionAddrs[0].String(), pid: os.Getpid(), srv: srv, cancel: cancel, logFile: lf}
	p.ready = time.Since(t0)
	return p, nil
}

// waitEHLO polls addr until it answers an SMTP greeting.
func waitEHLO(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 512)
			n, _ := c.Read(buf)
			c.Close()
			if n >= 3 && string(buf[:3]) == "220" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("latchkey-load: %s did not greet within %v", addr, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop ends the relay: SIGTERM, then SIGKILL after 20s.
func (p *relayProc) stop() {
	if p.srv != nil {
		p.cancel()
		p.srv.Shutdown()
	} else if p.cmd != nil {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	if p.logFile != nil {
		p.logFile.Close()
	}
}

func bytesContains(b []byte, s string) bool { return strings.Contains(string(b), s) }

// procUsage is a process's CPU time and memory from /proc.
type procUsage struct {
	cpu      float64 // utime+stime, seconds
	rssMB    float64
	maxRSSMB float64
	// The resident set by kind: anonymous (the heap, Badger's memtables
	// and caches) and file-backed (Badger's mapped tables and value log,
	// page cache the kernel can drop and read back).
	anonMB, fileMB float64
}

// anonPeak samples a process's anonymous resident set until stopped and
// keeps the largest value.
type anonPeak struct {
	done chan struct{}
	max  chan float64
}

// watchAnon samples pid's RssAnon every interval.
func watchAnon(pid int, every time.Duration) *anonPeak {
	p := &anonPeak{done: make(chan struct{}), max: make(chan float64, 1)}
	go func() {
		var peak float64
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if u, err := readProc(pid); err == nil && u.anonMB > peak {
				peak = u.anonMB
			}
			select {
			case <-p.done:
				p.max <- peak
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// stop ends the sampling and returns the peak in MB (0 for a nil p).
func (p *anonPeak) stop() float64 {
	if p == nil {
		return 0
	}
	close(p.done)
	return <-p.max
}

// clkTck is USER_HZ, 100 on every Linux architecture Go supports.
const clkTck = 100

func readProc(pid int) (procUsage, error) {
	var u procUsage
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("latchkey-load: %w", err)
	}
	// The command name may hold spaces; the fields start after its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return u, fmt.Errorf("latchkey-load: /proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return u, fmt.Errorf("latchkey-load: /proc/%d/stat: too few fields", pid)
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	u.cpu = (ut + st) / clkTck
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			k, v, _ := strings.Cut(line, ":")
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			switch k {
			case "VmRSS":
				u.rssMB = kb / 1024
			case "VmHWM":
				u.maxRSSMB = kb / 1024
			case "RssAnon":
				u.anonMB = kb / 1024
			case "RssFile":
				u.fileMB = kb / 1024
			}
		}
	}
	return u, nil
}

// machineBusy is the CPU time all cores spent not idle, in seconds, from
// /proc/stat (user, nice, system, irq, softirq, steal).
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var sum float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseFloat(f[i], 64)
		sum += v
	}
	return sum / clkTck
}
