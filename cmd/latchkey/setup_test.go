package main

// The README's "Set up" section, run as a newcomer would: these tests read
// the commands from README.md and run them, so the README cannot drift from
// what works.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/latchkey/latchkey/dkim/dkimtest"
)

// readmeSetup returns the indented command lines of README.md's "Set up"
// section, in order.
func readmeSetup(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Set up\n")
	if !ok {
		t.Fatal(`README.md has no "## Set up" section`)
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	var cmds []string
	for _, l := range strings.Split(sec, "\n") {
		if strings.HasPrefix(l, "    ") && strings.TrimSpace(l) != "" {
			cmds = append(cmds, strings.TrimSpace(l))
		}
	}
	return cmds
}

// readmeCommand returns the one Set-up command that starts with prefix.
func readmeCommand(t *testing.T, cmds []string, prefix string) string {
	t.Helper()
	var found []string
	for _, c := range cmds {
		if strings.HasPrefix(c, prefix) {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("README Set up: %d commands start with %q, want 1: %q", len(found), prefix, cmds)
	}
	return found[0]
}

// syncLog collects a child's standard error.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func shell(t *testing.T, dir, line string) string {
	t.Helper()
	cmd := exec.Command("bash", "-c", line)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return string(out)
}

// TestReadmeSetupTrial builds the binaries, starts the trial, sends a reset
// as the README says (swaks, and the same over Go's SMTP client: STARTTLS,
// AUTH PLAIN as the trial user), finds each message signed in the trial
// Maildir with signatures that dkimpy verifies against the records
// `latchkey dns records` prints, and stops the relay with the README's kill.
func TestReadmeSetupTrial(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	cmds := readmeSetup(t)
	build := readmeCommand(t, cmds, "go build")
	serve := readmeCommand(t, cmds, "bin/latchkey serve")
	swaks := readmeCommand(t, cmds, "swaks ")
	list := readmeCommand(t, cmds, "ls ")
	stop := readmeCommand(t, cmds, "kill ")
	for _, addr := range []string{"127.0.0.1:2525", "127.0.0.1:8025"} {
		if l, err := net.Listen("tcp", addr); err != nil {
			t.Fatalf("the trial listens on %s, which is taken here: %v", addr, err)
		} else {
			l.Close()
		}
	}

	dir := t.TempDir()
	// The build runs in the repository (where the README is followed);
	// its bin/ is the newcomer's directory.
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	shell(t, root, strings.Replace(build, "-o bin/", "-o "+dir+"/bin/", 1))

	var log syncLog
	started := make(chan struct{})
	srv := exec.Command("bash", "-c", "exec "+serve)
	srv.Dir = dir
	pr, pw := io.Pipe()
	srv.Stderr = io.MultiWriter(&log, pw)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Wait(); pw.Close() }()
	go func() {
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "relay started") {
				once = true
				close(started)
			}
		}
	}()
	defer func() {
		if srv.ProcessState == nil {
			srv.Process.Signal(syscall.SIGKILL)
			<-done
		}
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("trial relay exited: %v\n%s", err, log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("trial relay did not start\n%s", log.String())
	}
	pid, err := os.ReadFile(filepath.Join(dir, "var", "latchkey.pid"))
	if err != nil || strings.TrimSpace(string(pid)) != fmt.Sprint(srv.Process.Pid) {
		t.Fatalf("pid file: %q, %v; relay pid %d", pid, err, srv.Process.Pid)
	}

	pass, err := os.ReadFile(filepath.Join(dir, "var", "trial-password"))
	if err != nil {
		t.Fatal(err)
	}
	want := 1
	sendGo(t, strings.TrimSpace(string(pass)))
	if _, err := exec.LookPath("swaks"); err == nil {
		if out := shell(t, dir, swaks); !strings.Contains(out, "250 2.0.0") {
			t.Errorf("swaks: no 250 after DATA:\n%s", out)
		}
		want++
	} else if os.Getenv("CI") == "true" {
		t.Fatal("swaks is needed to run the README's command (apt install swaks)")
	} else {
		t.Log("swaks not installed: only the Go client's message is checked")
	}

	newDir := filepath.Join(dir, "var", "trial-mail", "new")
	var files []string
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if files, _ = filepath.Glob(filepath.Join(newDir, "*")); len(files) >= want {
			break
		}
	}
	if len(files) != want {
		t.Fatalf("%d messages in %s, want %d\n%s", len(files), newDir, want, log.String())
	}
	if out := shell(t, dir, list); len(strings.Fields(out)) != want {
		t.Errorf("%s printed %q, want %d file names", list, out, want)
	}

	records := dkimRecords(t, filepath.Join(dir, "bin", "latchkey"), dir)
	for _, f := range files {
		msg, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(msg, []byte("X-LK-Class: reset")) {
			t.Errorf("%s is not the reset sent", f)
		}
		res := dkimtest.PyVerify(t, msg, records)
		if len(res) != 2 {
			t.Errorf("%s: %d DKIM signatures, want the trial's 2 (rsa and ed25519)", f, len(res))
		}
		for _, r := range res {
			if !r.OK || r.Domain != "example.com" {
				t.Errorf("%s: dkimpy: d=%s s=%s ok=%v: %s", f, r.Domain, r.Selector, r.OK, r.Error)
			}
		}
		if !strings.Contains(log.String(), f[len(dir)+1:]) {
			t.Errorf("no log line names %s", f[len(dir)+1:])
		}
	}

	shell(t, dir, stop)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("relay exit after the README's kill: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("relay still running after the README's kill")
	}
	if _, err := os.Stat(filepath.Join(dir, "var", "latchkey.pid")); !os.IsNotExist(err) {
		t.Errorf("pid file left after a clean stop: %v", err)
	}
	out := log.String()
	for _, bad := range []string{"FAIL", `"level":"error"`, "bounced", "escalat"} {
		if strings.Contains(out, bad) {
			t.Errorf("trial log contains %q:\n%s", bad, out)
		}
	}
	if !strings.Contains(out, `"maildir":"var/trial-mail/new"`) || !strings.Contains(out, "latchkey dns records") {
		t.Errorf("no start line saying where the trial's mail goes and pointing at `latchkey dns records`:\n%s", out)
	}
}

// sendGo submits one reset to the trial as Salesforce Email Relay does.
func sendGo(t *testing.T, pass string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:2525", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The trial's certificate is self-signed; its trust is not under test.
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "relay", pass)); err != nil {
		t.Fatalf("AUTH as the trial user: %v", err)
	}
	msg := "From: <noreply@example.com>\r\nTo: <someone@example.org>\r\nSubject: Reset your password\r\n" +
		"X-LK-Class: reset\r\n\r\nReset it: https://example.com/reset?token=def456\r\n"
	if err := c.SendMail("noreply@example.com", []string{"someone@example.org"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// dkimRecords runs `latchkey dns records` in the trial's directory and
// returns its DKIM TXT records by owner name.
func dkimRecords(t *testing.T, bin, dir string) map[string]string {
	t.Helper()
	cmd := exec.Command(bin, "dns", "records", "-ip", "127.0.0.1")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dns records: %v", err)
	}
	recs := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, "._domainkey.") || strings.HasPrefix(l, ";") {
			continue
		}
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("dns records printed %q: %v", l, err)
		}
		if txt, ok := rr.(*dns.TXT); ok {
			recs[txt.Hdr.Name] = strings.Join(txt.Txt, "")
		}
	}
	if len(recs) != 2 {
		t.Fatalf("dns records: %d DKIM records, want 2:\n%s", len(recs), out)
	}
	return recs
}
