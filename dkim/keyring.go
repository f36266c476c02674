package dkim

import (
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoKey is returned (wrapped) by Sign for a domain with no configured key.
var ErrNoKey = errors.New("dkim: no key for domain")

// KeyEntry is one configured signing key: the key in KeyFile signs mail
// from Domain under Selector. Algo is "rsa" (the default when empty) or
// "ed25519"; it decides what EnsureKeys generates and is checked against the
// file on load.
type KeyEntry struct {
	Domain   string `toml:"domain"`
	Selector string `toml:"selector"`
	Algo     string `toml:"algo"`
	KeyFile  string `toml:"key_file"`
}

func (e KeyEntry) algo() string {
	if a := normAlgo(e.Algo); a != "" {
		return a
	}
	return AlgoRSA
}

// validate checks the parts of an entry that would otherwise only fail at
// signing time or, worse, produce signatures nobody can verify.
func (e KeyEntry) validate() error {
	d := normDomain(e.Domain)
	if d == "" {
		return fmt.Errorf("dkim: key entry %q: empty domain", e.Selector)
	}
	for _, label := range strings.Split(d, ".") {
		if !validLabel(label) {
			return fmt.Errorf("dkim: key entry %q: domain %q is not a valid DNS name", e.Selector, e.Domain)
		}
	}
	if e.Selector == "" {
		return fmt.Errorf("dkim: key entry for %s: empty selector", e.Domain)
	}
	for _, label := range strings.Split(e.Selector, ".") {
		if !validLabel(label) {
			return fmt.Errorf("dkim: key entry for %s: selector %q is not a valid DNS name", e.Domain, e.Selector)
		}
	}
	if e.KeyFile == "" {
		return fmt.Errorf("dkim: key entry %s/%s: empty key_file", e.Domain, e.Selector)
	}
	if a := e.algo(); a != AlgoRSA && a != AlgoEd25519 {
		return fmt.Errorf("dkim: key entry %s/%s: unknown algo %q (want %q or %q)", e.Domain, e.Selector, e.Algo, AlgoRSA, AlgoEd25519)
	}
	return nil
}

func validLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func normDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
}

// loadedKey is one entry with its key, immutable once built.
type loadedKey struct {
	entry  KeyEntry
	domain string // normalised
	signer crypto.Signer
	algo   string
	mtime  time.Time
	size   int64
}

// keyset is an immutable snapshot; Sign reads it without locking.
type keyset struct {
	entries  []KeyEntry
	keys     []*loadedKey
	byDomain map[string][]*loadedKey // in config order
}

// Keyring holds the signing keys for every configured domain. Its methods
// are safe for concurrent use: Sign reads an immutable snapshot that Reload
// and Update swap atomically.
type Keyring struct {
	mu  sync.Mutex // serialises Reload/Update
	set atomic.Pointer[keyset]
}

// LoadKeyring validates entries and loads every key file.
func LoadKeyring(entries []KeyEntry) (*Keyring, error) {
	ks, err := loadKeyset(entries)
	if err != nil {
		return nil, err
	}
	kr := &Keyring{}
	kr.set.Store(ks)
	return kr, nil
}

func loadKeyset(entries []KeyEntry) (*keyset, error) {
	ks := &keyset{
		entries:  append([]KeyEntry(nil), entries...),
		byDomain: make(map[string][]*loadedKey),
	}
	seen := make(map[string]bool)
	var errs []error
	for _, e := range entries {
		if err := e.validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		id := normDomain(e.Domain) + "/" + strings.ToLower(e.Selector)
		if seen[id] {
			errs = append(errs, fmt.Errorf("dkim: key entry %s/%s: listed twice", e.Domain, e.Selector))
			continue
		}
		seen[id] = true
		k, err := loadEntry(e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ks.keys = append(ks.keys, k)
		ks.byDomain[k.domain] = append(ks.byDomain[k.domain], k)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return ks, nil
}

func loadEntry(e KeyEntry) (*loadedKey, error) {
	// Stat before reading: if the file changes in between, the recorded
	// mtime is the older one and the next ReloadIfChanged reads it again.
	fi, err := os.Stat(e.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("dkim: key %s/%s: %w", e.Domain, e.Selector, err)
	}
	signer, err := LoadKeyFile(e.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("dkim: key %s/%s: %w", e.Domain, e.Selector, stripPrefix(err))
	}
	algo, err := KeyAlgo(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("dkim: key %s/%s: %w", e.Domain, e.Selector, stripPrefix(err))
	}
	if algo != e.algo() {
		return nil, fmt.Errorf("dkim: key %s/%s: key file %s holds an %s key but algo is %q", e.Domain, e.Selector, e.KeyFile, algo, e.algo())
	}
	if rk, ok := signer.(*rsa.PrivateKey); ok {
		signer = fastRSA(rk) // libcrypto in a build with the openssl tag
	}
	return &loadedKey{
		entry:  e,
		domain: normDomain(e.Domain),
		signer: signer,
		algo:   algo,
		mtime:  fi.ModTime(),
		size:   fi.Size(),
	}, nil
}

// prefixless keeps "dkim: " from repeating when an error of this package
// is wrapped again; the chain stays intact for errors.Is/As.
type prefixless struct{ err error }

func (p prefixless) Error() string { return strings.TrimPrefix(p.err.Error(), "dkim: ") }
func (p prefixless) Unwrap() error { return p.err }

func stripPrefix(err error) error { return prefixless{err} }

// EnsureKeys generates the key file of every entry whose file does not exist
// yet (RSA keys of the given bits, 0 meaning DefaultRSABits) and returns the
// paths it created. Existing files are left alone, even if broken: loading
// reports those. Used on first start, so that the trial config works without
// a manual keygen step.
func EnsureKeys(entries []KeyEntry, bits int) ([]string, error) {
	var created []string
	for _, e := range entries {
		if err := e.validate(); err != nil {
			return created, err
		}
		_, err := os.Stat(e.KeyFile)
		if err == nil {
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			return created, fmt.Errorf("dkim: key %s/%s: %w", e.Domain, e.Selector, err)
		}
		key, err := GenerateKey(e.algo(), bits)
		if err != nil {
			return created, fmt.Errorf("dkim: key %s/%s: %w", e.Domain, e.Selector, stripPrefix(err))
		}
		if err := WriteKeyFile(e.KeyFile, key); err != nil {
			return created, fmt.Errorf("dkim: key %s/%s: %w", e.Domain, e.Selector, stripPrefix(err))
		}
		created = append(created, e.KeyFile)
	}
	return created, nil
}

// Reload re-reads every key file of the current entries. If any file fails
// to load, the keys already loaded stay in use and the error names each
// failing file.
func (kr *Keyring) Reload() error {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	return kr.updateLocked(kr.set.Load().entries)
}

// Update replaces the configured entries (after a config reload, e.g. to add
// or retire a selector) and loads their keys. On error nothing changes.
func (kr *Keyring) Update(entries []KeyEntry) error {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	return kr.updateLocked(entries)
}

func (kr *Keyring) updateLocked(entries []KeyEntry) error {
	ks, err := loadKeyset(entries)
	if err != nil {
		return fmt.Errorf("dkim: reload failed, keeping the previous keys: %w", err)
	}
	kr.set.Store(ks)
	return nil
}

// ReloadIfChanged reloads when any key file's mtime or size differs from
// when it was loaded (or the file vanished), for callers that poll instead
// of waiting for SIGHUP. It reports whether a reload was attempted.
func (kr *Keyring) ReloadIfChanged() (bool, error) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	ks := kr.set.Load()
	changed := false
	for _, k := range ks.keys {
		fi, err := os.Stat(k.entry.KeyFile)
		if err != nil || !fi.ModTime().Equal(k.mtime) || fi.Size() != k.size {
			changed = true
			break
		}
	}
	if !changed {
		return false, nil
	}
	return true, kr.updateLocked(ks.entries)
}

// Has reports whether at least one key signs for domain.
func (kr *Keyring) Has(domain string) bool {
	return len(kr.set.Load().byDomain[normDomain(domain)]) > 0
}

// Selectors returns the selectors of domain in config order.
func (kr *Keyring) Selectors(domain string) []string {
	keys := kr.set.Load().byDomain[normDomain(domain)]
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.entry.Selector
	}
	return out
}

// KeyInfo describes one loaded key, for `dns records`, `dkim keygen` and the
// DNS checks.
type KeyInfo struct {
	KeyEntry
	// Record is the TXT value to publish at Name.
	Record string
	// Name is the owner name of the record, with a trailing dot.
	Name        string
	Fingerprint string
	Public      crypto.PublicKey
}

// Keys describes every loaded key, in config order.
func (kr *Keyring) Keys() []KeyInfo {
	ks := kr.set.Load()
	out := make([]KeyInfo, 0, len(ks.keys))
	for _, k := range ks.keys {
		pub := k.signer.Public()
		rec, _ := PublicRecord(pub) // cannot fail: the type was checked on load
		e := k.entry
		e.Algo = k.algo
		out = append(out, KeyInfo{
			KeyEntry:    e,
			Record:      rec,
			Name:        e.Selector + "._domainkey." + k.domain + ".",
			Fingerprint: Fingerprint(pub),
			Public:      pub,
		})
	}
	return out
}
