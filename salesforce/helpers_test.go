package salesforce_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/latchkey/latchkey/salesforce"
	"github.com/latchkey/latchkey/salesforce/sftest"
)

// newClient returns a client-credentials client for fake, after edit (if
// any) changes its configuration.
func newClient(t *testing.T, fake *sftest.Server, edit func(*salesforce.Config)) *salesforce.Client {
	t.Helper()
	cfg, err := fake.ClientConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 5 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	c, err := salesforce.New(cfg, &http.Client{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// openDB opens a Badger database closed at cleanup, after the outbox
// workers (registered later) have stopped.
func openDB(t *testing.T, dir string) *badger.DB {
	t.Helper()
	db := openDBNoCleanup(t, dir)
	t.Cleanup(func() { db.Close() })
	return db
}

func openDBNoCleanup(t *testing.T, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithMemTableSize(8 << 20).
		WithValueThreshold(64 << 10).WithValueLogFileSize(8 << 20).WithNumCompactors(2).WithBlockCacheSize(1 << 20))
	if err != nil {
		t.Fatalf("badger: %v", err)
	}
	return db
}

// waitFor polls cond until it holds; the deadline only stops a hung test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fastOpts makes the outbox retry within milliseconds.
func fastOpts(o salesforce.OutboxOptions) salesforce.OutboxOptions {
	o.InitialBackoff = time.Millisecond
	o.MaxBackoff = 5 * time.Millisecond
	o.Poll = 20 * time.Millisecond
	return o
}

// runOutbox runs ob until the returned stop is called (or the test ends).
func runOutbox(t *testing.T, ob *salesforce.Outbox) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ob.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func put(t *testing.T, db *badger.DB, ob *salesforce.Outbox, e salesforce.Escalation) {
	t.Helper()
	if err := db.Update(func(txn *badger.Txn) error { return ob.Put(txn, e) }); err != nil {
		t.Fatalf("Put: %v", err)
	}
	ob.Wake()
}

func escalation(id, rcpt string) salesforce.Escalation {
	return salesforce.Escalation{
		ID: id, QueueID: "q-" + id, Class: "reset", Recipient: rcpt, Trigger: salesforce.TriggerHardBounce,
		Reason: "mailbox does not exist", Status: "5.1.1", RemoteMTA: "mx.example.test",
		Diagnostic: "550 5.1.1 <" + rcpt + ">: Recipient address rejected: User unknown",
		MessageID:  "<abc." + id + "@sfdc.net>",
		AcceptedAt: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC),
		FailedAt:   time.Date(2026, 5, 1, 10, 0, 3, 0, time.UTC),
	}
}
