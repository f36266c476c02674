package policy

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writePolicy writes src and gives the file a distinct mtime, so change
// detection does not depend on the file system's timestamp granularity.
func writePolicy(t *testing.T, path, src string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestStoreReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.toml")
	good := string(shippedSource(t))
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	writePolicy(t, path, good, base)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	old := s.Get()
	if old.Class("reset").Expiry != 30*time.Minute {
		t.Fatal("unexpected shipped expiry")
	}

	broken := strings.Replace(good, `expiry = "30m"`, `expiry = "30 minutes"`, 1)
	line := 1 + strings.Count(broken[:strings.Index(broken, `"30 minutes"`)], "\n")
	writePolicy(t, path, broken, base.Add(time.Second))
	err = s.Reload()
	want := path + ":" + strconv.Itoa(line) + `: classes.0.expiry: bad duration "30 minutes"`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Reload of a broken file = %v, want %q…", err, want)
	}
	if s.Get() != old {
		t.Error("a broken edit replaced the running policy")
	}
	if s.LastError() == nil || s.LastError().Error() != err.Error() {
		t.Errorf("LastError = %v", s.LastError())
	}

	writePolicy(t, path, strings.Replace(good, `expiry = "30m"`, `expiry = "45m"`, 1), base.Add(2*time.Second))
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload of a good edit: %v", err)
	}
	if got := s.Get().Class("reset").Expiry; got != 45*time.Minute {
		t.Errorf("reset expiry after reload = %v, want 45m", got)
	}
	if s.LastError() != nil {
		t.Errorf("LastError after a good reload = %v", s.LastError())
	}

	os.Remove(path)
	cur := s.Get()
	if err := s.Reload(); err == nil || s.Get() != cur {
		t.Errorf("Reload of a missing file = %v, policy replaced: %v", err, s.Get() != cur)
	}
}

func TestStorePoll(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.toml")
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	writePolicy(t, path, minimal, base)
	p0 := mustParse(t, minimal)
	s := NewStore(path, p0)
	// settle polls twice: a change is acted on once it is stable.
	settle := func() (*Policy, error, bool) {
		if p, err, changed := s.poll(); changed {
			t.Errorf("change acted on before it settled: %v, %v", p, err)
		}
		return s.poll()
	}

	if _, _, changed := s.poll(); changed {
		t.Error("unchanged file reported as changed")
	}
	// Touching the file (same content) does not reload.
	os.Chtimes(path, base.Add(time.Second), base.Add(time.Second))
	if _, _, changed := settle(); changed || s.Get() != p0 {
		t.Error("touch reloaded the policy")
	}
	writePolicy(t, path, strings.Replace(minimal, "workers = 1", "workers = 0", 1), base.Add(2*time.Second))
	p, err, changed := settle()
	if !changed || p != nil || err == nil || !strings.Contains(err.Error(), ":6: classes.0.workers: must be at least 1") {
		t.Errorf("poll of a broken edit = %v, %v, %v", p, err, changed)
	}
	if s.Get() != p0 {
		t.Error("broken edit replaced the policy")
	}
	// The same broken content is not reported again.
	if _, _, changed := s.poll(); changed {
		t.Error("the same broken file reported twice")
	}
	writePolicy(t, path, strings.Replace(minimal, "workers = 1", "workers = 3", 1), base.Add(3*time.Second))
	p, err, changed = settle()
	if !changed || err != nil || p == nil || s.Get() != p || p.Class("a").Workers != 3 {
		t.Errorf("poll of a good edit = %v, %v, %v", p, err, changed)
	}
	// A file that disappears is reported once; when it comes back with the
	// same content it is loaded again.
	os.Remove(path)
	if _, err, changed := settle(); !changed || err == nil {
		t.Errorf("missing file: %v, %v", err, changed)
	}
	if _, _, changed := s.poll(); changed {
		t.Error("missing file reported twice")
	}
	writePolicy(t, path, strings.Replace(minimal, "workers = 1", "workers = 3", 1), base.Add(3*time.Second))
	if p, err, changed := settle(); !changed || err != nil || p == nil || s.LastError() != nil {
		t.Errorf("file back: %v, %v, %v, LastError %v", p, err, changed, s.LastError())
	}
}

func TestStoreWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.toml")
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	writePolicy(t, path, minimal, base)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	old := s.Get()
	type result struct {
		p   *Policy
		err error
	}
	ch := make(chan result, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Watch(ctx, 5*time.Millisecond, func(p *Policy, err error) { ch <- result{p, err} })
		close(done)
	}()
	defer func() { cancel(); <-done }()
	next := func() result {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("Watch did not report the edit")
		}
		return result{}
	}

	writePolicy(t, path, minimal+"bogus = 1\n", base.Add(time.Second))
	r := next()
	if r.p != nil || r.err == nil || !strings.Contains(r.err.Error(), ":7: classes.bogus: unknown key") || s.Get() != old {
		t.Errorf("broken edit: %v, %v; policy replaced: %v", r.p, r.err, s.Get() != old)
	}
	writePolicy(t, path, strings.Replace(minimal, `"30m"`, `"45m"`, 1), base.Add(2*time.Second))
	r = next()
	if r.err != nil || r.p == nil || s.Get() != r.p || r.p.Class("a").Expiry != 45*time.Minute {
		t.Errorf("good edit: %v, %v", r.p, r.err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing.toml")); err == nil || !strings.HasPrefix(err.Error(), "policy: ") {
		t.Errorf("Open of a missing file = %v", err)
	}
	path := filepath.Join(dir, "policy.toml")
	writePolicy(t, path, strings.Replace(minimal, "workers = 1", "workers = 0", 1), time.Now())
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), path+":6: classes.0.workers: must be at least 1") {
		t.Errorf("Open of a broken file = %v", err)
	}
	writePolicy(t, path, minimal, time.Now())
	if s, err := Open(path); err != nil || s.File() != path || s.Get().Class("a") == nil || s.LastError() != nil {
		t.Errorf("Open = %v, %v", s, err)
	}
}
