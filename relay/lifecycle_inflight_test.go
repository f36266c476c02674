package relay

import (
	"bytes"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/queue"
)

// trySendDSN is sendDSN that returns the inbound listener's refusal.
func trySendDSN(t *testing.T, e *env, verp, rcpt string) error {
	t.Helper()
	dsn, err := bounce.BuildDSN(bounce.DSNOptions{
		ReportingMTA: "mx.dest.test", From: "MAILER-DAEMON@mx.dest.test", To: verp,
		Recipients: []bounce.DSNRecipient{{Recipient: rcpt, Action: "failed", Status: "5.1.1",
			Diagnostic: "smtp; 550 5.1.1 user unknown", RemoteMTA: "mx.dest.test"}},
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
	return c.SendMail("", []string{verp}, bytes.NewReader(dsn))
}

// A DSN for a queued item that arrives while a worker is delivering it
// (the DSN is about an earlier attempt whose reply was lost) must not put
// the item back on its lane: a second worker would deliver it to the
// backup address while the first is still delivering it. The DSN waits for
// the attempt to end (bounceBusyWait), then applies; if the attempt lasts
// longer, it is answered 451 so that the remote MTA sends it again.
func TestLifecycleDSNDuringDeliveryNoSecondDelivery(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	entered, release := make(chan struct{}, 1), make(chan struct{})
	e.sink.SetData(func(_ string, rcpts []string, _ []byte) *smtp.SMTPError {
		if rcpts[0] == "jane@dest.test" {
			select {
			case entered <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-time.After(4 * time.Second):
			}
		}
		return nil
	})
	iid := queue.ItemID(e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "inflight", "X-LK-Backup-Email: jane.backup@backup.test")), 0)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("delivery did not start")
	}
	verp := itemState(e, iid).Sender

	// An attempt longer than the wait: 451.
	saved := bounceBusyWait
	bounceBusyWait = 200 * time.Millisecond
	err := trySendDSN(t, e, verp, "jane@dest.test")
	bounceBusyWait = saved
	if code, _ := smtpCode(err); code != 451 {
		t.Errorf("DSN during a long delivery answered %v, want 451", err)
	}

	// An attempt that ends within the wait: the DSN applies after it.
	dsnErr := make(chan error, 1)
	go func() { dsnErr <- trySendDSN(t, e, verp, "jane@dest.test") }()
	time.Sleep(300 * time.Millisecond)
	if n := e.sink.Count(); n != 0 {
		t.Errorf("%d deliveries finished while the first was still in progress, want 0", n)
	}
	close(release)
	if err := <-dsnErr; err != nil {
		t.Fatalf("DSN during a short delivery: %v", err)
	}
	got := e.sink.Wait(2, 5*time.Second)
	if len(got) != 2 || got[0].To[0] != "jane@dest.test" || got[1].To[0] != "jane.backup@backup.test" {
		t.Fatalf("sink has %d messages, want the first and then the backup delivery", len(got))
	}
	waitFor(t, "delivered to the backup", 5*time.Second, func() bool {
		it := itemState(e, iid)
		return it.State == queue.StateDelivered && it.Rcpt == "jane.backup@backup.test"
	})
}
