package dkim_test

import (
	"crypto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/dkim"
)

func TestEnsureKeys(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "dkim")
	entries := []dkim.KeyEntry{
		{Domain: "example.test", Selector: "rsa1", KeyFile: filepath.Join(dir, "rsa1.pem")}, // algo defaults to rsa
		{Domain: "example.test", Selector: "ed1", Algo: "ed25519", KeyFile: filepath.Join(dir, "ed1.pem")},
	}
	created, err := dkim.EnsureKeys(entries, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(created, []string{entries[0].KeyFile, entries[1].KeyFile}) {
		t.Errorf("created %v", created)
	}
	for _, p := range created {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", p, fi.Mode(), err)
		}
	}
	before, _ := os.ReadFile(entries[0].KeyFile)

	created, err = dkim.EnsureKeys(entries, 1024)
	if err != nil || len(created) != 0 {
		t.Errorf("second EnsureKeys: created %v, err %v; want nothing", created, err)
	}
	after, _ := os.ReadFile(entries[0].KeyFile)
	if string(before) != string(after) {
		t.Error("EnsureKeys replaced an existing key")
	}

	kr, err := dkim.LoadKeyring(entries)
	if err != nil {
		t.Fatal(err)
	}
	keys := kr.Keys()
	if len(keys) != 2 || keys[0].Algo != "rsa" || keys[1].Algo != "ed25519" || keys[1].Name != "ed1._domainkey.example.test." {
		t.Errorf("Keys() = %+v", keys)
	}
	wantAllOK(t, signed(t, kr, "example.test", testMessage()), records(kr),
		[]string{"example.test/rsa1/rsa-sha256", "example.test/ed1/ed25519-sha256"})

	if _, err := dkim.EnsureKeys([]dkim.KeyEntry{{Domain: "x.test", Selector: "s", Algo: "rsa", KeyFile: filepath.Join(dir, "small.pem")}}, 512); err == nil {
		t.Error("EnsureKeys made a 512-bit key")
	}
}

// Rotation: add a selector, reload, sign with both; replace a key file and
// see the new key used.
func TestKeyringRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kr, entries := dualKeyring(t, dir)
	if got := kr.Selectors("example.test"); !slices.Equal(got, []string{"rsa2026", "ed2026"}) {
		t.Fatalf("Selectors = %v", got)
	}

	// Step 1: a new selector with its own key.
	newEntry := dkim.KeyEntry{Domain: "example.test", Selector: "ed2027", Algo: "ed25519", KeyFile: filepath.Join(dir, "ed2027.pem")}
	if _, err := dkim.EnsureKeys([]dkim.KeyEntry{newEntry}, 0); err != nil {
		t.Fatal(err)
	}
	if err := kr.Update(append(entries, newEntry)); err != nil {
		t.Fatal(err)
	}
	if got := kr.Selectors("example.test"); !slices.Equal(got, []string{"rsa2026", "ed2026", "ed2027"}) {
		t.Fatalf("after adding a selector, Selectors = %v", got)
	}
	wantAllOK(t, signed(t, kr, "example.test", testMessage()), records(kr),
		append(ours[:2:2], "example.test/ed2027/ed25519-sha256"))

	// Step 2: retire the old Ed25519 selector.
	if err := kr.Update([]dkim.KeyEntry{entries[0], newEntry}); err != nil {
		t.Fatal(err)
	}
	if got := kr.Selectors("example.test"); !slices.Equal(got, []string{"rsa2026", "ed2027"}) {
		t.Fatalf("after retiring, Selectors = %v", got)
	}

	// A replaced key file is picked up by Reload and by ReloadIfChanged.
	oldFP := kr.Keys()[1].Fingerprint
	k, _ := dkim.GenerateKey("ed25519", 0)
	if err := dkim.WriteKeyFile(newEntry.KeyFile, k); err != nil {
		t.Fatal(err)
	}
	// Make the change visible to an mtime check whatever the filesystem's
	// timestamp granularity.
	future := time.Now().Add(time.Hour)
	os.Chtimes(newEntry.KeyFile, future, future)
	changed, err := kr.ReloadIfChanged()
	if err != nil || !changed {
		t.Fatalf("ReloadIfChanged = %v, %v; want a reload", changed, err)
	}
	if fp := kr.Keys()[1].Fingerprint; fp == oldFP || fp != dkim.Fingerprint(k.Public()) {
		t.Error("replaced key not in use after reload")
	}
	if changed, err := kr.ReloadIfChanged(); changed || err != nil {
		t.Errorf("ReloadIfChanged with nothing changed = %v, %v", changed, err)
	}
	if err := kr.Reload(); err != nil {
		t.Fatal(err)
	}
}

func TestKeyringBrokenReloadKeepsOldKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kr, entries := dualKeyring(t, dir)
	recs := records(kr)
	fps := []string{kr.Keys()[0].Fingerprint, kr.Keys()[1].Fingerprint}

	os.WriteFile(entries[1].KeyFile, []byte("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n"), 0o600)
	err := kr.Reload()
	if err == nil || !strings.Contains(err.Error(), entries[1].KeyFile) {
		t.Fatalf("Reload error = %v, want one naming %s", err, entries[1].KeyFile)
	}
	if strings.Contains(err.Error(), entries[0].KeyFile) {
		t.Errorf("error blames the good file too: %v", err)
	}
	if got := []string{kr.Keys()[0].Fingerprint, kr.Keys()[1].Fingerprint}; !slices.Equal(got, fps) {
		t.Error("keys changed after a failed reload")
	}
	wantAllOK(t, signed(t, kr, "example.test", testMessage()), recs, ours)

	// A missing file and an Update to a broken set fail the same way.
	os.Remove(entries[0].KeyFile)
	if changed, err := kr.ReloadIfChanged(); !changed || err == nil || !strings.Contains(err.Error(), entries[0].KeyFile) {
		t.Errorf("ReloadIfChanged after removal = %v, %v", changed, err)
	}
	if err := kr.Update(entries[:1]); err == nil {
		t.Error("Update to a missing key file succeeded")
	}
	if !kr.Has("example.test") || len(kr.Selectors("example.test")) != 2 {
		t.Error("keys lost after failed reloads")
	}
}

func TestLoadKeyringRejects(t *testing.T) {
	dir := t.TempDir()
	r, e, _ := testKeys(t)
	rsaFile, edFile := filepath.Join(dir, "r.pem"), filepath.Join(dir, "e.pem")
	for p, k := range map[string]crypto.Signer{rsaFile: r, edFile: e} {
		if err := dkim.WriteKeyFile(p, k); err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]struct {
		entries []dkim.KeyEntry
		want    string
	}{
		"algo mismatch":  {[]dkim.KeyEntry{{Domain: "a.test", Selector: "s", Algo: "ed25519", KeyFile: rsaFile}}, "holds an rsa key"},
		"default is rsa": {[]dkim.KeyEntry{{Domain: "a.test", Selector: "s", KeyFile: edFile}}, "holds an ed25519 key"},
		"duplicate": {[]dkim.KeyEntry{
			{Domain: "a.test", Selector: "s", KeyFile: rsaFile},
			{Domain: "A.test.", Selector: "s", KeyFile: rsaFile},
		}, "listed twice"},
		"bad selector": {[]dkim.KeyEntry{{Domain: "a.test", Selector: "s 1", KeyFile: rsaFile}}, "not a valid DNS name"},
		"no domain":    {[]dkim.KeyEntry{{Selector: "s", KeyFile: rsaFile}}, "empty domain"},
		"no key file":  {[]dkim.KeyEntry{{Domain: "a.test", Selector: "s"}}, "empty key_file"},
		"unknown algo": {[]dkim.KeyEntry{{Domain: "a.test", Selector: "s", Algo: "dsa", KeyFile: rsaFile}}, "unknown algo"},
		"missing file": {[]dkim.KeyEntry{{Domain: "a.test", Selector: "s", KeyFile: filepath.Join(dir, "none.pem")}}, "none.pem"},
	}
	for name, c := range cases {
		_, err := dkim.LoadKeyring(c.entries)
		if err == nil || !strings.HasPrefix(err.Error(), "dkim: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error = %v, want a dkim: error containing %q", name, err, c.want)
		}
	}
	// One key file may serve two domains.
	kr, err := dkim.LoadKeyring([]dkim.KeyEntry{
		{Domain: "a.test", Selector: "s", KeyFile: rsaFile},
		{Domain: "b.test", Selector: "s", KeyFile: rsaFile},
	})
	if err != nil || !kr.Has("a.test") || !kr.Has("b.test") {
		t.Errorf("shared key file: %v", err)
	}
}
