package dnscheck

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// The parsers here read records fetched from other people's zones: they must
// reject rather than panic on anything, and they are fuzzed.

// --- SPF (RFC 7208 section 4.6, 12) ---

// spfTerm is one directive or modifier of an SPF record.
type spfTerm struct {
	raw  string
	qual byte   // '+', '-', '~', '?' for mechanisms; 0 for modifiers
	mech string // lower-case mechanism name; "" for a modifier
	mod  string // lower-case modifier name; "" for a mechanism
	arg  string // domain-spec, address, or modifier value; "" if none
}

// querying reports whether evaluating t costs one of the ten DNS look-ups
// that RFC 7208 section 4.6.4 allows.
func (t spfTerm) querying() bool {
	switch t.mech {
	case "include", "a", "mx", "ptr", "exists":
		return true
	}
	return t.mod == "redirect"
}

var errNotSPF = errors.New("dnscheck: not an SPF record")

// isSPF reports whether a TXT string is an SPF record (version section 4.5).
func isSPF(txt string) bool {
	l := strings.ToLower(txt)
	return l == "v=spf1" || strings.HasPrefix(l, "v=spf1 ")
}

// parseSPF splits an SPF record into terms and checks their syntax.
func parseSPF(rec string) ([]spfTerm, error) {
	if !isSPF(rec) {
		return nil, errNotSPF
	}
	var terms []spfTerm
	seen := map[string]bool{}
	for _, raw := range strings.Split(rec, " ")[1:] {
		if raw == "" {
			continue
		}
		t, err := parseSPFTerm(raw)
		if err != nil {
			return nil, err
		}
		if t.mod == "redirect" || t.mod == "exp" {
			if seen[t.mod] {
				return nil, fmt.Errorf("dnscheck: SPF: %s= appears twice", t.mod)
			}
			seen[t.mod] = true
		}
		terms = append(terms, t)
	}
	return terms, nil
}

func parseSPFTerm(raw string) (spfTerm, error) {
	t := spfTerm{raw: raw}
	if name, value, ok := strings.Cut(raw, "="); ok && validModifierName(name) {
		t.mod, t.arg = strings.ToLower(name), value
		if (t.mod == "redirect" || t.mod == "exp") && !validDomainSpec(value) {
			return t, fmt.Errorf("dnscheck: SPF: %q: bad domain", raw)
		}
		return t, nil
	}
	s := raw
	t.qual = '+'
	if strings.ContainsRune("+-~?", rune(s[0])) {
		t.qual, s = s[0], s[1:]
	}
	name, rest := s, ""
	if i := strings.IndexAny(s, ":/"); i >= 0 {
		name, rest = s[:i], s[i:]
	}
	t.mech = strings.ToLower(name)
	bad := func(why string) (spfTerm, error) {
		return t, fmt.Errorf("dnscheck: SPF: %q: %s", raw, why)
	}
	switch t.mech {
	case "all":
		if rest != "" {
			return bad("all takes no argument")
		}
	case "include", "exists":
		if !strings.HasPrefix(rest, ":") || !validDomainSpec(rest[1:]) {
			return bad("needs :domain")
		}
		t.arg = rest[1:]
	case "ptr":
		if rest != "" {
			if !strings.HasPrefix(rest, ":") || !validDomainSpec(rest[1:]) {
				return bad("bad domain")
			}
			t.arg = rest[1:]
		}
	case "a", "mx":
		dom, cidr := rest, ""
		if i := strings.Index(rest, "/"); i >= 0 {
			dom, cidr = rest[:i], rest[i:]
		}
		if dom != "" {
			if !strings.HasPrefix(dom, ":") || !validDomainSpec(dom[1:]) {
				return bad("bad domain")
			}
			t.arg = dom[1:]
		}
		if cidr != "" && !validDualCIDR(cidr) {
			return bad("bad CIDR length")
		}
	case "ip4", "ip6":
		if !strings.HasPrefix(rest, ":") {
			return bad("needs :address")
		}
		addr, bits, hasBits := strings.Cut(rest[1:], "/")
		ip := net.ParseIP(addr)
		max := 32
		if t.mech == "ip6" {
			max = 128
			if ip == nil || ip.To4() != nil && !strings.Contains(addr, ":") {
				return bad("not an IPv6 address")
			}
		} else if ip == nil || ip.To4() == nil || strings.Contains(addr, ":") {
			return bad("not an IPv4 address")
		}
		if hasBits && !validCIDR(bits, max) {
			return bad("bad CIDR length")
		}
		t.arg = rest[1:]
	default:
		return bad("unknown mechanism")
	}
	return t, nil
}

func validModifierName(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// validDomainSpec accepts a domain name or a macro string (section 7.1); a
// macro is checked only for balanced braces, since what it expands to
// depends on the message.
func validDomainSpec(s string) bool {
	if s == "" || len(s) > 253*4 {
		return false
	}
	if strings.Contains(s, "%") {
		for i := 0; i < len(s); i++ {
			if s[i] != '%' {
				continue
			}
			if i+1 >= len(s) {
				return false
			}
			switch s[i+1] {
			case '%', '_', '-':
				i++
			case '{':
				j := strings.IndexByte(s[i:], '}')
				if j < 3 {
					return false
				}
				i += j
			default:
				return false
			}
		}
		return true
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
	}
	return true
}

func validCIDR(s string, max int) bool {
	if s == "" || len(s) > 3 || (len(s) > 1 && s[0] == '0') {
		return false
	}
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= max
}

// validDualCIDR checks "/n", "//m" or "/n//m" after a or mx.
func validDualCIDR(s string) bool {
	if v6, ok := strings.CutPrefix(s, "//"); ok {
		return validCIDR(v6, 128)
	}
	s = strings.TrimPrefix(s, "/")
	v4, v6, dual := strings.Cut(s, "//")
	if !validCIDR(v4, 32) {
		return false
	}
	return !dual || validCIDR(v6, 128)
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// spfAll returns the record's all term, if any; a record has at most one
// meaningful all since evaluation stops there.
func spfAll(terms []spfTerm) (spfTerm, bool) {
	for _, t := range terms {
		if t.mech == "all" {
			return t, true
		}
	}
	return spfTerm{}, false
}

// spfWith rewrites a record: extra terms go before the first term that is
// not a plain ip4:/ip6: (so before any look-up, include or negative match
// that could end evaluation with fail or permerror before them; at the
// latest before the all term or redirect), and the all term gets qualifier
// qual (0 keeps it). A term equal to an extra one is not repeated. A record
// with neither all nor redirect gets "-all" when qual is set.
func spfWith(terms []spfTerm, extra []string, qual byte) string {
	out := []string{"v=spf1"}
	placed := false
	hasAll := false
	isExtra := func(raw string) bool {
		for _, e := range extra {
			if strings.EqualFold(strings.TrimPrefix(raw, "+"), e) {
				return true
			}
		}
		return false
	}
	for _, t := range terms {
		plainIP := t.qual == '+' && (t.mech == "ip4" || t.mech == "ip6")
		if !placed && !plainIP {
			out = append(out, extra...)
			placed = true
		}
		if len(extra) > 0 && plainIP && isExtra(t.raw) {
			continue
		}
		if t.mech == "all" {
			hasAll = true
			if qual != 0 {
				out = append(out, string(qual)+"all")
				continue
			}
		}
		out = append(out, t.raw)
	}
	if !placed {
		out = append(out, extra...)
	}
	if !hasAll && qual != 0 && !hasRedirect(terms) {
		out = append(out, string(qual)+"all")
	}
	return strings.Join(out, " ")
}

// --- tag lists (RFC 6376 section 3.2, used by DKIM and DMARC) ---

// parseTags parses "tag=value; tag=value;". Tag names are lower-cased; values
// are trimmed of surrounding whitespace. A repeated tag is an error.
func parseTags(s string) (map[string]string, []string, error) {
	tags := map[string]string{}
	var order []string
	for _, spec := range strings.Split(s, ";") {
		if strings.TrimSpace(spec) == "" {
			continue
		}
		name, value, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, nil, fmt.Errorf("dnscheck: tag %q has no '='", strings.TrimSpace(spec))
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" || !isAlpha(name[0]) {
			return nil, nil, fmt.Errorf("dnscheck: bad tag name %q", name)
		}
		for i := 0; i < len(name); i++ {
			if !isAlpha(name[i]) && !isDigit(name[i]) && name[i] != '_' {
				return nil, nil, fmt.Errorf("dnscheck: bad tag name %q", name)
			}
		}
		if _, dup := tags[name]; dup {
			return nil, nil, fmt.Errorf("dnscheck: tag %s= appears twice", name)
		}
		tags[name] = strings.TrimSpace(value)
		order = append(order, name)
	}
	return tags, order, nil
}

// --- DKIM key records (RFC 6376 section 3.6.1, RFC 8463) ---

type dkimKey struct {
	keyType string // "rsa" or "ed25519"
	key     crypto.PublicKey
	revoked bool // p= empty
	testing bool // t=y
}

func parseDKIMRecord(s string) (*dkimKey, error) {
	tags, order, err := parseTags(s)
	if err != nil {
		return nil, err
	}
	if v, ok := tags["v"]; ok && (order[0] != "v" || v != "DKIM1") {
		return nil, errors.New("dnscheck: DKIM: v= must come first and be DKIM1")
	}
	k := &dkimKey{keyType: "rsa"}
	if kt, ok := tags["k"]; ok {
		k.keyType = strings.ToLower(kt)
	}
	if k.keyType != "rsa" && k.keyType != "ed25519" {
		return nil, fmt.Errorf("dnscheck: DKIM: unknown key type k=%s", k.keyType)
	}
	if h, ok := tags["h"]; ok && !listHas(h, ":", "sha256") {
		return nil, fmt.Errorf("dnscheck: DKIM: h=%s excludes sha256", h)
	}
	if sv, ok := tags["s"]; ok && !listHas(sv, ":", "email") && !listHas(sv, ":", "*") {
		return nil, fmt.Errorf("dnscheck: DKIM: s=%s excludes email", sv)
	}
	k.testing = listHas(tags["t"], ":", "y")
	p, ok := tags["p"]
	if !ok {
		return nil, errors.New("dnscheck: DKIM: no p= tag")
	}
	p = strings.Join(strings.Fields(p), "")
	if p == "" {
		k.revoked = true
		return k, nil
	}
	raw, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("dnscheck: DKIM: p= is not base64: %w", err)
	}
	switch k.keyType {
	case "rsa":
		pub, err := x509.ParsePKIXPublicKey(raw)
		if err != nil {
			// Some tools publish the bare PKCS#1 key; verifiers accept it.
			rk, err2 := x509.ParsePKCS1PublicKey(raw)
			if err2 != nil {
				return nil, fmt.Errorf("dnscheck: DKIM: p= is not an RSA public key: %w", err)
			}
			pub = rk
		}
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("dnscheck: DKIM: k=rsa but p= holds a %T", pub)
		}
		k.key = rk
	case "ed25519":
		if len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("dnscheck: DKIM: ed25519 p= has %d bytes, want 32", len(raw))
		}
		k.key = ed25519.PublicKey(raw)
	}
	return k, nil
}

func listHas(list, sep, want string) bool {
	for _, item := range strings.Split(list, sep) {
		if strings.EqualFold(strings.TrimSpace(item), want) {
			return true
		}
	}
	return false
}

// --- DMARC records (RFC 7489 section 6.3) ---

type dmarcRecord struct {
	p, sp       string // "none", "quarantine", "reject"; sp "" if absent
	adkim, aspf byte   // 'r' or 's'
	pct         int
	rua         []string
	raw         string
}

func isDMARC(txt string) bool {
	v, _, _ := strings.Cut(txt, ";")
	name, value, ok := strings.Cut(v, "=")
	return ok && strings.TrimSpace(name) == "v" && strings.TrimSpace(value) == "DMARC1"
}

func parseDMARC(s string) (*dmarcRecord, error) {
	tags, order, err := parseTags(s)
	if err != nil {
		return nil, err
	}
	if len(order) == 0 || order[0] != "v" || tags["v"] != "DMARC1" {
		return nil, errors.New("dnscheck: DMARC: must start with v=DMARC1")
	}
	r := &dmarcRecord{adkim: 'r', aspf: 'r', pct: 100, raw: s}
	policy := func(tag string) (string, error) {
		switch v := strings.ToLower(tags[tag]); v {
		case "none", "quarantine", "reject":
			return v, nil
		default:
			return "", fmt.Errorf("dnscheck: DMARC: %s=%s is not none, quarantine or reject", tag, tags[tag])
		}
	}
	if _, ok := tags["p"]; !ok {
		return nil, errors.New("dnscheck: DMARC: no p= tag")
	}
	if r.p, err = policy("p"); err != nil {
		return nil, err
	}
	if _, ok := tags["sp"]; ok {
		if r.sp, err = policy("sp"); err != nil {
			return nil, err
		}
	}
	for _, tag := range []string{"adkim", "aspf"} {
		v, ok := tags[tag]
		if !ok {
			continue
		}
		v = strings.ToLower(v)
		if v != "r" && v != "s" {
			return nil, fmt.Errorf("dnscheck: DMARC: %s=%s is not r or s", tag, tags[tag])
		}
		if tag == "adkim" {
			r.adkim = v[0]
		} else {
			r.aspf = v[0]
		}
	}
	if v, ok := tags["pct"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100 {
			return nil, fmt.Errorf("dnscheck: DMARC: pct=%s is not 0-100", v)
		}
		r.pct = n
	}
	if v, ok := tags["rua"]; ok {
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				r.rua = append(r.rua, u)
			}
		}
	}
	return r, nil
}
