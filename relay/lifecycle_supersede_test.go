package relay

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/queue"
)

// A reset sent to the backup address by a late DSN, and waiting for a retry
// there, is superseded by a newer reset for the same user like any queued
// one: its dead link must not reach the backup address afterwards.
func TestLifecycleRedirectedResetIsSuperseded(t *testing.T) {
	var backupDown atomic.Bool
	backupDown.Store(true)
	e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink_opts(func(rcpt string) *smtp.SMTPError {
		if backupDown.Load() && strings.EqualFold(rcpt, "jane.backup@backup.test") {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	})})
	c := e.client("PLAIN")
	older := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "old-link", "X-LK-Backup-Email: jane.backup@backup.test")), 0)
	if got := e.sink.Wait(1, 5*time.Second); len(got) != 1 {
		t.Fatal("first delivery missing")
	}
	waitFor(t, "delivered", 5*time.Second, func() bool { return itemState(e, older).State == queue.StateDelivered })
	sendDSN(t, e, itemState(e, older).Sender, "jane@dest.test")
	waitFor(t, "deferred at the backup address", 5*time.Second, func() bool {
		it := itemState(e, older)
		return it.State == queue.StateQueued && it.Attempts >= 2
	})
	newer := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "new-link", "X-LK-Backup-Email: jane.backup@backup.test")), 0)
	backupDown.Store(false)
	waitFor(t, "newer delivered", 5*time.Second, func() bool {
		it := itemState(e, newer)
		return it != nil && it.State == queue.StateDelivered
	})
	time.Sleep(700 * time.Millisecond) // past the older reset's retry
	for _, m := range e.sink.Messages() {
		if bytes.Contains(m.Data, []byte("old-link")) && m.To[0] != "jane@dest.test" {
			t.Errorf("the superseded reset was delivered to %v", m.To)
		}
	}
	if it := itemState(e, older); it.State != queue.StateSuperseded || it.SupersededBy != newer {
		t.Errorf("older reset %s (by %q), want superseded by %s", it.State, it.SupersededBy, newer)
	}
}
