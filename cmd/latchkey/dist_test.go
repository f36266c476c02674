package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The shipped systemd unit passes `systemd-analyze verify` (with its binary
// path pointed at the one built here), reloads with SIGHUP, and runs
// commands the binary accepts.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../../dist/latchkey.service")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(unit, []byte("ExecReload=/bin/kill -HUP $MAINPID")) {
		t.Error("ExecReload is not SIGHUP")
	}
	bin := latchkeyBin(t)
	// Each Exec line's arguments, run against a configuration that does
	// not exist: a flag the binary does not know would be a usage error
	// (exit 2 with "flag provided but not defined") instead.
	for _, m := range regexp.MustCompile(`(?m)^Exec(?:Start|StartPre)=/usr/local/bin/latchkey (.*)$`).FindAllSubmatch(unit, -1) {
		args := strings.Fields(strings.Replace(string(m[1]), "/etc/latchkey/latchkey.toml", filepath.Join(t.TempDir(), "missing.toml"), 1))
		out, _ := exec.Command(bin, args...).CombinedOutput()
		if bytes.Contains(out, []byte("flag provided but not defined")) || bytes.Contains(out, []byte("unknown command")) {
			t.Errorf("unit runs `latchkey %s`, which the binary refuses:\n%s", m[1], out)
		}
		if !bytes.Contains(out, []byte("missing.toml")) {
			t.Errorf("`latchkey %s` did not read its -config file:\n%s", m[1], out)
		}
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze here")
	}
	path := filepath.Join(t.TempDir(), "latchkey.service")
	os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/local/bin/latchkey"), []byte(bin)), 0o644)
	if out, err := exec.Command(sa, "verify", path).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The Dockerfile builds in one stage and runs in another, as a non-root
// user, with the state directory as a volume owned by that user, from the
// Go release go.mod names.
func TestDockerfile(t *testing.T) {
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVer := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	s := string(df)
	froms := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(s, -1)
	if len(froms) != 2 {
		t.Fatalf("%d FROM lines, want a build stage and a run stage", len(froms))
	}
	if goVer == nil || froms[0][1] != "golang:"+string(goVer[1]) {
		t.Errorf("build stage %s, want golang:%s (go.mod)", froms[0][1], goVer[1])
	}
	run := s[strings.LastIndex(s, "\nFROM "):]
	for _, want := range []string{"\nUSER nonroot", "\nVOLUME /var/lib/latchkey", "--chown=65532:65532 /state /var/lib/latchkey", "CGO_ENABLED=0"} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if strings.Contains(run, "\nUSER root") || !strings.Contains(run, "\nUSER ") {
		t.Error("the run stage does not run as a non-root user")
	}
}
