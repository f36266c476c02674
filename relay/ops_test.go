package relay

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/metrics"
	"github.com/latchkey/latchkey/policy"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// adminGet calls the relay's admin API, with the token when auth is set.
func adminGet(t *testing.T, e *env, path string, auth bool) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+e.srv.AdminAddr.String()+path, nil)
	if auth {
		tok, err := os.ReadFile(e.srv.cfg.Path("admin.token"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue finds one sample line "name{labels} value" whose labels
// contain every one of want, and returns its value text.
func metricValue(text, name string, want ...string) (string, bool) {
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(l, w)
		}
		if ok {
			f := strings.Fields(l)
			return f[len(f)-1], true
		}
	}
	return "", false
}

// The relay serves its admin API: probes without a token, everything else
// with it; /metrics after one delivered and one bounced reset shows the
// delivered reset in the reset class's latency histogram and the outcome
// counters; the background DNS check's results are exported too.
func TestAdminAPIAndMetrics(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy, admin: true, sink: smtpsink_opts(userUnknown("gone@dest.test"))})
	if code, _ := adminGet(t, e, "/healthz", false); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := adminGet(t, e, "/readyz", false); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, _ := adminGet(t, e, "/metrics", false); code != 401 {
		t.Errorf("/metrics without the token = %d, want 401", code)
	}
	c := e.client("PLAIN")
	e.sendID(c, "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "m1"))
	bad := e.sendID(c, "noreply@example.com", []string{"gone@dest.test"}, resetMsg("gone@dest.test", "m2"))
	e.sink.Wait(1, 10*time.Second)
	waitFor(t, "bounce recorded", 10*time.Second, func() bool {
		it := itemState(e, queue.ItemID(bad, 0))
		return it != nil && it.State == queue.StateBounced
	})
	var text string
	waitFor(t, "metrics", 5*time.Second, func() bool {
		var code int
		code, text = adminGet(t, e, "/metrics", true)
		v, _ := metricValue(text, "latchkey_delivery_latency_seconds_count", `class="reset"`)
		return code == 200 && v == "1"
	})
	for _, m := range []struct {
		name string
		want []string
		val  string
	}{
		{"latchkey_delivery_latency_seconds_count", []string{`class="reset"`}, "1"},
		{"latchkey_delivery_latency_seconds_bucket", []string{`class="reset"`, `le="3600"`}, "1"},
		{"latchkey_outcomes_total", []string{`class="reset"`, `outcome="delivered"`}, "1"},
		{"latchkey_outcomes_total", []string{`class="reset"`, `outcome="bounced"`, `reason="userunknown"`}, "1"},
		{"latchkey_delivery_attempts_total", []string{`class="reset"`, `result="delivered"`}, "1"},
		{"latchkey_delivery_attempts_total", []string{`class="reset"`, `result="permanent"`}, "1"},
		{"latchkey_smtp_sessions_total", nil, "1"},
		{"latchkey_dkim_sign_seconds_count", nil, "2"},
		{"latchkey_queue_items", []string{`class="reset"`, `state="queued"`}, "0"},
	} {
		if v, ok := metricValue(text, m.name, m.want...); v != m.val {
			t.Errorf("%s%v = %q (found %v), want %s", m.name, m.want, v, ok, m.val)
		}
	}
	// The four figures, from the audit trail: one delivered, one bounced.
	code, body := adminGet(t, e, "/api/v1/stats?since=1h&class=reset", true)
	var rep metrics.Report
	if err := json.Unmarshal([]byte(body), &rep); code != 200 || err != nil {
		t.Fatalf("/api/v1/stats = %d %v\n%s", code, err, body)
	}
	if rep.Success.Delivered != 1 || rep.Success.Bounced != 1 || rep.Success.Rate != 0.5 ||
		rep.Speed.Samples != 1 || rep.Escalation.ByTrigger["hard_bounce"] != 1 {
		t.Errorf("stats: %+v", rep)
	}
	// fastPolicy's 4 s expiry is far shorter than latency + the default
	// 5 min margin: the calibration says so.
	if c := rep.Calibration; c.Safe || time.Duration(c.Recommended) < 5*time.Minute || time.Duration(c.Configured) != 4*time.Second {
		t.Errorf("calibration: %+v", c)
	}
	if code, _ := adminGet(t, e, "/api/v1/stats?class=nosuch", true); code != 400 {
		t.Errorf("stats for an unknown class = %d, want 400", code)
	}
	// The DNS check ran at start against the test DNS, where nothing is
	// published but DKIM: failures, exported per domain and check.
	waitFor(t, "DNS check results", 10*time.Second, func() bool {
		code, body := adminGet(t, e, "/api/v1/dns", true)
		return code == 200 && strings.Contains(body, `"checks"`)
	})
	_, text = adminGet(t, e, "/metrics", true)
	if v, _ := metricValue(text, "latchkey_dns_check_status", `domain="example.com"`, `check="mx"`, `status="FAIL"`); v != "1" {
		t.Errorf("latchkey_dns_check_status for example.com mx FAIL = %q\n%s", v, grepLines(text, "latchkey_dns"))
	}
	e.stop()
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// With notify_sender, a hard bounce sends an RFC 3464 DSN from the null
// sender to the original envelope sender, with the original headers but
// never the body (the reset link).
func TestNotifySender(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink_opts(userUnknown("gone@dest.test")),
		preStart: func(s *Server) { s.cfg.Inbound.NotifySender = true }})
	if err := e.dns.Add("example.com. 300 IN MX 10 mx.dest.test."); err != nil {
		t.Fatal(err)
	}
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"gone@dest.test"}, resetMsg("gone@dest.test", "nt1"))
	got := e.sink.Wait(1, 10*time.Second)
	if len(got) != 1 {
		t.Fatalf("no DSN arrived")
	}
	dsn := got[0]
	if dsn.From != "" || len(dsn.To) != 1 || dsn.To[0] != "noreply@example.com" {
		t.Fatalf("DSN envelope from %q to %v; want null sender to noreply@example.com", dsn.From, dsn.To)
	}
	rep, err := bounce.Parse(bytes.NewReader(dsn.Data))
	if err != nil || !rep.IsBounce || len(rep.Recipients) != 1 {
		t.Fatalf("our own DSN does not parse as a bounce: %v %+v", err, rep)
	}
	if r := rep.Recipients[0]; r.Recipient != "gone@dest.test" || r.Status != "5.1.1" || !r.Permanent {
		t.Errorf("DSN recipient %+v", r)
	}
	if bytes.Contains(dsn.Data, []byte("reset?token=")) || !bytes.Contains(dsn.Data, []byte("Subject: Reset your password")) {
		t.Errorf("the DSN must return the original headers, never the body with the reset link:\n%s", dsn.Data)
	}
	if !bytes.Contains(dsn.Data, []byte("DKIM-Signature:")) {
		t.Error("the DSN is not DKIM-signed")
	}
	if it := itemState(e, queue.ItemID(id, 0)); it.State != queue.StateBounced {
		t.Errorf("item %+v", it)
	}
}

// An ARF complaint about a message still queued is recorded against it and
// puts the address on the bulk list, and the message is still delivered:
// a complaint says nothing about whether the address works.
func TestComplaintOnQueuedMessage(t *testing.T) {
	gate := make(chan struct{})
	e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink.Options{Rcpt: func(string) *smtp.SMTPError {
		select {
		case <-gate:
			return nil
		default:
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
	}}})
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "c1"))
	iid := queue.ItemID(id, 0)
	waitFor(t, "a deferral", 5*time.Second, func() bool { it := itemState(e, iid); return it != nil && it.Attempts > 0 })
	verp := bounce.EncodeVERP(e.srv.verpKey, iid, "example.com")
	arf := "From: abuse@dest.test\r\nTo: " + verp + "\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=feedback-report; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n" +
		"--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: test/1\r\nVersion: 1\r\n" +
		"Original-Rcpt-To: jane@dest.test\r\n\r\n" +
		"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: Reset your password\r\n\r\n--b--\r\n"
	c, err := smtp.Dial(e.srv.InboundAddrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("", []string{verp}, strings.NewReader(arf)); err != nil {
		t.Fatalf("complaint refused: %v", err)
	}
	waitFor(t, "complaint on record", 5*time.Second, func() bool {
		evs, _ := audit.Show(e.srv.Store.DB, iid)
		for _, ev := range evs {
			if ev.Type == audit.Bounced && ev.Fields["complaint"] == "abuse" {
				return true
			}
		}
		return false
	})
	// The complaint stops marketing mail: the address is on a list the
	// shipped bulk class reads.
	shipped, err := policy.Parse("policy.toml", conf.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if sup, _ := e.srv.Queue.Suppressed("jane@dest.test", shipped.Class("bulk").Suppression); len(sup) != 1 {
		t.Errorf("complaining address not on a list the bulk class reads: %v", sup)
	}
	if sup, _ := e.srv.Queue.Suppressed("jane@dest.test", []string{"bounce"}); len(sup) != 0 {
		t.Errorf("a complaint put the address on the bounce list: %v", sup)
	}
	close(gate)
	waitFor(t, "delivered after the complaint", 10*time.Second, func() bool {
		it := itemState(e, iid)
		return it != nil && it.State == queue.StateDelivered
	})
}

// The received event records the keyed hash of the reset link also when it
// sits in a base64-encoded part of a multipart message (the parts can only
// be found with the message's own Content-Type).
func TestURLHashOfBase64Part(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	link := "https://acme.my.site.com/s/reset?token=B64PartToken42"
	part := base64.StdEncoding.EncodeToString([]byte("Reset here: " + link + "\r\n"))
	msg := "From: Acme <noreply@example.com>\r\nTo: <jane@dest.test>\r\nSubject: Reset your password\r\n" +
		"Message-ID: <b64@sfdc.net>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"XX\"\r\n\r\n" +
		"--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + part + "\r\n--XX--\r\n"
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, []byte(msg))
	evs, err := audit.Show(e.srv.Store.DB, "<b64@sfdc.net>")
	if err != nil {
		t.Fatal(err)
	}
	want := e.srv.Store.Audit.URLHash(link)
	for _, ev := range evs {
		if ev.Type == audit.Received {
			if ev.Fields["url_hashes"] != want {
				t.Errorf("url_hashes = %q, want %q (message %s)", ev.Fields["url_hashes"], want, id)
			}
			return
		}
	}
	t.Fatalf("no received event for %s", id)
}
