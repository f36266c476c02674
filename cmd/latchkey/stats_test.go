package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/metrics"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// `latchkey stats` computes the figures from the audit trail, so they
// survive a restart (here: a kill -9), and exits 1 when a target of the
// policy is missed.
func TestStatsFromAuditTrail(t *testing.T) {
	e := newDurEnv(t, smtpsink.Options{Rcpt: func(rcpt string) *smtp.SMTPError {
		if strings.HasPrefix(rcpt, "gone") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}})
	pol := durPolicy + "[classes.targets]\ndelivery_p95 = \"60s\"\nsuccess_rate = 0.9\n"
	if err := os.WriteFile(filepath.Join(e.dir, "policy.toml"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	for i, to := range []string{"a@dest.test", "b@dest.test", "gone@dest.test"} {
		e.submitOne(to, "stats-"+string(rune('0'+i))+"@example.com")
	}
	if !waitFor(20*time.Second, func() bool { return len(e.sink.Messages()) == 2 }) {
		t.Fatal("deliveries missing")
	}
	time.Sleep(500 * time.Millisecond) // the bounce is recorded after the sink's refusal
	e.kill()

	var out, errb bytes.Buffer
	rc := run([]string{"stats", "-config", e.cfgPath, "-since", "1h", "-json"}, &out, &errb)
	var rep metrics.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("stats -json: %v\n%s\n%s", err, out.String(), errb.String())
	}
	if rep.Success.Delivered != 2 || rep.Success.Bounced != 1 || rep.Speed.Samples != 2 || rep.Success.Met {
		t.Errorf("report: %+v", rep)
	}
	if rc != 1 {
		t.Errorf("stats exit %d with the success target missed (2/3 < 0.9), want 1; stderr: %s", rc, errb.String())
	}
	out.Reset()
	if rc := run([]string{"stats", "-config", e.cfgPath, "-since", "1h"}, &out, &errb); rc != 1 ||
		!strings.Contains(out.String(), "66.67%") || !strings.Contains(out.String(), "MISSED") {
		t.Errorf("text report (exit %d):\n%s", rc, out.String())
	}
}
