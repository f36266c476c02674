package policy

import (
	"mime"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// Meta is what classification and key derivation look at: the SMTP envelope,
// the AUTH identity and the parsed header. The body is never read.
type Meta struct {
	EnvelopeFrom string   // MAIL FROM address, with or without <>
	AuthUser     string   // SMTP AUTH identity; "" when unauthenticated
	Rcpts        []string // RCPT TO addresses
	Header       textproto.Header
}

// Classify returns the class of the first rule that matches m, or the default
// class. It does not allocate, except to decode an RFC 2047 Subject when a
// rule looks at the subject.
func (p *Policy) Classify(m *Meta) *Class {
	c, _ := p.Match(m)
	return c
}

// Match is Classify that also returns the rule that decided, or nil when the
// default class applied — for the audit trail and for `config check` dry runs.
func (p *Policy) Match(m *Meta) (*Class, *Rule) {
	var from, subj string
	if p.needFrom {
		from = headerAddr(m.Header.Get("From"))
	}
	if p.needSubj {
		subj = m.Header.Get("Subject")
		if strings.Contains(subj, "=?") {
			// A subject with any non-ASCII character arrives RFC
			// 2047-encoded, and the admin wrote the rule for the text
			// they read. Only such subjects pay for the decoding.
			subj = decodeWords(subj)
		}
	}
	env := trimAngle(m.EnvelopeFrom)
	for _, r := range p.rules {
		if r.match(m, env, from, subj) {
			return r.Class, r
		}
	}
	return p.def, nil
}

// decodeWords decodes RFC 2047 encoded words; a value that does not decode
// (an unknown charset) is matched as it is.
func decodeWords(v string) string {
	var d mime.WordDecoder
	if s, err := d.DecodeHeader(v); err == nil {
		return s
	}
	return v
}

func (r *Rule) match(m *Meta, env, from, subj string) bool {
	if !r.envFrom.empty() && !r.envFrom.match(env) {
		return false
	}
	if !r.from.empty() && !r.from.match(from) {
		return false
	}
	if len(r.authUser) > 0 && !containsFold(r.authUser, m.AuthUser) {
		return false
	}
	if len(r.rcptDom) > 0 {
		found := false
		for _, rc := range m.Rcpts {
			if containsFold(r.rcptDom, domainOf(trimAngle(rc))) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if r.subject != nil && !r.subject.MatchString(subj) {
		return false
	}
	for i := range r.headers {
		hc := &r.headers[i]
		// Has first: a missing header must not match a pattern like "" or ".*".
		if !m.Header.Has(hc.name) || !hc.re.MatchString(m.Header.Get(hc.name)) {
			return false
		}
	}
	return true
}

func containsFold(list []string, s string) bool {
	if s == "" {
		return false
	}
	for _, e := range list {
		if strings.EqualFold(e, s) {
			return true
		}
	}
	return false
}

// domainOf returns what follows the last '@', or "" when there is none.
func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return addr[i+1:]
}

func trimAngle(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		s = s[1 : len(s)-1]
	}
	return s
}

// headerAddr extracts the addr-spec of a From: value without allocating:
// `"Name" <a@b>` gives a@b, `a@b (comment)` gives a@b. It is deliberately not
// a full RFC 5322 parser: it only needs to find the address well enough to
// compare it with the admin's list, and net/mail would allocate on every
// message.
func headerAddr(v string) string {
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return strings.TrimSpace(v[i+1 : i+j])
		}
	}
	v = strings.TrimSpace(v)
	if i := strings.IndexAny(v, " \t("); i >= 0 {
		v = v[:i]
	}
	return v
}
