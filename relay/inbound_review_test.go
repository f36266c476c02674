package relay

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/queue"
)

// A feedback report that is not a complaint (not-spam, RFC 6591
// auth-failure) is recorded but does not unsubscribe the user; an abuse
// report does. A report addressed twice to one VERP address is applied
// once.
func TestFeedbackTypes(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	send := func(rcpt, feedbackType string, times int) string {
		t.Helper()
		id := queue.ItemID(e.sendID(e.client("PLAIN"), "noreply@example.com", []string{rcpt}, resetMsg(rcpt, "fb-"+feedbackType)), 0)
		waitFor(t, "delivered", 5*time.Second, func() bool { it := itemState(e, id); return it != nil && it.State == queue.StateDelivered })
		verp := bounce.EncodeVERP(e.srv.verpKey, id, "example.com")
		arf := "From: fbl@dest.test\r\nTo: " + verp + "\r\nSubject: report\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/report; report-type=feedback-report; boundary=\"b\"\r\n\r\n" +
			"--b\r\nContent-Type: text/plain\r\n\r\nA report.\r\n" +
			"--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: " + feedbackType + "\r\nUser-Agent: test/1\r\nVersion: 1\r\n" +
			"Original-Rcpt-To: " + rcpt + "\r\n\r\n" +
			"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: Reset your password\r\n\r\n--b--\r\n"
		c, err := smtp.Dial(e.srv.InboundAddrs[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		to := make([]string, times)
		for i := range to {
			to[i] = verp
		}
		if err := c.SendMail("", to, strings.NewReader(arf)); err != nil {
			t.Fatalf("report refused: %v", err)
		}
		waitFor(t, "report on record", 5*time.Second, func() bool {
			evs, _ := audit.Show(e.srv.Store.DB, id)
			return lastOf(evs, audit.Bounced) != nil
		})
		return id
	}
	notSpam := send("ok@dest.test", "not-spam", 1)
	abuse := send("angry@dest.test", "abuse", 2)
	if sup, _ := e.srv.Queue.Suppressed("ok@dest.test", []string{"unsubscribe"}); len(sup) != 0 {
		t.Errorf("a not-spam report unsubscribed the user: %v", sup)
	}
	if sup, _ := e.srv.Queue.Suppressed("angry@dest.test", []string{"unsubscribe"}); len(sup) != 1 {
		t.Errorf("an abuse report did not unsubscribe the user: %v", sup)
	}
	time.Sleep(200 * time.Millisecond) // a second application would have landed by now
	for _, id := range []string{notSpam, abuse} {
		evs, _ := audit.Show(e.srv.Store.DB, id)
		n := 0
		for _, ev := range evs {
			if ev.Type == audit.Bounced {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d report events, want 1", id, n)
		}
	}
}

// A bounce that arrives while the relay is shutting down is answered 451:
// the remote MTA keeps it and sends it again, instead of latchkey taking it
// with a 250 and failing to record it in a closing database.
func TestBounceDuringShutdownDeferred(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	id := queue.ItemID(e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "shut1")), 0)
	waitFor(t, "delivered", 5*time.Second, func() bool { it := itemState(e, id); return it != nil && it.State == queue.StateDelivered })
	verp := bounce.EncodeVERP(e.srv.verpKey, id, "example.com")
	dsn, err := bounce.BuildDSN(bounce.DSNOptions{ReportingMTA: "mx.dest.test", From: "MAILER-DAEMON@mx.dest.test", To: verp,
		Recipients: []bounce.DSNRecipient{{Recipient: "jane@dest.test", Action: "failed", Status: "5.1.1", Diagnostic: "smtp; 550 5.1.1 no such user"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.Dial(e.srv.InboundAddrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e.srv.started.Store(false) // what Close does first
	err = c.SendMail("", []string{verp}, strings.NewReader(string(dsn)))
	if code, enh := smtpCode(err); code != 451 || enh != "4.3.0" {
		t.Errorf("DSN during shutdown answered %v, want 451 4.3.0", err)
	}
	if it := itemState(e, id); it.State != queue.StateDelivered {
		t.Errorf("item %s, want it untouched", it.State)
	}
}
