package relay

import (
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// The queue gauges read the queue itself: a deferred reset is "queued"
// before a restart and still is after it (the counters restart at zero,
// the gauges must not).
func TestReviewQueueGaugeAfterRestart(t *testing.T) {
	deferAll := func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	}
	e := newEnv(t, envOpts{admin: true, sink: smtpsink.Options{Rcpt: deferAll}})
	c := e.client("PLAIN")
	id := e.sendID(c, "noreply@example.com", []string{"u1@dest.test"}, resetMsg("u1@dest.test", "tok1"))
	c.Close()
	waitFor(t, "a deferral", 20*time.Second, func() bool {
		it := itemState(e, id+"aa")
		return it != nil && it.Attempts > 0 && e.srv.Queue.Depth()["reset"].InFlight == 0
	})
	check := func(when string) {
		_, text := adminGet(t, e, "/metrics", true)
		if v, _ := metricValue(text, "latchkey_queue_items", `class="reset"`, `state="queued"`); v != "1" {
			t.Errorf("%s: reset queued = %q\n%s", when, v, grepLines(text, "latchkey_queue"))
		}
		if v, _ := metricValue(text, "latchkey_queue_items", `class="reset"`, `state="in_flight"`); v != "0" {
			t.Errorf("%s: reset in_flight = %q", when, v)
		}
		if v, _ := metricValue(text, "latchkey_queue_oldest_age_seconds", `class="reset"`); v == "0" || v == "" {
			t.Errorf("%s: reset oldest age = %q", when, v)
		}
	}
	check("before restart")
	e.stop()
	e.start(nil)
	check("after restart")
}
