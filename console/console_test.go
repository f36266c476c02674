package console_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/console"
	"github.com/latchkey/latchkey/policy"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/relay"
)

const token = "console-test-token-0123456789"

var auditKey = []byte("0123456789abcdef0123456789abcdef")

type env struct {
	st  *queue.Store
	q   *queue.Queue
	srv *httptest.Server
	c   *console.Console
	// calls counts the console's calls to the API by path ("/api/v1/stats").
	calls *callCounter
	clock *clock
}

type callCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *callCounter) get(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[path]
}

// clock is the console's clock: the real one until set.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

// setup serves the console over the real admin API on a real Badger
// queue, with a users file holding an admin and an auditor.
func setup(t *testing.T, tls bool) *env {
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
	p, err := policy.Parse("policy.toml", conf.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.NewStore("", p)
	api := admin.Handler(admin.Options{Token: token, Queue: q, Store: st, AuditKey: auditKey, Log: zerolog.Nop(),
		Extra: map[string]http.Handler{"GET /api/v1/stats": relay.StatsHandler(st.DB, pol.Get)}})
	users := filepath.Join(t.TempDir(), "console-users")
	var b strings.Builder
	for _, u := range []struct{ name, role, pass string }{{"olga", "admin", "olga-pass"}, {"audrey", "auditor", "audrey-pass"}} {
		h, _ := bcrypt.GenerateFromPassword([]byte(u.pass), bcrypt.MinCost)
		b.WriteString(u.name + ":" + u.role + ":" + string(h) + "\n")
	}
	os.WriteFile(users, []byte("# console users\n"+b.String()), 0o600)
	calls, clk := &callCounter{n: map[string]int{}}, &clock{}
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.mu.Lock()
		calls.n[r.URL.Path]++
		calls.mu.Unlock()
		api.ServeHTTP(w, r)
	})
	c, err := console.New(console.Options{API: counted, Token: token, UsersFile: users, Log: zerolog.Nop(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	h := console.Mount(api, c)
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(h)
	} else {
		srv = httptest.NewServer(h)
	}
	t.Cleanup(srv.Close)
	return &env{st: st, q: q, srv: srv, c: c, calls: calls, clock: clk}
}

func (e *env) enqueue(t *testing.T, rcpt string) *queue.Item {
	t.Helper()
	now := time.Now()
	id := queue.NewMsgID(now)
	it := &queue.Item{ID: queue.ItemID(id, 0), MsgID: id, Class: "reset", Rcpt: rcpt, From: "noreply@example.test",
		Accepted: now, Due: now.Add(time.Hour), Deadline: now.Add(2 * time.Hour), Cutoff: now.Add(2 * time.Hour)}
	m := &queue.Message{MsgID: id, Body: []byte("Subject: reset\r\n\r\nhello\r\n"), Items: []*queue.Item{it},
		Events: []*audit.Event{{Time: now, Type: audit.Received, Class: "reset", Fields: map[string]string{"queue_id": id}}}}
	if _, err := e.q.Enqueue(m); err != nil {
		t.Fatal(err)
	}
	return it
}

// browser is a client with a cookie jar that does not follow redirects,
// so each answer can be checked.
type browser struct {
	t    *testing.T
	c    *http.Client
	base string
}

func (e *env) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	c := *e.srv.Client() // its own jar: one session per browser
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{t: t, c: &c, base: e.srv.URL}
}

func (b *browser) do(method, path string, form url.Values) (int, http.Header, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequestWithContext(context.Background(), method, b.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(out)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, html string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(html)
	if m == nil {
		t.Fatalf("no csrf field in the page:\n%s", html)
	}
	return m[1]
}

// login signs in and returns the session's CSRF token.
func (b *browser) login(user, pass string) (int, string) {
	b.t.Helper()
	_, _, page := b.do("GET", "/console/login", nil)
	code, _, _ := b.do("POST", "/console/login", url.Values{"csrf": {csrfOf(b.t, page)}, "user": {user}, "password": {pass}, "next": {"/console/messages"}})
	if code != http.StatusSeeOther {
		return code, ""
	}
	_, _, page = b.do("GET", "/console/messages", nil)
	return code, csrfOf(b.t, page)
}

func TestRefusals(t *testing.T) {
	e := setup(t, false)
	it := e.enqueue(t, "user@example.test")
	anon := e.browser(t)

	// No session: pages send the browser to the login page, POSTs are 401.
	if code, h, _ := anon.do("GET", "/console/messages", nil); code != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/console/login") {
		t.Errorf("anonymous GET: %d to %q, want 303 to the login page", code, h.Get("Location"))
	}
	if code, _, _ := anon.do("POST", "/console/retry", url.Values{"id": {it.ID}}); code != http.StatusUnauthorized {
		t.Errorf("anonymous POST: %d, want 401", code)
	}
	// The API behind it still wants its bearer token.
	if code, _, _ := anon.do("GET", "/api/v1/queue", nil); code != http.StatusUnauthorized {
		t.Errorf("API without a token: %d, want 401", code)
	}
	// A login without the form's CSRF cookie (a forged cross-site form).
	if code, _, _ := anon.do("POST", "/console/login", url.Values{"password": {token}}); code != http.StatusForbidden {
		t.Errorf("login without its CSRF value: %d, want 403", code)
	}
	// A wrong token and a wrong password.
	if code, _ := anon.login("", "wrong-token"); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", code)
	}
	if code, _ := anon.login("olga", "audrey-pass"); code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d, want 401", code)
	}
	if code, _ := anon.login("nobody", "x"); code != http.StatusUnauthorized {
		t.Errorf("unknown user: %d, want 401", code)
	}

	// The admin token signs in; a POST without the CSRF token is refused
	// and changes nothing.
	adm := e.browser(t)
	code, csrf := adm.login("", token)
	if code != http.StatusSeeOther {
		t.Fatalf("token login: %d", code)
	}
	if code, _, _ := adm.do("POST", "/console/drop", url.Values{"id": {it.ID}, "reason": {"test"}}); code != http.StatusForbidden {
		t.Errorf("POST without CSRF: %d, want 403", code)
	}
	if code, _, _ := adm.do("POST", "/console/drop", url.Values{"id": {it.ID}, "reason": {"test"}, "csrf": {"forged"}}); code != http.StatusForbidden {
		t.Errorf("POST with a wrong CSRF token: %d, want 403", code)
	}
	if cur, _ := e.q.Get(it.ID); cur.State != queue.StateQueued {
		t.Fatalf("refused POSTs changed the item: %s", cur.State)
	}

	// An auditor reads but cannot change anything, even with a valid token.
	aud := e.browser(t)
	code, acsrf := aud.login("audrey", "audrey-pass")
	if code != http.StatusSeeOther {
		t.Fatalf("auditor login: %d", code)
	}
	if code, _, body := aud.do("GET", "/console/messages/"+it.ID, nil); code != http.StatusOK || strings.Contains(body, `action="/console/drop"`) {
		t.Errorf("auditor's message page: %d, drop form shown: %v", code, strings.Contains(body, `action="/console/drop"`))
	}
	for _, p := range []struct {
		path string
		form url.Values
	}{
		{"/console/drop", url.Values{"id": {it.ID}, "reason": {"x"}}},
		{"/console/retry", url.Values{"id": {it.ID}}},
		{"/console/suppressions/add", url.Values{"list": {"unsubscribe"}, "address": {"a@example.test"}}},
		{"/console/suppressions/remove", url.Values{"list": {"unsubscribe"}, "address": {"a@example.test"}}},
	} {
		p.form.Set("csrf", acsrf)
		if code, _, body := aud.do("POST", p.path, p.form); code != http.StatusForbidden || !strings.Contains(body, "read-only") {
			t.Errorf("auditor POST %s: %d, want 403 saying read-only", p.path, code)
		}
	}
	if cur, _ := e.q.Get(it.ID); cur.State != queue.StateQueued {
		t.Fatalf("an auditor's POST changed the item: %s", cur.State)
	}
	// Logging out ends the session: the cookie no longer opens a page.
	if code, _, _ := aud.do("POST", "/console/logout", url.Values{"csrf": {acsrf}}); code != http.StatusSeeOther {
		t.Errorf("logout: %d", code)
	}
	if code, _, _ := aud.do("GET", "/console/messages", nil); code != http.StatusSeeOther {
		t.Errorf("after logout: %d, want 303 to login", code)
	}

	// The admin acts, and the audit trail names who.
	if code, _, _ := adm.do("POST", "/console/drop", url.Values{"id": {it.ID}, "reason": {"asked by the user"}, "csrf": {csrf}}); code != http.StatusSeeOther {
		t.Fatalf("drop: %d", code)
	}
	evs, err := audit.Query(e.st.DB, audit.Filter{QueueID: it.ID, Type: audit.Dropped})
	if err != nil || len(evs) != 1 || evs[0].Fields["by"] != console.TokenUser || evs[0].Fields["reason"] != "asked by the user" {
		t.Errorf("dropped event = %+v (%v), want by %s with the reason", evs, err, console.TokenUser)
	}
}

// Bad input gets a clear page with a 4xx, never a 500.
func TestBadInput(t *testing.T) {
	e := setup(t, false)
	b := e.browser(t)
	if code, _ := b.login("olga", "olga-pass"); code != http.StatusSeeOther {
		t.Fatal("login failed")
	}
	for _, c := range []struct {
		path string
		code int
		says string
	}{
		{"/console/messages/" + queue.NewMsgID(time.Now()), 404, "no message or queue item"},
		{"/console/messages/not%20an%20id", 400, "space or control character"},
		{"/console/messages?id=" + url.QueryEscape("nope"), 400, "neither a latchkey id"},
		{"/console/messages?since=yesterday", 400, "is not a time"},
		{"/console/messages?state=lost", 400, "state"},
		{"/console/messages?after=xyz", 400, "after"},
		{"/console/?window=5y", 400, "window"},
		{"/console/audit/export?format=csv&since=400d", 400, "is not a time"},
		{"/console/audit/export?format=csv&since=2400h", 400, "at most 93 days"},
		{"/console/audit/export?format=xml&since=24h", 400, "not csv or jsonl"},
		{"/console/audit/export?format=csv&since=1h&until=2h", 400, "until must be after since"},
		{"/console/no-such-page", 404, "no page"},
	} {
		code, _, body := b.do("GET", c.path, nil)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("GET %s: %d, want %d saying %q; page:\n%s", c.path, code, c.code, c.says, errorText(body))
		}
	}
}

func errorText(page string) string {
	if i := strings.Index(page, `class="error"`); i >= 0 {
		return page[i:min(len(page), i+300)]
	}
	return page[:min(len(page), 300)]
}

// Over TLS the session cookie is Secure; always HttpOnly and SameSite=Strict.
func TestSessionCookie(t *testing.T) {
	for _, tls := range []bool{false, true} {
		e := setup(t, tls)
		b := e.browser(t)
		_, _, page := b.do("GET", "/console/login", nil)
		req, _ := http.NewRequest("POST", b.base+"/console/login", strings.NewReader(url.Values{"csrf": {csrfOf(t, page)}, "password": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := b.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var found bool
		for _, ck := range resp.Cookies() {
			if ck.Name != "latchkey_console" || ck.Value == "" {
				continue
			}
			found = true
			if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure != tls || ck.Path != "/console/" {
				t.Errorf("tls %v: cookie %+v, want HttpOnly, SameSite=Strict, Secure=%v, Path=/console/", tls, ck, tls)
			}
		}
		if !found {
			t.Errorf("tls %v: no session cookie set", tls)
		}
	}
}

// Ten failed sign-ins from one address stop the next attempt, even a right one.
func TestLoginThrottle(t *testing.T) {
	e := setup(t, false)
	b := e.browser(t)
	for i := 0; i < 10; i++ {
		b.login("olga", "wrong")
	}
	if code, _ := b.login("olga", "olga-pass"); code != http.StatusTooManyRequests {
		t.Errorf("after 10 failures: %d, want 429", code)
	}
}

// The suppression page adds and removes through the API, on record with the
// user; the export streams the trail for the window.
func TestSuppressionsAndExport(t *testing.T) {
	e := setup(t, false)
	b := e.browser(t)
	_, csrf := b.login("olga", "olga-pass")
	if code, _, _ := b.do("POST", "/console/suppressions/add", url.Values{"csrf": {csrf}, "list": {"unsubscribe"},
		"address": {"Gone@Example.test"}, "reason": {"asked"}}); code != http.StatusSeeOther {
		t.Fatalf("add: %d", code)
	}
	_, _, page := b.do("GET", "/console/suppressions", nil)
	if !strings.Contains(page, "gone@example.test") || !strings.Contains(page, "<td>olga</td>") {
		t.Errorf("suppression page does not list the entry with its author")
	}
	if code, _, body := b.do("POST", "/console/suppressions/add", url.Values{"csrf": {csrf}, "list": {"unsubscribe"}, "address": {"not an address"}}); code != http.StatusBadRequest {
		t.Errorf("bad address: %d %s", code, errorText(body))
	}
	if code, _, _ := b.do("POST", "/console/suppressions/remove", url.Values{"csrf": {csrf}, "list": {"unsubscribe"}, "address": {"gone@example.test"}}); code != http.StatusSeeOther {
		t.Fatalf("remove: %d", code)
	}
	if sup, _ := e.q.ListSuppressions(""); len(sup) != 0 {
		t.Errorf("still suppressed: %+v", sup)
	}
	code, h, csv := b.do("GET", "/console/audit/export?format=csv&since=1h", nil)
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/csv") {
		t.Fatalf("export: %d %s", code, h.Get("Content-Type"))
	}
	if n := bytes.Count([]byte(csv), []byte("suppressed")); n < 2 || !strings.Contains(csv, "olga") {
		t.Errorf("export holds %d suppressed rows, want the add and the removal by olga:\n%s", n, csv)
	}
	_, _, page = b.do("GET", "/console/audit", nil)
	if !strings.Contains(page, "The chain verifies") {
		t.Errorf("audit page does not show the chain verified:\n%s", page)
	}
}

var messagesRE = regexp.MustCompile(`id="messages">(\d+)<`)

// The overview's figures are computed once per 30 s (a week of resets takes
// most of a second): a reload within that shows the same answer, saying
// when it was computed, and ?fresh=1 computes them again.
func TestOverviewCache(t *testing.T) {
	e := setup(t, false)
	e.enqueue(t, "one@example.test")
	b := e.browser(t)
	b.login("olga", "olga-pass")
	count := func(path string) string {
		t.Helper()
		code, _, page := b.do("GET", path, nil)
		m := messagesRE.FindStringSubmatch(page)
		if code != 200 || m == nil || !strings.Contains(page, `id="asof"`) {
			t.Fatalf("GET %s: %d, no message count or time of computation:\n%s", path, code, errorText(page))
		}
		return m[1]
	}
	if n := count("/console/"); n != "1" {
		t.Fatalf("overview counts %s messages, want 1", n)
	}
	e.enqueue(t, "two@example.test")
	if n := count("/console/"); n != "1" {
		t.Errorf("a reload within 30 s recomputed: %s messages", n)
	}
	if n := count("/console/?fresh=1"); n != "2" {
		t.Errorf("fresh=1 shows %s messages, want 2", n)
	}
	if n := count("/console/"); n != "2" {
		t.Errorf("after fresh=1 the cache holds %s, want 2", n)
	}
}

// Warm computes the three overview windows and the chain verification at
// start, so the first page reads them without waiting; it recomputes the
// figures every 30 s while the console is in use and lets them age up to
// 10 minutes when nobody has looked for 10 minutes.
func TestWarm(t *testing.T) {
	e := setup(t, false)
	e.enqueue(t, "one@example.test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.c.WarmEvery(ctx, 5*time.Millisecond); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitCalls := func(path string, n int) {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); e.calls.get(path) < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s called %d times, want %d", path, e.calls.get(path), n)
			}
		}
	}
	waitCalls("/api/v1/stats", 3)
	waitCalls("/api/v1/audit/verify", 1)

	b := e.browser(t)
	b.login("olga", "olga-pass")
	e.enqueue(t, "two@example.test")
	for _, w := range []string{"1h", "24h", "7d"} {
		code, _, page := b.do("GET", "/console/?window="+w, nil)
		if m := messagesRE.FindStringSubmatch(page); code != 200 || m == nil || m[1] != "1" {
			t.Fatalf("window %s: %d, want the warmed answer (1 message):\n%s", w, code, errorText(page))
		}
	}
	if code, _, page := b.do("GET", "/console/audit", nil); code != 200 || !strings.Contains(page, `id="verified-at"`) {
		t.Fatalf("audit page: %d\n%s", code, errorText(page))
	}
	if n, v := e.calls.get("/api/v1/stats"), e.calls.get("/api/v1/audit/verify"); n != 3 || v != 1 {
		t.Fatalf("the pages computed: stats %d times, verify %d times; want 3 and 1 (Warm's)", n, v)
	}

	// In use: 31 s later Warm has recomputed every window (the second
	// message appears) but not the verification (5 minutes).
	e.clock.advance(31 * time.Second)
	waitCalls("/api/v1/stats", 6)
	if code, _, page := b.do("GET", "/console/?window=24h", nil); code != 200 || messagesRE.FindStringSubmatch(page)[1] != "2" {
		t.Fatalf("after 31 s the overview still shows the old figures:\n%s", errorText(page))
	}
	if v := e.calls.get("/api/v1/audit/verify"); v != 1 {
		t.Errorf("verify recomputed %d times within 5 minutes", v-1)
	}

	// Idle: 11 minutes without a page. The figures, now older than 10
	// minutes, are computed once more, then left alone while younger.
	e.clock.advance(11 * time.Minute)
	waitCalls("/api/v1/stats", 9)
	waitCalls("/api/v1/audit/verify", 2)
	e.clock.advance(time.Minute)
	time.Sleep(100 * time.Millisecond) // 20 ticks of Warm
	if n := e.calls.get("/api/v1/stats"); n != 9 {
		t.Errorf("idle console: stats computed %d more times within 10 minutes", n-9)
	}
}
