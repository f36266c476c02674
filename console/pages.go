package console

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/dnscheck"
	"github.com/latchkey/latchkey/metrics"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce"
)

func urlQuery(s string) string { return url.QueryEscape(s) }

// safeNext keeps a post-login redirect on the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/console/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/console/"
	}
	return next
}

type loginData struct{ Next, Name string }

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if s := c.ss.get(r); s != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	c.showLogin(w, r, http.StatusOK, "", "")
}

func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, status int, name, msg string) {
	// The login form's CSRF value rides in a cookie of its own: there is no
	// session yet to hold it.
	tok := randomToken()
	c.setCookie(w, r, loginCookie, tok, 600)
	c.render(w, nil, status, "login", page{Title: "Sign in", CSRF: tok, Error: msg,
		Data: loginData{Next: safeNext(r.URL.Query().Get("next")), Name: name}})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, nil, http.StatusBadRequest, "The form could not be read: "+err.Error())
		return
	}
	ck, err := r.Cookie(loginCookie)
	if err != nil || !csrfOK(r, ck.Value) {
		c.showLogin(w, r, http.StatusForbidden, "", "The sign-in form expired or came from elsewhere. Try again.")
		return
	}
	host := remoteHost(r)
	if c.ss.throttled(host) {
		c.showLogin(w, r, http.StatusTooManyRequests, "", fmt.Sprintf("Too many failed sign-ins from %s; wait a few minutes.", host))
		return
	}
	name, password := strings.TrimSpace(r.PostFormValue("user")), r.PostFormValue("password")
	role, ok := c.authenticate(name, password)
	if !ok {
		c.ss.failed(host)
		c.o.Log.Warn().Str("user", name).Str("remote", r.RemoteAddr).Msg("console: sign-in failed")
		c.showLogin(w, r, http.StatusUnauthorized, name, "Wrong name, password or token.")
		return
	}
	if name == "" {
		name = TokenUser
	}
	s := c.ss.create(name, role)
	c.setCookie(w, r, loginCookie, "", -1)
	c.setCookie(w, r, sessionCookie, s.id, 0)
	c.o.Log.Info().Str("user", name).Str("role", role).Str("remote", r.RemoteAddr).Msg("console: signed in")
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	c.ss.end(s.id)
	c.setCookie(w, r, sessionCookie, "", -1)
	c.o.Log.Info().Str("user", s.user).Msg("console: signed out")
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// Windows of the overview and the series bucket each is plotted in.
var windows = []struct {
	Name   string
	Span   time.Duration
	Bucket time.Duration
}{{"1h", time.Hour, 5 * time.Minute}, {"24h", 24 * time.Hour, time.Hour}, {"7d", 7 * 24 * time.Hour, time.Hour}}

// statsPath is the stats call of one overview window: the same route
// `latchkey stats -json -since …` reads.
func statsPath(span, bucket time.Duration) string {
	v := url.Values{"since": {span.String()}, "class": {"reset"}, "series": {bucket.String()}}
	return "/api/v1/stats?" + v.Encode()
}

type overviewData struct {
	Window  string
	Windows []string
	Stats   *metrics.Report
	Plots   plots
	Depth   []queue.LaneDepth
	Now     time.Time
	Outbox  *outboxSummary
	DNS     *dnsStatus
	CertEnd time.Time
	HasCert bool
	AsOf    time.Time // when the figures were computed
}

type outboxSummary struct{ Pending, Dead int }

type dnsStatus struct {
	CheckedAt time.Time         `json:"checked_at"`
	Checks    []dnscheck.Result `json:"checks"`
	ExitCode  int               `json:"exit_code"`
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	win := r.URL.Query().Get("window")
	if win == "" {
		win = "24h"
	}
	d := overviewData{Window: win, Now: c.o.Now()}
	span, bucket := time.Duration(0), time.Duration(0)
	for _, x := range windows {
		d.Windows = append(d.Windows, x.Name)
		if x.Name == win {
			span, bucket = x.Span, x.Bucket
		}
	}
	if span == 0 {
		c.fail(w, r, s, http.StatusBadRequest, fmt.Sprintf("window: %q is not one of 1h, 24h, 7d.", clip(win, 32)))
		return
	}
	var err error
	d.AsOf, err = c.cached(ctx, statsPath(span, bucket), statsTTL, r.URL.Query().Get("fresh") != "", &d.Stats)
	if err != nil {
		c.apiFail(w, r, s, err)
		return
	}
	d.Plots = makePlots(d.Stats, bucket)
	if err := c.get(ctx, "/api/v1/queue/depth", &d.Depth); err != nil {
		c.apiFail(w, r, s, err)
		return
	}
	var ob []salesforce.Item
	var ae *admin.APIError
	switch err := c.get(ctx, "/api/v1/outbox", &ob); {
	case err == nil:
		d.Outbox = &outboxSummary{}
		for _, it := range ob {
			if it.State == salesforce.StateDead {
				d.Outbox.Dead++
			} else {
				d.Outbox.Pending++
			}
		}
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound: // Salesforce disabled
	default:
		c.apiFail(w, r, s, err)
		return
	}
	var dns dnsStatus
	if err := c.get(ctx, "/api/v1/dns", &dns); err == nil {
		d.DNS = &dns
	}
	if c.o.CertNotAfter != nil {
		d.CertEnd = c.o.CertNotAfter()
		d.HasCert = !d.CertEnd.IsZero()
	}
	c.render(w, s, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Data: d})
}

// pageSize is the messages list's page.
const pageSize = 50

var states = []string{"all", queue.StateQueued, queue.StateDelivered, queue.StateBounced, queue.StateExpired,
	queue.StateSuperseded, queue.StateDropped}

type messagesData struct {
	ID, Rcpt, Class, State, Since, Until string
	States                               []string
	Items                                []*queue.Item
	Next                                 string // query of the next page, "" on the last
	Searched                             bool
}

func (c *Console) messages(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	d := messagesData{ID: strings.TrimSpace(q.Get("id")), Rcpt: strings.TrimSpace(q.Get("rcpt")), Class: strings.TrimSpace(q.Get("class")),
		State: q.Get("state"), Since: strings.TrimSpace(q.Get("since")), Until: strings.TrimSpace(q.Get("until")), States: states}
	if d.State == "" {
		d.State = "all"
	}
	p := page{Title: "Messages", Nav: "messages", Data: &d}
	bad := func(msg string) {
		p.Error = msg
		c.render(w, s, http.StatusBadRequest, "messages", p)
	}
	if d.ID != "" {
		// One id names a message, a recipient or a Message-ID.
		if err := c.get(r.Context(), "/api/v1/queue/"+url.PathEscape(d.ID), &d.Items); err != nil {
			var ae *admin.APIError
			if errors.As(err, &ae) && ae.Status/100 == 4 {
				p.Error = ae.Message
				c.render(w, s, ae.Status, "messages", p)
				return
			}
			c.apiFail(w, r, s, err)
			return
		}
		d.Searched = true
		c.render(w, s, http.StatusOK, "messages", p)
		return
	}
	v := url.Values{"order": {"newest"}, "limit": {strconv.Itoa(pageSize + 1)}, "state": {d.State}}
	if d.Rcpt != "" {
		v.Set("rcpt", d.Rcpt)
	}
	if d.Class != "" {
		v.Set("class", d.Class)
	}
	for _, f := range []struct{ name, val string }{{"since", d.Since}, {"until", d.Until}} {
		if f.val == "" {
			continue
		}
		t, err := parseWhen(f.val, c.o.Now())
		if err != nil {
			bad(f.name + ": " + err.Error())
			return
		}
		v.Set(f.name, t.UTC().Format(time.RFC3339Nano))
	}
	if a := q.Get("after"); a != "" {
		v.Set("after", a)
	}
	if err := c.get(r.Context(), "/api/v1/queue?"+v.Encode(), &d.Items); err != nil {
		var ae *admin.APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
			bad(ae.Message)
			return
		}
		c.apiFail(w, r, s, err)
		return
	}
	d.Searched = true
	if len(d.Items) > pageSize {
		d.Items = d.Items[:pageSize]
		nq := url.Values{}
		for k, vs := range q {
			if k != "after" {
				nq[k] = vs
			}
		}
		nq.Set("after", d.Items[pageSize-1].ID)
		d.Next = nq.Encode()
	}
	c.render(w, s, http.StatusOK, "messages", p)
}

// parseWhen reads a time a person typed: a duration ago (24h), RFC 3339, or
// a browser's datetime-local value (taken as UTC).
func parseWhen(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: write 24h (ago), 2026-01-02T15:04 (UTC) or an RFC 3339 time", clip(v, 64))
}

type messageData struct {
	ID       string
	Items    []*queue.Item
	Events   []audit.Event
	Cases    []string
	Live     bool
	Timeline []timelineRow
}

type timelineRow struct {
	Time    time.Time
	Type    string
	QueueID string
	Fields  []kv
}

type kv struct{ K, V string }

func (c *Console) message(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	d := messageData{ID: id}
	if err := c.get(r.Context(), "/api/v1/queue/"+url.PathEscape(id), &d.Items); err != nil {
		c.apiFail(w, r, s, err)
		return
	}
	var ae *admin.APIError
	if err := c.get(r.Context(), "/api/v1/audit/messages/"+url.PathEscape(id), &d.Events); err != nil &&
		!(errors.As(err, &ae) && ae.Status == http.StatusNotFound) {
		c.apiFail(w, r, s, err)
		return
	}
	for _, it := range d.Items {
		if !queue.Final(it.State) {
			d.Live = true
		}
	}
	seen := map[string]bool{}
	for _, ev := range d.Events {
		row := timelineRow{Time: ev.Time, Type: ev.Type, QueueID: ev.QueueID}
		keys := make([]string, 0, len(ev.Fields))
		for k := range ev.Fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			row.Fields = append(row.Fields, kv{k, ev.Fields[k]})
		}
		if id := ev.Fields["case_id"]; id != "" && !seen[id] {
			seen[id] = true
			d.Cases = append(d.Cases, id)
		}
		d.Timeline = append(d.Timeline, row)
	}
	p := page{Title: "Message " + id, Nav: "messages", Flash: r.URL.Query().Get("done"), Data: d}
	c.render(w, s, http.StatusOK, "message", p)
}

// act runs a queue action through the admin API and returns to the
// message page saying what happened.
func (c *Console) act(w http.ResponseWriter, r *http.Request, s *session, verb string, body any) {
	id := strings.TrimSpace(r.PostFormValue("id"))
	if id == "" {
		c.fail(w, r, s, http.StatusBadRequest, "No message or queue item id given.")
		return
	}
	var items []*queue.Item
	if err := c.api.JSON(r.Context(), http.MethodPost, "/api/v1/queue/"+url.PathEscape(id)+"/"+verb, body, &items); err != nil {
		c.apiFail(w, r, s, err)
		return
	}
	c.o.Log.Info().Str("user", s.user).Str("id", id).Msg("console: " + verb)
	done := map[string]string{"retry": "Retried: due now.", "drop": "Dropped."}[verb]
	http.Redirect(w, r, "/console/messages/"+url.PathEscape(id)+"?done="+url.QueryEscape(done), http.StatusSeeOther)
}

func (c *Console) retry(w http.ResponseWriter, r *http.Request, s *session) {
	c.act(w, r, s, "retry", admin.RetryRequest{By: s.user})
}

func (c *Console) drop(w http.ResponseWriter, r *http.Request, s *session) {
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if reason == "" {
		c.fail(w, r, s, http.StatusBadRequest, "A drop needs a reason: it goes into the audit trail.")
		return
	}
	c.act(w, r, s, "drop", admin.DropRequest{By: s.user, Reason: reason})
}

// maxSuppressionRows bounds the list page; the CLI lists them all.
const maxSuppressionRows = 500

type suppressionsData struct {
	List  string
	Rows  []queue.Suppression
	Total int
}

func (c *Console) suppressions(w http.ResponseWriter, r *http.Request, s *session) {
	d := suppressionsData{List: strings.TrimSpace(r.URL.Query().Get("list"))}
	path := "/api/v1/suppressions"
	if d.List != "" {
		path += "?list=" + url.QueryEscape(d.List)
	}
	if err := c.get(r.Context(), path, &d.Rows); err != nil {
		c.apiFail(w, r, s, err)
		return
	}
	d.Total = len(d.Rows)
	if len(d.Rows) > maxSuppressionRows {
		d.Rows = d.Rows[:maxSuppressionRows]
	}
	c.render(w, s, http.StatusOK, "suppressions", page{Title: "Suppressions", Nav: "suppressions", Flash: r.URL.Query().Get("done"), Data: d})
}

func (c *Console) suppressAdd(w http.ResponseWriter, r *http.Request, s *session) {
	list, addr := strings.TrimSpace(r.PostFormValue("list")), strings.TrimSpace(r.PostFormValue("address"))
	if list == "" {
		list = "unsubscribe"
	}
	err := c.api.JSON(r.Context(), http.MethodPut, "/api/v1/suppressions/"+url.PathEscape(list)+"/"+url.PathEscape(addr),
		admin.SuppressRequest{Reason: strings.TrimSpace(r.PostFormValue("reason")), By: s.user}, nil)
	if err != nil {
		c.apiFail(w, r, s, err)
		return
	}
	c.o.Log.Info().Str("user", s.user).Str("list", list).Msg("console: suppression added")
	http.Redirect(w, r, "/console/suppressions?done="+url.QueryEscape("Added "+addr+" to "+list+"."), http.StatusSeeOther)
}

func (c *Console) suppressRemove(w http.ResponseWriter, r *http.Request, s *session) {
	list, addr := strings.TrimSpace(r.PostFormValue("list")), strings.TrimSpace(r.PostFormValue("address"))
	err := c.api.JSON(r.Context(), http.MethodDelete, "/api/v1/suppressions/"+url.PathEscape(list)+"/"+url.PathEscape(addr)+
		"?by="+url.QueryEscape(s.user), nil, nil)
	if err != nil {
		c.apiFail(w, r, s, err)
		return
	}
	c.o.Log.Info().Str("user", s.user).Str("list", list).Msg("console: suppression removed")
	http.Redirect(w, r, "/console/suppressions?done="+url.QueryEscape("Removed "+addr+" from "+list+"."), http.StatusSeeOther)
}

// maxExportWindow bounds one export from the console; the CLI streams any
// window.
const maxExportWindow = 93 * 24 * time.Hour

type auditData struct {
	Verify       admin.VerifyResult
	Verified     bool
	VerifyError  string
	Since, Until string
	AsOf         time.Time
	Now          time.Time
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, s *session) {
	d := auditData{Since: "24h"}
	var err error
	if d.AsOf, err = c.cached(r.Context(), verifyPath, verifyTTL, r.URL.Query().Get("verify") != "", &d.Verify); err != nil {
		var ae *admin.APIError
		if !errors.As(err, &ae) {
			c.apiFail(w, r, s, err)
			return
		}
		d.VerifyError = ae.Message // e.g. no audit key configured
	} else {
		d.Verified = true
	}
	d.Now = c.o.Now()
	c.render(w, s, http.StatusOK, "audit", page{Title: "Audit trail", Nav: "audit", Data: d})
}

func (c *Console) auditExport(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	format := q.Get("format")
	if format != "csv" && format != "jsonl" {
		c.fail(w, r, s, http.StatusBadRequest, fmt.Sprintf("format: %q is not csv or jsonl.", clip(format, 32)))
		return
	}
	now := c.o.Now()
	since, err := parseWhen(strings.TrimSpace(q.Get("since")), now)
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, "since: "+err.Error())
		return
	}
	until, open := now, true
	if u := strings.TrimSpace(q.Get("until")); u != "" {
		open = false
		if until, err = parseWhen(u, now); err != nil {
			c.fail(w, r, s, http.StatusBadRequest, "until: "+err.Error())
			return
		}
	}
	switch {
	case !since.Before(until):
		c.fail(w, r, s, http.StatusBadRequest, "The export window is empty: until must be after since.")
		return
	case until.Sub(since) > maxExportWindow:
		c.fail(w, r, s, http.StatusBadRequest, fmt.Sprintf("The export window is %s; the console exports at most 93 days at a time (use latchkey audit export for more).",
			until.Sub(since).Round(time.Hour)))
		return
	}
	v := url.Values{"format": {format}, "since": {since.UTC().Format(time.RFC3339Nano)}}
	if !open {
		// Without an end the export runs to the last event: "now" would
		// leave out what happened while the request was on its way.
		v.Set("until", until.UTC().Format(time.RFC3339Nano))
	}
	resp, err := c.api.Do(r.Context(), http.MethodGet, "/api/v1/audit/export?"+v.Encode(), nil, "")
	if err != nil {
		c.apiFail(w, r, s, err)
		return
	}
	defer resp.Body.Close()
	c.o.Log.Info().Str("user", s.user).Str("since", v.Get("since")).Str("until", v.Get("until")).Msg("console: audit export")
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.Header().Set("Content-Disposition", resp.Header.Get("Content-Disposition"))
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if f != nil {
				f.Flush()
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			// A cut export must not end like a complete one.
			panic(http.ErrAbortHandler)
		}
	}
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
