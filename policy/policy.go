// Package policy compiles the admin's policy.toml into delivery classes and
// classification rules, and answers the questions the relay and the queue ask
// about one message:
//
//  1. Classify: which class (reset, transactional, bulk, …) a message belongs
//     to — the first matching rule wins, else the default class. This runs on
//     the SMTP accept path, so rules are compiled once (regexps, lower-cased
//     addresses) and matching does not allocate.
//  2. Deadline and Cutoff: until when a message may be delivered at all (the
//     class's expiry window, or an earlier time carried in a header), minus the
//     safety margin.
//  3. NextRetry: when to try again after a temporary failure, never past the
//     cut-off.
//  4. SupersedeKeyFor and DedupeKeys: the keys under which the queue indexes a
//     message to supersede older resets and to recognise resubmissions.
//
// The package is pure: it keeps no state about messages. The queue owns the
// dedupe and supersede indexes, rate-limit counters and suppression lists, and
// asks this package for keys, windows and decisions. Store holds the live
// policy and swaps it atomically on reload; a broken file never replaces a
// working policy.
package policy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/textproto"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/latchkey/latchkey/conf/tomlconf"
)

// DefaultSource is the shipped conf/policy.toml. The conf package sets it (it
// embeds the file); the policy package does not reach outside its directory.
var DefaultSource []byte

// DefaultFile is the file name used in errors about DefaultSource.
const DefaultFile = "policy.toml (built-in)"

// Policy is a compiled policy file. It is immutable once parsed, so it may be
// shared between goroutines without locking.
type Policy struct {
	file     string
	digest   [sha256.Size]byte
	classes  []*Class
	byName   map[string]*Class
	rules    []*Rule
	def      *Class
	needFrom bool // some rule looks at the From: header
	needSubj bool
}

// Class is one delivery class and its parameters. Classes are shared by every
// goroutine using the policy: treat them, and their slices, as read-only.
type Class struct {
	Name string
	// Priority is the class's index in the file: 0 is the highest.
	Priority int
	// Expiry is how long after acceptance a message may still be delivered.
	Expiry time.Duration
	// Margin: a message is not handed to an MX with less than this left before
	// its deadline.
	Margin time.Duration
	// ExpiryHeader optionally names a header carrying an explicit expiry time
	// (RFC 3339, RFC 5322 date or unix seconds) that wins when earlier.
	ExpiryHeader string
	// Retry is the wait before each retry; the last entry repeats.
	Retry []time.Duration
	// Supersede: a newer message with the same SupersedeKeyFor replaces older
	// queued ones.
	Supersede bool
	// SupersedeKey lists the key parts: "recipient" and "header:<Name>".
	SupersedeKey []string
	// DedupeWindow is how long a message's dedupe keys are remembered; 0 is off.
	DedupeWindow time.Duration
	// Suppression names the suppression lists that apply to this class.
	Suppression []string
	// RateLimit is the most messages per recipient per RateWindow; 0 is off.
	RateLimit  int
	RateWindow time.Duration
	// Workers is the number of delivery workers reserved for the class.
	Workers int
	// Backlog is how many messages of the class may wait, due and not yet
	// taken by a worker, before acceptance slows down (more than Backlog
	// waiting holds the reply): the 250 after DATA
	// is held (the message is already on disk) until the backlog is below
	// it again or BacklogDelay has passed. Acceptance must never outrun
	// delivery, or every message waits behind the backlog; 0 (the default)
	// is off. Lower classes wait for it too: bulk yields to resets.
	Backlog      int
	BacklogDelay time.Duration
	// BacklogRefuse: with this many waiting, a new message of the class is
	// refused 451 4.3.2 before it is queued (for bulk, which can wait at
	// the sender; never set for resets); 0 is off.
	BacklogRefuse int
	// Escalate says which outcomes open a Salesforce Case.
	Escalate Escalate
	// Targets are service objectives reported by the stats command.
	Targets Targets

	supHeaders []string // canonical header names of "header:<Name>" key parts
}

// Escalate says which outcomes of a class are escalated to Salesforce.
// PolicyBounce is a permanent failure that says nothing against the
// address (a policy, spam, content or authentication refusal): the address
// is not suppressed, but the user still did not get the message.
type Escalate struct {
	HardBounce, PolicyBounce, Expired, Suppressed bool
}

// Targets are a class's service objectives; zero values mean "not set".
type Targets struct {
	DeliveryP95 time.Duration
	SuccessRate float64
	// CompletionRate is the minimum share of delivered links used before
	// the deadline; MaxEscalationRate the most escalations per message.
	CompletionRate    float64
	MaxEscalationRate float64
}

// Rule is one compiled classification rule.
type Rule struct {
	// Name is the rule's name from the file, or "rules[N]" when unnamed.
	Name  string
	Class *Class

	envFrom  addrSet
	from     addrSet
	rcptDom  []string // lower-case
	authUser []string // lower-case
	subject  *regexp.Regexp
	headers  []headerCond
}

type headerCond struct {
	name string // canonical MIME header key
	re   *regexp.Regexp
}

// addrSet matches an address exactly or by its domain.
type addrSet struct {
	exact   []string // lower-case addresses
	domains []string // lower-case domains
}

func (s *addrSet) empty() bool { return len(s.exact) == 0 && len(s.domains) == 0 }

func (s *addrSet) match(addr string) bool {
	if addr == "" {
		return false
	}
	for _, e := range s.exact {
		if strings.EqualFold(addr, e) {
			return true
		}
	}
	if len(s.domains) > 0 {
		d := domainOf(addr)
		for _, e := range s.domains {
			if strings.EqualFold(d, e) {
				return true
			}
		}
	}
	return false
}

// File returns the file name the policy was parsed from.
func (p *Policy) File() string { return p.file }

// Digest returns the SHA-256 of the source the policy was parsed from, in hex.
func (p *Policy) Digest() string { return fmt.Sprintf("%x", p.digest) }

// Classes returns the classes in priority order (highest first).
func (p *Policy) Classes() []*Class { return p.classes }

// Class returns the class of that name, or nil.
func (p *Policy) Class(name string) *Class { return p.byName[name] }

// DefaultClass returns the class of messages no rule matches.
func (p *Policy) DefaultClass() *Class { return p.def }

// Rules returns the rules in evaluation order.
func (p *Policy) Rules() []*Rule { return p.rules }

// Default parses DefaultSource. It panics if DefaultSource is unset or
// invalid: the shipped file is a build input tested by this package, not user
// input. Use ParseDefault to get the error instead.
func Default() *Policy {
	p, err := ParseDefault()
	if err != nil {
		panic(err)
	}
	return p
}

// ParseDefault parses DefaultSource.
func ParseDefault() (*Policy, error) {
	if len(DefaultSource) == 0 {
		return nil, errors.New("policy: DefaultSource is not set")
	}
	return Parse(DefaultFile, DefaultSource)
}

// The file's shape. Durations are strings so that a bad one is reported
// with its key rather than as a decoder type error.
type rawPolicy struct {
	DefaultClass string     `toml:"default_class"`
	Classes      []rawClass `toml:"classes"`
	Rules        []rawRule  `toml:"rules"`
}

type rawClass struct {
	Name          string   `toml:"name"`
	Expiry        string   `toml:"expiry"`
	ExpiryHeader  string   `toml:"expiry_header"`
	Margin        string   `toml:"margin"`
	Retry         []string `toml:"retry"`
	Supersede     bool     `toml:"supersede"`
	SupersedeKey  []string `toml:"supersede_key"`
	DedupeWindow  string   `toml:"dedupe_window"`
	Suppression   []string `toml:"suppression"`
	RateLimit     int      `toml:"rate_limit"`
	RateWindow    string   `toml:"rate_window"`
	Workers       int      `toml:"workers"`
	Backlog       int      `toml:"backlog"`
	BacklogDelay  string   `toml:"backlog_delay"`
	BacklogRefuse int      `toml:"backlog_refuse"`
	Escalate      struct {
		HardBounce   bool `toml:"hard_bounce"`
		PolicyBounce bool `toml:"policy_bounce"`
		Expired      bool `toml:"expired"`
		Suppressed   bool `toml:"suppressed"`
	} `toml:"escalate"`
	Targets struct {
		DeliveryP95       string  `toml:"delivery_p95"`
		SuccessRate       float64 `toml:"success_rate"`
		CompletionRate    float64 `toml:"completion_rate"`
		MaxEscalationRate float64 `toml:"max_escalation_rate"`
	} `toml:"targets"`
}

type rawRule struct {
	Name         string            `toml:"name"`
	Class        string            `toml:"class"`
	EnvelopeFrom []string          `toml:"envelope_from"`
	From         []string          `toml:"from"`
	RcptDomain   []string          `toml:"rcpt_domain"`
	AuthUser     []string          `toml:"auth_user"`
	Subject      string            `toml:"subject"`
	Header       map[string]string `toml:"header"`
}

// Parse decodes and compiles a policy file. It reports every problem at once,
// as tomlconf.Errors with file, line and key: syntax and type errors, unknown
// keys, then (if the file decoded) every validation error. The error is
// returned unwrapped so that callers can print one problem per line; each
// starts with the file name rather than the package name.
func Parse(file string, src []byte) (*Policy, error) {
	var raw rawPolicy
	md, err := tomlconf.Decode(file, src, &raw)
	var unknown tomlconf.Errors
	if err != nil {
		// Unknown keys leave the rest of the file decoded, so validation can
		// still run and the admin sees every problem in one go; syntax and
		// type errors leave nothing trustworthy to validate.
		if !errors.As(err, &unknown) || slices.ContainsFunc(unknown, func(e *tomlconf.Error) bool {
			return e.Msg != "unknown key"
		}) {
			return nil, err
		}
	}
	v := &validator{}
	p := &Policy{file: file, digest: sha256.Sum256(src), byName: map[string]*Class{}}
	for i := range raw.Classes {
		c := v.class(fmt.Sprintf("classes.%d", i), &raw.Classes[i])
		c.Priority = i
		if c.Name != "" {
			if _, dup := p.byName[c.Name]; dup {
				v.addf("classes.%d.name: duplicate class %q", i, c.Name)
			} else {
				p.byName[c.Name] = c
			}
		}
		p.classes = append(p.classes, c)
	}
	if len(raw.Classes) == 0 {
		v.addf("classes: at least one [[classes]] is required")
	}
	switch {
	case !md.IsDefined("default_class"):
		v.addf("default_class: missing (the class of mail no rule matches)")
	case p.byName[raw.DefaultClass] == nil:
		v.addf("default_class: unknown class %q", raw.DefaultClass)
	default:
		p.def = p.byName[raw.DefaultClass]
	}
	for i := range raw.Rules {
		r := v.rule(fmt.Sprintf("rules.%d", i), &raw.Rules[i], p.byName)
		if !r.from.empty() {
			p.needFrom = true
		}
		if r.subject != nil {
			p.needSubj = true
		}
		p.rules = append(p.rules, r)
	}
	if len(v.errs) > 0 || len(unknown) > 0 {
		var errs tomlconf.Errors
		if len(v.errs) > 0 {
			errs = tomlconf.FromValidation(file, src, "", errors.Join(v.errs...))
		}
		errs = append(unknown, errs...)
		slices.SortStableFunc(errs, func(a, b *tomlconf.Error) int { return a.Line - b.Line })
		return nil, errs
	}
	return p, nil
}

// validator collects "key: problem" errors for tomlconf.FromValidation.
type validator struct{ errs []error }

func (v *validator) addf(format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

func (v *validator) duration(key, s string, required bool) time.Duration {
	if s == "" {
		if required {
			v.addf("%s: missing", key)
		}
		return 0
	}
	d, err := parseDuration(s)
	if err != nil {
		v.addf("%s: %v", key, err)
		return 0
	}
	return d
}

// parseDuration accepts Go durations and whole days ("3d"), which ops people
// write for expiry windows.
func parseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 && days <= 3650 {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q (use e.g. \"30s\", \"15m\", \"2h\", \"3d\")", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

var listNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

func (v *validator) class(key string, rc *rawClass) *Class {
	c := &Class{
		Name:         rc.Name,
		ExpiryHeader: textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(rc.ExpiryHeader)),
		Supersede:    rc.Supersede,
		RateLimit:    rc.RateLimit,
		Workers:      rc.Workers,
		Escalate:     Escalate(rc.Escalate),
		Suppression:  rc.Suppression,
	}
	if rc.Name == "" {
		v.addf("%s.name: missing", key)
	} else if !listNameRE.MatchString(rc.Name) {
		v.addf("%s.name: %q is not a valid class name (lower-case letters, digits, - and _)", key, rc.Name)
	}
	if c.ExpiryHeader != "" && !validHeaderName(c.ExpiryHeader) {
		v.addf("%s.expiry_header: %q is not a valid header name", key, rc.ExpiryHeader)
	}
	c.Expiry = v.duration(key+".expiry", rc.Expiry, true)
	if d, err := parseDuration(rc.Expiry); err == nil && d == 0 {
		v.addf("%s.expiry: must be more than 0", key)
	}
	c.Margin = v.duration(key+".margin", rc.Margin, false)
	if c.Expiry > 0 && c.Margin >= c.Expiry {
		v.addf("%s.margin: %s leaves no time to deliver within expiry %s", key, rc.Margin, rc.Expiry)
	}
	if len(rc.Retry) == 0 {
		v.addf("%s.retry: missing (e.g. [\"1m\", \"5m\", \"30m\"])", key)
	}
	for i, s := range rc.Retry {
		d, err := parseDuration(s)
		switch {
		case err != nil:
			v.addf("%s.retry: entry %d: %v", key, i+1, err)
		case d == 0:
			v.addf("%s.retry: entry %d must be more than 0", key, i+1)
		}
		c.Retry = append(c.Retry, d)
	}
	c.SupersedeKey = rc.SupersedeKey
	if len(c.SupersedeKey) == 0 {
		c.SupersedeKey = []string{"recipient"}
	}
	hasRcpt := false
	for _, part := range c.SupersedeKey {
		switch {
		case part == "recipient":
			hasRcpt = true
		case strings.HasPrefix(part, "header:"):
			h := strings.TrimSpace(strings.TrimPrefix(part, "header:"))
			if !validHeaderName(h) {
				v.addf("%s.supersede_key: %q is not a valid header name", key, h)
				continue
			}
			c.supHeaders = append(c.supHeaders, textproto.CanonicalMIMEHeaderKey(h))
		default:
			v.addf("%s.supersede_key: unknown part %q (use \"recipient\" or \"header:<Name>\")", key, part)
		}
	}
	if !hasRcpt {
		// Without the recipient one user's reset would cancel another's.
		v.addf("%s.supersede_key: must include \"recipient\"", key)
	}
	c.DedupeWindow = v.duration(key+".dedupe_window", rc.DedupeWindow, false)
	seen := map[string]bool{}
	for _, l := range rc.Suppression {
		if !listNameRE.MatchString(l) {
			v.addf("%s.suppression: %q is not a valid list name", key, l)
		} else if seen[l] {
			v.addf("%s.suppression: %q listed twice", key, l)
		}
		seen[l] = true
	}
	if rc.RateLimit < 0 {
		v.addf("%s.rate_limit: must be 0 (off) or more", key)
	}
	c.RateWindow = v.duration(key+".rate_window", rc.RateWindow, false)
	if rc.RateLimit > 0 && c.RateWindow == 0 {
		if rc.RateWindow == "" {
			v.addf("%s.rate_window: missing (required when rate_limit is set)", key)
		} else if _, err := parseDuration(rc.RateWindow); err == nil {
			// The queue reads a zero window as no limit at all.
			v.addf("%s.rate_window: must be more than 0 when rate_limit is set (rate_limit = 0 turns the limit off)", key)
		}
	}
	if rc.Workers < 1 {
		v.addf("%s.workers: must be at least 1", key)
	} else if rc.Workers > 1000 {
		v.addf("%s.workers: %d is too many (at most 1000)", key, rc.Workers)
	}
	c.Backlog = rc.Backlog
	if c.Backlog < 0 || c.Backlog > 1_000_000 {
		v.addf("%s.backlog: %d is out of range (0 turns it off; at most 1000000)", key, c.Backlog)
	}
	c.BacklogDelay = 250 * time.Millisecond
	if rc.BacklogDelay != "" {
		c.BacklogDelay = v.duration(key+".backlog_delay", rc.BacklogDelay, false)
		if c.BacklogDelay > 10*time.Second {
			v.addf("%s.backlog_delay: %s is too long (at most 10s: the sender's connection is held that long)", key, rc.BacklogDelay)
		}
	}
	c.BacklogRefuse = rc.BacklogRefuse
	if rc.BacklogRefuse < 0 {
		v.addf("%s.backlog_refuse: must be 0 (off) or more", key)
	} else if rc.BacklogRefuse > 0 && c.Backlog > 0 && rc.BacklogRefuse < c.Backlog {
		v.addf("%s.backlog_refuse: %d is below backlog (%d): messages would be refused before acceptance slows down", key, rc.BacklogRefuse, c.Backlog)
	}
	c.Targets.DeliveryP95 = v.duration(key+".targets.delivery_p95", rc.Targets.DeliveryP95, false)
	c.Targets.SuccessRate = rc.Targets.SuccessRate
	c.Targets.CompletionRate = rc.Targets.CompletionRate
	c.Targets.MaxEscalationRate = rc.Targets.MaxEscalationRate
	for _, t := range []struct {
		name string
		r    float64
	}{{"success_rate", rc.Targets.SuccessRate}, {"completion_rate", rc.Targets.CompletionRate},
		{"max_escalation_rate", rc.Targets.MaxEscalationRate}} {
		if t.r < 0 || t.r > 1 || t.r != t.r {
			v.addf("%s.targets.%s: must be between 0 and 1", key, t.name)
		}
	}
	return c
}

func (v *validator) rule(key string, rr *rawRule, classes map[string]*Class) *Rule {
	r := &Rule{Name: rr.Name}
	if r.Name == "" {
		r.Name = fmt.Sprintf("rules[%s]", strings.TrimPrefix(key, "rules."))
	}
	switch {
	case rr.Class == "":
		v.addf("%s.class: missing", key)
	case classes[rr.Class] == nil:
		v.addf("%s.class: unknown class %q", key, rr.Class)
	default:
		r.Class = classes[rr.Class]
	}
	r.envFrom = v.addrs(key+".envelope_from", rr.EnvelopeFrom)
	r.from = v.addrs(key+".from", rr.From)
	for _, d := range rr.RcptDomain {
		d = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(d), "@"))
		if !validDomain(d) {
			v.addf("%s.rcpt_domain: %q is not a domain", key, d)
			continue
		}
		r.rcptDom = append(r.rcptDom, d)
	}
	for _, u := range rr.AuthUser {
		u = strings.TrimSpace(u)
		if u == "" {
			v.addf("%s.auth_user: empty user name", key)
			continue
		}
		r.authUser = append(r.authUser, strings.ToLower(u))
	}
	if rr.Subject != "" {
		r.subject = v.regexp(key+".subject", rr.Subject)
	}
	// Sorted so that errors and evaluation order do not depend on map order.
	names := make([]string, 0, len(rr.Header))
	for n := range rr.Header {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if !validHeaderName(n) {
			v.addf("%s.header: %q is not a valid header name", key, n)
			continue
		}
		re := v.regexp(key+".header."+n, rr.Header[n])
		r.headers = append(r.headers, headerCond{name: textproto.CanonicalMIMEHeaderKey(n), re: re})
	}
	if len(rr.EnvelopeFrom) == 0 && len(rr.From) == 0 && len(rr.RcptDomain) == 0 &&
		len(rr.AuthUser) == 0 && rr.Subject == "" && len(rr.Header) == 0 {
		v.addf("%s: rule has no conditions (it would match everything; set default_class instead)", key)
	}
	return r
}

func (v *validator) addrs(key string, list []string) addrSet {
	var s addrSet
	for _, a := range list {
		a = strings.ToLower(strings.TrimSpace(a))
		local, dom, hasAt := strings.Cut(a, "@")
		if !hasAt {
			local, dom = "", a
		}
		if strings.Contains(dom, "@") || !validDomain(dom) || strings.ContainsAny(local, " \t<>") {
			v.addf("%s: %q is neither an address (user@example.com) nor a domain (example.com)", key, a)
			continue
		}
		if local == "" {
			s.domains = append(s.domains, dom)
		} else {
			s.exact = append(s.exact, a)
		}
	}
	return s
}

// regexp compiles a rule pattern. Patterns ignore case by default: header
// values such as Salesforce's categories vary in case between features, and
// an admin can still write (?-i).
func (v *validator) regexp(key, pat string) *regexp.Regexp {
	// Compiled once as written so that the error quotes the admin's text,
	// not the (?i) this package adds.
	if _, err := regexp.Compile(pat); err != nil {
		msg := err.Error()
		var e *syntax.Error
		if errors.As(err, &e) {
			msg = fmt.Sprintf("%s: %q", e.Code, e.Expr)
		}
		v.addf("%s: bad regular expression: %s", key, msg)
		return nil
	}
	re, err := regexp.Compile("(?i)" + pat)
	if err != nil {
		v.addf("%s: bad regular expression: %v", key, err)
		return nil
	}
	return re
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

func validDomain(d string) bool {
	if d == "" || len(d) > 253 || d[0] == '.' || d[len(d)-1] == '.' {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c >= 0x80) {
			return false
		}
	}
	return true
}
