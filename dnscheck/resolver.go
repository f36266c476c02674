package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DefaultTimeout bounds one DNS exchange when the caller gives none.
const DefaultTimeout = 5 * time.Second

// maxCNAMEs bounds CNAME chains so that a loop in someone's zone cannot hang
// a check.
const maxCNAMEs = 8

// Resolver sends queries with miekg/dns to fixed servers, so that checks and
// tests see exactly what a given resolver answers (the system resolver may
// cache or rewrite). It retries over TCP when a UDP answer is truncated.
//
// Errors are *net.DNSError values, unwrapped, because callers such as
// blitiri.com.ar/go/spf classify them with a type assertion: IsNotFound for
// NXDOMAIN, IsTemporary for SERVFAIL, REFUSED and timeouts. A name that exists
// but has no record of the type asked for gives an empty answer and no error.
type Resolver struct {
	servers []string
	timeout time.Duration
}

// NewResolver returns a resolver sending to addr ("host:port"), or to the
// nameservers of /etc/resolv.conf when addr is empty. timeout bounds each
// exchange (DefaultTimeout if zero).
func NewResolver(addr string, timeout time.Duration) (*Resolver, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	r := &Resolver{timeout: timeout}
	if addr != "" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("dnscheck: resolver address %q: %w", addr, err)
		}
		r.servers = []string{addr}
		return r, nil
	}
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("dnscheck: system resolver: %w", err)
	}
	for _, s := range cc.Servers {
		r.servers = append(r.servers, net.JoinHostPort(s, cc.Port))
	}
	if len(r.servers) == 0 {
		return nil, errors.New("dnscheck: system resolver: no nameserver in /etc/resolv.conf")
	}
	return r, nil
}

func (r *Resolver) dnsError(name, server, msg string, notFound, temporary, timeout bool) *net.DNSError {
	return &net.DNSError{Err: msg, Name: strings.TrimSuffix(name, "."), Server: server,
		IsNotFound: notFound, IsTemporary: temporary, IsTimeout: timeout}
}

// exchange sends one question to each server in turn until one answers
// with a usable rcode.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	var last *net.DNSError
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			return nil, r.dnsError(name, server, "dnscheck: "+err.Error(), false, true, true)
		}
		c := &dns.Client{Net: "udp", Timeout: r.timeout}
		resp, _, err := c.ExchangeContext(ctx, m, server)
		if err == nil && resp.Truncated {
			c = &dns.Client{Net: "tcp", Timeout: r.timeout}
			resp, _, err = c.ExchangeContext(ctx, m, server)
		}
		if err != nil {
			var ne net.Error
			timeout := errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
			msg := "dnscheck: " + err.Error()
			if timeout {
				msg = "dnscheck: timed out"
			}
			last = r.dnsError(name, server, msg, false, true, timeout)
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
			return resp, nil
		case dns.RcodeNameError:
			return resp, r.dnsError(name, server, "dnscheck: no such host (NXDOMAIN)", true, false, false)
		default:
			last = r.dnsError(name, server, "dnscheck: server answered "+dns.RcodeToString[resp.Rcode], false, true, false)
		}
	}
	if last == nil {
		last = r.dnsError(name, "", "dnscheck: no server to ask", false, true, false)
	}
	return nil, last
}

// Query returns the records of type qtype at name, following CNAMEs (within
// the answer, and by asking again for a target the server did not chase).
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	cur := strings.ToLower(dns.Fqdn(name))
	for i := 0; i <= maxCNAMEs; i++ {
		resp, err := r.exchange(ctx, cur, qtype)
		if err != nil {
			return nil, err
		}
		var out []dns.RR
		// Walk the chain as answered; servers put it in order, but do not rely
		// on that: index by owner name.
		byName := map[string][]dns.RR{}
		for _, rr := range resp.Answer {
			owner := strings.ToLower(rr.Header().Name)
			byName[owner] = append(byName[owner], rr)
		}
		target := cur
		for hop := 0; hop <= maxCNAMEs; hop++ {
			var next string
			for _, rr := range byName[target] {
				if rr.Header().Rrtype == qtype {
					out = append(out, rr)
				} else if c, ok := rr.(*dns.CNAME); ok && qtype != dns.TypeCNAME {
					next = strings.ToLower(c.Target)
				}
			}
			if len(out) > 0 || next == "" {
				break
			}
			target = next
		}
		if len(out) > 0 || target == cur {
			return out, nil
		}
		// The server gave a CNAME but not what it points at: ask for the target.
		cur = target
	}
	return nil, r.dnsError(name, "", "dnscheck: CNAME chain too long", false, false, false)
}

// LookupTXT returns each TXT record at name, its strings joined.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupMX returns the MX records at name, as the standard library would.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.Query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	var out []*net.MX
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, nil
}

// LookupA returns the IPv4 addresses of host.
func (r *Resolver) LookupA(ctx context.Context, host string) ([]net.IP, error) {
	rrs, err := r.Query(ctx, host, dns.TypeA)
	if err != nil {
		return nil, err
	}
	var out []net.IP
	for _, rr := range rrs {
		out = append(out, rr.(*dns.A).A)
	}
	return out, nil
}

// LookupAAAA returns the IPv6 addresses of host.
func (r *Resolver) LookupAAAA(ctx context.Context, host string) ([]net.IP, error) {
	rrs, err := r.Query(ctx, host, dns.TypeAAAA)
	if err != nil {
		return nil, err
	}
	var out []net.IP
	for _, rr := range rrs {
		out = append(out, rr.(*dns.AAAA).AAAA)
	}
	return out, nil
}

// LookupIP returns the A and AAAA addresses of host. A name with neither
// gives a not-found error, as with the standard library.
func (r *Resolver) LookupIP(ctx context.Context, host string) ([]net.IP, error) {
	v4, err4 := r.LookupA(ctx, host)
	if err4 != nil && !IsNotFound(err4) {
		return nil, err4
	}
	v6, err6 := r.LookupAAAA(ctx, host)
	if err6 != nil && !IsNotFound(err6) {
		return nil, err6
	}
	ips := append(v4, v6...)
	if len(ips) == 0 {
		return nil, r.dnsError(host, "", "dnscheck: no such host", true, false, false)
	}
	return ips, nil
}

// LookupIPAddr is LookupIP shaped like (*net.Resolver).LookupIPAddr.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, err := r.LookupIP(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]net.IPAddr, len(ips))
	for i, ip := range ips {
		out[i] = net.IPAddr{IP: ip}
	}
	return out, nil
}

// LookupPTR returns the names in the PTR records of ip.
func (r *Resolver) LookupPTR(ctx context.Context, ip net.IP) ([]string, error) {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return nil, r.dnsError(ip.String(), "", "dnscheck: not an IP address", false, false, false)
	}
	rrs, err := r.Query(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// LookupAddr is LookupPTR shaped like (*net.Resolver).LookupAddr.
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip := net.ParseIP(addr)
	if ip == nil {
		return nil, r.dnsError(addr, "", "dnscheck: not an IP address", false, false, false)
	}
	names, err := r.LookupPTR(ctx, ip)
	if err == nil && len(names) == 0 {
		return nil, r.dnsError(addr, "", "dnscheck: no PTR record", true, false, false)
	}
	return names, err
}

// IsNotFound reports whether err says the name does not exist.
func IsNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// IsTemporary reports whether err is a failure to get an answer (timeout,
// SERVFAIL, network error) rather than an answer.
func IsTemporary(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && (de.IsTemporary || de.IsTimeout)
}
