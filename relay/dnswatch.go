package relay

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/dnscheck"
)

// DNSInput builds the DNS checker's input from the configuration and the
// DKIM key files: every transactional domain (or only domain), its bounce
// domain and selectors, and the outbound addresses ips.
func DNSInput(cfg *conf.Config, ips []string, domain string) (dnscheck.Input, error) {
	in := dnscheck.Input{Hostname: cfg.Hostname, Resolver: cfg.Delivery.Resolver, Timeout: 5 * time.Second}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return in, fmt.Errorf("%q is not an IP address", s)
		}
		in.OutboundIPs = append(in.OutboundIPs, ip)
	}
	for _, d := range cfg.Domains {
		if domain != "" && !strings.EqualFold(domain, d.Name) {
			continue
		}
		dd := dnscheck.Domain{Name: d.Name, BounceDomain: d.BounceDomain}
		for _, s := range d.DKIM {
			key, err := dkim.LoadKeyFile(cfg.Path(s.KeyFile))
			if err != nil {
				return in, fmt.Errorf("%w (run `latchkey serve` once, or `latchkey dkim keygen`, to create it)", err)
			}
			dd.Selectors = append(dd.Selectors, dnscheck.Selector{Name: s.Selector, PublicKey: key.Public()})
		}
		in.Domains = append(in.Domains, dd)
	}
	if len(in.Domains) == 0 {
		return in, fmt.Errorf("no transactional domain %q in the configuration", domain)
	}
	return in, nil
}

// outboundIPs are the addresses latchkey delivers from: the configured
// source address, or the one the host would use for a route to the
// Internet (a UDP "connection" sends nothing; it only picks a route).
func outboundIPs(cfg *conf.Config) []string {
	if cfg.Delivery.SourceIP != "" {
		return []string{cfg.Delivery.SourceIP}
	}
	var ips []string
	for _, probe := range []string{"192.0.2.1:53", "[2001:db8::1]:53"} {
		c, err := net.Dial("udp", probe)
		if err != nil {
			continue
		}
		if a, ok := c.LocalAddr().(*net.UDPAddr); ok && !a.IP.IsLoopback() {
			ips = append(ips, a.IP.String())
		}
		c.Close()
	}
	return ips
}

// DNSStatus is the latest background DNS check.
type DNSStatus struct {
	mu     sync.Mutex
	report *dnscheck.Report
	at     time.Time
}

// Last returns the latest report and when it ran (nil before the first).
func (d *DNSStatus) Last() (*dnscheck.Report, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.report, d.at
}

// watchDNS checks the published records at start and every interval, logs
// a summary and hands the results to OnDNS. It runs in its own goroutine so
// a slow or broken resolver never delays startup.
func (s *Server) watchDNS(ctx context.Context, interval time.Duration) {
	check := func() {
		in, err := DNSInput(s.cfg, outboundIPs(s.cfg), "")
		if err != nil {
			s.log.Warn().Err(err).Msg("DNS check skipped")
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		rep := dnscheck.Check(cctx, in)
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.DNS.mu.Lock()
		s.DNS.report, s.DNS.at = rep, s.now()
		s.DNS.mu.Unlock()
		counts := map[dnscheck.Status]int{}
		for _, r := range rep.Checks {
			counts[r.Status]++
			if r.Status != dnscheck.Pass {
				s.log.Warn().Str("domain", r.Domain).Str("check", r.Check).Str("status", string(r.Status)).
					Str("problem", r.Problem).Str("fix", r.Fix).Msg("DNS check")
			}
		}
		ev := s.log.Info()
		if counts[dnscheck.Fail] > 0 || counts[dnscheck.Error] > 0 {
			ev = s.log.Warn()
		}
		ev.Int("pass", counts[dnscheck.Pass]).Int("warn", counts[dnscheck.Warn]).Int("fail", counts[dnscheck.Fail]).
			Int("could_not_check", counts[dnscheck.Error]).Msg("DNS check done; details: latchkey dns check")
		if s.OnDNS != nil {
			s.OnDNS(rep)
		}
	}
	check()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}
