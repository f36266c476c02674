package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce/sftest"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// lifecycleEnv is a relay reporting resets to a fake org, with the admin
// API up.
func lifecycleEnv(t testing.TB, policy string, sink smtpsink.Options, quiet bool) (*env, *sftest.Server) {
	t.Helper()
	sf := sftest.Start(t, sftest.Options{})
	sfc, err := sf.ClientConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sfc.Lifecycle.Enabled = true
	sfc.Lifecycle.Interval = 200 * time.Millisecond
	sfc.Lifecycle.SlowInterval = time.Second
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{"salesforce": sfc}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOpts{policy: policy, extra: buf.String(), sink: sink, admin: true, quiet: quiet})
	return e, sf
}

func adminPost(t testing.TB, e *env, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+e.srv.AdminAddr.String()+path, strings.NewReader(body))
	tok, err := os.ReadFile(e.srv.cfg.Path("admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// Over real SMTP: a reset delivered is one record with request, send and
// delivery, linked to the Contact its Salesforce headers name; the click
// and the completion reported to the admin API land on the same record; a
// reset that hard-bounces, goes to the backup address and is delivered is
// one record with both.
func TestLifecycleInSalesforce(t *testing.T) {
	e, sf := lifecycleEnv(t, fastPolicy, smtpsink_opts(userUnknown("joe@dest.test")), false)
	contact := sf.AddContact("jane@dest.test", nil)
	c := e.client("PLAIN")
	jane := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"jane@dest.test"},
		resetMsg("jane@dest.test", "lc1", "X-SFDC-EntityId: "+contact)), 0)
	joe := queue.ItemID(e.sendID(c, "noreply@example.com", []string{"joe@dest.test"},
		resetMsg("joe@dest.test", "lc2", "X-LK-Backup-Email: joe.home@backup.test")), 0)
	record := func(id string) sftest.Record { return sf.ByExternalID("Latchkey_Reset__c", "Latchkey_Id__c", id) }
	waitFor(t, "both records delivered", 15*time.Second, func() bool {
		a, b := record(jane), record(joe)
		return a != nil && b != nil && a["Status__c"] == "Delivered" && b["Status__c"] == "Delivered"
	})
	r := record(jane)
	for _, k := range []string{"Requested_At__c", "Sent_At__c", "Delivered_At__c", "Token_Expires_At__c", "Delivery_Seconds__c"} {
		if r[k] == nil {
			t.Errorf("delivered record lacks %s: %v", k, r)
		}
	}
	if r["Contact__c"] != contact || r["Requested_By__c"] != "0055g00000ABCDEAAB" || r["Recipient__c"] != "jane@dest.test" ||
		r["Message_Id__c"] != jane[:16] || r["Message_ID_Header__c"] != "<lc1.abc@sfdc.net>" {
		t.Errorf("delivered record: %v", r)
	}
	r = record(joe)
	if r["Bounce_Type__c"] != "Hard" || r["Bounced_At__c"] == nil || r["Backup_Used__c"] != true ||
		r["Backup_Address__c"] != "j***@backup.test" || r["Recipient__c"] != "joe@dest.test" || r["Delivered_At__c"] == nil {
		t.Errorf("bounced-then-backup record: %v", r)
	}

	// The app's reset page reports the click and the completion by the id
	// Salesforce's email log shows.
	for _, ev := range []string{"clicked", "completed"} {
		if st, body := adminPost(t, e, "/api/v1/events/"+ev, fmt.Sprintf(`{"queue_id":%q}`, jane[:16])); st != 201 {
			t.Fatalf("POST %s: %d %s", ev, st, body)
		}
	}
	// Or by the SHA-256 of the link the user opened: no link, no token sent.
	sum := sha256.Sum256([]byte("https://acme.my.site.com/s/reset?token=lc2"))
	if st, body := adminPost(t, e, "/api/v1/events/clicked", fmt.Sprintf(`{"link_sha256":%q}`, hex.EncodeToString(sum[:]))); st != 201 || !strings.Contains(body, joe) {
		t.Errorf("click by link hash: %d %s", st, body)
	}
	if st, _ := adminPost(t, e, "/api/v1/events/clicked", `{"link_sha256":"https://acme.my.site.com/s/reset?token=lc2"}`); st != 400 {
		t.Errorf("a link instead of its hash: %d, want 400", st)
	}
	other := sha256.Sum256([]byte("https://example.com/other"))
	if st, _ := adminPost(t, e, "/api/v1/events/clicked", fmt.Sprintf(`{"link_sha256":%q}`, hex.EncodeToString(other[:]))); st != 404 {
		t.Errorf("an unknown link hash: %d, want 404", st)
	}
	waitFor(t, "completed in Salesforce", 10*time.Second, func() bool { return record(jane)["Status__c"] == "Completed" })
	waitFor(t, "joe's click in Salesforce", 10*time.Second, func() bool { return record(joe)["Clicked_At__c"] != nil })
	if r := record(jane); r["Clicked_At__c"] == nil || r["Completed_At__c"] == nil {
		t.Errorf("after click and completion: %v", r)
	}
	if n := len(sf.Records("Latchkey_Reset__c")); n != 2 {
		t.Errorf("%d Latchkey_Reset__c records, want one per reset (2)", n)
	}
	// The worker commits a record's last update after Salesforce has it: the
	// Salesforce fields above can be seen a moment before the outbox is empty.
	var st int
	var body string
	waitFor(t, "the lifecycle outbox empty", 10*time.Second, func() bool {
		st, body = adminGet(t, e, "/api/v1/outbox/records", true)
		return st == 200 && strings.Contains(body, `"pending":0`)
	})
	if !strings.Contains(body, `"dead_records":[]`) {
		t.Errorf("outbox records: %d %s", st, body)
	}
	if st, body := adminGet(t, e, "/metrics", true); st != 200 || !strings.Contains(body, `latchkey_salesforce_lifecycle_records{state="pending"}`) {
		t.Errorf("metrics: %d, no lifecycle gauge", st)
	}
}

// BenchmarkLifecycleAPICalls sends 1,000 resets over real SMTP (8
// connections), waits until each is delivered and its record is in the fake
// org with its delivery, and reports the Salesforce API calls it cost per
// 1,000 resets (target: at most 20).
//
//	go test -run '^$' -bench LifecycleAPICalls -benchtime 1x ./relay
func BenchmarkLifecycleAPICalls(b *testing.B) {
	const resets, conns = 1000, 8
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// A 10-minute token: on a loaded machine the 4 s of fastPolicy
		// expires some resets, which would then never be delivered.
		e, sf := lifecycleEnv(b, strings.Replace(fastPolicy, `expiry = "4s"`, `expiry = "10m"`, 1), smtpsink.Options{Discard: true}, true)
		before := sf.APICalls()
		b.StartTimer()
		var wg sync.WaitGroup
		for w := 0; w < conns; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				c := e.client("PLAIN")
				for j := w; j < resets; j += conns {
					rcpt := fmt.Sprintf("u%d@dest.test", j)
					if _, err := send(c, "noreply@example.com", []string{rcpt}, resetMsg(rcpt, fmt.Sprintf("b%d-%d", i, j))); err != nil {
						b.Error(err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			n := 0
			for _, r := range sf.Records("Latchkey_Reset__c") {
				if r["Delivered_At__c"] != nil {
					n++
				}
			}
			if n == resets && e.srv.Lifecycle.Stats().Pending == 0 {
				break
			}
			if time.Now().After(deadline) {
				items, _ := e.srv.Queue.List(queue.Filter{State: "all", Limit: 5000})
				for _, it := range items {
					r := sf.ByExternalID("Latchkey_Reset__c", "Latchkey_Id__c", it.ID)
					if r == nil || r["Delivered_At__c"] == nil {
						b.Logf("item %s state %s reason %q attempts %d: record %v", it.ID, it.State, it.Reason, it.Attempts, r)
					}
				}
				b.Fatalf("%d of %d records delivered in Salesforce after 2 minutes (%d items; lifecycle %+v)", n, resets, len(items), e.srv.Lifecycle.Stats())
			}
			time.Sleep(50 * time.Millisecond)
		}
		b.StopTimer()
		calls := sf.APICalls() - before
		b.ReportMetric(float64(calls)*1000/resets, "calls/1000resets")
		b.ReportMetric(float64(e.srv.Lifecycle.Stats().Sent)/resets, "writes/reset")
		e.stop()
	}
}
