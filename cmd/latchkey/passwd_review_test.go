package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// ptyScript runs a command on a new pseudo-terminal, types one line into it
// as a person would (no end-of-file), and prints what the terminal showed
// within a few seconds.
const ptyScript = `
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
def read_for(secs, until=None):
    global out
    end = time.time() + secs
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                b = os.read(fd, 4096)
            except OSError:
                return
            if not b:
                return
            out += b
            if until and until in out:
                return
read_for(10, b"password")
os.write(fd, b"correct horse battery\n")
read_for(10, b"$2")
read_for(0.3)
os.kill(pid, 9)
sys.stdout.write(out.decode("utf-8", "replace"))
`

var bcryptRE = regexp.MustCompile(`\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}`)

// On a terminal, "latchkey passwd" asks for "one line", but it read
// standard input to end-of-file: after typing the password and Enter
// nothing happened until the user knew to press Ctrl-D.
func TestReviewPasswdFromTerminal(t *testing.T) {
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("this test needs %s (for a pseudo-terminal): %v", py, err)
		}
		t.Skipf("skipping: no %s to drive a pseudo-terminal", py)
	}
	bin := latchkeyBin(t)
	cmd := exec.Command(py, "-c", ptyScript, bin, "passwd")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	hash := bcryptRE.FindString(string(out))
	if hash == "" {
		t.Fatalf("no hash printed after typing the password and Enter; the terminal showed:\n%s", out)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("correct horse battery")); err != nil {
		t.Errorf("hash does not match the typed password: %v", err)
	}
	// The password is not echoed on the terminal.
	if strings.Contains(string(out), "correct horse battery") {
		t.Errorf("the terminal showed the password:\n%s", out)
	}
}

// Piped input: the password is the first line; what follows it is not
// part of it.
func TestReviewPasswdFromPipe(t *testing.T) {
	bin := latchkeyBin(t)
	for _, in := range []string{"correct horse battery", "correct horse battery\n", "correct horse battery\r\n", "correct horse battery\nsecond line\n"} {
		cmd := exec.Command(bin, "passwd", "-user", "sf")
		cmd.Stdin = strings.NewReader(in)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		name, hash, _ := strings.Cut(strings.TrimSpace(string(out)), ":")
		if name != "sf" || bcrypt.CompareHashAndPassword([]byte(hash), []byte("correct horse battery")) != nil {
			t.Errorf("input %q: output %q is not sf:<hash of the first line>", in, out)
		}
	}
	for _, in := range []string{"", "\n", "short\n", "\ncorrect horse battery\n"} {
		cmd := exec.Command(bin, "passwd")
		cmd.Stdin = strings.NewReader(in)
		out, err := cmd.Output()
		if err == nil || len(out) != 0 {
			t.Errorf("input %q: want a refusal and no hash, got %v, %q", in, err, out)
		}
	}
}
