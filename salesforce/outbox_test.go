package salesforce_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/latchkey/latchkey/salesforce"
	"github.com/latchkey/latchkey/salesforce/sftest"
)

// outcomes collects the outbox callbacks.
type outcomes struct {
	mu   sync.Mutex
	done map[string]string
	dead map[string]error
}

func (o *outcomes) opts() salesforce.OutboxOptions {
	o.done, o.dead = map[string]string{}, map[string]error{}
	return fastOpts(salesforce.OutboxOptions{
		OnDone: func(e salesforce.Escalation, id string) { o.mu.Lock(); o.done[e.ID] = id; o.mu.Unlock() },
		OnDead: func(e salesforce.Escalation, _ string, err error) { o.mu.Lock(); o.dead[e.ID] = err; o.mu.Unlock() },
	})
}

func (o *outcomes) doneID(id string) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	v, ok := o.done[id]
	return v, ok
}

func (o *outcomes) deadErr(id string) (error, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	v, ok := o.dead[id]
	return v, ok
}

func TestOutboxCaseAndBounceFields(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	contact := fake.AddContact("jane@example.com", nil)
	c := newClient(t, fake, func(cfg *salesforce.Config) { cfg.CreateTask = true })
	db := openDB(t, t.TempDir())
	var out outcomes
	ob := salesforce.NewOutbox(db, c, out.opts())
	runOutbox(t, ob)
	e := escalation("esc-1", "jane@example.com")
	put(t, db, ob, e)
	waitFor(t, "escalation done", func() bool { _, ok := out.doneID("esc-1"); return ok })

	caseID, _ := out.doneID("esc-1")
	cs := fake.Cases()
	if len(cs) != 1 || cs[0]["Id"] != caseID {
		t.Fatalf("cases = %v, want one with id %s", cs, caseID)
	}
	k := cs[0]
	for field, want := range map[string]string{
		"Priority": "High", "Origin": "Email", "Status": "New", "ContactId": contact, "SuppliedEmail": "jane@example.com",
	} {
		if k[field] != want {
			t.Errorf("Case.%s = %v, want %q", field, k[field], want)
		}
	}
	subj := k["Subject"].(string)
	for _, want := range []string{"Password reset undeliverable:", "hard bounce", "jane@example.com", "[latchkey:esc-1]"} {
		if !strings.Contains(subj, want) {
			t.Errorf("Subject %q lacks %q", subj, want)
		}
	}
	desc := k["Description"].(string)
	for _, want := range []string{"5.1.1", "mailbox does not exist", "mx.example.test", "Recipient address rejected: User unknown",
		"2026-05-01T10:00:00Z", "2026-05-01T10:00:03Z", "q-esc-1", "<abc.esc-1@sfdc.net>"} {
		if !strings.Contains(desc, want) {
			t.Errorf("Description lacks %q:\n%s", want, desc)
		}
	}
	person := fake.Get(contact)
	if r, _ := person["EmailBouncedReason"].(string); !strings.Contains(r, "5.1.1") || !strings.Contains(r, "User unknown") {
		t.Errorf("EmailBouncedReason = %q", r)
	}
	if person["EmailBouncedDate"] != "2026-05-01T10:00:03.000Z" || person["IsEmailBounced"] != true {
		t.Errorf("EmailBouncedDate = %v, IsEmailBounced = %v", person["EmailBouncedDate"], person["IsEmailBounced"])
	}
	tasks := fake.Records("Task")
	if len(tasks) != 1 || tasks[0]["WhatId"] != caseID || tasks[0]["WhoId"] != contact {
		t.Errorf("tasks = %v, want one on the Case and the Contact", tasks)
	}
	done, err := ob.List(salesforce.StateDone)
	if err != nil || len(done) != 1 || done[0].CaseID != caseID || done[0].Attempts != 0 {
		t.Errorf("done = %+v, %v", done, err)
	}
	if p, d := ob.Stats(); p != 0 || d != 0 {
		t.Errorf("Stats = %d, %d; want 0, 0", p, d)
	}
}

func TestOutboxPutIsTransactionalAndIdempotent(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	c := newClient(t, fake, nil)
	db := openDB(t, t.TempDir())
	ob := salesforce.NewOutbox(db, c, fastOpts(salesforce.OutboxOptions{}))
	// The caller's transaction fails: the escalation must not stay.
	boom := errors.New("boom")
	err := db.Update(func(txn *badger.Txn) error {
		if err := ob.Put(txn, escalation("rolled-back", "a@example.com")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	put(t, db, ob, escalation("twice", "a@example.com"))
	put(t, db, ob, escalation("twice", "a@example.com"))
	if p, _ := ob.Stats(); p != 1 {
		t.Errorf("pending = %d, want 1", p)
	}
	for _, bad := range []salesforce.Escalation{escalation("", "a@example.com"), escalation("a b", "a@example.com"), escalation("ok", "not-an-address")} {
		if err := db.Update(func(txn *badger.Txn) error { return ob.Put(txn, bad) }); err == nil {
			t.Errorf("Put(%q, %q) accepted", bad.ID, bad.Recipient)
		}
	}
}

func TestOutboxRetriesFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault sftest.Fault
	}{
		{"403 limit", sftest.Fault{Kind: sftest.LimitExceeded, Count: 2}},
		{"500", sftest.Fault{Kind: sftest.ServerError, Count: 2, Method: "POST"}},
		{"dropped connection", sftest.Fault{Kind: sftest.Drop, Count: 2, Method: "POST", PathContains: "/sobjects/Case"}},
		// The Case is created but the answer is lost, as in a crash
		// between the POST and recording the id.
		{"dropped after create", sftest.Fault{Kind: sftest.DropAfter, Count: 1, Method: "POST", PathContains: "/sobjects/Case"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := sftest.Start(t, sftest.Options{})
			fake.AddContact("jane@example.com", nil)
			c := newClient(t, fake, nil)
			db := openDB(t, t.TempDir())
			var out outcomes
			ob := salesforce.NewOutbox(db, c, out.opts())
			fake.Inject(tc.fault)
			stop := runOutbox(t, ob)
			put(t, db, ob, escalation("esc-f", "jane@example.com"))
			waitFor(t, "escalation done", func() bool { _, ok := out.doneID("esc-f"); return ok })
			stop()
			id, _ := out.doneID("esc-f")
			if cs := fake.Cases(); len(cs) != 1 || cs[0]["Id"] != id {
				t.Errorf("cases = %v, want exactly one, %s", cs, id)
			}
			done, _ := ob.List(salesforce.StateDone)
			if len(done) != 1 || done[0].Attempts < 1 || done[0].LastError == "" {
				t.Errorf("done item = %+v, want the failed attempts recorded", done)
			}
		})
	}
}

func TestOutboxSurvivesRestartsWhileSalesforceIsDown(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	fake.AddContact("jane@example.com", nil)
	dir := t.TempDir()
	fake.SetDown(true)
	attempts := 0
	for restart := range 3 {
		db := openDBNoCleanup(t, dir)
		ob := salesforce.NewOutbox(db, newClient(t, fake, nil), fastOpts(salesforce.OutboxOptions{MaxAttempts: 100}))
		if restart == 0 {
			put(t, db, ob, escalation("esc-down", "jane@example.com"))
		}
		stop := runOutbox(t, ob)
		waitFor(t, "two more failed attempts", func() bool {
			items, err := ob.List(salesforce.StatePending)
			return err == nil && len(items) == 1 && items[0].Attempts >= attempts+2
		})
		stop()
		items, _ := ob.List(salesforce.StatePending)
		attempts = items[0].Attempts
		if !strings.Contains(items[0].LastError, "503") {
			t.Errorf("last error = %q, want the 503", items[0].LastError)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	fake.SetDown(false)
	db := openDB(t, dir)
	var out outcomes
	ob := salesforce.NewOutbox(db, newClient(t, fake, nil), out.opts())
	runOutbox(t, ob)
	waitFor(t, "escalation done after restart", func() bool { _, ok := out.doneID("esc-down"); return ok })
	if cs := fake.Cases(); len(cs) != 1 {
		t.Errorf("%d cases, want 1", len(cs))
	}
	done, _ := ob.List(salesforce.StateDone)
	if len(done) != 1 || done[0].Attempts < 6 {
		t.Errorf("done = %+v, want attempts carried over restarts (>= 6)", done)
	}
}

func TestOutboxDeadLetterAndRetry(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	fake.AddContact("jane@example.com", nil)
	c := newClient(t, fake, func(cfg *salesforce.Config) { cfg.MaxAttempts = 3 })
	db := openDB(t, t.TempDir())
	var out outcomes
	opts := out.opts()
	var retried []string
	opts.OnRetry = func(e salesforce.Escalation) { retried = append(retried, e.ID) }
	ob := salesforce.NewOutbox(db, c, opts)
	fake.SetDown(true)
	runOutbox(t, ob)
	put(t, db, ob, escalation("esc-dead", "jane@example.com"))
	waitFor(t, "dead letter", func() bool { _, ok := out.deadErr("esc-dead"); return ok })
	dead, err := ob.List(salesforce.StateDead)
	if err != nil || len(dead) != 1 || dead[0].Attempts != 3 {
		t.Fatalf("dead = %+v, %v; want one item after 3 attempts", dead, err)
	}
	if p, d := ob.Stats(); p != 0 || d != 1 {
		t.Errorf("Stats = %d, %d; want 0, 1", p, d)
	}
	if len(fake.Cases()) != 0 {
		t.Fatal("a Case exists while Salesforce was down")
	}
	fake.SetDown(false)
	if err := ob.Retry("esc-dead"); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(retried) != "[esc-dead]" {
		t.Errorf("OnRetry saw %v, want [esc-dead]", retried)
	}
	waitFor(t, "retried escalation done", func() bool { _, ok := out.doneID("esc-dead"); return ok })
	if len(fake.Cases()) != 1 {
		t.Errorf("%d cases, want 1", len(fake.Cases()))
	}
	if err := ob.Retry("esc-dead"); err == nil {
		t.Error("Retry of an item that is not dead succeeded")
	}
}

func TestOutboxPermanentErrorDeadLettersAtOnce(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	c := newClient(t, fake, func(cfg *salesforce.Config) { cfg.Case.Priority = "Urgent" })
	db := openDB(t, t.TempDir())
	var out outcomes
	ob := salesforce.NewOutbox(db, c, out.opts())
	runOutbox(t, ob)
	put(t, db, ob, escalation("esc-perm", "nobody@example.com"))
	waitFor(t, "dead letter", func() bool { _, ok := out.deadErr("esc-perm"); return ok })
	err, _ := out.deadErr("esc-perm")
	var ae *salesforce.APIError
	if !errors.As(err, &ae) || ae.Code != "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" {
		t.Errorf("dead with %v", err)
	}
	if dead, _ := ob.List(salesforce.StateDead); len(dead) != 1 || dead[0].Attempts != 1 {
		t.Errorf("dead = %+v, want one item after 1 attempt", dead)
	}
}

func TestOutboxRetriesBounceFieldsWithoutSecondCase(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	fake.AddContact("jane@example.com", nil)
	c := newClient(t, fake, nil)
	db := openDB(t, t.TempDir())
	var out outcomes
	ob := salesforce.NewOutbox(db, c, out.opts())
	// The Case is open when the PATCH fails: the retry must record the
	// bounce without opening another Case.
	fake.Inject(sftest.Fault{Kind: sftest.ServerError, Count: 1, Method: "PATCH"})
	runOutbox(t, ob)
	put(t, db, ob, escalation("esc-b", "jane@example.com"))
	waitFor(t, "done", func() bool { _, ok := out.doneID("esc-b"); return ok })
	if n := len(fake.Updates()); n != 1 {
		t.Errorf("%d updates, want 1 (retried after the 500)", n)
	}
	if n := len(fake.Cases()); n != 1 {
		t.Errorf("%d cases, want 1", n)
	}
}

// Cluster mode: an escalation another node took over is handed over, not
// sent: done, naming the node, without a Case or OnDone; Add reports
// whether an escalation was new.
func TestOutboxHandOver(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	c := newClient(t, fake, nil)
	db := openDB(t, t.TempDir())
	var out outcomes
	ob := salesforce.NewOutbox(db, c, out.opts())
	e := escalation("esc-handed", "jane@example.com")
	for i, want := range []bool{true, false} {
		var added bool
		err := db.Update(func(txn *badger.Txn) error {
			var err error
			added, err = ob.Add(txn, e)
			return err
		})
		if err != nil || added != want {
			t.Fatalf("Add #%d = %v, %v; want %v", i+1, added, err, want)
		}
	}
	if err := ob.HandOver("esc-handed", "n2"); err != nil {
		t.Fatal(err)
	}
	if err := ob.HandOver("esc-handed", "n2"); err == nil {
		t.Error("a second hand-over of an item no longer pending succeeded")
	}
	runOutbox(t, ob)
	ob.Wake()
	done, err := ob.List(salesforce.StateDone)
	if err != nil || len(done) != 1 || done[0].HandedTo != "n2" || done[0].CaseID != "" {
		t.Fatalf("done = %+v, %v; want esc-handed, handed to n2, no Case", done, err)
	}
	if p, d := ob.Stats(); p != 0 || d != 0 {
		t.Errorf("Stats = %d, %d; want 0, 0", p, d)
	}
	if len(fake.Cases()) != 0 {
		t.Errorf("a handed-over escalation opened a Case: %v", fake.Cases())
	}
	if _, ok := out.doneID("esc-handed"); ok {
		t.Error("OnDone called for a handed-over escalation")
	}
}
