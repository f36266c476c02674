package bounce

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFreshCloneHasItsCorpus clones the repository's committed tree into a
// directory with nothing beside it and runs the bounce tests there: a
// newcomer's clone must pass the test command without any file from outside
// the repository (the corpus once lived in ../shared and only the machines
// that had it passed).
func TestFreshCloneHasItsCorpus(t *testing.T) {
	if os.Getenv("LATCHKEY_IN_FRESH_CLONE") != "" {
		t.Skip("already inside the fresh clone")
	}
	if testing.Short() {
		t.Skip("runs go test in a clone; skipped with -short")
	}
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not installed")
	}
	top, err := exec.Command(git, "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skip("not a git checkout (a source archive): nothing to clone")
	}
	dst := filepath.Join(t.TempDir(), "latchkey")
	if out, err := exec.Command(git, "clone", "--quiet", "--no-hardlinks", strings.TrimSpace(string(top)), dst).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dst), "shared")); err == nil {
		t.Fatal("the clone has a shared/ beside it; the test would prove nothing")
	}
	gobin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, "test", "-count=1", "-v", "./bounce")
	cmd.Dir = dst
	cmd.Env = append(os.Environ(), "LATCHKEY_IN_FRESH_CLONE=1", "CI=true", "GOFLAGS=-mod=readonly")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test ./bounce in a fresh clone: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestCorpus ") {
		t.Fatalf("go test ./bounce in a fresh clone did not pass TestCorpus:\n%s", out)
	}
}
