package policy

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/latchkey/latchkey/conf/tomlconf"
)

func shippedSource(t testing.TB) []byte {
	t.Helper()
	src, err := os.ReadFile("../conf/policy.toml")
	if err != nil {
		t.Fatalf("read shipped policy: %v", err)
	}
	return src
}

func shipped(t testing.TB) *Policy {
	t.Helper()
	p, err := Parse("policy.toml", shippedSource(t))
	if err != nil {
		t.Fatalf("shipped conf/policy.toml does not parse:\n%v", err)
	}
	return p
}

func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	return p
}

func TestShippedPolicy(t *testing.T) {
	p := shipped(t)
	var names []string
	for i, c := range p.Classes() {
		names = append(names, c.Name)
		if c.Priority != i {
			t.Errorf("%s priority = %d, want %d", c.Name, c.Priority, i)
		}
		if p.Class(c.Name) != c {
			t.Errorf("Class(%q) does not return the class", c.Name)
		}
	}
	if want := []string{"reset", "transactional", "bulk"}; !slices.Equal(names, want) {
		t.Fatalf("classes = %v, want %v", names, want)
	}
	if p.DefaultClass().Name != "transactional" {
		t.Errorf("default class = %s", p.DefaultClass().Name)
	}
	r := p.Class("reset")
	wantRetry := []time.Duration{15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute}
	if r.Expiry != 30*time.Minute || r.Margin != 2*time.Minute || !slices.Equal(r.Retry, wantRetry) ||
		!r.Supersede || !slices.Equal(r.SupersedeKey, []string{"recipient"}) || r.DedupeWindow != 10*time.Minute ||
		!slices.Equal(r.Suppression, []string{"bounce"}) || r.RateLimit != 5 || r.RateWindow != 15*time.Minute ||
		r.Workers != 10 || !r.Escalate.HardBounce || !r.Escalate.PolicyBounce || !r.Escalate.Expired ||
		r.Targets.DeliveryP95 != time.Minute || r.Targets.SuccessRate != 0.98 ||
		r.Backlog != 20 || r.BacklogDelay != 250*time.Millisecond || r.BacklogRefuse != 0 {
		t.Errorf("reset class = %+v", *r)
	}
	b := p.Class("bulk")
	if b.Expiry != 72*time.Hour || !slices.Equal(b.Suppression, []string{"bounce", "unsubscribe"}) ||
		b.Workers != 2 || b.Retry[0] < 30*time.Minute || b.Supersede || b.Escalate.PolicyBounce || b.Escalate.HardBounce ||
		b.Backlog != 0 || b.BacklogDelay != 250*time.Millisecond {
		t.Errorf("bulk class = %+v", *b)
	}
	if len(p.Rules()) != 4 || p.Rules()[0].Class != p.Class("reset") {
		t.Errorf("rules = %v", p.Rules())
	}
	if p.File() != "policy.toml" || len(p.Digest()) != 64 || p.Digest() == mustParse(t, minimal).Digest() {
		t.Errorf("File %q, Digest %q", p.File(), p.Digest())
	}
	if p.Class("nope") != nil {
		t.Error("Class of an unknown name is not nil")
	}
}

// TestShippedFileDocumentsEveryKey: the issue asks for a comment on every key,
// so an ops engineer never meets an unexplained setting.
func TestShippedFileDocumentsEveryKey(t *testing.T) {
	lines := strings.Split(string(shippedSource(t)), "\n")
	for i, l := range lines {
		s := strings.TrimSpace(l)
		if s == "" || s[0] == '#' || s[0] == '[' {
			continue
		}
		prev := ""
		if i > 0 {
			prev = strings.TrimSpace(lines[i-1])
		}
		if !strings.HasPrefix(prev, "#") && !strings.Contains(s, "#") {
			t.Errorf("policy.toml:%d: %q has no comment above it", i+1, s)
		}
	}
}

func TestDefaultSource(t *testing.T) {
	old := DefaultSource
	defer func() { DefaultSource = old }()
	DefaultSource = nil
	if _, err := ParseDefault(); err == nil {
		t.Error("ParseDefault with no DefaultSource succeeded")
	}
	DefaultSource = shippedSource(t)
	if p := Default(); p.Class("reset") == nil || p.File() != DefaultFile {
		t.Errorf("Default() = %v", p)
	}
}

const testPolicy = `
default_class = "transactional"

[[classes]]
name = "reset"
expiry = "30m"
expiry_header = "X-LK-Expires"
margin = "2m"
retry = ["15s", "30s", "1m", "2m", "4m"]
supersede = true
supersede_key = ["recipient", "header:X-SFDC-LK"]
dedupe_window = "10m"
suppression = ["bounce"]
rate_limit = 5
rate_window = "15m"
workers = 4

[[classes]]
name = "transactional"
expiry = "24h"
retry = ["1m", "5m"]
workers = 2

[[classes]]
name = "bulk"
expiry = "3d"
retry = ["30m", "1h"]
suppression = ["bounce", "unsubscribe"]
workers = 1

[[rules]]
name = "template-header"
class = "reset"
[rules.header]
X-LK-Class = '^reset$'

[[rules]]
name = "org-wide"
class = "reset"
envelope_from = ["noreply@example.com"]
[rules.header]
X-SFDC-EmailCategory = '^forgotPassword$'

[[rules]]
name = "auth"
class = "reset"
auth_user = ["sf-reset-relay"]

[[rules]]
name = "sfdc-mass"
class = "bulk"
[rules.header]
X-SFDC-EmailCategory = '^massEmail$'

[[rules]]
name = "sfdc-org"
class = "transactional"
[rules.header]
Message-ID = '@sfdc\.net>$'
X-SFDC-LK = '^00D000000000001$'

[[rules]]
name = "env-domain"
class = "bulk"
envelope_from = ["@marketing.example.com"]

[[rules]]
name = "from-addr"
class = "bulk"
from = ["news@example.com"]

[[rules]]
name = "from-domain"
class = "bulk"
from = ["promo.example.net"]

[[rules]]
name = "rcpt-domain"
class = "bulk"
rcpt_domain = ["test.invalid"]

[[rules]]
name = "subject"
class = "reset"
subject = 'password reset'

[[rules]]
name = "list-unsubscribe"
class = "bulk"
[rules.header]
List-Unsubscribe = ""
`

func hdr(kv ...string) textproto.Header {
	var h textproto.Header
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestClassify(t *testing.T) {
	p := mustParse(t, testPolicy)
	tests := []struct {
		name      string
		m         Meta
		wantClass string
		wantRule  string // "" = default class
	}{
		{"template header, any case", Meta{Header: hdr("X-LK-Class", "Reset")}, "reset", "template-header"},
		{"template header, other value", Meta{Header: hdr("X-LK-Class", "resetx")}, "transactional", ""},
		{"org-wide sender + category", Meta{EnvelopeFrom: "noreply@EXAMPLE.com",
			Header: hdr("X-SFDC-EmailCategory", "forgotPassword")}, "reset", "org-wide"},
		{"org-wide sender in brackets", Meta{EnvelopeFrom: "<noreply@example.com>",
			Header: hdr("x-sfdc-emailcategory", "FORGOTPASSWORD")}, "reset", "org-wide"},
		{"org-wide sender without category", Meta{EnvelopeFrom: "noreply@example.com"}, "transactional", ""},
		{"category from another sender", Meta{EnvelopeFrom: "other@example.com",
			Header: hdr("X-SFDC-EmailCategory", "forgotPassword")}, "transactional", ""},
		{"AUTH user", Meta{AuthUser: "SF-Reset-Relay"}, "reset", "auth"},
		{"other AUTH user", Meta{AuthUser: "sf-bulk"}, "transactional", ""},
		{"Salesforce mass email", Meta{Header: hdr("X-SFDC-EmailCategory", "massEmail")}, "bulk", "sfdc-mass"},
		{"sfdc.net Message-ID + org id", Meta{Header: hdr("Message-ID", "<a1B2.c3@sfdc.net>",
			"X-SFDC-LK", "00D000000000001")}, "transactional", "sfdc-org"},
		{"sfdc.net Message-ID, other org", Meta{Header: hdr("Message-Id", "<x@sfdc.net>",
			"X-SFDC-LK", "00D000000000002")}, "transactional", ""},
		{"envelope domain", Meta{EnvelopeFrom: "bounce@Marketing.Example.com"}, "bulk", "env-domain"},
		{"envelope subdomain is not the domain", Meta{EnvelopeFrom: "x@sub.marketing.example.com"}, "transactional", ""},
		{"From address with display name", Meta{Header: hdr("From", `"News <team>" <News@Example.com>`)}, "bulk", "from-addr"},
		{"From domain with comment", Meta{Header: hdr("From", "someone@promo.example.net (Promo)")}, "bulk", "from-domain"},
		{"From of another domain", Meta{Header: hdr("From", "someone@example.net")}, "transactional", ""},
		{"any recipient's domain", Meta{Rcpts: []string{"a@x.test", "<b@TEST.invalid>"}}, "bulk", "rcpt-domain"},
		{"subject (fragile)", Meta{Header: hdr("Subject", "Your Password Reset request")}, "reset", "subject"},
		{"List-Unsubscribe present", Meta{Header: hdr("List-Unsubscribe", "<mailto:u@example.com>")}, "bulk", "list-unsubscribe"},
		{"empty List-Unsubscribe still present", Meta{Header: hdr("List-Unsubscribe", "")}, "bulk", "list-unsubscribe"},
		{"first match wins: header before List-Unsubscribe", Meta{Header: hdr("X-LK-Class", "reset",
			"List-Unsubscribe", "<mailto:u@example.com>")}, "reset", "template-header"},
		{"first match wins: envelope domain before subject", Meta{EnvelopeFrom: "a@marketing.example.com",
			Header: hdr("Subject", "password reset")}, "bulk", "env-domain"},
		{"nothing matches", Meta{EnvelopeFrom: "app@example.org", Rcpts: []string{"u@example.org"},
			Header: hdr("From", "app@example.org", "Subject", "Your order")}, "transactional", ""},
		{"empty meta", Meta{}, "transactional", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, r := p.Match(&tt.m)
			rule := ""
			if r != nil {
				rule = r.Name
			}
			if c.Name != tt.wantClass || rule != tt.wantRule {
				t.Errorf("Match = %s (rule %q), want %s (rule %q)", c.Name, rule, tt.wantClass, tt.wantRule)
			}
			if got := p.Classify(&tt.m); got != c {
				t.Errorf("Classify = %s, Match = %s", got.Name, c.Name)
			}
		})
	}
}

func TestClassifyShipped(t *testing.T) {
	p := shipped(t)
	tests := []struct {
		name string
		m    Meta
		want string
	}{
		{"Salesforce forgot password from the org-wide address", Meta{EnvelopeFrom: "bounce@bnc.example.net",
			Header: hdr("From", "Example Support <NoReply@example.com>", "X-SFDC-EmailCategory", "forgotPassword", "Message-ID", "<1@sfdc.net>",
				"X-SFDC-LK", "00D000000000001")}, "reset"},
		{"template header", Meta{Header: hdr("X-LK-Class", " reset ")}, "reset"},
		{"mass email from the org-wide address", Meta{Header: hdr("From", "noreply@example.com", "X-SFDC-EmailCategory", "massEmail")}, "bulk"},
		{"org-wide address without the category", Meta{Header: hdr("From", "noreply@example.com")}, "transactional"},
		{"List-Unsubscribe", Meta{Header: hdr("List-Unsubscribe", "<https://example.com/u>")}, "bulk"},
		{"a case notification", Meta{EnvelopeFrom: "support@example.com",
			Header: hdr("X-SFDC-EmailCategory", "caseNotification")}, "transactional"},
	}
	for _, tt := range tests {
		if got := p.Classify(&tt.m).Name; got != tt.want {
			t.Errorf("%s: class %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestClassifyDoesNotAllocate(t *testing.T) {
	p := shipped(t)
	m := &Meta{EnvelopeFrom: "app@example.org", Rcpts: []string{"u@example.org"},
		Header: hdr("From", "App <app@example.org>", "Subject", "Your order", "Message-ID", "<1@example.org>")}
	if n := testing.AllocsPerRun(100, func() { p.Classify(m) }); n != 0 {
		t.Errorf("Classify allocates %.0f times per message", n)
	}
}

func TestDeadline(t *testing.T) {
	p := mustParse(t, testPolicy)
	reset := p.Class("reset")
	acc := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	window := acc.Add(30 * time.Minute)
	tests := []struct {
		name     string
		header   string // "" = no header
		want     time.Time
		wantWarn string
	}{
		{"no header", "", window, ""},
		{"RFC 3339, earlier wins", "2025-03-01T12:10:00Z", acc.Add(10 * time.Minute), ""},
		{"RFC 3339 with offset", "2025-03-01T13:20:00+01:00", acc.Add(20 * time.Minute), ""},
		{"RFC 5322 date", "Sat, 01 Mar 2025 12:15:00 +0000", acc.Add(15 * time.Minute), ""},
		{"unix seconds", "1740830700", acc.Add(5 * time.Minute), ""},
		{"later is ignored", "2025-03-01T14:00:00Z", window, ""},
		{"garbage is ignored", "next tuesday", window, "is not a time"},
		{"empty is ignored", " ", window, "is not a time"},
		{"past means already expired", "2025-03-01T11:00:00Z", acc.Add(-time.Hour), "already expired"},
		{"huge unix seconds", "99999999999999", window, "is not a time"},
	}
	for _, tt := range tests {
		m := &Meta{}
		if tt.header != "" {
			m.Header = hdr("X-LK-Expires", tt.header)
		}
		got, warn := reset.Deadline(m, acc)
		if !got.Equal(tt.want) {
			t.Errorf("%s: deadline %v, want %v", tt.name, got, tt.want)
		}
		if (tt.wantWarn == "") != (warn == "") || !strings.Contains(warn, tt.wantWarn) {
			t.Errorf("%s: warning %q, want one containing %q", tt.name, warn, tt.wantWarn)
		}
	}
	// A class without an expiry header ignores the header entirely.
	got, warn := p.Class("transactional").Deadline(&Meta{Header: hdr("X-LK-Expires", "1740830700")}, acc)
	if !got.Equal(acc.Add(24*time.Hour)) || warn != "" {
		t.Errorf("transactional deadline %v %q", got, warn)
	}
	if c := reset.Cutoff(window); !c.Equal(acc.Add(28 * time.Minute)) {
		t.Errorf("cutoff %v", c)
	}
}

func TestNextRetry(t *testing.T) {
	p := mustParse(t, testPolicy)
	reset := p.Class("reset")
	acc := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	deadline := acc.Add(30 * time.Minute)
	cutoff := acc.Add(28 * time.Minute)
	lastTry := cutoff.Add(-15 * time.Second / 2) // half the first interval before it
	zero := func(int64) int64 { return 0 }
	maxJ := func(n int64) int64 { return n - 1 }

	for _, tt := range []struct {
		attempt int
		now     time.Time
		rnd     func(int64) int64
		want    time.Time
		ok      bool
	}{
		{1, acc, zero, acc.Add(15 * time.Second), true},
		{2, acc, zero, acc.Add(30 * time.Second), true},
		{0, acc, zero, acc.Add(15 * time.Second), true},
		{5, acc, zero, acc.Add(4 * time.Minute), true},
		{50, acc, zero, acc.Add(4 * time.Minute), true}, // the last wait repeats
		{1, acc, maxJ, acc.Add(15*time.Second + 1500*time.Millisecond - 1), true},
		{9, cutoff.Add(-3 * time.Minute), zero, lastTry, true},       // capped: one last try, finishing by the cut-off
		{9, cutoff.Add(-15 * time.Second), zero, lastTry, true},      // exactly the first interval left
		{9, cutoff.Add(-10 * time.Second), zero, time.Time{}, false}, // too little left
		{1, cutoff, zero, time.Time{}, false},                        // at the cut-off
		{1, deadline.Add(time.Minute), zero, time.Time{}, false},     // past the deadline
	} {
		got, ok := reset.NextRetry(tt.attempt, acc, tt.now, deadline, tt.rnd)
		if ok != tt.ok || !got.Equal(tt.want) {
			t.Errorf("NextRetry(%d, now=+%v) = %v, %v; want %v, %v", tt.attempt, tt.now.Sub(acc), got.Sub(acc), ok, tt.want.Sub(acc), tt.ok)
		}
	}

	// Walk an MX that defers forever: every attempt is before the cut-off,
	// the schedule ends, and the last attempt is just before the cut-off.
	now, attempts := acc, 0
	var times []time.Duration
	for {
		attempts++
		next, ok := reset.NextRetry(attempts, acc, now, time.Time{}, nil) // zero deadline: the window
		if !ok {
			break
		}
		if next.After(cutoff) || !next.After(now) {
			t.Fatalf("attempt %d scheduled at +%v, cut-off +%v", attempts+1, next.Sub(acc), cutoff.Sub(acc))
		}
		now = next
		times = append(times, now.Sub(acc))
		if attempts > 100 {
			t.Fatal("retry schedule does not end")
		}
	}
	if !now.Equal(lastTry) || len(times) < 8 {
		t.Errorf("retries at %v; want the last 7.5s before the cut-off +28m", times)
	}
}

func TestSupersedeKey(t *testing.T) {
	p := mustParse(t, testPolicy)
	shippedReset := shipped(t).Class("reset")
	orgA := &Meta{Header: hdr("X-SFDC-LK", "00DA")}
	orgA2 := &Meta{Header: hdr("X-SFDC-LK", " 00da ")}
	orgB := &Meta{Header: hdr("X-SFDC-LK", "00DB")}

	k := shippedReset.SupersedeKeyFor(orgA, "User@Example.com")
	if k == "" || k != shippedReset.SupersedeKeyFor(orgB, "<user@example.COM>") {
		t.Errorf("recipient-only key differs by case or header: %q", k)
	}
	if k == shippedReset.SupersedeKeyFor(orgA, "other@example.com") {
		t.Error("two recipients share a supersede key")
	}
	reset := p.Class("reset")
	if reset.SupersedeKeyFor(orgA, "u@example.com") != reset.SupersedeKeyFor(orgA2, "U@example.com") {
		t.Error("recipient+header key is case-sensitive")
	}
	if reset.SupersedeKeyFor(orgA, "u@example.com") == reset.SupersedeKeyFor(orgB, "u@example.com") {
		t.Error("two orgs share a supersede key")
	}
	if reset.SupersedeKeyFor(&Meta{}, "u@example.com") == reset.SupersedeKeyFor(orgA, "u@example.com") {
		t.Error("a missing header gives the same key as a present one")
	}
	if reset.SupersedeKeyFor(orgA, "u@example.com") == shippedReset.SupersedeKeyFor(orgA, "u@example.com") {
		t.Error("key ignores the header part")
	}
	if k := p.Class("transactional").SupersedeKeyFor(orgA, "u@example.com"); k != "" {
		t.Errorf("supersede off, key %q", k)
	}
}

func TestDedupeKeys(t *testing.T) {
	p := mustParse(t, testPolicy)
	c := p.Class("reset")
	a := c.DedupeKeys("<abc@sfdc.net>", "ABCDEF", "User@example.com")
	b := c.DedupeKeys(" abc@sfdc.net ", "abcdef", "<user@example.com>")
	if len(a) != 2 || !slices.Equal(a, b) {
		t.Errorf("keys of the same message differ: %v vs %v", a, b)
	}
	other := c.DedupeKeys("<abc@sfdc.net>", "abcdef", "other@example.com")
	if slices.ContainsFunc(other, func(k string) bool { return slices.Contains(a, k) }) {
		t.Error("dedupe keys shared between recipients")
	}
	if k := c.DedupeKeys("<ABC@sfdc.net>", "", "user@example.com"); len(k) != 1 || k[0] == a[0] {
		t.Errorf("Message-IDs differing in case must differ: %v", k)
	}
	if k := c.DedupeKeys("", "abcdef", "user@example.com"); len(k) != 1 || k[0] != a[1] {
		t.Errorf("body-only keys %v, want [%s]", k, a[1])
	}
	if k := p.Class("transactional").DedupeKeys("<abc@sfdc.net>", "abcdef", "u@example.com"); k != nil {
		t.Errorf("dedupe window 0, keys %v", k)
	}
}

const minimal = `default_class = "a"
[[classes]]
name = "a"
expiry = "30m"
retry = ["1m"]
workers = 1
`

func TestParseErrors(t *testing.T) {
	if _, err := Parse("p.toml", []byte(minimal)); err != nil {
		t.Fatalf("minimal policy: %v", err)
	}
	tests := []struct {
		name string
		src  string
		want []string // exact error strings, in order
	}{
		{"bad duration", strings.Replace(minimal, `"30m"`, `"3Om"`, 1), []string{
			`p.toml:4: classes.0.expiry: bad duration "3Om" (use e.g. "30s", "15m", "2h", "3d")`}},
		{"missing expiry", strings.Replace(minimal, "expiry = \"30m\"\n", "", 1), []string{
			`p.toml:2: classes.0.expiry: missing`}},
		{"zero expiry", strings.Replace(minimal, `"30m"`, `"0s"`, 1), []string{
			`p.toml:4: classes.0.expiry: must be more than 0`}},
		{"unknown key", strings.Replace(minimal, "workers", "wokers", 1), []string{
			`p.toml:2: classes.0.workers: must be at least 1`,
			`p.toml:6: classes.wokers: unknown key`}},
		{"negative backlog", strings.Replace(minimal, "workers = 1", "workers = 1\nbacklog = -1", 1), []string{
			`p.toml:7: classes.0.backlog: -1 is out of range (0 turns it off; at most 1000000)`}},
		{"backlog delay too long", strings.Replace(minimal, "workers = 1", "workers = 1\nbacklog = 4\nbacklog_delay = \"1m\"", 1), []string{
			`p.toml:8: classes.0.backlog_delay: 1m is too long (at most 10s: the sender's connection is held that long)`}},
		{"refuse below backlog", strings.Replace(minimal, "workers = 1", "workers = 1\nbacklog = 10\nbacklog_refuse = 5", 1), []string{
			`p.toml:8: classes.0.backlog_refuse: 5 is below backlog (10): messages would be refused before acceptance slows down`}},
		{"no default class", strings.Replace(minimal, `default_class = "a"`, ``, 1), []string{
			`p.toml: default_class: missing (the class of mail no rule matches)`}},
		{"no classes", "default_class = \"a\"\n", []string{
			`p.toml: classes: at least one [[classes]] is required`,
			`p.toml:1: default_class: unknown class "a"`}},
		{"rate limit without window", minimal + "rate_limit = 5\n", []string{
			`p.toml:2: classes.0.rate_window: missing (required when rate_limit is set)`}},
		{"bad supersede key", minimal + "supersede_key = [\"sender\"]\n", []string{
			`p.toml:7: classes.0.supersede_key: unknown part "sender" (use "recipient" or "header:<Name>")`,
			`p.toml:7: classes.0.supersede_key: must include "recipient"`}},
		{"bad targets", minimal + "[classes.targets]\nsuccess_rate = 98.0\ndelivery_p95 = \"soon\"\n", []string{
			`p.toml:8: classes.0.targets.success_rate: must be between 0 and 1`,
			`p.toml:9: classes.0.targets.delivery_p95: bad duration "soon" (use e.g. "30s", "15m", "2h", "3d")`}},
		{"bad addresses", minimal + "[[rules]]\nclass = \"a\"\nenvelope_from = [\"a@b@c\", \"x y\"]\nrcpt_domain = [\"\"]\nauth_user = [\" \"]\n", []string{
			`p.toml:9: rules.0.envelope_from: "a@b@c" is neither an address (user@example.com) nor a domain (example.com)`,
			`p.toml:9: rules.0.envelope_from: "x y" is neither an address (user@example.com) nor a domain (example.com)`,
			`p.toml:10: rules.0.rcpt_domain: "" is not a domain`,
			`p.toml:11: rules.0.auth_user: empty user name`}},
		{"bad names", strings.Replace(minimal, `name = "a"`, `name = "Reset Class"`, 1) + "expiry_header = \"X Bad\"\n", []string{
			`p.toml:1: default_class: unknown class "a"`,
			`p.toml:3: classes.0.name: "Reset Class" is not a valid class name (lower-case letters, digits, - and _)`,
			`p.toml:7: classes.0.expiry_header: "X Bad" is not a valid header name`}},
		{"bad header name", minimal + "[[rules]]\nclass = \"a\"\n[rules.header]\n\"X Foo\" = \"x\"\n", []string{
			`p.toml:9: rules.0.header: "X Foo" is not a valid header name`}},
		{"many problems at once", `default_class = "nope"
[[classes]]
name = "a"
expiry = "30m"
margin = "45m"
retry = ["1m", "soon"]
workers = 0
[[classes]]
name = "a"
expiry = "1h"
retry = ["1m", "0s"]
workers = 1
supersede_key = ["header:X-Org"]
suppression = ["bounce", "bounce", "Bad List"]
[[rules]]
class = "a"
[rules.header]
X-Foo = "("
[[rules]]
class = "b"
subject = "x"
[[rules]]
class = "a"
[[rules]]
subject = "x[a-"
`, []string{
			`p.toml:1: default_class: unknown class "nope"`,
			`p.toml:5: classes.0.margin: 45m leaves no time to deliver within expiry 30m`,
			`p.toml:6: classes.0.retry: entry 2: bad duration "soon" (use e.g. "30s", "15m", "2h", "3d")`,
			`p.toml:7: classes.0.workers: must be at least 1`,
			`p.toml:9: classes.1.name: duplicate class "a"`,
			`p.toml:11: classes.1.retry: entry 2 must be more than 0`,
			`p.toml:13: classes.1.supersede_key: must include "recipient"`,
			`p.toml:14: classes.1.suppression: "bounce" listed twice`,
			`p.toml:14: classes.1.suppression: "Bad List" is not a valid list name`,
			`p.toml:18: rules.0.header.X-Foo: bad regular expression: missing closing ): "("`,
			`p.toml:20: rules.1.class: unknown class "b"`,
			`p.toml:22: rules.2: rule has no conditions (it would match everything; set default_class instead)`,
			`p.toml:24: rules.3.class: missing`,
			`p.toml:25: rules.3.subject: bad regular expression: missing closing ]: "[a-"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("p.toml", []byte(tt.src))
			if err == nil {
				t.Fatalf("parsed: %+v", p)
			}
			var es tomlconf.Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is %T, not tomlconf.Errors: %v", err, err)
			}
			var got []string
			for _, e := range es {
				got = append(got, e.Error())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestParseSyntaxAndTypeErrors(t *testing.T) {
	for _, tt := range []struct{ src, want string }{
		{strings.Replace(minimal, `"30m"`, `"30m`, 1), "p.toml:4: "},
		{strings.Replace(minimal, "workers = 1", `workers = "four"`, 1), "p.toml:6: classes.workers: "},
		{strings.Replace(minimal, `retry = ["1m"]`, `retry = "1m"`, 1), "p.toml:5: classes.retry: "},
	} {
		_, err := Parse("p.toml", []byte(tt.src))
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("error %v, want prefix %q", err, tt.want)
		}
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{"3d": 72 * time.Hour, "90m": 90 * time.Minute, "0s": 0, "1h30m": 90 * time.Minute} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "3", "-1m", "d", "1.5d", "99999d", "3 d"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) succeeded", in)
		}
	}
}
