package relay

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce/sftest"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// fastPolicy keeps deadlines and retries short enough for tests.
const fastPolicy = `default_class = "reset"
[[classes]]
name = "reset"
expiry = "4s"
margin = "0s"
retry = ["300ms"]
supersede = true
supersede_key = ["recipient"]
dedupe_window = "1m"
suppression = ["bounce"]
workers = 2
[classes.escalate]
hard_bounce = true
expired = true
suppressed = true
`

func userUnknown(bad ...string) func(string) *smtp.SMTPError {
	return func(rcpt string) *smtp.SMTPError {
		for _, b := range bad {
			if strings.EqualFold(rcpt, b) {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
			}
		}
		return nil
	}
}

func itemState(e *env, id string) *queue.Item {
	it, _ := e.srv.Queue.Get(id)
	return it
}

func eventTypes(t *testing.T, e *env, id string) []string {
	t.Helper()
	evs, err := audit.Show(e.srv.Store.DB, id)
	if err != nil {
		t.Fatalf("audit show %s: %v", id, err)
	}
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

// A hard bounce at RCPT sends the reset to the backup address on file.
func TestHardBounceTriesBackup(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink_opts(userUnknown("jane@dest.test"))})
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "bk1", "X-LK-Backup-Email: jane.backup@backup.test"))
	got := e.sink.Wait(1, 10*time.Second)
	if len(got) != 1 || got[0].To[0] != "jane.backup@backup.test" {
		t.Fatalf("sink got %+v, want one message to the backup address", got)
	}
	iid := queue.ItemID(id, 0)
	waitFor(t, "delivered to backup", 5*time.Second, func() bool {
		it := itemState(e, iid)
		return it != nil && it.State == queue.StateDelivered
	})
	it := itemState(e, iid)
	if it.OrigRcpt != "jane@dest.test" || it.Rcpt != "jane.backup@backup.test" || !it.BackupTried {
		t.Errorf("item %+v", it)
	}
	sup, _ := e.srv.Queue.Suppressed("jane@dest.test", []string{"bounce"})
	if len(sup) != 1 {
		t.Errorf("hard-bounced address not on the bounce suppression list: %v", sup)
	}
	types := strings.Join(eventTypes(t, e, iid), ",")
	for _, w := range []string{"queued", "attempt", "bounced", "retried_backup", "delivered"} {
		if !strings.Contains(types, w) {
			t.Errorf("audit trail %s lacks %s", types, w)
		}
	}
}

// A DSN that arrives after the reset's cut-off cannot send it to the backup
// address any more: the reset ends bounced and is escalated, and the trail
// does not claim a retry that never happened.
func TestAsyncBounceAfterCutoff(t *testing.T) {
	pol := strings.Replace(fastPolicy, `expiry = "4s"`, `expiry = "1s"`, 1)
	e := newEnv(t, envOpts{policy: pol})
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "late1", "X-LK-Backup-Email: jane.backup@backup.test"))
	got := e.sink.Wait(1, 5*time.Second)
	if len(got) != 1 {
		t.Fatal("first delivery missing")
	}
	iid := queue.ItemID(id, 0)
	it := itemState(e, iid)
	waitFor(t, "cut-off passed", 5*time.Second, func() bool { return time.Now().After(it.Cutoff) })
	dsn, err := bounce.BuildDSN(bounce.DSNOptions{
		ReportingMTA: "mx.dest.test", From: "MAILER-DAEMON@mx.dest.test", To: got[0].From,
		Recipients: []bounce.DSNRecipient{{Recipient: "jane@dest.test", Action: "failed", Status: "5.1.1",
			Diagnostic: "smtp; 550 5.1.1 <jane@dest.test>: Recipient address rejected: User unknown", RemoteMTA: "mx.dest.test"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.Dial(e.srv.InboundAddrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Hello("mx.dest.test")
	if err := c.SendMail("", []string{got[0].From}, bytes.NewReader(dsn)); err != nil {
		t.Fatalf("DSN refused: %v", err)
	}
	waitFor(t, "bounced", 5*time.Second, func() bool { return itemState(e, iid).State == queue.StateBounced })
	types := strings.Join(eventTypes(t, e, iid), ",")
	if !strings.HasSuffix(types, "delivered,bounced,escalated") || strings.Contains(types, "retried_backup") {
		t.Errorf("audit trail %s: want delivered, bounced, escalated and no retried_backup", types)
	}
	if n := len(e.sink.Messages()); n != 1 {
		t.Errorf("%d messages delivered; the backup must not get a reset past its cut-off", n)
	}
}

// A reset refused for its content (554 5.7.1 at DATA) says nothing against
// the address: it is not suppressed. But the user has no reset, so with
// policy_bounce escalation the backup address is tried, and without one
// the reset is escalated.
func TestPolicyBounceTriesBackupAndEscalates(t *testing.T) {
	pol := strings.Replace(fastPolicy, "hard_bounce = true", "hard_bounce = true\npolicy_bounce = true", 1)
	e := newEnv(t, envOpts{policy: pol})
	e.sink.SetData(func(_ string, rcpts []string, _ []byte) *smtp.SMTPError {
		if strings.HasPrefix(rcpts[0], "jane@") || strings.HasPrefix(rcpts[0], "bob@") {
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message refused by content filter"}
		}
		return nil
	})
	c := e.client("PLAIN")
	withBackup := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "pb1", "X-LK-Backup-Email: jane.backup@backup.test")), 0)
	without := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"bob@dest.test"}, resetMsg("bob@dest.test", "pb2")), 0)
	for _, id := range []string{withBackup, without} {
		waitFor(t, id+" final", 10*time.Second, func() bool {
			it := itemState(e, id)
			return it != nil && queue.Final(it.State)
		})
	}
	if it := itemState(e, withBackup); it.State != queue.StateDelivered || it.Rcpt != "jane.backup@backup.test" || it.OrigRcpt != "jane@dest.test" {
		t.Errorf("with a backup: %+v, want delivered to the backup address", it)
	}
	if it := itemState(e, without); it.State != queue.StateBounced {
		t.Errorf("without a backup: %+v, want bounced", it)
	}
	for _, addr := range []string{"jane@dest.test", "bob@dest.test"} {
		if sup, _ := e.srv.Queue.Suppressed(addr, []string{"bounce"}); len(sup) != 0 {
			t.Errorf("%s suppressed after a content refusal: %v", addr, sup)
		}
	}
	evs, err := audit.Show(e.srv.Store.DB, without)
	if err != nil {
		t.Fatal(err)
	}
	b, esc := lastOf(evs, audit.Bounced), lastOf(evs, audit.Escalated)
	if b == nil || b.Fields["hard"] != "false" || b.Fields["permanent"] != "true" {
		t.Errorf("bounced event %+v, want permanent, not hard", b)
	}
	if esc == nil || esc.Fields["trigger"] != "policy_bounce" {
		t.Errorf("escalated event %+v, want trigger policy_bounce", esc)
	}
	if types := strings.Join(eventTypes(t, e, withBackup), ","); !strings.Contains(types, "bounced,retried_backup") || strings.Contains(types, "escalated") {
		t.Errorf("with a backup, trail %s: want bounced then retried_backup, no escalation", types)
	}

	// Without policy_bounce (the shipped transactional class), a content
	// refusal is only recorded.
	e2 := newEnv(t, envOpts{policy: fastPolicy})
	e2.sink.SetData(func(string, []string, []byte) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message refused by content filter"}
	})
	id := queue.ItemID(e2.sendID(e2.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "pb3", "X-LK-Backup-Email: jane.backup@backup.test")), 0)
	waitFor(t, "bounced", 10*time.Second, func() bool { it := itemState(e2, id); return it != nil && queue.Final(it.State) })
	if it := itemState(e2, id); it.State != queue.StateBounced || it.BackupTried {
		t.Errorf("without policy_bounce: %+v, want bounced, backup not tried", it)
	}
	if types := strings.Join(eventTypes(t, e2, id), ","); strings.Contains(types, "escalated") || strings.Contains(types, "retried_backup") {
		t.Errorf("without policy_bounce, trail %s: want no escalation, no backup", types)
	}
}

func smtpsink_opts(rcpt func(string) *smtp.SMTPError) smtpsink.Options {
	return smtpsink.Options{Rcpt: rcpt}
}

// End to end with Salesforce: the address and its backup (from the Contact's
// custom field) both bounce → exactly one High-priority Case, and the
// Contact's bounce fields are set.
func TestHardBounceEscalatesToSalesforce(t *testing.T) {
	sf := sftest.Start(t, sftest.Options{CustomFields: map[string][]string{"Contact": {"Backup_Email__c"}}})
	contact := sf.AddContact("jane@dest.test", sftest.Record{"Backup_Email__c": "jane.old@backup.test", "LastName": "Doe"})
	dir := t.TempDir()
	sfc, err := sf.ClientConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	sfc.BackupEmailFields = []string{"Backup_Email__c"}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{"salesforce": sfc}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOpts{policy: fastPolicy, extra: buf.String(),
		sink: smtpsink_opts(userUnknown("jane@dest.test", "jane.old@backup.test"))})
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "sf1"))
	iid := queue.ItemID(id, 0)
	waitFor(t, "one Case", 15*time.Second, func() bool { return len(sf.Cases()) >= 1 })
	time.Sleep(300 * time.Millisecond)
	cases := sf.Cases()
	if len(cases) != 1 {
		t.Fatalf("%d Cases, want exactly 1", len(cases))
	}
	c := cases[0]
	if c["Priority"] != "High" || c["ContactId"] != contact || c["SuppliedEmail"] != "jane@dest.test" ||
		!strings.Contains(fmt.Sprint(c["Description"]), iid) || !strings.Contains(fmt.Sprint(c["Subject"]), "jane@dest.test") {
		t.Errorf("Case = %+v", c)
	}
	rec := sf.Get(contact)
	if rec["EmailBouncedReason"] == nil || rec["EmailBouncedDate"] == nil {
		t.Errorf("Contact bounce fields not set: %+v", rec)
	}
	it := itemState(e, iid)
	if it.State != queue.StateBounced || !it.BackupTried {
		t.Errorf("item %+v", it)
	}
	waitFor(t, "escalated event with the Case id", 5*time.Second, func() bool {
		evs, _ := audit.Show(e.srv.Store.DB, iid)
		for _, ev := range evs {
			if ev.Type == audit.Escalated && ev.Fields["case_id"] == c["Id"] {
				return true
			}
		}
		return false
	})
}

// An MX that defers forever: the reset ends expired by its deadline and is
// never delivered; one that recovers before the deadline delivers it.
func TestDeadline(t *testing.T) {
	defer4xx := func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full, try later"}
	}
	t.Run("expires", func(t *testing.T) {
		e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink_opts(defer4xx)})
		id := queue.ItemID(e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "dl1")), 0)
		waitFor(t, "expired", 10*time.Second, func() bool {
			it := itemState(e, id)
			return it != nil && it.State == queue.StateExpired
		})
		it := itemState(e, id)
		if it.Finished.After(it.Deadline) {
			t.Errorf("expired at %v, after the deadline %v", it.Finished, it.Deadline)
		}
		if it.Attempts < 2 || !strings.Contains(it.Reason, "4.2.2") && !strings.Contains(it.Reason, "Mailbox full") {
			t.Errorf("item %+v: want several attempts and the last reply in the reason", it)
		}
		e.sink.SetRcpt(nil)
		time.Sleep(700 * time.Millisecond)
		if e.sink.Count() != 0 {
			t.Error("delivered after expiry")
		}
		types := strings.Join(eventTypes(t, e, id), ",")
		if !strings.Contains(types, "deferred") || !strings.Contains(types, "expired") || !strings.Contains(types, "escalated") {
			t.Errorf("audit: %s", types)
		}
	})
	t.Run("recovers", func(t *testing.T) {
		e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink_opts(defer4xx)})
		id := queue.ItemID(e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "dl2")), 0)
		waitFor(t, "a deferral", 5*time.Second, func() bool {
			it := itemState(e, id)
			return it != nil && it.Attempts >= 1
		})
		e.sink.SetRcpt(nil)
		if got := e.sink.Wait(1, 5*time.Second); len(got) != 1 {
			t.Fatal("not delivered after the MX recovered")
		}
	})
}

// A newer reset for the same recipient supersedes the queued older one.
func TestSupersede(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink_opts(func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
	})})
	c := e.client("PLAIN")
	old := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "sup1")), 0)
	waitFor(t, "first attempt", 5*time.Second, func() bool { it := itemState(e, old); return it != nil && it.Attempts >= 1 })
	newer := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"Jane@Dest.test"}, resetMsg("Jane@Dest.test", "sup2")), 0)
	waitFor(t, "superseded", 5*time.Second, func() bool {
		it := itemState(e, old)
		return it != nil && it.State == queue.StateSuperseded
	})
	if it := itemState(e, old); it.SupersededBy != newer {
		t.Errorf("superseded by %q, want %q", it.SupersededBy, newer)
	}
	e.sink.SetRcpt(nil)
	got := e.sink.Wait(1, 5*time.Second)
	time.Sleep(500 * time.Millisecond)
	got = e.sink.Messages()
	if len(got) != 1 || !bytes.Contains(got[0].Data, []byte("sup2")) {
		t.Fatalf("delivered %d messages; want only the newer reset", len(got))
	}
}

// A resubmission of the same message gets the original id and is not queued twice.
func TestDedupe(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	msg := resetMsg("jane@dest.test", "dup1")
	id1 := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, msg)
	id2 := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, msg)
	if id1 != id2 {
		t.Errorf("resubmission queued as %s, original %s", id2, id1)
	}
	e.sink.Wait(1, 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := e.sink.Count(); n != 1 {
		t.Errorf("delivered %d times", n)
	}
}

// An asynchronous bounce (a DSN to the VERP address after the MX accepted)
// leads to the same decision: the backup address gets the reset. A forged
// DSN (bad MAC) is refused and changes nothing.
func TestAsyncBounce(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "async1", "X-LK-Backup-Email: jane.backup@backup.test"))
	got := e.sink.Wait(1, 5*time.Second)
	if len(got) != 1 {
		t.Fatal("first delivery missing")
	}
	verp := got[0].From
	inbound := e.srv.InboundAddrs[0].String()

	forged := strings.Replace(verp, ".", "x.", 1)
	c, err := smtp.Dial(inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Hello("mx.dest.test")
	c.Mail("", nil)
	if err := c.Rcpt(forged, nil); err == nil {
		t.Error("forged VERP address accepted")
	} else if code, enh := smtpCode(err); code != 550 || enh != "5.1.1" {
		t.Errorf("forged VERP answered %v", err)
	}
	c.Reset()

	dsn, err := bounce.BuildDSN(bounce.DSNOptions{
		ReportingMTA: "mx.dest.test", From: "MAILER-DAEMON@mx.dest.test", To: verp,
		Recipients: []bounce.DSNRecipient{{Recipient: "jane@dest.test", Action: "failed", Status: "5.1.1",
			Diagnostic: "smtp; 550 5.1.1 <jane@dest.test>: Recipient address rejected: User unknown", RemoteMTA: "mx.dest.test"}},
		OriginalHeaders: []byte("Subject: Reset your password\r\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("", []string{verp}, bytes.NewReader(dsn)); err != nil {
		t.Fatalf("DSN refused: %v", err)
	}
	got = e.sink.Wait(2, 5*time.Second)
	if len(got) != 2 || got[1].To[0] != "jane.backup@backup.test" {
		t.Fatalf("after the DSN the sink has %d messages; want the backup delivery", len(got))
	}
	iid := queue.ItemID(id, 0)
	sup, _ := e.srv.Queue.Suppressed("jane@dest.test", []string{"bounce"})
	if len(sup) != 1 {
		t.Error("address not suppressed after the DSN")
	}
	if types := strings.Join(eventTypes(t, e, iid), ","); !strings.Contains(types, "bounced,retried_backup") {
		t.Errorf("audit: %s", types)
	}
}
