package admin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce"
)

const token = "test-token-0123456789"

var auditKey = []byte("0123456789abcdef0123456789abcdef")

type env struct {
	st  *queue.Store
	q   *queue.Queue
	url string
	h   http.Handler
	c   *admin.Client // over loopback HTTP
	ip  *admin.Client // in process
}

func setup(t *testing.T, mod func(*admin.Options)) *env {
	t.Helper()
	st, err := queue.OpenStore(t.TempDir(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if st.Audit, err = audit.Open(st.DB, auditKey); err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(st, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	o := admin.Options{Token: token, Queue: q, Store: st, AuditKey: auditKey, Log: zerolog.Nop()}
	if mod != nil {
		mod(&o)
	}
	h := admin.Handler(o)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{st: st, q: q, url: srv.URL, h: h,
		c:  &admin.Client{BaseURL: srv.URL, Token: token, HTTP: srv.Client()},
		ip: &admin.Client{BaseURL: "http://latchkey", Token: token, HTTP: &http.Client{Transport: admin.Transport(h)}}}
}

// enqueue queues a message with one item per recipient and returns the items.
func (e *env) enqueue(t *testing.T, class, messageID string, accepted time.Time, rcpts ...string) []*queue.Item {
	t.Helper()
	id := queue.NewMsgID(accepted)
	m := &queue.Message{MsgID: id, Body: []byte("Subject: reset\r\n\r\nhello\r\n")}
	for i, r := range rcpts {
		// Due in an hour: no worker runs, the items stay queued.
		m.Items = append(m.Items, &queue.Item{ID: queue.ItemID(id, i), MsgID: id, Class: class, Rcpt: r,
			From: "noreply@example.test", MessageID: messageID, Accepted: accepted, Due: accepted.Add(time.Hour),
			Deadline: accepted.Add(2 * time.Hour), Cutoff: accepted.Add(2 * time.Hour)})
	}
	m.Events = []*audit.Event{{Time: accepted, Type: audit.Received, MessageID: messageID, Class: class, Sender: "noreply@example.test",
		Fields: map[string]string{"queue_id": id}}}
	if _, err := e.q.Enqueue(m); err != nil {
		t.Fatal(err)
	}
	return m.Items
}

// status calls and returns the HTTP status and the decoded error message.
func status(t *testing.T, c *admin.Client, method, path string, in any) (int, string) {
	t.Helper()
	err := c.JSON(context.Background(), method, path, in, nil)
	if err == nil {
		return 200, ""
	}
	var ae *admin.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return ae.Status, ae.Message
}

func call(t *testing.T, c *admin.Client, method, path string, in, out any) {
	t.Helper()
	if err := c.JSON(context.Background(), method, path, in, out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
}

func TestAuth(t *testing.T) {
	ready := errors.New("listeners not up")
	e := setup(t, func(o *admin.Options) {
		o.Ready = func() error { return ready }
		o.Extra = map[string]http.Handler{
			"GET /metrics": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok_metric 1\n") }),
			// Conflicts with a built-in route: logged and skipped, no panic.
			"GET /api/v1/queue": http.NotFoundHandler(),
		}
	})
	get := func(path, auth string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", e.url+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, c := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", 200},
		{"/readyz", "", 503},
		{"/api/v1/queue", "", 401},
		{"/api/v1/queue", "Bearer wrong", 401},
		{"/api/v1/queue", "Basic " + token, 401},
		{"/api/v1/queue", "Bearer " + token, 200},
		{"/api/v1/queue", "bearer " + token, 200},
		{"/metrics", "", 401},
		{"/metrics", "Bearer " + token, 200},
		{"/nope", "", 401}, // no route enumeration without the token
		{"/nope", "Bearer " + token, 404},
		{"/api/v1/outbox", "Bearer " + token, 404}, // Salesforce disabled
	} {
		resp, body := get(c.path, c.auth)
		if resp.StatusCode != c.want {
			t.Errorf("GET %s (%q) = %d %s, want %d", c.path, c.auth, resp.StatusCode, body, c.want)
		}
		if ct := resp.Header.Get("Content-Type"); c.path != "/metrics" && ct != "application/json" {
			t.Errorf("GET %s: Content-Type %q", c.path, ct)
		}
		if c.want == 401 && !strings.Contains(body, `"error"`) {
			t.Errorf("GET %s: 401 body %q is not a JSON error", c.path, body)
		}
	}
	if _, body := get("/readyz", ""); !strings.Contains(body, "listeners not up") {
		t.Errorf("readyz body %q does not say why", body)
	}
	// A method the route does not take: 405 with Allow, as JSON.
	req, _ := http.NewRequest("DELETE", e.url+"/api/v1/queue", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET" {
		t.Errorf("DELETE /api/v1/queue = %d Allow %q, want 405 GET", resp.StatusCode, resp.Header.Get("Allow"))
	}

	// No token configured: closed, not open.
	closed := setup(t, func(o *admin.Options) { o.Token = "" })
	resp, err = http.Get(closed.url + "/api/v1/queue")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("no token configured: %d, want 403", resp.StatusCode)
	}
}

// The queue routes, over loopback HTTP and in process: the same answers.
func TestQueue(t *testing.T) {
	for _, via := range []string{"http", "in-process"} {
		t.Run(via, func(t *testing.T) {
			e := setup(t, nil)
			c := e.c
			if via == "in-process" {
				c = e.ip
			}
			now := time.Now()
			reset := e.enqueue(t, "reset", "<r1@example.test>", now, "a@example.test")[0]
			bulk := e.enqueue(t, "bulk", "<b1@example.test>", now, "b@example.test")[0]

			var items []queue.Item
			call(t, c, "GET", "/api/v1/queue", nil, &items)
			if len(items) != 2 {
				t.Fatalf("queue list: %d items, want 2", len(items))
			}
			call(t, c, "GET", "/api/v1/queue?class=bulk", nil, &items)
			if len(items) != 1 || items[0].ID != bulk.ID {
				t.Fatalf("queue list class=bulk: %+v", items)
			}
			if st, msg := status(t, c, "GET", "/api/v1/queue?state=lost", nil); st != 400 || !strings.HasPrefix(msg, "state:") {
				t.Errorf("bad state: %d %q", st, msg)
			}
			if st, msg := status(t, c, "GET", "/api/v1/queue?limit=x", nil); st != 400 || !strings.HasPrefix(msg, "limit:") {
				t.Errorf("bad limit: %d %q", st, msg)
			}

			var one []queue.Item
			call(t, c, "GET", "/api/v1/queue/"+reset.ID, nil, &one)
			if len(one) != 1 || one[0].Rcpt != "a@example.test" || one[0].State != queue.StateQueued {
				t.Errorf("queue show: %+v", one)
			}
			unknown := queue.ItemID(queue.NewMsgID(now), 0)
			if st, _ := status(t, c, "GET", "/api/v1/queue/"+unknown, nil); st != 404 {
				t.Errorf("show unknown: %d, want 404", st)
			}
			if st, msg := status(t, c, "GET", "/api/v1/queue/NOT-AN-ID", nil); st != 400 || !strings.HasPrefix(msg, "id:") {
				t.Errorf("show bad id: %d %q", st, msg)
			}

			call(t, c, "POST", "/api/v1/queue/"+reset.ID+"/retry", nil, &one)
			if len(one) != 1 || !one[0].Due.Before(reset.Due) {
				t.Errorf("retry: %+v, want due before %v", one, reset.Due)
			}
			if st, _ := status(t, c, "POST", "/api/v1/queue/"+unknown+"/retry", nil); st != 404 {
				t.Errorf("retry unknown: %d", st)
			}

			if st, msg := status(t, c, "POST", "/api/v1/queue/"+bulk.ID+"/drop", map[string]any{"by": "alice", "bogus": 1}); st != 400 || !strings.Contains(msg, "bogus") {
				t.Errorf("drop with an unknown field: %d %q", st, msg)
			}
			call(t, c, "POST", "/api/v1/queue/"+bulk.ID+"/drop", admin.DropRequest{By: "alice", Reason: "test send"}, &one)
			if len(one) != 1 || one[0].State != queue.StateDropped {
				t.Errorf("drop: %+v", one)
			}
			if st, msg := status(t, c, "POST", "/api/v1/queue/"+bulk.ID+"/drop", admin.DropRequest{By: "alice"}); st != 409 || !strings.Contains(msg, "dropped") {
				t.Errorf("drop twice: %d %q, want 409", st, msg)
			}
			if st, _ := status(t, c, "POST", "/api/v1/queue/"+bulk.ID+"/retry", nil); st != 409 {
				t.Errorf("retry a dropped item: %d, want 409", st)
			}
			call(t, c, "GET", "/api/v1/queue?state=dropped", nil, &items)
			if len(items) != 1 || items[0].ID != bulk.ID {
				t.Errorf("list state=dropped: %+v", items)
			}

			var evs []audit.Event
			call(t, c, "GET", "/api/v1/audit/messages/"+bulk.ID, nil, &evs)
			last := evs[len(evs)-1]
			if last.Type != audit.Dropped || last.Fields["by"] != "alice" || last.Fields["reason"] != "test send" {
				t.Errorf("audit after drop: last event %+v", last)
			}
		})
	}
}

func TestSuppressions(t *testing.T) {
	e := setup(t, nil)
	c := e.c
	var sup queue.Suppression
	call(t, c, "PUT", "/api/v1/suppressions/bulk/Unsub@Example.test", admin.SuppressRequest{Reason: "unsubscribed"}, &sup)
	if sup.Address != "unsub@example.test" || sup.List != "bulk" {
		t.Errorf("add: %+v", sup)
	}
	if st, msg := status(t, c, "PUT", "/api/v1/suppressions/bulk/not-an-address", nil); st != 400 || !strings.HasPrefix(msg, "address:") {
		t.Errorf("add bad address: %d %q", st, msg)
	}
	if st, msg := status(t, c, "PUT", "/api/v1/suppressions/Bad%20List/a@example.test", nil); st != 400 || !strings.HasPrefix(msg, "list:") {
		t.Errorf("add to a bad list: %d %q", st, msg)
	}
	if got, _ := e.q.Suppressed("unsub@example.test", []string{"bulk"}); len(got) != 1 || got[0].Reason != "unsubscribed" {
		t.Errorf("queue sees %+v", got)
	}

	csv := "\ufeffaddress,reason\n" + // BOM and header
		"one@example.test,bounced\n" +
		"# a comment\n" +
		"\n" +
		"not an address\n" + // line 5
		"\"two@example.test\", \"quoted, with comma\"\n" +
		"three@example.test,a,b\n" + // line 7: too many columns
		"\"broken@example.test\n" + // line 8: unterminated quote
		"Four@Example.test\r\n" +
		"one@example.test,again\n" + // a repeat: one address
		"five@nodot"
	resp, err := c.Do(context.Background(), "POST", "/api/v1/suppressions/bulk/import", strings.NewReader(csv), "text/csv")
	if err != nil {
		t.Fatal(err)
	}
	var res admin.ImportResult
	json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	var lines []int
	for _, b := range res.Bad {
		lines = append(lines, b.Line)
	}
	if res.Imported != 3 || res.Rows != 8 || res.BadCount != 4 || fmt.Sprint(lines) != "[5 7 8 11]" {
		t.Errorf("import: %+v (bad lines %v), want 3 imported of 8 rows, bad lines [5 7 8 11]", res, lines)
	}
	var list []queue.Suppression
	call(t, c, "GET", "/api/v1/suppressions?list=bulk", nil, &list)
	got := map[string]string{}
	for _, s := range list {
		got[s.Address] = s.Reason
	}
	want := map[string]string{"unsub@example.test": "unsubscribed", "one@example.test": "again",
		"two@example.test": "quoted, with comma", "four@example.test": ""}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("list after import = %v, want %v", got, want)
	}

	// Nothing importable: 400 with the bad rows.
	_, err = c.Do(context.Background(), "POST", "/api/v1/suppressions/bulk/import", strings.NewReader("email\nnope\n"), "text/csv")
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("all-bad import: %v", err)
	}
	json.Unmarshal(ae.Body, &res)
	if res.Imported != 0 || len(res.Bad) != 1 || res.Bad[0].Line != 2 {
		t.Errorf("all-bad import: %+v", res)
	}

	call(t, c, "DELETE", "/api/v1/suppressions/bulk/two@example.test", nil, nil)
	if st, _ := status(t, c, "DELETE", "/api/v1/suppressions/bulk/two@example.test", nil); st != 404 {
		t.Errorf("remove twice: %d, want 404", st)
	}
	// Every addition and the removal are in the audit trail.
	var evs []audit.Event
	call(t, c, "GET", "/api/v1/audit/events?type=suppressed", nil, &evs)
	removed := 0
	for _, ev := range evs {
		if ev.Fields["action"] == "removed" {
			removed++
			if ev.Recipient != "two@example.test" || ev.Fields["list"] != "bulk" || ev.Fields["by"] != "admin-api" {
				t.Errorf("removal event %+v", ev)
			}
		}
	}
	if len(evs) != 5 || removed != 1 {
		t.Errorf("%d suppressed events (%d removals), want 5: 1 added + 3 imported + 1 removed", len(evs), removed)
	}
}

func TestClicked(t *testing.T) {
	e := setup(t, nil)
	c := e.c
	accepted := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	it := e.enqueue(t, "reset", "<reset-1@example.test>", accepted, "a@example.test")[0]
	multi := e.enqueue(t, "transactional", "<multi@example.test>", accepted, "x@example.test", "y@example.test")

	at := accepted.Add(3 * time.Minute).UTC()
	var res admin.ClickResult
	call(t, c, "POST", "/api/v1/events/clicked", map[string]string{"queue_id": it.ID, "time": at.Format(time.RFC3339)}, &res)
	if res.Duplicate || res.QueueID != it.ID || !res.Time.Equal(at) {
		t.Errorf("first click: %+v", res)
	}
	call(t, c, "POST", "/api/v1/events/clicked", map[string]string{"message_id": "reset-1@example.test"}, &res)
	if !res.Duplicate || res.QueueID != it.ID {
		t.Errorf("second click by Message-ID: %+v, want duplicate of %s", res, it.ID)
	}
	evs, err := audit.Show(e.st.DB, "<reset-1@example.test>")
	if err != nil {
		t.Fatal(err)
	}
	var clicks []audit.Event
	for _, ev := range evs {
		if ev.Type == audit.Clicked {
			clicks = append(clicks, ev)
		}
	}
	if len(clicks) != 2 || !clicks[0].Time.Equal(at) || clicks[0].QueueID != it.ID || clicks[0].Class != "reset" ||
		clicks[0].Recipient != "a@example.test" || clicks[1].Fields["duplicate"] != "true" {
		t.Errorf("clicked events: %+v", clicks)
	}

	for _, c2 := range []struct {
		body map[string]string
		want int
		msg  string
	}{
		{map[string]string{"queue_id": it.ID, "time": time.Now().Add(time.Hour).Format(time.RFC3339)}, 400, "time: in the future"},
		{map[string]string{"queue_id": it.ID, "time": accepted.Add(-time.Hour).Format(time.RFC3339)}, 400, "time: before"},
		{map[string]string{"queue_id": it.ID, "time": "yesterday"}, 400, "time:"},
		{map[string]string{"queue_id": it.ID, "message_id": "<reset-1@example.test>"}, 400, "queue_id, message_id"},
		{map[string]string{}, 400, "queue_id, message_id"},
		{map[string]string{"queue_id": queue.ItemID(queue.NewMsgID(accepted), 0)}, 404, "no queue item"},
		{map[string]string{"message_id": "<nobody@example.test>"}, 404, "no message"},
		{map[string]string{"message_id": "<multi@example.test>"}, 409, "names 2 queue items"},
	} {
		st, msg := status(t, c, "POST", "/api/v1/events/clicked", c2.body)
		if st != c2.want || !strings.Contains(msg, c2.msg) {
			t.Errorf("click %v: %d %q, want %d %q", c2.body, st, msg, c2.want, c2.msg)
		}
	}
	call(t, c, "POST", "/api/v1/events/clicked", map[string]string{"queue_id": multi[1].ID}, &res)
	if res.Recipient != "y@example.test" {
		t.Errorf("click by queue id of a multi-recipient message: %+v", res)
	}
}

func TestAuditRoutes(t *testing.T) {
	e := setup(t, nil)
	c := e.c
	now := time.Now()
	a := e.enqueue(t, "reset", "<a@example.test>", now, "a@example.test")[0]
	e.enqueue(t, "bulk", "<b@example.test>", now, "b@example.test")

	var evs []audit.Event
	call(t, c, "GET", "/api/v1/audit/events?recipient=A@example.test", nil, &evs)
	if len(evs) != 1 || evs[0].Type != audit.Queued || evs[0].QueueID != a.ID {
		t.Errorf("events by recipient: %+v", evs)
	}
	call(t, c, "GET", "/api/v1/audit/events?class=bulk&type=received", nil, &evs)
	if len(evs) != 1 || evs[0].MessageID != "<b@example.test>" {
		t.Errorf("events by class and type: %+v", evs)
	}
	call(t, c, "GET", "/api/v1/audit/events?limit=1", nil, &evs)
	if len(evs) != 1 {
		t.Errorf("limit=1: %d events", len(evs))
	}
	call(t, c, "GET", "/api/v1/audit/events?since="+now.Add(time.Hour).UTC().Format(time.RFC3339), nil, &evs)
	if len(evs) != 0 {
		t.Errorf("since an hour ahead: %d events", len(evs))
	}
	if st, msg := status(t, c, "GET", "/api/v1/audit/events?until=tomorrow", nil); st != 400 || !strings.HasPrefix(msg, "until:") {
		t.Errorf("bad until: %d %q", st, msg)
	}
	// A mistyped event type is an error, not "no such events".
	if st, msg := status(t, c, "GET", "/api/v1/audit/events?type=delivred", nil); st != 400 || !strings.HasPrefix(msg, "type:") || !strings.Contains(msg, "delivered") {
		t.Errorf("bad type: %d %q", st, msg)
	}
	call(t, c, "GET", "/api/v1/audit/messages/%3Ca@example.test%3E", nil, &evs)
	if len(evs) != 2 || evs[0].Type != audit.Received || evs[1].Type != audit.Queued {
		t.Errorf("timeline by Message-ID: %+v", evs)
	}
	if st, _ := status(t, c, "GET", "/api/v1/audit/messages/nobody@example.test", nil); st != 404 {
		t.Errorf("unknown timeline: %d", st)
	}
	if st, msg := status(t, c, "GET", "/api/v1/audit/messages/nobody", nil); st != 400 || !strings.Contains(msg, "Message-ID") {
		t.Errorf("an id of no kind: %d %q, want 400 naming the kinds", st, msg)
	}

	var v admin.VerifyResult
	call(t, c, "GET", "/api/v1/audit/verify", nil, &v)
	if !v.OK || v.Events != 4 || v.LastSeq != 4 || len(v.Problems) != 0 {
		t.Errorf("verify: %+v", v)
	}

	for _, cl := range []*admin.Client{e.c, e.ip} {
		resp, err := cl.Do(context.Background(), "GET", "/api/v1/audit/export?format=csv", nil, "")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" || len(lines) != 5 ||
			strings.TrimSpace(lines[0]) != strings.Join(audit.CSVHeader, ",") {
			t.Errorf("csv export: %s\n%s", resp.Header.Get("Content-Type"), b)
		}
		resp, err = cl.Do(context.Background(), "GET", "/api/v1/audit/export?format=jsonl&since="+now.Add(-time.Minute).UTC().Format(time.RFC3339), nil, "")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		n := 0
		for sc.Scan() {
			var ev audit.Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("jsonl line %d: %v", n+1, err)
			}
			n++
		}
		resp.Body.Close()
		if n != 4 {
			t.Errorf("jsonl export: %d lines, want 4", n)
		}
	}
	if st, msg := status(t, c, "GET", "/api/v1/audit/export?format=xml", nil); st != 400 || !strings.HasPrefix(msg, "format:") {
		t.Errorf("bad format: %d %q", st, msg)
	}
}

// Tampering shows in the verify answer.
func TestVerifyReportsTampering(t *testing.T) {
	e := setup(t, nil)
	e.enqueue(t, "reset", "<a@example.test>", time.Now(), "a@example.test")
	// Delete the first event behind the log's back (the key layout is
	// audit's: "a/e/" and the big-endian seq).
	err := e.st.DB.Update(func(txn *badger.Txn) error {
		return txn.Delete(append([]byte("a/e/"), 0, 0, 0, 0, 0, 0, 0, 1))
	})
	if err != nil {
		t.Fatal(err)
	}
	var v admin.VerifyResult
	call(t, e.c, "GET", "/api/v1/audit/verify", nil, &v)
	if v.OK || len(v.Problems) == 0 {
		t.Fatalf("verify after deleting an event: %+v", v)
	}
}

// The in-process transport streams: the caller reads the first part of an
// answer while the handler is still producing the rest.
func TestTransportStreams(t *testing.T) {
	release := make(chan struct{})
	done := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second\n")
	})
	hc := &http.Client{Transport: admin.Transport(h)}
	resp, err := hc.Get("http://latchkey/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	select {
	case <-done:
		t.Fatal("handler finished before it was released: the answer was buffered")
	default:
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if string(rest) != "second\n" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("rest %q, header %v", rest, resp.Header)
	}

	// An aborted answer is an error for the reader, not a clean end.
	abort := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		panic(http.ErrAbortHandler)
	})
	resp, err = (&http.Client{Transport: admin.Transport(abort)}).Get("http://latchkey/x")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Error("reading an aborted answer: no error")
	}
}

func TestOutbox(t *testing.T) {
	var ob *salesforce.Outbox
	e := setup(t, func(o *admin.Options) {
		o.Outbox = salesforce.NewOutbox(o.Store.DB, nil, salesforce.OutboxOptions{})
		ob = o.Outbox
	})
	esc := salesforce.Escalation{ID: "esc-pending", QueueID: "q1", Class: "reset", Recipient: "a@example.test",
		Trigger: salesforce.TriggerHardBounce, AcceptedAt: time.Now(), FailedAt: time.Now()}
	if err := e.st.DB.Update(func(txn *badger.Txn) error { return ob.Put(txn, esc) }); err != nil {
		t.Fatal(err)
	}
	// A dead letter, written as the outbox stores one ("sfo/dead/<id>"):
	// reaching it through the worker needs a failing Salesforce.
	dead := salesforce.Item{Escalation: esc, State: salesforce.StateDead, Attempts: 12, LastError: "503", CreatedAt: time.Now()}
	dead.ID = "esc-dead"
	b, _ := json.Marshal(dead)
	if err := e.st.DB.Update(func(txn *badger.Txn) error { return txn.Set([]byte("sfo/dead/esc-dead"), b) }); err != nil {
		t.Fatal(err)
	}

	var items []salesforce.Item
	call(t, e.c, "GET", "/api/v1/outbox", nil, &items)
	if len(items) != 2 {
		t.Fatalf("outbox list: %+v", items)
	}
	call(t, e.c, "GET", "/api/v1/outbox?state=dead", nil, &items)
	if len(items) != 1 || items[0].ID != "esc-dead" {
		t.Fatalf("outbox list dead: %+v", items)
	}
	if st, msg := status(t, e.c, "GET", "/api/v1/outbox?state=lost", nil); st != 400 || !strings.HasPrefix(msg, "state:") {
		t.Errorf("bad state: %d %q", st, msg)
	}
	var it salesforce.Item
	call(t, e.c, "POST", "/api/v1/outbox/esc-dead/retry", nil, &it)
	if it.State != salesforce.StatePending || it.Attempts != 0 {
		t.Errorf("after retry: %+v", it)
	}
	if st, _ := status(t, e.c, "POST", "/api/v1/outbox/esc-pending/retry", nil); st != 409 {
		t.Errorf("retry a pending escalation: %d, want 409", st)
	}
	if st, _ := status(t, e.c, "POST", "/api/v1/outbox/nobody/retry", nil); st != 404 {
		t.Errorf("retry unknown: %d, want 404", st)
	}
	if st, _ := status(t, e.c, "POST", "/api/v1/outbox/bad%20id/retry", nil); st != 400 {
		t.Errorf("retry bad id: %d, want 400", st)
	}
}

// Bodies over the limit are refused with 413.
func TestBodyLimit(t *testing.T) {
	e := setup(t, nil)
	big := bytes.Repeat([]byte(" "), 2<<20)
	resp, err := e.c.Do(context.Background(), "POST", "/api/v1/events/clicked", bytes.NewReader(append(big, '{', '}')), "application/json")
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != 413 {
		t.Errorf("2 MiB click body: %v %v, want 413", resp, err)
	}
}
