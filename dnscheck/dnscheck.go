// Package dnscheck tells an administrator which DNS records latchkey needs and
// whether the published ones are right.
//
// Latchkey sends mail From a transactional domain D, signs it with DKIM d=D,
// and uses an envelope sender on the bounce subdomain (b+<id>.<mac>@bounce.D),
// whose MX must lead back to latchkey so that DSNs arrive. For each domain
// Check:
//  1. evaluates the SPF records of the bounce domain and of D for every
//     outbound IP (blitiri.com.ar/go/spf), counts their DNS-querying terms
//     and judges the all term;
//  2. fetches each selector's DKIM key record and compares it with
//     latchkey's key;
//  3. finds the DMARC record (at D or its organisational domain) and works
//     out whether DKIM and SPF align under its adkim and aspf;
//  4. checks that the bounce domain's MX is latchkey's hostname;
//
// then, once, that each outbound IP has a forward-confirmed PTR naming the
// hostname and that the hostname resolves. Every look-up goes through a
// Resolver pointed at Input.Resolver. A look-up that gets no answer (timeout,
// SERVFAIL) is reported as ERROR, "could not check", never as a broken record.
//
// Records gives the zone-file lines that make every check pass.
package dnscheck

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Input describes what latchkey sends as and from.
type Input struct {
	Hostname    string   // latchkey's HELO and MX hostname
	OutboundIPs []net.IP // addresses latchkey delivers from
	Resolver    string   // "host:port"; "" for the system resolv.conf
	Timeout     time.Duration
	Domains     []Domain
	// RUA is the DMARC aggregate report address the admin reads ("" for
	// none): Records writes it and Check's fixes suggest it, never an
	// invented mailbox whose reports no one would read.
	RUA string
}

// Domain is one transactional From domain.
type Domain struct {
	Name         string
	BounceDomain string // "" for "bounce." + Name
	Selectors    []Selector
}

// Selector is a DKIM selector and the public half of latchkey's key for it.
type Selector struct {
	Name      string
	PublicKey crypto.PublicKey
}

// Status is the outcome of one check.
type Status string

// The statuses, from best to worst for ExitCode purposes.
const (
	Pass  Status = "PASS"
	Warn  Status = "WARN"
	Fail  Status = "FAIL"
	Error Status = "ERROR" // could not check: no answer from DNS
)

// Result is one finding. A check with several problems gives one Result per
// problem, each with its own fix.
type Result struct {
	Domain   string `json:"domain"` // "" for checks of the host (ptr, hostname)
	Check    string `json:"check"`  // spf, dkim, dmarc, mx, ptr, hostname
	Name     string `json:"name"`   // the DNS name looked at
	Status   Status `json:"status"`
	Observed string `json:"observed,omitempty"`
	Problem  string `json:"problem,omitempty"`
	Fix      string `json:"fix,omitempty"`
}

// Report is the outcome of Check.
type Report struct {
	Checks []Result `json:"checks"`
}

// ExitCode is 0 when everything passes, 1 for warnings only, 2 when anything
// fails or could not be checked.
func (r *Report) ExitCode() int {
	code := 0
	for _, c := range r.Checks {
		switch c.Status {
		case Fail, Error:
			return 2
		case Warn:
			code = 1
		}
	}
	return code
}

// WriteText writes one line per result, then the problem and the exact fix
// indented below it.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, c := range r.Checks {
		status := string(c.Status)
		if c.Status == Error {
			status = "ERROR (could not check)"
		}
		fmt.Fprintf(&b, "%-5s %-8s %s", status, c.Check, c.Name)
		if c.Observed != "" {
			fmt.Fprintf(&b, "  %s", c.Observed)
		}
		b.WriteByte('\n')
		if c.Problem != "" {
			fmt.Fprintf(&b, "      problem: %s\n", c.Problem)
		}
		if c.Fix != "" {
			fmt.Fprintf(&b, "      fix:     %s\n", strings.ReplaceAll(c.Fix, "\n", "\n               "))
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("dnscheck: write report: %w", err)
	}
	return nil
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("dnscheck: write report: %w", err)
	}
	return nil
}

// finding is one problem found by a check, before it becomes a Result.
type finding struct {
	status       Status
	problem, fix string
}

// checker carries what every check needs.
type checker struct {
	in  Input
	res *Resolver
	rep *Report
}

// add turns a check's findings into results: one PASS when there are none.
func (c *checker) add(domain, check, name, observed string, fs []finding) {
	if len(fs) == 0 {
		c.rep.Checks = append(c.rep.Checks, Result{Domain: domain, Check: check, Name: name, Status: Pass, Observed: observed})
		return
	}
	for _, f := range fs {
		c.rep.Checks = append(c.rep.Checks, Result{Domain: domain, Check: check, Name: name,
			Status: f.status, Observed: observed, Problem: f.problem, Fix: f.fix})
	}
}

// couldNot records a look-up that got no answer.
func (c *checker) couldNot(domain, check, name string, err error) {
	c.rep.Checks = append(c.rep.Checks, Result{Domain: domain, Check: check, Name: name, Status: Error,
		Problem: "could not check: " + err.Error(),
		Fix:     "make sure the resolver can reach the zone's servers, then run the check again"})
}

// Check looks at the live DNS for every record latchkey needs. It never
// returns nil; problems with the input itself appear as FAIL results.
func Check(ctx context.Context, in Input) *Report {
	rep := &Report{}
	res, err := NewResolver(in.Resolver, in.Timeout)
	if err != nil {
		rep.Checks = append(rep.Checks, Result{Check: "hostname", Name: in.Resolver, Status: Error,
			Problem: "could not check: " + err.Error(), Fix: "give a resolver as host:port"})
		return rep
	}
	c := &checker{in: in, res: res, rep: rep}
	for _, d := range in.Domains {
		// Names as configured may carry a trailing dot or capitals; results
		// show them one way.
		d.Name, d.BounceDomain = fqdn(d.Name), fqdn(d.BounceDomain)
		bounce := bounceOf(d)
		c.checkSPF(ctx, d.Name, bounce)
		c.checkSPF(ctx, d.Name, d.Name)
		for _, sel := range d.Selectors {
			c.checkDKIM(ctx, d.Name, sel)
		}
		c.checkDMARC(ctx, d)
		c.checkMX(ctx, d.Name, bounce)
	}
	if len(in.OutboundIPs) == 0 {
		// Without them SPF coverage and reverse DNS mean nothing.
		rep.Checks = append(rep.Checks, Result{Check: "ptr", Status: Error,
			Problem: "could not check: no outbound IP addresses given",
			Fix:     "give the addresses latchkey delivers from"})
	}
	for _, ip := range in.OutboundIPs {
		c.checkPTR(ctx, ip)
	}
	c.checkHostname(ctx)
	return rep
}

// fqdn lower-cases a name and drops the trailing dot, for comparison and
// display.
func fqdn(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}
