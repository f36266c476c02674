// Package queue is latchkey's durable priority queue on Badger.
//
// Every write to the database goes through one committer goroutine that
// gathers the changes of concurrent callers into a single transaction and a
// single fsync (group commit), so a busy relay pays one disk sync per batch,
// not per message, and every state change commits in the same transaction as
// its audit event. Callers block until their change is on disk: the relay
// answers 250 only after Enqueue returns.
//
// Scheduling state (which items are due, per class lane) is kept in memory
// and rebuilt from the "live" index at start. A lease is in memory only: an
// item that was being delivered when the process died is still live on disk
// and is delivered again after restart, never lost.
package queue

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/audit"
)

// Store is the Badger database with its group committer. The queue, the audit
// log, the suppression lists and the Salesforce outbox all live in it, each
// under its own key prefix.
type Store struct {
	DB    *badger.DB
	Audit *audit.Log
	// OnAudit, when set, sees every audit event inside the transaction that
	// writes it (after it is appended, so its time and sequence are set):
	// what it writes commits with the event or not at all.
	OnAudit func(txn *badger.Txn, ev *audit.Event) error
	// OnSuppress, when set, is called after the commit that puts an
	// address on a suppression list or takes it off (the cluster shares
	// the lists). It must not block. ApplySuppression does not call it.
	OnSuppress func(s Suppression, removed bool)

	log  zerolog.Logger
	reqs chan *commitReq
	stop chan struct{}
	done chan struct{}

	closeOnce sync.Once

	// Batches and Commits count group-commit work, for benchmarks and metrics.
	mu              sync.Mutex
	batches, writes int64
}

// Tx is the write transaction handed to a commit function. Besides the Badger
// transaction it collects audit events and in-memory effects that must happen
// only once the batch is on disk (or be undone if it is not).
type Tx struct {
	*badger.Txn
	store   *Store
	after   []func()
	onAbort []func()
}

// Audit appends an audit event to the batch's transaction.
func (tx *Tx) Audit(ev *audit.Event) error {
	if tx.store.Audit == nil {
		return nil
	}
	if err := tx.store.Audit.Append(tx.Txn, ev); err != nil {
		return err
	}
	if tx.store.OnAudit != nil {
		return tx.store.OnAudit(tx.Txn, ev)
	}
	return nil
}

// After registers f to run once the transaction has committed.
func (tx *Tx) After(f func()) { tx.after = append(tx.after, f) }

// OnAbort registers f to run if the transaction is discarded; it undoes
// in-memory effects a commit function made before the commit.
func (tx *Tx) OnAbort(f func()) { tx.onAbort = append(tx.onAbort, f) }

type commitReq struct {
	fn   func(tx *Tx) error
	err  error
	done chan struct{}
}

// OpenStore opens (or creates) the database in dir. Writes are synced to disk
// before Update returns.
func OpenStore(dir string, log zerolog.Logger) (*Store, error) {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(badgerLogger{log}).
		WithNumVersionsToKeep(1).
		// A relay's working set is small; Badger's defaults (64 MiB
		// memtables, 256 MiB block cache) would dominate the RSS budget.
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		// Bodies (4–100 KB) go to the value log: kept in the LSM tree
		// they were rewritten by every flush and compaction, which cost
		// CPU and hundreds of MB of transient heap (docs/benchmarks.md).
		WithValueThreshold(1024).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		WithValueLogFileSize(128 << 20).
		WithNumCompactors(2).
		// All writes come from the committer: there is nothing to conflict.
		WithDetectConflicts(false)
	key, err := storeKey(dir, log)
	if err != nil {
		return nil, err
	}
	if key != nil {
		opts = opts.WithEncryptionKey(key)
	}
	db, err := badger.Open(opts)
	if err != nil {
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			if key == nil {
				return nil, fmt.Errorf("queue: open database %s: it is encrypted and its key file %s is missing (restore it from the backup of the data directory): %w", dir, dir+".key", err)
			}
			return nil, fmt.Errorf("queue: open database %s: %s is not the key it was encrypted with: %w", dir, dir+".key", err)
		}
		return nil, fmt.Errorf("queue: open database %s: %w", dir, err)
	}
	s := &Store{
		DB:   db,
		log:  log,
		reqs: make(chan *commitReq, 1024),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go s.committer()
	go s.valueLogGC(10 * time.Minute)
	return s, nil
}

// valueLogGC reclaims value-log space held by deleted and expired bodies;
// Badger does not do it on its own.
func (s *Store) valueLogGC(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		for i := 0; i < 16; i++ { // each call rewrites at most one file
			select {
			case <-s.stop:
				return
			default:
			}
			if err := s.DB.RunValueLogGC(0.5); err != nil {
				if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
					s.log.Warn().Err(err).Msg("value log GC")
				}
				break
			}
		}
	}
}

// storeKey returns the database's encryption key, kept in dir+".key".
// Queued bodies hold live reset links until delivery; encrypted at rest,
// they never appear in the database files, a backup or a disk image of
// the data directory without the key. A new database gets a new key; an
// existing database without one (made before encryption) stays readable,
// unencrypted, with a warning.
func storeKey(dir string, log zerolog.Logger) ([]byte, error) {
	path := dir + ".key"
	b, err := os.ReadFile(path)
	if err == nil {
		key, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(key) != 32 {
			return nil, fmt.Errorf("queue: %s: want 64 hex digits (a 256-bit key)", path)
		}
		return key, nil
	}
	if !os.IsNotExist(err) {
		return nil, fmt.Errorf("queue: database key: %w", err)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		log.Warn().Str("dir", dir).Msg("database has no encryption key file: it was created unencrypted and stays so; queued message bodies are stored in clear")
		return nil, nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("queue: database key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("queue: database key: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("queue: database key: %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return nil, fmt.Errorf("queue: database key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("queue: database key: %w", err)
	}
	return key, nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// ErrClosed is returned by Update after Close.
var ErrClosed = errors.New("queue: store closed")

// Update runs fn in the next group-commit batch and returns once the batch is
// durably committed (or failed). fn may be run more than once if another
// function in its batch fails; it must have no side effects other than
// through tx (use tx.After and tx.OnAbort for in-memory state).
func (s *Store) Update(fn func(tx *Tx) error) error {
	r := &commitReq{fn: fn, done: make(chan struct{})}
	select {
	case s.reqs <- r:
	case <-s.stop:
		return ErrClosed
	}
	<-r.done
	return r.err
}

// maxBatch bounds one transaction; Badger also splits on ErrTxnTooBig.
const maxBatch = 512

func (s *Store) committer() {
	defer close(s.done)
	for {
		var first *commitReq
		select {
		case first = <-s.reqs:
		case <-s.stop:
			// Fail what is still waiting, so no caller hangs.
			for {
				select {
				case r := <-s.reqs:
					r.err = ErrClosed
					close(r.done)
				default:
					return
				}
			}
		}
		batch := []*commitReq{first}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		s.commitBatch(batch)
	}
}

// commitBatch commits the functions of batch in one transaction. A function
// that fails is answered with its error and the rest of the batch is run
// again without it, so one bad request never costs the others their write.
func (s *Store) commitBatch(batch []*commitReq) {
	for len(batch) > 0 {
		n, err := s.tryBatch(batch)
		switch {
		case err == nil:
			batch = batch[n:]
		case n == 0:
			// The first function alone failed (or alone is too big).
			batch[0].err = err
			close(batch[0].done)
			batch = batch[1:]
		default:
			// Commit the n functions before the one that could not fit or
			// failed, then go on from there.
			if _, err2 := s.tryBatch(batch[:n]); err2 != nil {
				for _, r := range batch[:n] {
					r.err = err2
					close(r.done)
				}
			}
			batch = batch[n:]
		}
	}
}

// tryBatch runs batch in one transaction. On success it answers every request
// and returns len(batch), nil. On failure of function i it discards the
// transaction and returns i and the error, answering nobody.
func (s *Store) tryBatch(batch []*commitReq) (int, error) {
	var mark audit.Mark
	if s.Audit != nil {
		mark = s.Audit.Mark()
	}
	txn := s.DB.NewTransaction(true)
	txs := make([]*Tx, 0, len(batch))
	abort := func() {
		txn.Discard()
		for i := len(txs) - 1; i >= 0; i-- {
			for j := len(txs[i].onAbort) - 1; j >= 0; j-- {
				txs[i].onAbort[j]()
			}
		}
		if s.Audit != nil {
			s.Audit.Rollback(mark)
		}
	}
	for i, r := range batch {
		tx := &Tx{Txn: txn, store: s}
		txs = append(txs, tx)
		if err := r.fn(tx); err != nil {
			abort()
			return i, err
		}
	}
	if err := txn.Commit(); err != nil {
		abort()
		if len(batch) == 1 {
			return 0, fmt.Errorf("queue: commit: %w", err)
		}
		// Try again one by one: this is rare (disk errors), and it tells
		// each caller its own fate.
		return len(batch) / 2, fmt.Errorf("queue: commit: %w", err)
	}
	s.mu.Lock()
	s.batches++
	s.writes += int64(len(batch))
	s.mu.Unlock()
	for i, r := range batch {
		for _, f := range txs[i].after {
			f()
		}
		close(r.done)
	}
	return len(batch), nil
}

// BatchStats returns how many batches were committed and how many functions
// they held (writes/batches is the group-commit factor).
func (s *Store) BatchStats() (batches, writes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.batches, s.writes
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(txn *badger.Txn) error) error { return s.DB.View(fn) }

// Close stops the committer and closes the database.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		err = s.DB.Close()
	})
	return err
}

// badgerLogger sends Badger's own messages to zerolog at debug level (its
// info lines are noisy compaction chatter), warnings and errors as such.
type badgerLogger struct{ l zerolog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error().Str("component", "badger").Msgf(f, a...)
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn().Str("component", "badger").Msgf(f, a...)
}
func (b badgerLogger) Infof(f string, a ...any)  { b.l.Debug().Str("component", "badger").Msgf(f, a...) }
func (b badgerLogger) Debugf(f string, a ...any) {}

// ttlOrNone is a helper for entries that expire.
func entry(key, val []byte, ttl time.Duration) *badger.Entry {
	e := badger.NewEntry(key, val)
	if ttl > 0 {
		e = e.WithTTL(ttl)
	}
	return e
}
