package dnscheck

import (
	"context"
	"crypto"
	"crypto/rsa"
	"fmt"
	"net"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/latchkey/latchkey/dkim"
	"github.com/miekg/dns"
	"golang.org/x/net/publicsuffix"
)

// maxSPFLookups is RFC 7208 section 4.6.4's limit; past it receivers answer
// permerror, which DMARC treats as an SPF failure.
const maxSPFLookups = 10

// maxSPFFetches bounds how many records counting may fetch, so that a huge
// or looping include tree cannot make the check slow.
const maxSPFFetches = 40

// --- SPF ---

func (c *checker) checkSPF(ctx context.Context, domain, name string) {
	want := spfRecord(c.in.OutboundIPs)
	txts, err := c.res.LookupTXT(ctx, name)
	if err != nil && !IsNotFound(err) {
		c.couldNot(domain, "spf", name, err)
		return
	}
	var recs []string
	for _, t := range txts {
		if isSPF(t) {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		c.add(domain, "spf", name, "", []finding{{Fail, "no SPF record",
			"publish: " + txtLine(name, want)}})
		return
	case 1:
	default:
		c.add(domain, "spf", name, strings.Join(recs, " | "), []finding{{Fail,
			fmt.Sprintf("%d SPF records; receivers treat more than one as a permanent error", len(recs)),
			"replace them with one record: " + txtLine(name, want)}})
		return
	}
	rec := recs[0]
	terms, err := parseSPF(rec)
	if err != nil {
		c.add(domain, "spf", name, rec, []finding{{Fail, "invalid SPF record: " + err.Error(),
			"publish instead: " + txtLine(name, want)}})
		return
	}
	// Evaluate first: the fix for every other problem then also adds the
	// missing addresses, so that each fix shown is a complete record.
	var missing []net.IP
	var why []string
	for _, ip := range c.in.OutboundIPs {
		res, err := spf.CheckHostWithSender(ip, c.in.Hostname, "postmaster@"+name,
			spf.WithResolver(c.res), spf.WithContext(ctx))
		switch res {
		case spf.Pass:
		case spf.TempError:
			c.couldNot(domain, "spf", name, fmt.Errorf("evaluating for %s: %w", ip, err))
			return
		default:
			w := fmt.Sprintf("%s evaluates to %s", ip, res)
			if err != nil {
				w += " (" + err.Error() + ")"
			}
			why = append(why, w)
			missing = append(missing, ip)
		}
	}
	var qual byte
	var allProblem finding
	judge := func(all spfTerm, where string) (finding, bool) {
		switch all.qual {
		case '+', '?':
			return finding{Fail, fmt.Sprintf("%q%s lets any host on the internet send as %s", all.raw, where, name), "end the record with -all"}, true
		case '~':
			return finding{Warn, "~all" + where + " only soft-fails forged mail; -all would do, since the record lists every latchkey address", "end the record with -all"}, true
		}
		return finding{}, false
	}
	// redirectFix is the fixed record of a redirect target whose all term
	// is the one that applies.
	var redirectFix string
	if all, ok := spfAll(terms); ok {
		if allProblem, ok = judge(all, ""); ok {
			qual = '-'
		}
	} else if !hasRedirect(terms) {
		allProblem = finding{Warn, "no all term: unlisted senders get neutral", "end the record with -all"}
		qual = '-'
	} else if target, tterms, ok := c.redirectTarget(ctx, terms); ok {
		// Without an all term of its own, the record ends with the one of
		// the record it redirects to (RFC 7208 section 6.1).
		if all, ok := spfAll(tterms); ok {
			if allProblem, ok = judge(all, " (at "+target+", by redirect=)"); ok {
				redirectFix = txtLine(target, spfWith(tterms, nil, '-'))
			}
		}
	}
	fixed := txtLine(name, spfWith(terms, ipTerms(missing), qual))
	var fs []finding
	if len(missing) > 0 {
		fs = append(fs, finding{Fail, strings.Join(why, "; ") + "; it must be pass",
			"add " + strings.Join(ipTerms(missing), " ") + ": " + fixed})
	}
	if allProblem.status != "" {
		if redirectFix != "" {
			allProblem.fix += ": " + redirectFix
		} else {
			allProblem.fix += ": " + fixed
		}
		fs = append(fs, allProblem)
	}
	w := &spfWalk{}
	n, err := c.countSPFLookups(ctx, terms, 0, false, w)
	if err != nil {
		c.couldNot(domain, "spf", name, err)
		return
	}
	for _, o := range w.open {
		fs = append(fs, finding{Fail,
			fmt.Sprintf("%s, reached by include:, ends in %q: it matches every address, so the include lets any host on the internet send as %s", o.name, o.all, name),
			"end that record with -all, or drop the include: " + txtLine(o.name, spfWith(o.terms, nil, '-'))})
	}
	if n > maxSPFLookups {
		fs = append(fs, finding{Fail,
			fmt.Sprintf("%d DNS-querying terms (include, a, mx, ptr, exists, redirect, counted through includes); the limit is %d and receivers answer permerror past it", n, maxSPFLookups),
			"replace includes with the ip4:/ip6: ranges they stand for, e.g.: " + txtLine(name, want)})
	}
	c.add(domain, "spf", name, rec, fs)
}

func hasRedirect(terms []spfTerm) bool {
	for _, t := range terms {
		if t.mod == "redirect" {
			return true
		}
	}
	return false
}

// redirectTarget follows redirect= from a record without an all term to the
// record whose all term applies, and returns that record's name and terms.
// ok is false when it cannot be followed (a macro, no single valid record,
// no answer): evaluation and counting report those.
func (c *checker) redirectTarget(ctx context.Context, terms []spfTerm) (string, []spfTerm, bool) {
	for hop := 0; hop < maxSPFLookups; hop++ {
		var target string
		for _, t := range terms {
			if t.mod == "redirect" {
				target = t.arg
			}
		}
		if target == "" || strings.Contains(target, "%") {
			return "", nil, false
		}
		txts, err := c.res.LookupTXT(ctx, target)
		if err != nil {
			return "", nil, false
		}
		var recs []string
		for _, txt := range txts {
			if isSPF(txt) {
				recs = append(recs, txt)
			}
		}
		if len(recs) != 1 {
			return "", nil, false
		}
		if terms, err = parseSPF(recs[0]); err != nil {
			return "", nil, false
		}
		if _, ok := spfAll(terms); ok || !hasRedirect(terms) {
			return fqdn(target), terms, true
		}
	}
	return "", nil, false
}

// spfWalk is the state of one walk through an SPF include tree.
type spfWalk struct {
	fetched int       // records fetched, bounded by maxSPFFetches
	open    []openSPF // included records that end in +all
}

// openSPF is an included record that ends in +all.
type openSPF struct {
	name, all string
	terms     []spfTerm
}

func (w *spfWalk) noted(name string) bool {
	for _, o := range w.open {
		if o.name == fqdn(name) {
			return true
		}
	}
	return false
}

// countSPFLookups counts the DNS-querying terms of a record and, recursively,
// of the records its include and redirect terms name. A target written with
// macros cannot be followed without a message and counts one. A target
// without a usable record counts one too: evaluation reports that itself.
//
// On the way it notes in w the records reached through include: whose all
// term is +all: such an include matches, and so passes, every address.
func (c *checker) countSPFLookups(ctx context.Context, terms []spfTerm, depth int, viaInclude bool, w *spfWalk) (int, error) {
	n := 0
	_, hasAll := spfAll(terms)
	for _, t := range terms {
		if !t.querying() || t.mod == "redirect" && hasAll {
			continue // redirect is ignored when all is present (section 6.1)
		}
		n++
		if t.mech != "include" && t.mod != "redirect" || strings.Contains(t.arg, "%") {
			continue
		}
		if depth >= maxSPFLookups || w.fetched >= maxSPFFetches {
			// Deep enough to be over the limit already; stop fetching.
			continue
		}
		w.fetched++
		txts, err := c.res.LookupTXT(ctx, t.arg)
		if err != nil {
			if IsNotFound(err) {
				continue
			}
			return 0, err
		}
		var sub []spfTerm
		count := 0
		for _, txt := range txts {
			if isSPF(txt) {
				count++
				sub, _ = parseSPF(txt)
			}
		}
		if count != 1 {
			continue
		}
		subVia := viaInclude || t.mech == "include"
		if all, ok := spfAll(sub); ok && all.qual == '+' && subVia && !w.noted(t.arg) {
			w.open = append(w.open, openSPF{fqdn(t.arg), all.raw, sub})
		}
		m, err := c.countSPFLookups(ctx, sub, depth+1, subVia, w)
		if err != nil {
			return 0, err
		}
		n += m
	}
	return n, nil
}

// --- DKIM ---

func (c *checker) checkDKIM(ctx context.Context, domain string, sel Selector) {
	name := sel.Name + "._domainkey." + fqdn(domain)
	want, werr := publicRecord(sel.PublicKey)
	if werr != nil {
		c.add(domain, "dkim", name, "", []finding{{Fail, "latchkey's key for this selector: " + werr.Error(),
			"configure an RSA (2048 bits or more) or Ed25519 key: latchkey dkim keygen"}})
		return
	}
	publish := "publish: " + txtLine(name, want)
	txts, err := c.res.LookupTXT(ctx, name)
	if err != nil && !IsNotFound(err) {
		c.couldNot(domain, "dkim", name, err)
		return
	}
	var recs []string
	for _, t := range txts {
		if strings.TrimSpace(t) != "" {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		c.add(domain, "dkim", name, "", []finding{{Fail, "no DKIM key record", publish}})
		return
	case 1:
	default:
		c.add(domain, "dkim", name, strings.Join(recs, " | "), []finding{{Fail,
			fmt.Sprintf("%d TXT records; verifiers may pick any of them", len(recs)),
			"keep only one: " + txtLine(name, want)}})
		return
	}
	rec := recs[0]
	k, err := parseDKIMRecord(rec)
	if err != nil {
		c.add(domain, "dkim", name, rec, []finding{{Fail, "invalid DKIM record: " + err.Error(), "replace it: " + txtLine(name, want)}})
		return
	}
	if k.revoked {
		c.add(domain, "dkim", name, rec, []finding{{Fail, "the key is revoked (empty p=)", "replace it: " + txtLine(name, want)}})
		return
	}
	var fs []finding
	ours, theirs := fingerprint(sel.PublicKey), fingerprint(k.key)
	observed := fmt.Sprintf("k=%s %s", k.keyType, theirs)
	if ours != theirs {
		fs = append(fs, finding{Fail,
			fmt.Sprintf("the published key is not latchkey's: published %s, latchkey's %s", theirs, ours),
			"replace it: " + txtLine(name, want)})
	} else if rk, ok := sel.PublicKey.(*rsa.PublicKey); ok && rk.N.BitLen() < 2048 {
		fs = append(fs, finding{Fail,
			fmt.Sprintf("RSA key of %d bits; receivers distrust keys under 2048 bits", rk.N.BitLen()),
			"generate a 2048-bit key (latchkey dkim keygen) under a new selector and publish its record"})
	}
	if rk, ok := k.key.(*rsa.PublicKey); ok && ours != theirs && rk.N.BitLen() < 2048 {
		fs = append(fs, finding{Fail,
			fmt.Sprintf("the published RSA key has %d bits; receivers distrust keys under 2048 bits", rk.N.BitLen()),
			"replace it: " + txtLine(name, want)})
	}
	if k.testing {
		fs = append(fs, finding{Warn, "t=y: receivers may treat signatures as if the message were unsigned",
			"remove t=y: " + txtLine(name, want)})
	}
	c.add(domain, "dkim", name, observed, fs)
}

// fingerprint is the key's SHA-256 as the dkim package computes it, so that
// it matches what "latchkey dkim keygen" prints.
func fingerprint(pub crypto.PublicKey) string {
	if fp := dkim.Fingerprint(pub); fp != "" {
		return "SHA256:" + fp
	}
	return "(no key)"
}

// --- DMARC ---

// orgDomain is the organisational domain (RFC 7489 section 3.2) by the
// public suffix list; a name that is itself a suffix is its own.
func orgDomain(name string) string {
	name = fqdn(name)
	org, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		return name
	}
	return org
}

// aligned applies a DMARC alignment mode to an authenticated domain and the
// From domain (RFC 7489 section 3.1).
func aligned(mode byte, authDomain, from string) bool {
	if mode == 's' {
		return fqdn(authDomain) == fqdn(from)
	}
	return orgDomain(authDomain) == orgDomain(from)
}

// lookupDMARC returns the DMARC records at _dmarc.<name>.
func (c *checker) lookupDMARC(ctx context.Context, name string) ([]string, error) {
	txts, err := c.res.LookupTXT(ctx, "_dmarc."+name)
	if err != nil && !IsNotFound(err) {
		return nil, err
	}
	var recs []string
	for _, t := range txts {
		if isDMARC(t) {
			recs = append(recs, t)
		}
	}
	return recs, nil
}

func (c *checker) checkDMARC(ctx context.Context, d Domain) {
	from := fqdn(d.Name)
	name := "_dmarc." + from
	want := dmarcSuggestion(c.in.RUA)
	publish := "publish: " + txtLine(name, want)
	recs, err := c.lookupDMARC(ctx, from)
	if err != nil {
		c.couldNot(d.Name, "dmarc", name, err)
		return
	}
	atOrg := false
	if org := orgDomain(from); len(recs) == 0 && org != from {
		recs, err = c.lookupDMARC(ctx, org)
		if err != nil {
			c.couldNot(d.Name, "dmarc", "_dmarc."+org, err)
			return
		}
		if len(recs) > 0 {
			atOrg, name = true, "_dmarc."+org
		}
	}
	switch len(recs) {
	case 0:
		c.add(d.Name, "dmarc", name, "", []finding{{Fail, "no DMARC record at " + name + " nor at the organisational domain", publish}})
		return
	case 1:
	default:
		c.add(d.Name, "dmarc", name, strings.Join(recs, " | "), []finding{{Fail,
			fmt.Sprintf("%d DMARC records; receivers then apply none", len(recs)), "keep only one: " + txtLine(name, want)}})
		return
	}
	r, err := parseDMARC(recs[0])
	if err != nil {
		c.add(d.Name, "dmarc", name, recs[0], []finding{{Fail, "invalid DMARC record: " + err.Error(), "replace it: " + txtLine(name, want)}})
		return
	}
	policy, which := r.p, "p"
	if atOrg && r.sp != "" {
		// Subdomains of the organisational domain get sp= (section 6.3).
		policy, which = r.sp, "sp"
	}
	observed := recs[0]
	if atOrg {
		observed = "(organisational domain) " + observed
	}
	// Each problem comes with the tag change that fixes it; every fix shows
	// the record with all the changes made, so that none undoes another.
	type change struct {
		finding
		tag, value string
	}
	var changes []change
	if policy == "none" {
		changes = append(changes, change{finding{Warn,
			which + "=none: receivers deliver mail that fails DMARC, so forged resets reach inboxes",
			"once reports show latchkey's mail passing, set " + which + "=quarantine (later reject)"}, which, "quarantine"})
	}
	if r.pct < 100 {
		changes = append(changes, change{finding{Warn,
			fmt.Sprintf("pct=%d: the policy applies to only %d%% of failing mail", r.pct, r.pct),
			"remove pct="}, "pct", ""})
	}
	// The report address is the admin's (-rua): with none given, the fix
	// says what to add rather than inventing a mailbox.
	var ruaOnly []finding
	rua := ruaURI(c.in.RUA)
	if len(r.rua) == 0 {
		f := finding{Warn, "no rua=: you will get no aggregate reports to see who sends as " + from, "add a report address"}
		if rua != "" {
			changes = append(changes, change{f, "rua", rua})
		} else {
			f.fix = "add rua=mailto:<a mailbox you read> (run with -rua ADDRESS for the whole record)"
			ruaOnly = append(ruaOnly, f)
		}
	} else if good, bad := mailtoURIs(r.rua); len(bad) > 0 {
		// Receivers send reports only to mailto: URIs (RFC 7489 section
		// 6.2); a bare address is the usual slip, and gets no reports.
		f := finding{Warn, "rua=" + strings.Join(bad, ",") + " is not a mailto: address; receivers send no aggregate reports there",
			"write the addresses as mailto: URIs"}
		switch {
		case len(good) > 0:
			changes = append(changes, change{f, "rua", strings.Join(good, ",")})
		case rua != "":
			changes = append(changes, change{f, "rua", rua})
		default:
			f.fix = "replace rua= with mailto:<a mailbox you read> (run with -rua ADDRESS for the whole record)"
			ruaOnly = append(ruaOnly, f)
		}
	}
	// latchkey signs d=<From domain>, so DKIM alignment holds in either mode;
	// computed anyway so that a future change of d= is caught here.
	if !aligned(r.adkim, from, from) {
		changes = append(changes, change{finding{Fail, "DKIM d=" + from + " does not align with From " + from,
			"set adkim=r"}, "adkim", "r"})
	}
	bounce := fqdn(bounceOf(d))
	if !aligned(r.aspf, bounce, from) {
		mode := "strict"
		if r.aspf == 'r' {
			mode = "relaxed"
		}
		changes = append(changes, change{finding{Fail,
			fmt.Sprintf("aspf=%c (%s): the envelope domain %s does not align with From %s, so SPF never counts for DMARC and DMARC rests on DKIM alone", r.aspf, mode, bounce, from),
			"set aspf=r"}, "aspf", "r"})
	}
	fixed := r.raw
	for _, ch := range changes {
		fixed = withTag(fixed, ch.tag, ch.value)
	}
	var fs []finding
	for _, ch := range changes {
		f := ch.finding
		f.fix += ": " + txtLine(name, fixed)
		if ch.tag == "aspf" {
			f.fix += "\nor configure " + from + " itself as the bounce (envelope) domain"
		}
		fs = append(fs, f)
	}
	c.add(d.Name, "dmarc", name, observed, append(fs, ruaOnly...))
}

// mailtoURIs splits DMARC report URIs into usable mailto: ones and the
// others; a bare address among the others comes back, with mailto: added,
// among the usable ones.
func mailtoURIs(uris []string) (good, bad []string) {
	for _, u := range uris {
		addr, _, _ := strings.Cut(u, "!") // an optional size limit
		scheme, rest, hasScheme := strings.Cut(addr, ":")
		switch {
		case hasScheme && strings.EqualFold(scheme, "mailto") && validReportAddr(rest):
			good = append(good, u)
		case !hasScheme && validReportAddr(addr):
			bad = append(bad, u)
			good = append(good, "mailto:"+u)
		default:
			bad = append(bad, u)
		}
	}
	return good, bad
}

func validReportAddr(a string) bool {
	local, domain, ok := strings.Cut(a, "@")
	return ok && local != "" && strings.Contains(domain, ".") && !strings.ContainsAny(a, " ,;")
}

// withTag rewrites a tag-list record with tag set to value, or removed when
// value is empty, keeping the other tags as written.
func withTag(rec, tag, value string) string {
	var out []string
	found := false
	for _, spec := range strings.Split(rec, ";") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		name, _, _ := strings.Cut(spec, "=")
		if strings.EqualFold(strings.TrimSpace(name), tag) {
			found = true
			if value != "" {
				out = append(out, tag+"="+value)
			}
			continue
		}
		out = append(out, spec)
	}
	if !found && value != "" {
		out = append(out, tag+"="+value)
	}
	return strings.Join(out, "; ")
}

// --- MX, PTR, hostname ---

func (c *checker) checkMX(ctx context.Context, domain, bounce string) {
	host := fqdn(c.in.Hostname)
	want := fmt.Sprintf("%s %d IN MX 10 %s", dns.Fqdn(fqdn(bounce)), recordTTL, dns.Fqdn(host))
	mxs, err := c.res.LookupMX(ctx, bounce)
	if err != nil && !IsNotFound(err) {
		c.couldNot(domain, "mx", bounce, err)
		return
	}
	if len(mxs) == 0 {
		c.add(domain, "mx", bounce, "", []finding{{Fail,
			"no MX record: bounces (DSNs) to the envelope sender cannot reach latchkey", "publish: " + want}})
		return
	}
	var seen []string
	best, ours := mxs[0], (*net.MX)(nil)
	for _, mx := range mxs {
		seen = append(seen, fmt.Sprintf("%d %s", mx.Pref, fqdn(mx.Host)))
		if mx.Pref < best.Pref {
			best = mx
		}
		if fqdn(mx.Host) == host {
			ours = mx
		}
	}
	observed := strings.Join(seen, ", ")
	switch {
	case ours == nil:
		c.add(domain, "mx", bounce, observed, []finding{{Fail,
			"the MX does not point at latchkey (" + host + "): bounces go elsewhere", "replace it with: " + want}})
	case ours.Pref > best.Pref:
		c.add(domain, "mx", bounce, observed, []finding{{Warn,
			"another MX is preferred over " + host + ": bounces reach latchkey only if it is down", "make it the only MX: " + want}})
	default:
		c.add(domain, "mx", bounce, observed, nil)
	}
}

func (c *checker) checkPTR(ctx context.Context, ip net.IP) {
	host := fqdn(c.in.Hostname)
	rev, _ := dns.ReverseAddr(ip.String())
	setPTR := "ask the owner of " + ip.String() + " (the hosting provider) to set its reverse DNS: " + ptrLine(ip, dns.Fqdn(host))
	names, err := c.res.LookupPTR(ctx, ip)
	if err != nil && !IsNotFound(err) {
		c.couldNot("", "ptr", rev, err)
		return
	}
	if len(names) == 0 {
		c.add("", "ptr", rev, "", []finding{{Fail, "no PTR record for " + ip.String() + "; many receivers refuse mail from such addresses", setPTR}})
		return
	}
	var confirmed []string
	for _, n := range names {
		addrs, err := c.res.LookupIP(ctx, n)
		if err != nil && !IsNotFound(err) {
			c.couldNot("", "ptr", n, err)
			return
		}
		for _, a := range addrs {
			if a.Equal(ip) {
				confirmed = append(confirmed, fqdn(n))
				break
			}
		}
	}
	observed := fqdns(names)
	switch {
	case len(confirmed) == 0:
		c.add("", "ptr", rev, observed, []finding{{Fail,
			"the PTR name does not resolve back to " + ip.String() + " (not forward-confirmed)",
			"point the name at the address: " + addrLine(dns.Fqdn(fqdn(names[0])), ip) + "\nor " + setPTR}})
	case !contains(confirmed, host):
		c.add("", "ptr", rev, observed, []finding{{Warn,
			"the PTR name is not latchkey's hostname " + host + "; receivers compare it with the HELO name",
			setPTR}})
	default:
		c.add("", "ptr", rev, observed, nil)
	}
}

func (c *checker) checkHostname(ctx context.Context) {
	host := fqdn(c.in.Hostname)
	if host == "" {
		c.add("", "hostname", "", "", []finding{{Fail, "no hostname configured", "set latchkey's hostname to a name that resolves to its address"}})
		return
	}
	addrs, err := c.res.LookupIP(ctx, host)
	if err != nil && !IsNotFound(err) {
		c.couldNot("", "hostname", host, err)
		return
	}
	if len(addrs) == 0 {
		var lines []string
		for _, ip := range c.in.OutboundIPs {
			lines = append(lines, addrLine(dns.Fqdn(host), ip))
		}
		fix := "publish an A or AAAA record for " + host
		if len(lines) > 0 {
			fix = "publish: " + strings.Join(lines, "\n")
		}
		c.add("", "hostname", host, "", []finding{{Fail, host + " does not resolve: receivers reject its HELO and the bounce MX leads nowhere", fix}})
		return
	}
	var seen []string
	for _, a := range addrs {
		seen = append(seen, a.String())
	}
	c.add("", "hostname", host, strings.Join(seen, ", "), nil)
}

func fqdns(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fqdn(n)
	}
	return strings.Join(out, ", ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
