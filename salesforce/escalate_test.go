package salesforce_test

import (
	"context"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/salesforce"
	"github.com/latchkey/latchkey/salesforce/sftest"
)

func runOne(t *testing.T, fake *sftest.Server, c *salesforce.Client, e salesforce.Escalation) (*outcomes, *salesforce.Outbox) {
	t.Helper()
	db := openDB(t, t.TempDir())
	out := &outcomes{}
	ob := salesforce.NewOutbox(db, c, out.opts())
	stop := runOutbox(t, ob)
	put(t, db, ob, e)
	waitFor(t, "escalation "+e.ID+" done", func() bool { _, ok := out.doneID(e.ID); return ok })
	stop()
	return out, ob
}

// After the backup look-up at the bounce, the escalation costs two more API
// calls: the Case look-up by reference and one Composite that opens the
// Case, records the bounce and adds the Task.
func TestEscalationCalls(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{CustomFields: map[string][]string{"Contact": {"Backup_Email__c"}}})
	contact := fake.AddContact("jane@example.com", nil)
	c := newClient(t, fake, func(cfg *salesforce.Config) {
		cfg.CreateTask = true
		cfg.BackupEmailFields = []string{"Backup_Email__c"}
	})
	before := fake.APICalls()
	if _, err := c.BackupAddress(context.Background(), "jane@example.com"); err != salesforce.ErrNotFound {
		t.Fatalf("BackupAddress: %v", err)
	}
	runOne(t, fake, c, escalation("esc-calls", "jane@example.com"))
	if n := fake.APICalls() - before; n != 3 {
		t.Errorf("backup look-up and escalation cost %d API calls, want 3 (Contact query, Case look-up, Composite)", n)
	}
	cases, tasks := fake.Cases(), fake.Records("Task")
	if len(cases) != 1 || len(tasks) != 1 || tasks[0]["WhatId"] != cases[0]["Id"] || tasks[0]["WhoId"] != contact ||
		!strings.Contains(tasks[0]["Subject"].(string), "[latchkey:esc-calls]") {
		t.Errorf("cases %v tasks %v", cases, tasks)
	}
	if r := fake.Get(contact); r["EmailBouncedReason"] == nil || cases[0]["ContactId"] != contact {
		t.Errorf("contact %v case %v", r, cases[0])
	}
}

// The Composite's answer is lost after Salesforce did everything: the retry
// finds the Case and the Task by their reference and creates neither again.
func TestEscalationReplayCreatesNothingTwice(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	fake.AddContact("jane@example.com", nil)
	c := newClient(t, fake, func(cfg *salesforce.Config) { cfg.CreateTask = true })
	fake.Inject(sftest.Fault{Kind: sftest.DropAfter, Count: 1, Method: "POST", PathContains: "/sobjects/Task"})
	runOne(t, fake, c, escalation("esc-replay", "jane@example.com"))
	if cs, ts := fake.Cases(), fake.Records("Task"); len(cs) != 1 || len(ts) != 1 {
		t.Errorf("%d Cases and %d Tasks after a lost answer, want 1 and 1", len(cs), len(ts))
	}
	// The Task failed alone inside the Composite (the Case stood): the
	// retry creates the Task once.
	fake2 := sftest.Start(t, sftest.Options{})
	fake2.AddContact("joe@example.com", nil)
	c2 := newClient(t, fake2, func(cfg *salesforce.Config) { cfg.CreateTask = true })
	fake2.Inject(sftest.Fault{Kind: sftest.ServerError, Count: 1, Method: "POST", PathContains: "/sobjects/Task"})
	runOne(t, fake2, c2, escalation("esc-task", "joe@example.com"))
	if cs, ts := fake2.Cases(), fake2.Records("Task"); len(cs) != 1 || len(ts) != 1 || ts[0]["WhatId"] != cs[0]["Id"] {
		t.Errorf("after a failed Task: cases %v tasks %v", cs, ts)
	}
}

// A Case that a LIKE query returns but whose Subject does not carry the
// reference is not latchkey's: a new one is opened.
func TestCaseLookupChecksTheReference(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{LooseLike: true})
	c := newClient(t, fake, nil)
	// "_" in the reference is a LIKE wildcard the loose org does not escape.
	other, err := c.CreateCase(context.Background(), salesforce.CaseRequest{Ref: "escX1", Subject: "someone else's"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.CreateCase(context.Background(), salesforce.CaseRequest{Ref: "esc_1", Subject: "ours"})
	if err != nil {
		t.Fatal(err)
	}
	if id == other || len(fake.Cases()) != 2 {
		t.Errorf("the Case of another reference was reused: %s %v", id, fake.Cases())
	}
	again, err := c.CreateCase(context.Background(), salesforce.CaseRequest{Ref: "esc_1", Subject: "ours"})
	if err != nil || again != id {
		t.Errorf("the retry did not find its own Case: %s %v, want %s", again, err, id)
	}
}

// A record-only escalation (the reset reached the backup address) writes
// the bounce on the Contact and opens no Case.
func TestRecordOnlyEscalation(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	contact := fake.AddContact("jane@example.com", nil)
	c := newClient(t, fake, nil)
	e := escalation("esc-rec", "jane@example.com")
	e.Trigger, e.RecordOnly = salesforce.TriggerBounceRecord, true
	runOne(t, fake, c, e)
	if r := fake.Get(contact); r["EmailBouncedReason"] == nil || r["EmailBouncedDate"] == nil {
		t.Errorf("bounce not recorded: %v", r)
	}
	if n := len(fake.Cases()); n != 0 {
		t.Errorf("%d Cases for a reset that reached its backup", n)
	}
}
