package relay

import (
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/salesforce"
	"github.com/latchkey/latchkey/salesforce/sftest"
)

// The Case is opened, then recording the bounce on the Contact fails until
// the escalation is dead-lettered: the trail still names the Case.
func TestCaseRecordedWhenFollowUpDeadLetters(t *testing.T) {
	sf := sftest.Start(t, sftest.Options{})
	sf.AddContact("jane@dest.test", sftest.Record{"LastName": "Doe"})
	e := newEnv(t, envOpts{policy: fastPolicy, extra: sfSection(t, sf, func(c *salesforce.Config) { c.MaxAttempts = 1 }),
		sink: smtpsink_opts(userUnknown("jane@dest.test"))})
	sf.Inject(sftest.Fault{Kind: sftest.ServerError, Count: 10, Method: "PATCH", PathContains: "/sobjects/Contact"})
	e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "casedead"))
	waitFor(t, "a dead-lettered escalation", 10*time.Second, func() bool {
		dead, _ := e.srv.Outbox.List(salesforce.StateDead)
		return len(dead) == 1
	})
	cases := sf.Cases()
	if len(cases) != 1 {
		t.Fatalf("%d Cases, want 1", len(cases))
	}
	var withCase *audit.Event
	waitFor(t, "the Case in the trail", 5*time.Second, func() bool {
		evs, _ := audit.Show(e.srv.Store.DB, "<casedead.abc@sfdc.net>")
		for i := range evs {
			if evs[i].Type == audit.Escalated && evs[i].Fields["case_id"] != "" {
				withCase = &evs[i]
				return true
			}
		}
		return false
	})
	if withCase.Fields["case_id"] != cases[0]["Id"] || withCase.Fields["follow_up_failed"] == "" {
		t.Errorf("escalated event %+v, want case_id %v and the follow-up failure", withCase, cases[0]["Id"])
	}
}

// Escalations left in the outbox when [salesforce] is turned off are not
// silently forgotten: the relay says so at start.
func TestDisabledSalesforceWarnsAboutWaitingEscalations(t *testing.T) {
	sf := sftest.Start(t, sftest.Options{})
	sf.SetDown(true)
	e := newEnv(t, envOpts{policy: fastPolicy, extra: sfSection(t, sf, nil), sink: smtpsink_opts(userUnknown("jane@dest.test"))})
	e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "sfoff"))
	waitFor(t, "an escalation in the outbox", 5*time.Second, func() bool {
		p, d := e.srv.Outbox.Stats()
		return p+d == 1
	})
	if !strings.Contains(e.cfgText, "enabled = true") {
		t.Fatalf("test config has no [salesforce] enabled = true:\n%s", e.cfgText)
	}
	e.cfgText = strings.Replace(e.cfgText, "enabled = true", "enabled = false", 1)
	var logs syncBuffer
	restartLogged(e, &logs)
	if e.srv.Outbox != nil {
		t.Fatal("outbox running with [salesforce] disabled")
	}
	if l := logs.String(); !strings.Contains(l, `"pending":1`) || !strings.Contains(l, "escalations wait in its outbox") {
		t.Errorf("no warning about the waiting escalation in the log:\n%.2000s", l)
	}
}
