package dnscheck

import (
	"crypto"
	"fmt"
	"net"
	"strings"

	"github.com/latchkey/latchkey/dkim"
	"github.com/miekg/dns"
)

// recordTTL is the TTL of every suggested record: an hour lets a mistake be
// corrected quickly without loading the zone's servers.
const recordTTL = 3600

// Records returns the zone-file lines to publish for in: for each domain the
// SPF records of the bounce domain and of the From domain, a DKIM record per
// selector, a DMARC record (reports to rua when not empty) and the bounce
// domain's MX; then the A/AAAA records of the hostname and, as a commented
// block, the PTR records that the owner of each outbound IP must set.
//
// Lines starting with ";" are zone-file comments. A selector whose key cannot
// be published (an unsupported type) appears as a comment saying so.
func Records(in Input) []string {
	var out []string
	host := dns.Fqdn(strings.ToLower(in.Hostname))
	spf := spfRecord(in.OutboundIPs)
	for _, d := range in.Domains {
		dom := dns.Fqdn(strings.ToLower(d.Name))
		bounce := dns.Fqdn(strings.ToLower(bounceOf(d)))
		out = append(out,
			"; "+strings.TrimSuffix(dom, "."),
			txtLine(bounce, spf),
			txtLine(dom, spf))
		for _, sel := range d.Selectors {
			rec, err := publicRecord(sel.PublicKey)
			if err != nil {
				out = append(out, fmt.Sprintf("; selector %s: %v", sel.Name, err))
				continue
			}
			out = append(out, txtLine(sel.Name+"._domainkey."+dom, rec))
		}
		out = append(out,
			txtLine("_dmarc."+dom, dmarcSuggestion(in.RUA)),
			fmt.Sprintf("%s %d IN MX 10 %s", bounce, recordTTL, host))
	}
	if host != "." && len(in.OutboundIPs) > 0 {
		out = append(out, "; the hostname latchkey sends and receives as")
		for _, ip := range in.OutboundIPs {
			out = append(out, addrLine(host, ip))
		}
		out = append(out, "; reverse DNS: ask the owner of each address (e.g. the hosting provider) to set")
		for _, ip := range in.OutboundIPs {
			out = append(out, ptrLine(ip, host))
		}
	}
	return out
}

func bounceOf(d Domain) string {
	if d.BounceDomain != "" {
		return d.BounceDomain
	}
	return "bounce." + strings.TrimSuffix(d.Name, ".")
}

// spfRecord lists every outbound address and refuses the rest: latchkey is the
// only sender for these domains, so -all costs nothing.
func spfRecord(ips []net.IP) string {
	terms := []string{"v=spf1"}
	terms = append(terms, ipTerms(ips)...)
	return strings.Join(append(terms, "-all"), " ")
}

func ipTerms(ips []net.IP) []string {
	var terms []string
	for _, ip := range ips {
		if v4 := ip.To4(); v4 != nil {
			terms = append(terms, "ip4:"+v4.String())
		} else if ip.To16() != nil {
			terms = append(terms, "ip6:"+ip.String())
		}
	}
	return terms
}

func dmarcSuggestion(rua string) string {
	rec := "v=DMARC1; p=quarantine; adkim=r; aspf=r"
	if rua != "" {
		rec += "; rua=" + ruaURI(rua)
	}
	return rec
}

// ruaURI is the report address as a DMARC rua= URI ("" stays "").
func ruaURI(addr string) string {
	if addr != "" && !strings.HasPrefix(strings.ToLower(addr), "mailto:") {
		return "mailto:" + addr
	}
	return addr
}

func addrLine(host string, ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return fmt.Sprintf("%s %d IN A %s", host, recordTTL, v4)
	}
	return fmt.Sprintf("%s %d IN AAAA %s", host, recordTTL, ip)
}

func ptrLine(ip net.IP, host string) string {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return "; " + ip.String() + ": not an IP address"
	}
	return fmt.Sprintf("%s %d IN PTR %s", rev, recordTTL, host)
}

// txtLine renders a TXT record, split into strings of at most 255 bytes
// (the limit of one character-string, RFC 1035 section 3.3).
func txtLine(name, value string) string {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, quoteTXT(value[:255]))
		value = value[255:]
	}
	parts = append(parts, quoteTXT(value))
	return fmt.Sprintf("%s %d IN TXT %s", dns.Fqdn(name), recordTTL, strings.Join(parts, " "))
}

func quoteTXT(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}

// publicRecord is the DKIM key record for pub, as the dkim package (which
// signs with the key) writes it.
func publicRecord(pub crypto.PublicKey) (string, error) {
	rec, err := dkim.PublicRecord(pub)
	if err != nil {
		return "", fmt.Errorf("dnscheck: %w", err)
	}
	return rec, nil
}
