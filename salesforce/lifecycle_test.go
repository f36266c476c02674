package salesforce_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce"
	"github.com/latchkey/latchkey/salesforce/sftest"
)

const lcObj, lcExt = "Latchkey_Reset__c", "Latchkey_Id__c"

// lcEnv is a real Badger store with the audit trail, the lifecycle hooked
// into its transactions as the relay does, and the fake org.
type lcEnv struct {
	t     *testing.T
	sf    *sftest.Server
	store *queue.Store
	lc    *salesforce.Lifecycle
	seq   atomic.Int64
}

func newLCEnv(t *testing.T, edit func(*salesforce.LifecycleConfig)) *lcEnv {
	t.Helper()
	return newLCEnvOn(t, sftest.Start(t, sftest.Options{}), edit)
}

// newLCEnvOn is an lcEnv reporting to sf: several are the nodes of a
// cluster reporting to one org.
func newLCEnvOn(t *testing.T, sf *sftest.Server, edit func(*salesforce.LifecycleConfig)) *lcEnv {
	t.Helper()
	st, err := queue.OpenStore(t.TempDir(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if st.Audit, err = audit.Open(st.DB, []byte("0123456789abcdef0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	cfg := salesforce.DefaultLifecycleConfig()
	cfg.Enabled, cfg.Interval, cfg.SlowInterval = true, 10*time.Millisecond, 200*time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	lc := salesforce.NewLifecycle(st.DB, newClient(t, sf, nil), cfg, zerolog.Nop())
	// As the relay does: the worker writes through the committer.
	lc.Update = func(fn func(txn *badger.Txn) error) error {
		return st.Update(func(tx *queue.Tx) error { return fn(tx.Txn) })
	}
	st.OnAudit = lc.Record
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { lc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	return &lcEnv{t: t, sf: sf, store: st, lc: lc}
}

// newID returns a fresh item id.
func (e *lcEnv) newID() string {
	return queue.ItemID(queue.NewMsgID(time.Now().Add(time.Duration(e.seq.Add(1))*time.Millisecond)), 0)
}

// events commits the events of item id, one transaction each, as the queue
// does.
func (e *lcEnv) events(id string, evs ...*audit.Event) {
	e.t.Helper()
	for _, ev := range evs {
		ev.QueueID, ev.Class = id, "reset"
		if ev.MessageID == "" {
			ev.MessageID = "<" + id + "@sfdc.example>"
		}
		if err := e.store.Update(func(tx *queue.Tx) error { return tx.Audit(ev) }); err != nil {
			e.t.Fatal(err)
		}
	}
	e.lc.Wake()
}

func queuedEv(rcpt string, at time.Time) *audit.Event {
	return &audit.Event{Time: at, Type: audit.Queued, Recipient: rcpt,
		Fields: map[string]string{"deadline": at.Add(30 * time.Minute).UTC().Format(time.RFC3339)}}
}

func (e *lcEnv) record(id string) sftest.Record { return e.sf.ByExternalID(lcObj, lcExt, id) }

func (e *lcEnv) settle() {
	e.t.Helper()
	waitFor(e.t, "no pending reset records", func() bool { return e.lc.Stats().Pending == 0 })
}

// A delivered reset is one record with its request, send and delivery; a
// reset that bounced, went to the backup address and was delivered is the
// same record with both.
func TestLifecycleRecords(t *testing.T) {
	e := newLCEnv(t, nil)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	plain, backup := e.newID(), e.newID()
	e.events(plain, queuedEv("jane@example.org", t0),
		&audit.Event{Time: t0.Add(time.Second), Type: audit.Attempt, Recipient: "jane@example.org"},
		&audit.Event{Time: t0.Add(2 * time.Second), Type: audit.Delivered, Recipient: "jane@example.org"})
	e.events(backup, queuedEv("joe@example.org", t0),
		&audit.Event{Time: t0.Add(time.Second), Type: audit.Attempt, Recipient: "joe@example.org"},
		&audit.Event{Time: t0.Add(time.Second), Type: audit.Bounced, Recipient: "joe@example.org", Fields: map[string]string{
			"hard": "true", "permanent": "true", "status": "5.1.1", "diagnostic": "550 5.1.1 <joe@example.org>: User unknown"}},
		&audit.Event{Time: t0.Add(time.Second), Type: audit.RetriedBackup, Recipient: "joe.home@backup.example",
			Fields: map[string]string{"original": "joe@example.org"}},
		&audit.Event{Time: t0.Add(3 * time.Second), Type: audit.Attempt, Recipient: "joe.home@backup.example"},
		&audit.Event{Time: t0.Add(4 * time.Second), Type: audit.Delivered, Recipient: "joe.home@backup.example"})
	e.settle()

	if n := len(e.sf.Records(lcObj)); n != 2 {
		t.Fatalf("%d records, want 2", n)
	}
	ts := func(d time.Duration) string { return t0.Add(d).UTC().Format("2006-01-02T15:04:05.000Z") }
	r := e.record(plain)
	for k, want := range map[string]any{"Status__c": "Delivered", "Recipient__c": "jane@example.org", "Class__c": "reset",
		"Requested_At__c": ts(0), "Sent_At__c": ts(time.Second), "Delivered_At__c": ts(2 * time.Second),
		"Delivery_Seconds__c": 2.0, "Attempts__c": 1.0, "Message_Id__c": plain[:16], "Token_Expires_At__c": ts(30 * time.Minute)} {
		if r[k] != want {
			t.Errorf("delivered record %s = %v, want %v", k, r[k], want)
		}
	}
	r = e.record(backup)
	for k, want := range map[string]any{"Status__c": "Delivered", "Recipient__c": "joe@example.org", "Bounce_Type__c": "Hard",
		"Bounced_At__c": ts(time.Second), "Backup_Used__c": true, "Backup_Address__c": "j***@backup.example",
		"Delivered_At__c": ts(4 * time.Second), "Sent_At__c": ts(time.Second), "Attempts__c": 2.0,
		"Bounce_Reason__c": "5.1.1 550 5.1.1 <joe@example.org>: User unknown"} {
		if r[k] != want {
			t.Errorf("bounced-then-backup record %s = %v, want %v", k, r[k], want)
		}
	}
	// A repeated click does not move the status back; completion wins.
	e.events(plain, &audit.Event{Type: audit.Completed, Time: t0.Add(5 * time.Second)},
		&audit.Event{Type: audit.Clicked, Time: t0.Add(6 * time.Second)})
	e.settle()
	r = e.record(plain)
	if r["Status__c"] != "Completed" || r["Completed_At__c"] != ts(5*time.Second) || r["Clicked_At__c"] != ts(6*time.Second) {
		t.Errorf("after completion and click: %v", r)
	}
	if n := len(e.sf.Records(lcObj)); n != 2 {
		t.Errorf("%d records after more events, want still 2", n)
	}
}

// Cluster mode: a survivor adopts a reset from a dead node and delivers it;
// its record keeps what the dead node reported and gets the delivery, and
// the dead node, back, hands the item over (dropped by cluster) without
// reporting it dropped over the adopter's delivery.
func TestLifecycleAdoptedReset(t *testing.T) {
	a := newLCEnv(t, nil)
	b := newLCEnvOn(t, a.sf, nil)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	id := a.newID()
	a.events(id, queuedEv("jane@example.org", t0),
		&audit.Event{Time: t0.Add(time.Second), Type: audit.Attempt, Recipient: "jane@example.org"},
		&audit.Event{Time: t0.Add(2 * time.Second), Type: audit.Deferred, Recipient: "jane@example.org"})
	a.settle()
	b.events(id, &audit.Event{Time: t0.Add(20 * time.Second), Type: audit.Adopted, Recipient: "jane@example.org",
		Fields: map[string]string{"from_node": "n1", "accepted": t0.UTC().Format(time.RFC3339Nano),
			"deadline": t0.Add(30 * time.Minute).UTC().Format(time.RFC3339)}},
		&audit.Event{Time: t0.Add(21 * time.Second), Type: audit.Attempt, Recipient: "jane@example.org"},
		&audit.Event{Time: t0.Add(22 * time.Second), Type: audit.Delivered, Recipient: "jane@example.org"})
	b.settle()
	a.events(id, &audit.Event{Time: t0.Add(40 * time.Second), Type: audit.Dropped, Recipient: "jane@example.org",
		Fields: map[string]string{"by": "cluster", "reason": "adopted by node n2 while this node was down; delivered there"}})
	a.settle()
	if n := len(a.sf.Records(lcObj)); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
	ts := func(d time.Duration) string { return t0.Add(d).UTC().Format("2006-01-02T15:04:05.000Z") }
	r := a.record(id)
	for k, want := range map[string]any{"Status__c": "Delivered", "Recipient__c": "jane@example.org", "Class__c": "reset",
		// Sent_At and Attempts are the adopter's: it does not know the
		// dead node's attempts (documented).
		"Requested_At__c": ts(0), "Sent_At__c": ts(21 * time.Second), "Attempts__c": 1.0, "Delivered_At__c": ts(22 * time.Second),
		"Delivery_Seconds__c": 22.0, "Message_Id__c": id[:16], "Token_Expires_At__c": ts(30 * time.Minute)} {
		if r[k] != want {
			t.Errorf("adopted reset's record %s = %v, want %v", k, r[k], want)
		}
	}
}

// An outage with 500 resets queued loses nothing and duplicates nothing:
// afterwards there are 500 records, each with its whole life, in order.
func TestLifecycleOutage(t *testing.T) {
	e := newLCEnv(t, nil)
	e.sf.SetDown(true)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	ids := make([]string, 500)
	for i := range ids {
		ids[i] = e.newID()
		e.events(ids[i], queuedEv(fmt.Sprintf("u%d@example.org", i), t0),
			&audit.Event{Time: t0.Add(time.Second), Type: audit.Attempt},
			&audit.Event{Time: t0.Add(2 * time.Second), Type: audit.Deferred})
	}
	waitFor(t, "failed calls during the outage", func() bool { return e.lc.Stats().LastError != "" })
	for _, id := range ids { // the life goes on while Salesforce is down
		e.events(id, &audit.Event{Time: t0.Add(3 * time.Second), Type: audit.Attempt},
			&audit.Event{Time: t0.Add(4 * time.Second), Type: audit.Delivered})
	}
	if st := e.lc.Stats(); st.Pending != 500 || st.Sent != 0 {
		t.Fatalf("during the outage: %+v, want 500 pending, none sent", st)
	}
	e.sf.SetDown(false)
	e.settle()
	recs := e.sf.Records(lcObj)
	if len(recs) != 500 {
		t.Fatalf("%d records after the outage, want 500", len(recs))
	}
	seen := map[any]bool{}
	for _, r := range recs {
		if seen[r[lcExt]] {
			t.Errorf("two records for %v", r[lcExt])
		}
		seen[r[lcExt]] = true
		if r["Status__c"] != "Delivered" || r["Attempts__c"] != 2.0 || r["Delivered_At__c"] == nil || r["Requested_At__c"] == nil {
			t.Errorf("record %v: %v", r[lcExt], r)
		}
	}
	// 500 records in batches of 200: 3 calls once Salesforce was back.
	if st := e.lc.Stats(); st.Sent != 500 {
		t.Errorf("%d writes accepted, want 500 (one per record)", st.Sent)
	}
}

// An expired session is refreshed once and the call retried; a locked row
// is sent again next round; a record Salesforce refuses for good is kept
// with the reason, not dropped silently.
func TestLifecycleErrors(t *testing.T) {
	e := newLCEnv(t, nil)
	t0 := time.Now().Add(-time.Minute)
	a := e.newID()
	e.events(a, queuedEv("a@example.org", t0))
	e.settle()
	tokens := e.sf.TokenRequests()
	e.sf.ExpireTokens()
	e.events(a, &audit.Event{Time: t0.Add(time.Second), Type: audit.Delivered})
	e.settle()
	if got := e.sf.TokenRequests() - tokens; got != 1 {
		t.Errorf("%d token requests after the session expired, want 1", got)
	}
	if r := e.record(a); r["Status__c"] != "Delivered" {
		t.Errorf("after a refresh: %v", r)
	}

	e.sf.FailRecords("UNABLE_TO_LOCK_ROW", 1)
	b := e.newID()
	e.events(b, queuedEv("b@example.org", t0))
	e.settle()
	if r := e.record(b); r == nil || r["Status__c"] != "Accepted" {
		t.Errorf("a locked row was not sent again: %v", r)
	}

	e.sf.FailRecords("DUPLICATE_VALUE", 1)
	c := e.newID()
	e.events(c, queuedEv("c@example.org", t0))
	e.settle()
	dead, err := e.lc.DeadRecords()
	if err != nil || len(dead) != 1 || dead[0].ID != c || !strings.Contains(dead[0].Error, "DUPLICATE_VALUE") {
		t.Errorf("dead records: %+v %v", dead, err)
	}
	if st := e.lc.Stats(); st.Dead != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// Near the org's daily limit the reporter slows down and says so; nothing
// is dropped.
func TestLifecycleLimit(t *testing.T) {
	e := newLCEnv(t, nil)
	e.sf.SetAPIUsage(95000) // of 100000, with a 10% reserve
	t0 := time.Now().Add(-time.Minute)
	ids := []string{e.newID(), e.newID()}
	e.events(ids[0], queuedEv("a@example.org", t0))
	waitFor(t, "throttled", func() bool { return e.lc.Stats().Throttled })
	e.events(ids[1], queuedEv("b@example.org", t0))
	e.settle()
	for _, id := range ids {
		if e.record(id) == nil {
			t.Errorf("record %s not written while throttled", id)
		}
	}
	if !e.lc.Stats().Throttled {
		t.Error("throttle lifted while usage is still above the reserve")
	}
}

// With tasks on, a delivered reset and a bounced one each get one completed
// Task on the Contact's timeline, linked to the reset record; a create
// whose answer is lost is looked up before it is sent again.
func TestLifecycleTimelineTasks(t *testing.T) {
	e := newLCEnv(t, func(c *salesforce.LifecycleConfig) { c.Tasks = true })
	contact := e.sf.AddContact("jane@example.org", nil)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	received := func(id string) *audit.Event {
		return &audit.Event{Time: t0, Type: audit.Received, Fields: map[string]string{"queue_id": id[:16], "sfdc_entity": contact}}
	}
	a, b := e.newID(), e.newID()
	for _, id := range []string{a, b} {
		// The received event has no queue item id: commit it as the relay does.
		ev := received(id)
		ev.Class = "reset"
		if err := e.store.Update(func(tx *queue.Tx) error { return tx.Audit(ev) }); err != nil {
			t.Fatal(err)
		}
	}
	e.events(a, queuedEv("jane@example.org", t0), &audit.Event{Time: t0.Add(time.Second), Type: audit.Delivered})
	waitFor(t, "a's Task", func() bool { return len(e.sf.Records("Task")) == 1 })
	// The answer to b's Task create is lost after Salesforce made it.
	e.sf.Inject(sftest.Fault{Kind: sftest.DropAfter, Count: 1, Method: "POST", PathContains: "/composite/sobjects"})
	e.events(b, queuedEv("jane@example.org", t0), &audit.Event{Time: t0.Add(time.Second), Type: audit.Bounced,
		Fields: map[string]string{"hard": "true", "permanent": "true", "status": "5.1.1", "diagnostic": "550 5.1.1 unknown"}})
	waitFor(t, "b's Task confirmed", func() bool {
		r := e.record(b)
		return r != nil && len(e.sf.Records("Task")) >= 2 && e.lc.Stats().Pending == 0 && !e.tasksOpen()
	})
	tasks := e.sf.Records("Task")
	if len(tasks) != 2 {
		t.Fatalf("%d Tasks, want 2 (one per reset, none twice): %v", len(tasks), tasks)
	}
	for i, id := range []string{a, b} {
		tk, rec := tasks[i], e.record(id)
		if tk["WhoId"] != contact || tk["WhatId"] != rec["Id"] || tk["Status"] != "Completed" ||
			!strings.Contains(tk["Subject"].(string), "[latchkey:"+id+"-") {
			t.Errorf("Task %d: %v (record %v)", i, tk, rec["Id"])
		}
	}
	if r := e.record(a); r["Contact__c"] != contact {
		t.Errorf("record not linked to the Contact: %v", r)
	}
}

// tasksOpen reports a Task still wanted or unconfirmed.
func (e *lcEnv) tasksOpen() bool {
	open := false
	e.store.DB.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("sfl/t/")})
		defer it.Close()
		it.Rewind()
		open = it.Valid()
		return nil
	})
	return open
}
