package relay

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce"
	"github.com/latchkey/latchkey/salesforce/sftest"
)

// A reset delivered at the backup address still tells Salesforce that the
// primary bounces (EmailBouncedReason/Date on the Contact), as the local
// suppression list does, and opens no Case.
func TestBackupDeliveryRecordsPrimaryBounce(t *testing.T) {
	sf := sftest.Start(t, sftest.Options{})
	contact := sf.AddContact("jane@dest.test", sftest.Record{"LastName": "Doe"})
	e := newEnv(t, envOpts{policy: fastPolicy, extra: sfSection(t, sf, nil), sink: smtpsink_opts(userUnknown("jane@dest.test"))})
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "bkrec", "X-LK-Backup-Email: jane.home@backup.test"))
	waitFor(t, "bounce recorded on the Contact", 10*time.Second, func() bool { return sf.Get(contact)["EmailBouncedDate"] != nil })
	if r := sf.Get(contact); !strings.Contains(fmt.Sprint(r["EmailBouncedReason"]), "5.1.1") {
		t.Errorf("Contact: %v", r)
	}
	// The record-only escalation is committed with the switch to the backup,
	// so Salesforce can hear of it before the backup delivery commits.
	delivered := func() bool {
		it := itemState(e, queue.ItemID(id, 0))
		return it != nil && it.State == queue.StateDelivered
	}
	waitFor(t, "the reset delivered", 10*time.Second, delivered)
	if it := itemState(e, queue.ItemID(id, 0)); it.Rcpt != "jane.home@backup.test" {
		t.Errorf("item %+v, want delivered to the backup", it)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(sf.Cases()); n != 0 {
		t.Errorf("%d Cases for a reset its user received", n)
	}
}

// Salesforce fails the backup look-up (503) while the reset has time left:
// latchkey asks again instead of escalating without trying the backup.
func TestBackupLookupRetriedWithinDeadline(t *testing.T) {
	old := backupLookupRetry
	backupLookupRetry = 300 * time.Millisecond
	t.Cleanup(func() { backupLookupRetry = old })
	sf := sftest.Start(t, sftest.Options{CustomFields: map[string][]string{"Contact": {"Backup_Email__c"}}})
	sf.AddContact("jane@dest.test", sftest.Record{"Backup_Email__c": "jane.home@backup.test"})
	e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink_opts(userUnknown("jane@dest.test")),
		extra: sfSection(t, sf, func(c *salesforce.Config) { c.BackupEmailFields = []string{"Backup_Email__c"} })})
	sf.Inject(sftest.Fault{Kind: sftest.ServerError, Count: 1, Method: "GET", PathContains: "/query"})
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "bklook"))
	got := e.sink.Wait(1, 10*time.Second)
	if len(got) != 1 || got[0].To[0] != "jane.home@backup.test" {
		t.Fatalf("sink got %+v, want the reset at the backup address after the look-up was retried", got)
	}
	types := strings.Join(eventTypes(t, e, queue.ItemID(id, 0)), ",")
	if !strings.Contains(types, "deferred") || !strings.Contains(types, "retried_backup") || strings.Contains(types, "escalated") {
		t.Errorf("audit trail %s: want a deferral, then the backup, and no escalation", types)
	}
}

// When the backup address bounces too, the Case names it (masked) and both
// servers' replies.
func TestCaseNamesTheBackupBounce(t *testing.T) {
	sf := sftest.Start(t, sftest.Options{})
	sf.AddContact("jane@dest.test", nil)
	e := newEnv(t, envOpts{policy: fastPolicy, extra: sfSection(t, sf, nil),
		sink: smtpsink_opts(userUnknown("jane@dest.test", "jane.home@backup.test"))})
	e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "bkcase", "X-LK-Backup-Email: jane.home@backup.test"))
	waitFor(t, "a Case", 10*time.Second, func() bool { return len(sf.Cases()) == 1 })
	d := fmt.Sprint(sf.Cases()[0]["Description"])
	for _, want := range []string{"Recipient: jane@dest.test", "Backup address tried: j***@backup.test",
		"Remote server said: 550 5.1.1", "Backup address's server said: "} {
		if !strings.Contains(d, want) {
			t.Errorf("Case description lacks %q:\n%s", want, d)
		}
	}
	if strings.Contains(d, "jane.home@") {
		t.Errorf("Case description shows the backup address unmasked:\n%s", d)
	}
}
