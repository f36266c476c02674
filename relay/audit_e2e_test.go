package relay

// End-to-end tests of the audit trail: one reset's whole life, as
// audit.Show tells it, for every way a reset can end; and the promise that
// no reset link or token is ever written to the database outside the queued
// message itself, to the logs, or to an export.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/dgraph-io/badger/v4"
	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce"
	"github.com/latchkey/latchkey/salesforce/sftest"
)

// secretReset is a reset whose token is in its link only, not in its
// Message-ID (resetMsg puts the token in both), so that where the token
// turns up tells which part of the message leaked.
func secretReset(to, msgID, token string, extra ...string) []byte {
	h := []string{
		"From: Acme Support <noreply@example.com>",
		"To: <" + to + ">",
		"Subject: Reset your password",
		"Date: Sun, 29 Nov 2026 12:00:00 +0000",
		"Message-ID: <" + msgID + ">",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"X-SFDC-LK: 00D5g000004ABCDEAA",
		"X-SFDC-EmailCategory: forgotPassword",
		"X-LK-Class: reset",
	}
	h = append(h, extra...)
	body := "Hello,\r\n\r\nReset your password here:\r\n" + resetLink(token) + "\r\n\r\nThe link expires in 30 minutes.\r\n"
	return []byte(strings.Join(h, "\r\n") + "\r\n\r\n" + body)
}

func resetLink(token string) string { return "https://acme.my.site.com/s/reset?token=" + token }

// timeline returns the types of msgID's events joined by commas, after
// checking that audit.Show returns them in chain order.
func timeline(t *testing.T, e *env, msgID string) (string, []audit.Event) {
	t.Helper()
	evs, err := audit.Show(e.srv.Store.DB, msgID)
	if err != nil {
		t.Fatalf("audit show %s: %v", msgID, err)
	}
	types := make([]string, len(evs))
	for i, ev := range evs {
		types[i] = ev.Type
		if i > 0 && (ev.Seq <= evs[i-1].Seq || ev.Time.Before(evs[i-1].Time)) {
			t.Errorf("event %d (%s, seq %d, %v) is not after event %d (seq %d, %v)",
				i, ev.Type, ev.Seq, ev.Time, i-1, evs[i-1].Seq, evs[i-1].Time)
		}
	}
	return strings.Join(types, ","), evs
}

// wantTimeline waits until msgID's timeline matches pattern (a regular
// expression over the comma-joined event types) and returns its events.
func wantTimeline(t *testing.T, e *env, msgID, pattern string, d time.Duration) []audit.Event {
	t.Helper()
	re := regexp.MustCompile(pattern)
	var got string
	var evs []audit.Event
	end := time.Now().Add(d)
	for {
		if _, err := audit.Show(e.srv.Store.DB, msgID); err == nil {
			got, evs = timeline(t, e, msgID)
			if re.MatchString(got) {
				return evs
			}
		}
		if time.Now().After(end) {
			t.Fatalf("timeline of %s = %q, want %s", msgID, got, pattern)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lastOf(evs []audit.Event, typ string) *audit.Event {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ {
			return &evs[i]
		}
	}
	return nil
}

// One reset's full life, in order, for each way it can end.
func TestAuditTimelines(t *testing.T) {
	t.Run("delivered", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOpts{policy: fastPolicy})
		const mid = "life-delivered@sfdc.net"
		id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, secretReset("jane@dest.test", mid, "T0kDelivered"))
		evs := wantTimeline(t, e, mid, `^received,signed,queued,attempt,delivered$`, 10*time.Second)
		recv, q, att, del := evs[0], evs[2], evs[3], evs[4]
		// The test MX's certificate is self-signed: TLS, not verified;
		// its domain publishes no MTA-STS policy.
		if att.Fields["tls"] != "TLS1.3" || att.Fields["tls_verified"] != "false" || att.Fields["mta_sts"] != "" {
			t.Errorf("attempt = %+v", att)
		}
		if recv.Fields["queue_id"] != id || recv.Fields["body_sha256"] == "" || recv.Fields["url_hashes"] == "" ||
			recv.Fields["auth_user"] != testUser || recv.Fields["sfdc_org"] != "00D5g000004ABCDEAA" || recv.Class != "reset" {
			t.Errorf("received = %+v", recv)
		}
		if q.QueueID != queue.ItemID(id, 0) || q.Recipient != "jane@dest.test" || q.Fields["deadline"] == "" {
			t.Errorf("queued = %+v", q)
		}
		if del.QueueID != q.QueueID || del.Fields["mx"] != "mx.dest.test" || del.Fields["latency_ms"] == "" {
			t.Errorf("delivered = %+v", del)
		}
		// The queue id finds the item's part of the same timeline.
		byID, _ := timeline(t, e, q.QueueID)
		if byID != "queued,attempt,delivered" {
			t.Errorf("audit show %s = %s", q.QueueID, byID)
		}
	})

	t.Run("bounced then backup", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink_opts(userUnknown("jane@dest.test"))})
		const mid = "life-backup@sfdc.net"
		e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
			secretReset("jane@dest.test", mid, "T0kBackup", "X-LK-Backup-Email: jane.backup@backup.test"))
		evs := wantTimeline(t, e, mid, `^received,signed,queued,attempt,bounced,retried_backup,attempt,delivered$`, 10*time.Second)
		b, rb, del := evs[4], evs[5], evs[7]
		if b.Fields["hard"] != "true" || b.Fields["status"] != "5.1.1" || b.Recipient != "jane@dest.test" {
			t.Errorf("bounced = %+v", b)
		}
		if rb.Recipient != "jane.backup@backup.test" || rb.Fields["original"] != "jane@dest.test" {
			t.Errorf("retried_backup = %+v", rb)
		}
		if del.Recipient != "jane.backup@backup.test" {
			t.Errorf("delivered = %+v", del)
		}
	})

	t.Run("superseded", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink_opts(func(string) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
		})})
		c := e.client("PLAIN")
		const oldMid, newMid = "life-old@sfdc.net", "life-new@sfdc.net"
		old := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"}, secretReset("jane@dest.test", oldMid, "T0kOld")), 0)
		// Right after an attempt, so the older one is queued, not in flight.
		waitFor(t, "first attempt", 5*time.Second, func() bool { it := itemState(e, old); return it != nil && it.Attempts >= 1 })
		newer := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"}, secretReset("jane@dest.test", newMid, "T0kNew")), 0)
		evs := wantTimeline(t, e, oldMid, `^received,signed,queued,(attempt,deferred,)+superseded$`, 5*time.Second)
		if sup := evs[len(evs)-1]; sup.Fields["by"] != newer || sup.QueueID != old {
			t.Errorf("superseded = %+v, want by %s", sup, newer)
		}
		// The newer reset's own timeline is untouched by the older one's end.
		if got, _ := timeline(t, e, newMid); !strings.HasPrefix(got, "received,signed,queued") || strings.Contains(got, "superseded") {
			t.Errorf("newer timeline = %s", got)
		}
	})

	t.Run("expired", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOpts{policy: fastPolicy, sink: smtpsink_opts(func(string) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
		})})
		const mid = "life-expired@sfdc.net"
		e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, secretReset("jane@dest.test", mid, "T0kExpired"))
		// fastPolicy: expiry 4s; expired resets escalate (to the log: no Salesforce here).
		evs := wantTimeline(t, e, mid, `^received,signed,queued,(attempt,deferred,)+(attempt,)?expired,escalated$`, 10*time.Second)
		exp, esc := lastOf(evs, audit.Expired), lastOf(evs, audit.Escalated)
		if !strings.Contains(exp.Fields["reason"], "Mailbox full") || exp.Fields["deadline"] == "" {
			t.Errorf("expired = %+v", exp)
		}
		if esc.Fields["trigger"] != "expired" || esc.Fields["via"] != "log" {
			t.Errorf("escalated = %+v", esc)
		}
	})

	t.Run("escalated to Salesforce", func(t *testing.T) {
		t.Parallel()
		sf := sftest.Start(t, sftest.Options{})
		sf.AddContact("jane@dest.test", sftest.Record{"LastName": "Doe"})
		e := newEnv(t, envOpts{policy: fastPolicy, extra: sfSection(t, sf, nil),
			sink: smtpsink_opts(userUnknown("jane@dest.test", "jane.backup@backup.test"))})
		const mid = "life-escalated@sfdc.net"
		e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"},
			secretReset("jane@dest.test", mid, "T0kEscalated", "X-LK-Backup-Email: jane.backup@backup.test"))
		evs := wantTimeline(t, e, mid,
			`^received,signed,queued,attempt,bounced,retried_backup,attempt,bounced,escalated,escalated$`, 15*time.Second)
		cases := sf.Cases()
		if len(cases) != 1 {
			t.Fatalf("%d Cases, want 1", len(cases))
		}
		rec, done := evs[len(evs)-2], evs[len(evs)-1]
		if rec.Fields["trigger"] != "hard_bounce" || rec.Fields["via"] != "salesforce" || rec.Recipient != "jane@dest.test" {
			t.Errorf("escalation recorded = %+v", rec)
		}
		if done.Fields["case_id"] != cases[0]["Id"] || done.Fields["trigger"] != "hard_bounce" || done.QueueID != rec.QueueID {
			t.Errorf("escalated = %+v, want case_id %v", done, cases[0]["Id"])
		}
	})

	// The dead-letter half of issue #5, in process: the escalation fails
	// until the attempt limit moves it to the dead letters, and a retry
	// (what `latchkey outbox retry ID` calls) opens the Case.
	t.Run("escalated after dead letter and retry", func(t *testing.T) {
		t.Parallel()
		sf := sftest.Start(t, sftest.Options{})
		// max_attempts = 1: the first failure is the last (the outbox's
		// default back-off of 15-30s would make a higher limit slow here).
		e := newEnv(t, envOpts{policy: fastPolicy, extra: sfSection(t, sf, func(c *salesforce.Config) { c.MaxAttempts = 1 }),
			sink: smtpsink_opts(userUnknown("jane@dest.test"))})
		sf.Inject(sftest.Fault{Kind: sftest.ServerError, Count: 1, Method: "POST", PathContains: "/sobjects/Case"})
		const mid = "life-dead@sfdc.net"
		e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, secretReset("jane@dest.test", mid, "T0kDead"))
		var dead []salesforce.Item
		waitFor(t, "a dead-lettered escalation", 10*time.Second, func() bool {
			dead, _ = e.srv.Outbox.List(salesforce.StateDead)
			return len(dead) == 1
		})
		if n := len(sf.Cases()); n != 0 {
			t.Fatalf("%d Cases opened by a failed escalation", n)
		}
		if p, d := e.srv.Outbox.Stats(); p != 0 || d != 1 {
			t.Errorf("outbox stats pending %d dead %d, want 0 and 1", p, d)
		}
		if got, _ := timeline(t, e, mid); !strings.HasSuffix(got, "bounced,escalated") {
			t.Errorf("timeline before the retry = %s", got)
		}
		if err := e.srv.Outbox.Retry(dead[0].ID); err != nil {
			t.Fatal(err)
		}
		evs := wantTimeline(t, e, mid, `^received,signed,queued,attempt,bounced,escalated,escalated$`, 10*time.Second)
		cases := sf.Cases()
		if len(cases) != 1 || evs[len(evs)-1].Fields["case_id"] != cases[0]["Id"] {
			t.Errorf("after retry: Cases %v, last event %+v", cases, evs[len(evs)-1])
		}
		if p, d := e.srv.Outbox.Stats(); p != 0 || d != 0 {
			t.Errorf("outbox stats after retry: pending %d dead %d, want 0 and 0", p, d)
		}
	})
}

// sfSection is the [salesforce] table pointing at sf, with secrets in files.
func sfSection(t *testing.T, sf *sftest.Server, edit func(*salesforce.Config)) string {
	t.Helper()
	sfc, err := sf.ClientConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&sfc)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{"salesforce": sfc}); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// syncBuffer is a log destination shared by the relay's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// restartLogged stops e's relay and boots it again on the same data
// directory with a debug logger writing to w (the harness logs to t.Log,
// which a test cannot read back).
func restartLogged(e *env, w io.Writer) {
	t := e.t
	t.Helper()
	e.stop()
	cfg, err := conf.Parse("test.toml", []byte(e.cfgText), false)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	e.cfg = cfg
	srv, err := Boot(cfg, zerolog.New(w).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatalf("boot: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		t.Fatalf("start: %v", err)
	}
	e.srv, e.cancel = srv, cancel
	t.Cleanup(e.stop)
}

// No reset link or token is written to the logs, the audit export, or any
// database value other than the queued message itself; and none is in the
// raw database files once the relay has stopped. Three resets cover the
// paths where a token could leak: a plain delivery; an MX that defers
// quoting the link back; an MX that refuses the message quoting the link.
func TestNoSecretsAnywhere(t *testing.T) {
	tokens := map[string]string{ // recipient → token
		// No two share a 4-byte run, so Snappy (Badger compresses its
		// tables) cannot turn one into a back-reference to another.
		"r1@dest.test": "pT4xWq9ZkR2mLd7VbN3s",
		"r2@dest.test": "Hc8JyE5uQa1oKf6GiX0w",
		"r3@dest.test": "sM2nBv7CzY4tRe9DqL5p",
	}
	var mu sync.Mutex
	deferred := false
	e := newEnv(t, envOpts{policy: fastPolicy})
	e.sink.SetRcpt(func(rcpt string) *smtp.SMTPError {
		mu.Lock()
		defer mu.Unlock()
		if rcpt == "r2@dest.test" && !deferred {
			deferred = true
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, retry " + resetLink(tokens[rcpt])}
		}
		return nil
	})
	e.sink.SetData(func(_ string, rcpts []string, _ []byte) *smtp.SMTPError {
		if rcpts[0] == "r3@dest.test" {
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Rejected: blocked URL " + resetLink(tokens["r3@dest.test"])}
		}
		return nil
	})
	var logs syncBuffer
	restartLogged(e, &logs)

	c := e.client("PLAIN")
	var ids []string
	for _, rcpt := range []string{"r1@dest.test", "r2@dest.test", "r3@dest.test"} {
		id := e.sendID(c, "noreply@example.com", []string{rcpt}, secretReset(rcpt, "nosecret-"+rcpt, tokens[rcpt]))
		ids = append(ids, queue.ItemID(id, 0))
	}
	for _, id := range ids {
		waitFor(t, id+" final", 10*time.Second, func() bool {
			it := itemState(e, id)
			return it != nil && queue.Final(it.State)
		})
	}
	if it := itemState(e, ids[1]); it.State != queue.StateDelivered || it.Attempts != 2 {
		t.Errorf("r2: %+v, want delivered on the second attempt", it)
	}
	if it := itemState(e, ids[2]); it.State != queue.StateBounced {
		t.Errorf("r3: %+v, want bounced", it)
	}
	// r1's link came only from the message; r2's and r3's were also quoted
	// back by the MX.
	plain := []string{tokens["r1@dest.test"], resetLink(tokens["r1@dest.test"])}
	echoed := []string{tokens["r2@dest.test"], tokens["r3@dest.test"], "reset?token="}
	leak := func(t *testing.T, where string, b []byte, secrets []string) bool {
		t.Helper()
		found := false
		for _, s := range secrets {
			if i := bytes.Index(b, []byte(s)); i >= 0 {
				t.Errorf("%s holds %q: …%q…", where, s, b[max(0, i-80):min(len(b), i+80)])
				found = true
			}
		}
		return found
	}

	// The logs, checked to hold the deliveries (so they were captured).
	l := logs.String()
	for _, id := range ids {
		if !strings.Contains(l, id) {
			t.Fatalf("captured log lacks %s; is the logger wired?", id)
		}
	}
	leak(t, "the log", []byte(l), plain)

	// The export in both formats, checked to hold the URL hashes.
	for _, format := range []string{"csv", "jsonl"} {
		var out bytes.Buffer
		if err := audit.Export(e.srv.Store.DB, &out, format, time.Time{}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), e.srv.Store.Audit.URLHash(resetLink(tokens["r1@dest.test"]))) {
			t.Errorf("%s export lacks the link's keyed hash", format)
		}
		leak(t, format+" export", out.Bytes(), append(plain, echoed...))
	}

	// Every version of every key in the database: only message bodies
	// (q/b/, needed to deliver and re-send to a backup) may hold a link.
	type kv struct{ k, v []byte }
	var values []kv
	bodies := 0
	err := e.srv.Store.DB.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{AllVersions: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.KeyCopy(nil)
			if bytes.HasPrefix(k, []byte("q/b/")) {
				bodies++
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			values = append(values, kv{k, v})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if bodies == 0 {
		t.Error("no q/b/ body found: the key layout changed and this check no longer looks at the right keys")
	}
	for _, x := range values {
		leak(t, fmt.Sprintf("database key %q", x.k), x.k, plain)
		leak(t, fmt.Sprintf("database value of %q", x.k), x.v, plain)
	}

	t.Run("link quoted in an MX reply", func(t *testing.T) {
		leak(t, "the log", []byte(l), echoed)
		for _, x := range values {
			leak(t, fmt.Sprintf("database value of %q", x.k), x.v, echoed)
		}
	})

	// The raw files, after the relay stopped and Badger flushed and closed.
	e.stop()
	t.Run("raw database files", func(t *testing.T) {
		read := 0
		filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			read += len(b)
			leak(t, path, b, append(plain, echoed...))
			return nil
		})
		if read == 0 {
			t.Errorf("nothing read under %s", e.dir)
		}
	})
}
