package main

// Crash tests of the Salesforce escalation outbox with the real binary and
// the fake Salesforce on loopback: an escalation is committed with the
// bounce that caused it, so neither a Salesforce failure nor a kill -9 of
// latchkey may lose it, and the retry after the restart must not open a
// second Case for it.

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/salesforce/sftest"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// escalatePolicy escalates hard bounces and expiries of resets; expiry is
// a format verb so a test can make resets expire within seconds.
const escalatePolicy = `default_class = "reset"

[[classes]]
name = "reset"
expiry = %q
margin = "0s"
retry = ["300ms"]
supersede = true
supersede_key = ["recipient"]
dedupe_window = "10m"
suppression = ["bounce"]
workers = 2

[classes.escalate]
hard_bounce = true
expired = true
suppressed = true
`

// newSFDurEnv is a durEnv whose relay escalates to sf: the [salesforce]
// table is appended to its configuration, with the consumer key and secret
// in files (never in the configuration text).
func newSFDurEnv(t *testing.T, sf *sftest.Server, expiry string, sink smtpsink.Options) *durEnv {
	t.Helper()
	e := newDurEnv(t, sink)
	sfc, err := sf.ClientConfig(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	sfc.Timeout = 5 * time.Second
	// Retries a second apart (the default is 30 s, doubling), so a test
	// sees several failed attempts in a few seconds.
	sfc.RetryBackoff, sfc.MaxBackoff = time.Second, 2*time.Second
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{"salesforce": sfc}); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(e.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(append([]byte("\n"), buf.Bytes()...)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	usePolicy(t, e, fmt.Sprintf(escalatePolicy, expiry))
	return e
}

func unknownUser(string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
}

// logged waits until the running relay's log has a line with message msg.
func (e *durEnv) logged(msg string, d time.Duration) bool {
	return waitFor(d, func() bool { return strings.Contains(e.proc.log.String(), `"message":"`+msg+`"`) })
}

// checkOneCase waits for a Case and then checks that exactly one exists,
// for rcpt, with the fields an escalation sets.
func checkOneCase(t *testing.T, sf *sftest.Server, rcpt, trigger string) {
	t.Helper()
	if !waitFor(20*time.Second, func() bool { return len(sf.Cases()) >= 1 }) {
		t.Fatal("no Case within 20s")
	}
	// A duplicate would come from the same retry: give it a moment.
	time.Sleep(time.Second)
	cases := sf.Cases()
	if len(cases) != 1 {
		t.Fatalf("%d Cases, want exactly 1: %v", len(cases), cases)
	}
	c := cases[0]
	if c["Priority"] != "High" || c["SuppliedEmail"] != rcpt || !strings.Contains(fmt.Sprint(c["Subject"]), "[latchkey:") ||
		!strings.Contains(fmt.Sprint(c["Subject"]), trigger) {
		t.Errorf("Case = %v", c)
	}
}

// Issue #5: Salesforce is down for the first attempts, latchkey is killed
// (kill -9) in between, and the restarted relay opens the Case once
// Salesforce is back.
func TestSalesforceDownAcrossKill(t *testing.T) {
	t.Parallel()
	sf := sftest.Start(t, sftest.Options{})
	sf.SetDown(true)
	// Salesforce is down at the bounce, so whether a backup is on file is
	// not known: a reset with time left waits 30 s and asks again. 20 s
	// leaves none, so it escalates at once without a backup.
	e := newSFDurEnv(t, sf, "20s", smtpsink.Options{Rcpt: unknownUser})
	e.start()
	e.submitOne("gone@dest.test", "sf-down@example.com")
	if !waitFor(20*time.Second, func() bool {
		return strings.Count(e.proc.log.String(), `"message":"salesforce escalation failed"`) >= 3
	}) {
		t.Fatal("the outbox did not try Salesforce three times")
	}
	e.kill()
	// Down for the first attempts of the restarted relay too.
	e.start()
	if !e.logged("salesforce escalation failed", 20*time.Second) {
		t.Fatal("the restarted relay never tried Salesforce")
	}
	e.kill()
	if n := len(sf.Cases()); n != 0 {
		t.Fatalf("%d Cases while Salesforce was down", n)
	}
	sf.SetDown(false)
	e.start()
	checkOneCase(t, sf, "gone@dest.test", "hard_bounce")
	if !e.logged("Case opened", 5*time.Second) {
		t.Error("the restarted relay did not log the Case")
	}
}

// The nastiest failure: Salesforce creates the Case but the answer is lost
// (the connection drops), then latchkey is killed before it retries. The
// retry after the restart must find that Case, not open a second one.
func TestSalesforceAnswerLostAcrossKill(t *testing.T) {
	t.Parallel()
	sf := sftest.Start(t, sftest.Options{})
	sf.Inject(sftest.Fault{Kind: sftest.DropAfter, Count: 1, Method: "POST", PathContains: "/sobjects/Case"})
	e := newSFDurEnv(t, sf, "10m", smtpsink.Options{Rcpt: unknownUser})
	e.start()
	e.submitOne("gone@dest.test", "sf-lost@example.com")
	if !e.logged("salesforce escalation failed", 20*time.Second) {
		t.Fatal("the outbox never tried Salesforce")
	}
	if n := len(sf.Cases()); n != 1 {
		t.Fatalf("%d Cases after the dropped answer, want the 1 Salesforce created", n)
	}
	e.kill()
	e.start()
	if !e.logged("Case opened", 45*time.Second) {
		t.Fatal("the restarted relay never completed the escalation")
	}
	checkOneCase(t, sf, "gone@dest.test", "hard_bounce")
}

// A reset the MX defers until its deadline passes opens a Case.
func TestSalesforceExpiredResetCase(t *testing.T) {
	t.Parallel()
	sf := sftest.Start(t, sftest.Options{})
	e := newSFDurEnv(t, sf, "3s", smtpsink.Options{Rcpt: func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
	}})
	e.start()
	e.submitOne("full@dest.test", "sf-expired@example.com")
	checkOneCase(t, sf, "full@dest.test", "expired")
	if e.sink.Count() != 0 {
		t.Errorf("the expired reset was delivered")
	}
}
