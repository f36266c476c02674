package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Store holds the live policy. Readers call Get on every message and never
// block; Reload and Watch swap in a new policy only when the file parses, so
// a broken edit leaves the running policy in place.
type Store struct {
	file string
	cur  atomic.Pointer[Policy]

	mu      sync.Mutex // serialises reloads and guards the fields below
	lastErr error
	hash    [sha256.Size]byte // of the last source read, good or bad
	stat    fileStamp         // of the last source read
	pending fileStamp         // a change seen once, waiting to settle
}

// fileStamp is the cheap part of change detection; the hash confirms it.
type fileStamp struct {
	size    int64
	modTime time.Time
}

// NewStore returns a Store serving p, reloading from file. It records the
// file's current state so that Watch reports only later edits; p should have
// been parsed from that file.
func NewStore(file string, p *Policy) *Store {
	s := &Store{file: file}
	s.cur.Store(p)
	if fi, err := os.Stat(file); err == nil {
		s.stat = fileStamp{fi.Size(), fi.ModTime()}
	}
	if src, err := os.ReadFile(file); err == nil {
		s.hash = sha256.Sum256(src)
	}
	return s
}

// Open reads and parses file and returns a Store serving it.
func Open(file string) (*Store, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := Parse(file, src)
	if err != nil {
		return nil, err
	}
	s := &Store{file: file, hash: sha256.Sum256(src)}
	if fi, err := os.Stat(file); err == nil {
		s.stat = fileStamp{fi.Size(), fi.ModTime()}
	}
	s.cur.Store(p)
	return s, nil
}

// File returns the file the Store reloads from.
func (s *Store) File() string { return s.file }

// Get returns the live policy.
func (s *Store) Get() *Policy { return s.cur.Load() }

// LastError returns the error of the last reload, or nil if it succeeded (or
// none was attempted).
func (s *Store) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Reload re-reads the file. On any error the running policy stays and the
// error (file:line: key: problem, one per line) is returned and kept for
// LastError.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	src, err := os.ReadFile(s.file)
	if err != nil {
		s.lastErr = fmt.Errorf("policy: %w", err)
		return s.lastErr
	}
	_, err = s.load(src)
	return err
}

// load parses src and swaps it in if it is valid. s.mu must be held.
func (s *Store) load(src []byte) (*Policy, error) {
	s.hash = sha256.Sum256(src)
	if fi, err := os.Stat(s.file); err == nil {
		s.stat = fileStamp{fi.Size(), fi.ModTime()}
	}
	p, err := Parse(s.file, src)
	s.lastErr = err
	if err != nil {
		return nil, err
	}
	s.cur.Store(p)
	return p, nil
}

// Watch polls the file every interval until ctx ends and reloads it when its
// content changed (size or mtime changed and stayed so for one interval,
// then the hash confirms; touching the file does not reload). onReload, if not nil, is called after each
// reload attempt with the new policy, or nil and the error — the running
// policy then stays. Polling rather than inotify keeps the dependency list
// short and works for editors that replace the file and for bind mounts.
func (s *Store) Watch(ctx context.Context, interval time.Duration, onReload func(*Policy, error)) {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, err, changed := s.poll()
		if changed && onReload != nil {
			onReload(p, err)
		}
	}
}

// poll checks the file once. A change is acted on only when two polls in a
// row see the same new size and mtime: an editor writing in place truncates
// the file first, and reading it then would report a spurious broken policy.
func (s *Store) poll() (p *Policy, err error, changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, statErr := os.Stat(s.file)
	st := fileStamp{size: -1} // missing or unreadable
	if statErr == nil {
		st = fileStamp{fi.Size(), fi.ModTime()}
	}
	if st.equal(s.stat) {
		s.pending = fileStamp{}
		return nil, nil, false
	}
	if !st.equal(s.pending) {
		s.pending = st
		return nil, nil, false
	}
	s.pending = fileStamp{}
	s.stat = st
	if statErr != nil {
		// Forget the content so that the file coming back is parsed again,
		// whatever it holds.
		s.hash = [sha256.Size]byte{}
		s.lastErr = fmt.Errorf("policy: %w", statErr)
		return nil, s.lastErr, true
	}
	src, err := os.ReadFile(s.file)
	if err != nil {
		s.hash = [sha256.Size]byte{}
		s.lastErr = fmt.Errorf("policy: %w", err)
		return nil, s.lastErr, true
	}
	if h := sha256.Sum256(src); bytes.Equal(h[:], s.hash[:]) {
		return nil, nil, false
	}
	p, err = s.load(src)
	s.stat = st
	return p, err, true
}

func (a fileStamp) equal(b fileStamp) bool {
	return a.size == b.size && a.modTime.Equal(b.modTime)
}
