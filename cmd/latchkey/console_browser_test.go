package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/metrics"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// chromium finds Debian's Chromium. .ci/run installs it and sets
// LATCHKEY_REQUIRE_BROWSER, so in CI a missing browser fails the test
// instead of skipping it.
func chromium(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("LATCHKEY_REQUIRE_BROWSER") != "" {
		t.Fatal("no Chromium at /usr/bin/chromium (apt-get install chromium)")
	}
	t.Skip("no Chromium installed (apt-get install chromium); .ci/run installs it")
	return ""
}

const consolePolicy = `default_class = "reset"

[[classes]]
name = "reset"
expiry = "30m"
margin = "0s"
retry = ["10m"]
workers = 2
`

// The console, driven in a real headless Chromium against the relay
// binary: resets delivered, bounced and deferred over loopback SMTP; sign
// in with the admin token, read the overview's figures and check them
// against `latchkey stats -json`, find the bounced reset by its "queued as"
// id and read its timeline, retry the deferred one and find the retry in
// the audit trail under the console user. Every page is screenshotted into
// the test's temp dir (and into $LATCHKEY_SCREENSHOTS when set, which is
// how docs/img is made).
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the relay binary and a browser")
	}
	chrome := chromium(t)
	e := newDurEnv(t, smtpsink.Options{Rcpt: func(rcpt string) *smtp.SMTPError {
		switch {
		case strings.HasPrefix(rcpt, "gone@"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + rcpt + ">: Recipient address rejected: User unknown"}
		case strings.HasPrefix(rcpt, "busy@"):
			return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full, try again later"}
		}
		return nil
	}})
	if err := os.WriteFile(filepath.Join(e.dir, "policy.toml"), []byte(consolePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := ln.Addr().String()
	ln.Close()
	const token = "console-browser-test-token"
	tokenFile := filepath.Join(e.dir, "admin.token")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	cfg, _ := os.ReadFile(e.cfgPath)
	cfg = bytes.Replace(cfg, []byte("[admin]\nlisten = \"\"\n"),
		[]byte("[admin]\nlisten = \""+adminAddr+"\"\ntoken_file = \""+tokenFile+"\"\n"), 1)
	os.WriteFile(e.cfgPath, cfg, 0o600)
	e.start()

	ids := map[string]string{}
	for _, to := range []string{"ana@dest.test", "ben@dest.test", "gone@dest.test", "busy@dest.test"} {
		ids[to] = e.submitOne(to, strings.Split(to, "@")[0]+"-reset@example.com")
	}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append(append(strings.Fields(args[0]), "-config", e.cfgPath), args[1:]...), &out, &errb)
		return code, out.String(), errb.String()
	}
	state := func(msgID string) queue.Item {
		_, out, _ := cli("queue show", "-json", msgID)
		var items []queue.Item
		json.Unmarshal([]byte(out), &items)
		if len(items) == 0 {
			return queue.Item{}
		}
		return items[0]
	}
	if !waitFor(30*time.Second, func() bool {
		return state(ids["ana@dest.test"]).State == queue.StateDelivered && state(ids["ben@dest.test"]).State == queue.StateDelivered &&
			state(ids["gone@dest.test"]).State == queue.StateBounced && state(ids["busy@dest.test"]).Attempts > 0
	}) {
		_, out, _ := cli("queue list", "-state", "all")
		t.Fatalf("messages not delivered, bounced and deferred:\n%s", out)
	}

	shots := t.TempDir()
	docDir := os.Getenv("LATCHKEY_SCREENSHOTS")
	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900))...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first run starts the browser and must not have a timeout (it
	// would stop the browser); each later step gets one.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(bctx, 20*time.Second) }
	where := func() string {
		ctx, cancel := step()
		defer cancel()
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		return loc
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s (at %s): %v", what, where(), err)
		}
	}
	text := func(id string) string {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("text of #%s (at %s): %v", id, where(), err)
		}
		return strings.TrimSpace(v)
	}
	value := func(id string) string {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID(id), "data-value"))
		if err != nil || !v.Exists {
			t.Fatalf("data-value of #%s (at %s): %v", id, where(), err)
		}
		return v.Value
	}
	shot := func(name string) {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		if docDir != "" {
			os.WriteFile(filepath.Join(docDir, "console-"+name+".png"), png, 0o644)
		}
	}
	base := "http://" + adminAddr

	// A wrong token is refused on the login page.
	do("open the console", chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(chromedp.ID("signin")))
	shot("login")
	do("wrong token",
		chromedp.SendKeys(chromedp.ID("password"), "not-the-token"),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("error")))
	if msg := text("error"); !strings.Contains(msg, "Wrong") {
		t.Errorf("wrong token: the page says %q", msg)
	}

	// Sign in with the admin token: the overview.
	do("sign in",
		chromedp.SendKeys(chromedp.ID("password"), token),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("who")),
		chromedp.WaitVisible(chromedp.ID("fig-success")))
	if who := text("who"); !strings.Contains(who, "admin-token") {
		t.Errorf("signed in as %q", who)
	}
	// The relay computed the figures when it started, before this test's
	// mail (the page says when): its "now" link computes them again.
	nowLink := func() string {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(`#asof a`), "href"))
		if err != nil || !v.Exists || !strings.Contains(v.Value, "fresh=1") {
			t.Fatalf("the overview's \"now\" link: %+v %v", v, err)
		}
		return v.Value
	}()
	do("figures now", chromedp.Navigate(base+nowLink), chromedp.WaitVisible(chromedp.ID("fig-success")))
	if got := text("messages"); got != "4" {
		t.Errorf("after \"now\" the overview counts %q messages, want 4", got)
	}
	shot("overview")
	// The same window from the CLI: the figures must be the same numbers.
	code, out, errs := cli("stats", "-json", "-since", "24h")
	var rep metrics.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("stats -json: %d %v %s", code, err, errs)
	}
	for id, want := range map[string]string{
		"success-rate": strconvG(rep.Success.Rate), "speed-p95": strconvG(time.Duration(rep.Speed.P95).Seconds()),
		"speed-under60": strconvG(rep.Speed.Under60Share), "escalation-rate": strconvG(rep.Escalation.Rate),
		"completion-rate": strconvG(rep.Completion.Rate),
	} {
		if got := value(id); got != want {
			t.Errorf("overview %s = %q, latchkey stats -json says %q", id, got, want)
		}
	}
	for id, want := range map[string]int{"messages": rep.Messages, "success-delivered": rep.Success.Delivered,
		"success-finished": rep.Success.Finished, "escalation-count": rep.Escalation.Escalated} {
		if got := text(id); got != itoa(want) {
			t.Errorf("overview #%s = %q, latchkey stats -json says %d", id, got, want)
		}
	}
	if rep.Messages != 4 || rep.Success.Delivered != 2 || rep.Success.Bounced != 1 {
		t.Errorf("stats: %d messages, %d delivered, %d bounced; want 4, 2, 1", rep.Messages, rep.Success.Delivered, rep.Success.Bounced)
	}

	// Find the bounced reset by its "250 … queued as" id and read its life.
	gone := ids["gone@dest.test"]
	do("type the id into the search form",
		chromedp.Navigate(base+"/console/messages"),
		chromedp.WaitVisible(chromedp.ID("q-id")),
		chromedp.SendKeys(chromedp.ID("q-id"), gone))
	typed := func() bool {
		ctx, cancel := step()
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("q-id")))
		return err == nil && v == gone
	}
	if !waitFor(10*time.Second, typed) {
		t.Fatalf("the id field never held %s", gone)
	}
	// The page lists the newest messages before any search: wait for the
	// search's own page, not just for a list.
	do("search", chromedp.Click(chromedp.ID("search")))
	if !waitFor(10*time.Second, func() bool { return strings.Contains(where(), "id="+gone) }) {
		t.Fatalf("the search went to %s, not the id's results", where())
	}
	do("results", chromedp.WaitVisible(chromedp.ID("results")))
	do("open the bounced reset", chromedp.Click(chromedp.CSS("#results a")), chromedp.WaitVisible(chromedp.ID("timeline")))
	shot("message")
	if st := text("state-" + queue.ItemID(gone, 0)); !strings.EqualFold(st, "bounced") {
		t.Errorf("bounced reset's page shows state %q", st)
	}
	timeline := text("timeline")
	for _, ev := range []string{"received", "signed", "queued", "attempt", "bounced", "550", "5.1.1"} {
		if !strings.Contains(timeline, ev) {
			t.Errorf("timeline lacks %q:\n%s", ev, timeline)
		}
	}

	// The list, newest first, and the deferred reset's retry.
	busy := queue.ItemID(ids["busy@dest.test"], 0)
	do("list the messages",
		chromedp.Navigate(base+"/console/messages?state=all"),
		chromedp.WaitVisible(chromedp.ID("results")))
	shot("messages")
	do("retry the deferred reset",
		chromedp.Navigate(base+"/console/messages/"+busy),
		chromedp.WaitVisible(chromedp.ID("retry-"+busy)),
		chromedp.Click(chromedp.ID("retry-"+busy)),
		chromedp.WaitVisible(chromedp.ID("flash")))
	if flash := text("flash"); !strings.Contains(flash, "Retried") {
		t.Errorf("after retry the page says %q", flash)
	}
	code, out, _ = cli("audit show", "-json", busy)
	retried := false
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var ev audit.Event
		if dec.Decode(&ev) != nil {
			break
		}
		if ev.Type == audit.Retried && ev.Fields["by"] == "admin-token" {
			retried = true
		}
	}
	if code != 0 || !retried {
		t.Errorf("no retried event by admin-token in the audit trail of %s:\n%s", busy, out)
	}

	// The remaining pages render, the audit chain verifies; signing out
	// ends the session.
	do("suppressions", chromedp.Navigate(base+"/console/suppressions"), chromedp.WaitVisible(chromedp.ID("suppressions")))
	shot("suppressions")
	do("audit", chromedp.Navigate(base+"/console/audit"), chromedp.WaitVisible(chromedp.ID("chain")))
	shot("audit")
	chain := text("chain")
	do("sign out",
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("signin")),
		chromedp.Navigate(base+"/console/messages"),
		chromedp.WaitVisible(chromedp.ID("signin")))
	loc := where()
	if !strings.Contains(chain, "The chain verifies") {
		t.Errorf("audit page: %q", chain)
	}
	if !strings.Contains(loc, "/console/login") {
		t.Errorf("after sign-out a page opened at %s", loc)
	}
	if t.Failed() {
		t.Logf("screenshots in %s", shots)
	}
}

func strconvG(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
func itoa(n int) string         { return strconv.Itoa(n) }
