package deliver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// MX is one mail exchanger of a domain.
type MX struct {
	Host string // without the trailing dot
	Pref uint16
	// Implicit is set for the domain itself when it publishes no MX.
	Implicit bool
}

// DNSError is a failed look-up. NotFound is true for NXDOMAIN; Null for a
// null MX (RFC 7505). Temporary failures (SERVFAIL, time-outs) have neither.
type DNSError struct {
	Name     string
	Qtype    string
	NotFound bool
	Null     bool
	Err      error
}

func (e *DNSError) Error() string {
	switch {
	case e.Null:
		return fmt.Sprintf("deliver: %s has a null MX: domain does not accept mail", e.Name)
	case e.NotFound:
		return fmt.Sprintf("deliver: %s %s: no such domain", e.Name, e.Qtype)
	}
	return fmt.Sprintf("deliver: %s %s: %v", e.Name, e.Qtype, e.Err)
}

func (e *DNSError) Unwrap() error { return e.Err }

// Permanent reports whether the failure will not go away by retrying.
func (e *DNSError) Permanent() bool { return e.NotFound || e.Null }

// Resolver looks up MX and address records through one DNS server with
// miekg/dns, so that tests can point it at a loopback server. It caches
// answers for their TTL, at most cacheMaxTTL, and NODATA and NXDOMAIN for
// at most negativeTTL (not failures): at hundreds of messages a second to a
// few big domains, a look-up per message would double the work of each
// delivery, and most domains answer NXDOMAIN for their _mta-sts record.
type Resolver struct {
	Addr    string
	Timeout time.Duration

	udp, tcp *dns.Client

	mu    sync.Mutex
	cache map[cacheKey]cacheEntry
}

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	rrs      []dns.RR
	nxdomain bool
	expires  time.Time
}

const (
	cacheMaxTTL     = 5 * time.Minute
	cacheMaxEntries = 10000
	negativeTTL     = time.Minute
)

// NewResolver returns a resolver that asks addr ("host:port"); "" means the
// first nameserver of /etc/resolv.conf.
func NewResolver(addr string, timeout time.Duration) (*Resolver, error) {
	if addr == "" {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("deliver: resolver: %w", err)
		}
		if len(cc.Servers) == 0 {
			return nil, errors.New("deliver: resolver: no nameserver in /etc/resolv.conf")
		}
		addr = net.JoinHostPort(cc.Servers[0], cc.Port)
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Resolver{
		Addr:    addr,
		Timeout: timeout,
		udp:     &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 1232},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
		cache:   map[cacheKey]cacheEntry{},
	}, nil
}

// query returns the answer records of type qtype for name (FQDN), with
// NXDOMAIN and other failures as *DNSError. NODATA is no records and no error.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	key := cacheKey{strings.ToLower(name), qtype}
	r.mu.Lock()
	e, hit := r.cache[key]
	r.mu.Unlock()
	derr := &DNSError{Name: strings.TrimSuffix(name, "."), Qtype: dns.TypeToString[qtype]}
	if hit && time.Now().Before(e.expires) {
		if e.nxdomain {
			derr.NotFound, derr.Err = true, errors.New("NXDOMAIN")
			return nil, derr
		}
		return e.rrs, nil
	}

	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	in, _, err := r.udp.ExchangeContext(ctx, m, r.Addr)
	if err == nil && in.Truncated {
		in, _, err = r.tcp.ExchangeContext(ctx, m, r.Addr)
	}
	if err != nil {
		derr.Err = err
		return nil, derr
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		derr.NotFound = true
		derr.Err = errors.New("NXDOMAIN")
		r.store(key, cacheEntry{nxdomain: true}, negTTL(in))
		return nil, derr
	default:
		derr.Err = fmt.Errorf("rcode %s", dns.RcodeToString[in.Rcode])
		return nil, derr
	}
	var rrs []dns.RR
	ttl := uint32(cacheMaxTTL / time.Second)
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype {
			rrs = append(rrs, rr)
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	if len(rrs) == 0 {
		// NODATA is the common answer to AAAA (and to MX for implicit-MX
		// domains); not caching it would cost a query per message.
		ttl = negTTL(in)
	}
	r.store(key, cacheEntry{rrs: rrs}, ttl)
	return rrs, nil
}

// negTTL is how long a negative answer (NODATA, NXDOMAIN) is kept: RFC 2308,
// the SOA's minimum and TTL bound it, and negativeTTL at most.
func negTTL(in *dns.Msg) uint32 {
	ttl := uint32(negativeTTL / time.Second)
	for _, rr := range in.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			ttl = min(ttl, soa.Minttl, soa.Hdr.Ttl)
		}
	}
	return ttl
}

// store caches e for ttl seconds (not at all for 0).
func (r *Resolver) store(key cacheKey, e cacheEntry, ttl uint32) {
	if ttl == 0 {
		return
	}
	e.expires = time.Now().Add(time.Duration(ttl) * time.Second)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= cacheMaxEntries {
		clear(r.cache) // crude, but bounded and rare
	}
	r.cache[key] = e
}

// LookupMX returns the mail exchangers of domain in the order to try them:
// by preference, equal preferences shuffled to spread load. A domain without
// MX records (NODATA) has its own name as implicit MX (RFC 5321 5.1). A null
// MX gives a *DNSError with Null set.
func (r *Resolver) LookupMX(ctx context.Context, domain string) ([]MX, error) {
	name := dns.Fqdn(domain)
	rrs, err := r.query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	if len(rrs) == 0 {
		return []MX{{Host: strings.ToLower(strings.TrimSuffix(name, ".")), Implicit: true}}, nil
	}
	var mxs []MX
	null := false
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		if mx.Mx == "." {
			null = true
			continue
		}
		mxs = append(mxs, MX{Host: strings.ToLower(strings.TrimSuffix(mx.Mx, ".")), Pref: mx.Preference})
	}
	// RFC 7505 3: a null MX must be the only MX; if others are published
	// too, the domain is misconfigured and the real hosts are still tried.
	if len(mxs) == 0 && null {
		return nil, &DNSError{Name: domain, Qtype: "MX", Null: true}
	}
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	slices.SortStableFunc(mxs, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
	return mxs, nil
}

// LookupIP returns the IPv4 then IPv6 addresses of host. IPv4 goes first
// because large receivers are stricter with IPv6 senders (PTR, reputation).
// A host with no address gives a *DNSError with NotFound set.
func (r *Resolver) LookupIP(ctx context.Context, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	name := dns.Fqdn(host)
	var (
		wg       sync.WaitGroup
		a, aaaa  []dns.RR
		ea, e6   error
		queryAll = func(qtype uint16, out *[]dns.RR, e *error) {
			defer wg.Done()
			*out, *e = r.query(ctx, name, qtype)
		}
	)
	wg.Add(2)
	go queryAll(dns.TypeA, &a, &ea)
	go queryAll(dns.TypeAAAA, &aaaa, &e6)
	wg.Wait()
	var ips []net.IP
	for _, rr := range a {
		ips = append(ips, rr.(*dns.A).A)
	}
	for _, rr := range aaaa {
		ips = append(ips, rr.(*dns.AAAA).AAAA)
	}
	if len(ips) > 0 {
		return ips, nil
	}
	if ea != nil {
		return nil, ea
	}
	if e6 != nil {
		return nil, e6
	}
	return nil, &DNSError{Name: host, Qtype: "A", NotFound: true, Err: errors.New("no address records")}
}
