package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// help in its usual spellings lists the commands on standard output and
// succeeds; no command at all is a usage error.
func TestHelpAndVersion(t *testing.T) {
	for _, arg := range []string{"help", "-h", "-help", "--help"} {
		var out, errb bytes.Buffer
		if rc := run([]string{arg}, &out, &errb); rc != 0 {
			t.Errorf("latchkey %s: exit %d, want 0 (%s)", arg, rc, errb.String())
		}
		for _, want := range []string{"dns check", "serve", "version", "suppress add"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("latchkey %s: no %q in\n%s", arg, want, out.String())
			}
		}
	}
	var out, errb bytes.Buffer
	if rc := run(nil, &out, &errb); rc != 2 || !strings.Contains(errb.String(), "usage:") {
		t.Errorf("latchkey: exit %d, stderr %q; want 2 and the usage", rc, errb.String())
	}
	for _, arg := range []string{"version", "--version"} {
		out.Reset()
		if rc := run([]string{arg}, &out, &errb); rc != 0 || !strings.HasPrefix(out.String(), "latchkey ") {
			t.Errorf("latchkey %s: exit %d, %q", arg, rc, out.String())
		}
	}
}

// A binary built from a git checkout names the revision it was built from.
func TestVersionNamesTheRevision(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "latchkey")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if m, err := exec.Command("go", "version", "-m", bin).Output(); err != nil || !bytes.Contains(m, []byte("vcs.revision=")) {
		t.Skipf("the go tool stamped no revision into the binary here (e.g. a git worktree): %v", err)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if rev := strings.TrimSpace(string(head)); !strings.Contains(string(out), "revision "+rev) {
		t.Errorf("version %q does not name revision %s", out, rev)
	}
	if !strings.Contains(string(out), "go1.") {
		t.Errorf("version %q does not name the Go version", out)
	}
}

// The pid file of a relay that runs is not taken over; a stale one is.
func TestPidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "latchkey.pid")
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Process.Kill()
	os.WriteFile(path, []byte(fmt.Sprintf("%d\n", sleeper.Process.Pid)), 0o644)
	if err := writePidFile(path); err == nil || !strings.Contains(err.Error(), "is running") {
		t.Errorf("pid file of a running process overwritten (err %v)", err)
	}
	sleeper.Process.Kill()
	sleeper.Wait()
	if err := writePidFile(path); err != nil {
		t.Fatalf("stale pid file: %v", err)
	}
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Errorf("pid file holds %q, want %d", b, os.Getpid())
	}
}

// Where the command list names a default, it is the flag's default.
func TestHelpDefaultsMatchFlags(t *testing.T) {
	var help, e bytes.Buffer
	run([]string{"help"}, &help, &e)
	n := 0
	for _, line := range strings.Split(help.String(), "\n") {
		m := regexp.MustCompile(`^\s+(\S+(?: \S+)?)\s{2,}.*\(default (\w+): (\S+?)\)`).FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n++
		var out, flags bytes.Buffer
		run(append(strings.Fields(m[1]), "-h"), &out, &flags)
		want := regexp.MustCompile(`(?m)^\s+-` + m[2] + `\b.*\n.*\(default "([^"]*)"\)`).FindStringSubmatch(flags.String())
		if want == nil || want[1] != m[3] {
			t.Errorf("help says %s defaults to %s %q; its flags say %q:\n%s", m[1], m[2], m[3], want, flags.String())
		}
	}
	if n == 0 {
		t.Fatal("no command in the help names a default: the test reads nothing")
	}
}
