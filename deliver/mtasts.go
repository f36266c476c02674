package deliver

// MTA-STS (RFC 8461): a recipient domain publishes, over HTTPS, which MX
// hosts are its own and that they must be reached with verified TLS, so that
// an active attacker can neither strip STARTTLS nor redirect the mail. This
// file holds the parsers, the HTTPS fetch and the per-domain cache; deliver.go
// applies the policy.
//
// On each delivery the _mta-sts TXT record is looked up (the Resolver caches
// it for its TTL). Its id says whether the cached policy is current:
//   - same id, policy not expired: the cached policy, no fetch;
//   - new id, or the policy expired: fetch (one fetch per domain at a time).
//     A cached policy still valid stays in force while the new one is
//     fetched, and if that fetch fails; without one, deliveries wait for the
//     fetch, and go without a policy if it fails;
//   - no record, or the look-up fails: the cached policy while it is valid
//     (RFC 8461 5: removing the record must not downgrade a sender that has
//     seen the policy), else none.
//
// With an STSStore (the relay's database) the policies fetched outlive a
// restart: a domain that is not yet in memory is looked up there first.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// MTA-STS policy modes (RFC 8461 5).
const (
	// STSEnforce: deliver only to MX hosts of the policy, over TLS with a
	// certificate that verifies for the MX name.
	STSEnforce = "enforce"
	// STSTesting: deliver as without a policy, but report what enforce would
	// refuse.
	STSTesting = "testing"
	// STSNone: the domain withdrew its policy.
	STSNone = "none"
)

const (
	// stsMaxBody bounds the policy file: RFC 8461 3.3 lets senders cap it,
	// and a real policy is a few hundred bytes.
	stsMaxBody = 64 << 10
	// stsMaxAge is the largest max_age RFC 8461 3.2 allows (a year).
	stsMaxAge = 31557600
	// stsRetry is how long a failed fetch of one record id is not retried, so
	// that a broken policy server does not cost a fetch per message.
	stsRetry = time.Minute
	// stsCacheMax bounds the number of domains whose policy is kept.
	stsCacheMax = 10000
)

// STSPolicy is a parsed MTA-STS policy file (RFC 8461 3.2).
type STSPolicy struct {
	Mode string // STSEnforce, STSTesting or STSNone
	// MX holds the patterns of the domain's MX hosts, lower case, without a
	// trailing dot: "mx.example.com" or "*.example.net".
	MX     []string
	MaxAge time.Duration
}

// ParseSTSRecord parses one _mta-sts TXT record (RFC 8461 3.1), its strings
// already joined, and returns its id.
func ParseSTSRecord(txt string) (id string, err error) {
	fields := strings.Split(txt, ";")
	if strings.TrimRight(fields[0], " \t") != "v=STSv1" {
		return "", errors.New("deliver: mta-sts record: does not start with v=STSv1")
	}
	for i, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		if f == "" {
			if i == len(fields)-2 {
				break // the optional trailing ";"
			}
			return "", errors.New("deliver: mta-sts record: empty field")
		}
		name, value, ok := strings.Cut(f, "=")
		if !ok || !validExtName(name) || !validExtValue(value) {
			return "", fmt.Errorf("deliver: mta-sts record: bad field %q", f)
		}
		if name != "id" {
			continue // an extension
		}
		if id != "" {
			return "", errors.New("deliver: mta-sts record: more than one id")
		}
		if len(value) > 32 || !isAlnum(value) {
			return "", fmt.Errorf("deliver: mta-sts record: id %q is not 1-32 letters and digits", value)
		}
		id = value
	}
	if id == "" {
		return "", errors.New("deliver: mta-sts record: no id")
	}
	return id, nil
}

// stsRecordID picks the policy id out of the TXT records of _mta-sts.<domain>.
// RFC 8461 3.1: records not starting with "v=STSv1" are ignored, and unless
// exactly one is left the domain has no policy.
func stsRecordID(txts []string) (string, error) {
	var found []string
	for _, t := range txts {
		if first, _, _ := strings.Cut(t, ";"); strings.TrimRight(first, " \t") == "v=STSv1" {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 0:
		return "", errors.New("deliver: mta-sts record: none")
	case 1:
		return ParseSTSRecord(found[0])
	}
	return "", fmt.Errorf("deliver: mta-sts record: %d records, want one", len(found))
}

func validExtName(s string) bool {
	if s == "" || len(s) > 32 || !isAlnum(s[:1]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnumByte(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func validExtValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '=' || c == ';' {
			return false
		}
	}
	return true
}

func isAlnumByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAlnumByte(s[i]) {
			return false
		}
	}
	return s != ""
}

// ParseSTSPolicy parses a policy file (RFC 8461 3.2): "key: value" lines ended
// by LF or CRLF. version, mode and max_age are required, and mx too unless the
// mode is none. Of a key given twice (mx aside) the first counts, as the RFC
// says; unknown keys are ignored.
func ParseSTSPolicy(body string) (*STSPolicy, error) {
	p := &STSPolicy{}
	var version, maxAge string
	seen := map[string]bool{}
	for n, line := range strings.Split(body, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.Trim(line, " \t") == "" {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok || !validExtName(key) {
			return nil, fmt.Errorf("deliver: mta-sts policy: line %d: not \"key: value\"", n+1)
		}
		value = strings.Trim(value, " \t")
		if key == "mx" {
			mx, err := stsMXPattern(value)
			if err != nil {
				return nil, fmt.Errorf("deliver: mta-sts policy: line %d: %w", n+1, err)
			}
			p.MX = append(p.MX, mx)
			continue
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		switch key {
		case "version":
			version = value
		case "mode":
			p.Mode = value
		case "max_age":
			maxAge = value
		}
	}
	if version != "STSv1" {
		return nil, fmt.Errorf("deliver: mta-sts policy: version %q, want STSv1", version)
	}
	switch p.Mode {
	case STSEnforce, STSTesting:
		if len(p.MX) == 0 {
			return nil, fmt.Errorf("deliver: mta-sts policy: mode %s without mx", p.Mode)
		}
	case STSNone:
	case "":
		return nil, errors.New("deliver: mta-sts policy: no mode")
	default:
		return nil, fmt.Errorf("deliver: mta-sts policy: mode %q is not enforce, testing or none", p.Mode)
	}
	if maxAge == "" {
		return nil, errors.New("deliver: mta-sts policy: no max_age")
	}
	secs, err := strconv.ParseUint(maxAge, 10, 64)
	if err != nil || len(maxAge) > 10 {
		return nil, fmt.Errorf("deliver: mta-sts policy: max_age %q is not a number of seconds", maxAge)
	}
	if secs > stsMaxAge {
		return nil, fmt.Errorf("deliver: mta-sts policy: max_age %d is over a year (%d)", secs, stsMaxAge)
	}
	p.MaxAge = time.Duration(secs) * time.Second
	return p, nil
}

// stsMXPattern checks an mx value: a host name, optionally "*." and a name.
func stsMXPattern(v string) (string, error) {
	v = strings.ToLower(strings.TrimSuffix(v, "."))
	name := strings.TrimPrefix(v, "*.")
	if !validHostName(name) {
		return "", fmt.Errorf("mx %q is not a host name or *.name", v)
	}
	return v, nil
}

// validHostName accepts LDH labels (and "_", seen in the wild), none empty.
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnumByte(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// MatchMX reports whether host is one of the policy's MX hosts. RFC 8461 4.1:
// "*.example.net" matches exactly one more label on the left.
func (p *STSPolicy) MatchMX(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			label, parent, found := strings.Cut(host, ".")
			if found && label != "" && parent == rest {
				return true
			}
			continue
		}
		if host == pat {
			return true
		}
	}
	return false
}

// stsEntry is the cache's state for one domain.
type stsEntry struct {
	id      string     // the record id the policy was fetched for
	policy  *STSPolicy // nil until a fetch succeeds
	expires time.Time
	// fetching is closed when the fetch in flight ends; nil when none is.
	fetching chan struct{}
	// failedID and retryAt hold back refetches of an id whose fetch failed.
	failedID string
	retryAt  time.Time
}

func (e *stsEntry) valid(now time.Time) *STSPolicy {
	if e != nil && e.policy != nil && now.Before(e.expires) {
		return e.policy
	}
	return nil
}

// stsCache holds the policies seen, per domain, in memory, in front of the
// Deliverer's STSStore if it has one.
type stsCache struct {
	mu      sync.Mutex
	entries map[string]*stsEntry
	// closed is set by Close (under mu): no fetch starts after it, so that
	// wg.Wait in Close sees every fetch, and no SaveSTS reaches a store
	// the caller closes once Close returns.
	closed bool
	wg     sync.WaitGroup // fetches in flight, each with its SaveSTS
}

// StoredSTS is a domain's policy as an STSStore keeps it.
type StoredSTS struct {
	ID      string    `json:"id"`      // the _mta-sts record id it was fetched for
	Policy  string    `json:"policy"`  // the policy file, as STSPolicy.String writes it
	Expires time.Time `json:"expires"` // fetch time + max_age
}

// STSStore keeps MTA-STS policies across restarts. Without one, a restarted
// relay knows no policy until it fetches it again, and an attacker who hides
// the _mta-sts record at that moment can strip TLS from the first messages:
// the downgrade the cache exists to prevent (RFC 8461 5).
type STSStore interface {
	// LoadSTS returns domain's stored policy, or nil if there is none.
	LoadSTS(domain string) (*StoredSTS, error)
	// SaveSTS stores domain's policy, replacing any other.
	SaveSTS(domain string, p StoredSTS) error
}

// SetSTSStore makes d keep the MTA-STS policies it fetches in s and look
// there for domains it has not seen since it started. Call it before the
// first delivery.
func (d *Deliverer) SetSTSStore(s STSStore) { d.stsStore = s }

// String writes p as a policy file that ParseSTSPolicy reads back.
func (p *STSPolicy) String() string {
	var b strings.Builder
	b.WriteString("version: STSv1\nmode: " + p.Mode + "\n")
	for _, mx := range p.MX {
		b.WriteString("mx: " + mx + "\n")
	}
	b.WriteString("max_age: " + strconv.FormatInt(int64(p.MaxAge/time.Second), 10) + "\n")
	return b.String()
}

// loadSTS reads domain's policy from the store into a cache entry: an empty
// one when there is none, so that the store is read once per domain.
func (d *Deliverer) loadSTS(domain string) *stsEntry {
	e := &stsEntry{}
	stored, err := d.stsStore.LoadSTS(domain)
	if err != nil {
		d.log.Warn().Str("domain", domain).Err(err).Msg("deliver: reading the stored MTA-STS policy failed")
		return e
	}
	if stored == nil || !time.Now().Before(stored.Expires) {
		return e
	}
	p, err := ParseSTSPolicy(stored.Policy)
	if err != nil {
		d.log.Warn().Str("domain", domain).Err(err).Msg("deliver: the stored MTA-STS policy does not parse")
		return e
	}
	e.id, e.policy, e.expires = stored.ID, p, stored.Expires
	return e
}

// lookupTXT returns the TXT records of name, each one's strings joined.
func (r *Resolver) lookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, dns.Fqdn(name), dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var txts []string
	for _, rr := range rrs {
		txts = append(txts, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return txts, nil
}

// stsPolicy returns the MTA-STS policy that applies to domain now, or nil.
func (d *Deliverer) stsPolicy(ctx context.Context, domain string) *STSPolicy {
	if !d.cfg.MTASTS {
		return nil
	}
	txts, err := d.res.lookupTXT(ctx, "_mta-sts."+domain)
	id := ""
	if err == nil {
		id, err = stsRecordID(txts)
	}
	c := &d.sts
	if d.stsStore != nil {
		c.mu.Lock()
		known := c.entries[domain] != nil
		c.mu.Unlock()
		if !known {
			loaded := d.loadSTS(domain) // outside the lock: it reads the database
			c.mu.Lock()
			if c.entries[domain] == nil {
				if len(c.entries) >= stsCacheMax {
					c.prune(time.Now())
				}
				if len(c.entries) < stsCacheMax {
					c.entries[domain] = loaded
				}
			}
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	e := c.entries[domain]
	now := time.Now()
	if err != nil {
		p := e.valid(now)
		c.mu.Unlock()
		if p != nil {
			d.log.Debug().Str("domain", domain).Err(err).Msg("deliver: no usable MTA-STS record; using the cached policy")
			return p
		}
		return nil
	}
	if p := e.valid(now); p != nil && e.id == id {
		c.mu.Unlock()
		return p
	}
	if e == nil {
		if len(c.entries) >= stsCacheMax {
			c.prune(now)
		}
		e = &stsEntry{}
		if len(c.entries) < stsCacheMax {
			c.entries[domain] = e
		}
	}
	if e.fetching == nil && (c.closed || e.failedID == id && now.Before(e.retryAt)) {
		p := e.valid(now)
		c.mu.Unlock()
		return p
	}
	done := e.fetching
	if done == nil {
		done = make(chan struct{})
		e.fetching = done
		c.wg.Add(1)
		go d.stsFetchInto(e, domain, id, done)
	}
	if p := e.valid(now); p != nil {
		// The record's id changed: the policy in hand stays in force
		// until the new one arrives, rather than hold every delivery to
		// the domain for the fetch.
		c.mu.Unlock()
		return p
	}
	c.mu.Unlock()

	// Without a policy in hand, every delivery waits for the one fetch, so
	// that the first messages to a domain with a policy do not go out
	// before it is known.
	select {
	case <-done:
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return e.valid(time.Now())
}

// stsFetchInto fetches domain's policy for record id and stores it in e. It
// runs on its own, bounded by command_timeout rather than by the delivery that
// started it, because other deliveries wait for the same fetch.
func (d *Deliverer) stsFetchInto(e *stsEntry, domain, id string, done chan struct{}) {
	defer d.sts.wg.Done()
	ctx, cancel := context.WithTimeout(d.stsCtx, d.cfg.CommandTimeout)
	p, err := d.fetchSTSPolicy(ctx, domain)
	cancel()
	c := &d.sts
	var save *StoredSTS
	c.mu.Lock()
	if err != nil {
		e.failedID, e.retryAt = id, time.Now().Add(stsRetry)
		d.log.Info().Str("domain", domain).Str("id", id).Bool("cached", e.valid(time.Now()) != nil).Err(err).
			Msg("deliver: MTA-STS policy fetch failed")
	} else {
		e.id, e.policy, e.expires = id, p, time.Now().Add(p.MaxAge)
		e.failedID = ""
		if d.stsStore != nil {
			save = &StoredSTS{ID: id, Policy: p.String(), Expires: e.expires}
		}
		d.log.Debug().Str("domain", domain).Str("id", id).Str("mode", p.Mode).Strs("mx", p.MX).
			Dur("max_age", p.MaxAge).Msg("deliver: MTA-STS policy fetched")
	}
	e.fetching = nil
	close(done)
	c.mu.Unlock()
	// Saved here, after the waiting deliveries are let go, rather than in a
	// goroutine of its own: Close waits for it (the store is closed after
	// Close), and one domain's saves keep the order of its fetches.
	if save != nil {
		if err := d.stsStore.SaveSTS(domain, *save); err != nil {
			d.log.Warn().Str("domain", domain).Err(err).Msg("deliver: storing the MTA-STS policy failed")
		}
	}
}

// stsClose stops new policy fetches and waits for those in flight (their
// context has ended) and their SaveSTS calls.
func (d *Deliverer) stsClose() {
	d.sts.mu.Lock()
	d.sts.closed = true
	d.sts.mu.Unlock()
	d.sts.wg.Wait()
}

// prune drops expired entries that no fetch is using; c.mu is held.
func (c *stsCache) prune(now time.Time) {
	for k, e := range c.entries {
		if e.fetching == nil && e.valid(now) == nil {
			delete(c.entries, k)
		}
	}
}

// fetchSTSPolicy gets https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC
// 8461 3.3): the certificate must verify for mta-sts.<domain> against the
// Deliverer's roots, redirects are not followed, and the name is resolved
// through the Deliverer's resolver like the MX hosts.
func (d *Deliverer) fetchSTSPolicy(ctx context.Context, domain string) (*STSPolicy, error) {
	host := "mta-sts." + domain
	port := d.stsPort
	if port == 0 {
		port = 443
	}
	url := "https://" + host + "/.well-known/mta-sts.txt"
	if port != 443 {
		url = "https://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/.well-known/mta-sts.txt"
	}
	tr := &http.Transport{
		Proxy:             nil, // the policy must come from the domain itself
		DialContext:       d.stsDial,
		TLSClientConfig:   &tls.Config{RootCAs: d.roots, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true, // a domain's policy is fetched about once a day
		// A policy is tiny: cap what a hostile server can make us hold.
		MaxResponseHeaderBytes: 16 << 10,
		TLSHandshakeTimeout:    d.cfg.CommandTimeout,
		ResponseHeaderTimeout:  d.cfg.CommandTimeout,
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("deliver: mta-sts fetch: %w", err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("deliver: mta-sts fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("deliver: mta-sts fetch: %s: HTTP %s", host, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, stsMaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("deliver: mta-sts fetch: %s: %w", host, err)
	}
	if len(body) > stsMaxBody {
		return nil, fmt.Errorf("deliver: mta-sts fetch: %s: policy larger than %d bytes", host, stsMaxBody)
	}
	return ParseSTSPolicy(string(body))
}

// stsDial connects to the policy host through the Deliverer's resolver, each
// address in turn, each connect bounded by connect_timeout.
func (d *Deliverer) stsDial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := d.res.LookupIP(ctx, host)
	if err != nil {
		return nil, err
	}
	dialer := net.Dialer{Timeout: d.cfg.ConnectTimeout, LocalAddr: d.localAddr}
	var errs []error
	for _, ip := range ips {
		c, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}
