package salesforce_test

import (
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/latchkey/latchkey/salesforce"
	"github.com/latchkey/latchkey/salesforce/sftest"
)

// An entry that cannot be read (a torn write, a value from a future version)
// must not hold up the escalations stored beside it.
func TestOutboxPoisonedEntryDoesNotBlockOthers(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	fake.AddContact("jane@example.com", nil)
	c := newClient(t, fake, nil)
	db := openDB(t, t.TempDir())
	var out outcomes
	ob := salesforce.NewOutbox(db, c, out.opts())
	if err := db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte("sfo/pending/aaa-poison"), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}
	runOutbox(t, ob)
	put(t, db, ob, escalation("esc-good", "jane@example.com"))
	waitFor(t, "the good escalation done", func() bool { _, ok := out.doneID("esc-good"); return ok })
	if n := len(fake.Cases()); n != 1 {
		t.Errorf("%d cases, want 1", n)
	}
}

// lookup_objects names objects as the operator wrote them; "contact" is the
// Contact object, and its Case must be linked to the Contact.
func TestOutboxLinksContactNamedInLowerCase(t *testing.T) {
	fake := sftest.Start(t, sftest.Options{})
	contact := fake.AddContact("jane@example.com", nil)
	c := newClient(t, fake, func(cfg *salesforce.Config) { cfg.LookupObjects = []string{"contact", "lead"} })
	db := openDB(t, t.TempDir())
	var out outcomes
	ob := salesforce.NewOutbox(db, c, out.opts())
	runOutbox(t, ob)
	put(t, db, ob, escalation("esc-lc", "jane@example.com"))
	waitFor(t, "escalation done", func() bool { _, ok := out.doneID("esc-lc"); return ok })
	cs := fake.Cases()
	if len(cs) != 1 || cs[0]["ContactId"] != contact {
		t.Errorf("cases = %v, want one linked to Contact %s", cs, contact)
	}
	if r := fake.Get(contact); r["EmailBouncedDate"] == nil {
		t.Errorf("bounce not recorded on the Contact: %v", r)
	}
}
