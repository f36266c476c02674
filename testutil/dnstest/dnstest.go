// Package dnstest runs a real DNS server on loopback for tests.
//
// It serves zones given as zone-file text with miekg/dns over UDP and TCP, so
// that code under test resolves through the network exactly as it would in
// production, only with a resolver address of "127.0.0.1:port".
package dnstest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Server is an authoritative DNS server for a set of records held in memory.
type Server struct {
	// Addr is the "host:port" of the server (UDP and TCP).
	Addr string

	mu       sync.Mutex
	records  map[string][]dns.RR // by lower-cased FQDN
	failures map[string]int      // FQDN -> rcode to answer with (e.g. SERVFAIL)
	delays   map[string]time.Duration
	udp, tcp *dns.Server
}

// Start starts a server on 127.0.0.1 on a free port and stops it when the test
// ends. zone holds zone-file lines ("name TTL IN TYPE data"); names must be
// fully qualified.
func Start(t testing.TB, zone string) *Server {
	t.Helper()
	s, err := New(zone)
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a server like Start but without a test; call Close when done.
func New(zone string) (*Server, error) {
	s := &Server{records: map[string][]dns.RR{}, failures: map[string]int{}, delays: map[string]time.Duration{}}
	if err := s.Add(zone); err != nil {
		return nil, err
	}
	pc, l, err := listenPair()
	if err != nil {
		return nil, err
	}
	s.Addr = pc.LocalAddr().String()
	started := make(chan struct{}, 2)
	s.udp = &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { started <- struct{}{} }}
	s.tcp = &dns.Server{Listener: l, Handler: s, NotifyStartedFunc: func() { started <- struct{}{} }}
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	<-started
	<-started
	return s, nil
}

// listenPair binds UDP and TCP on the same free loopback port. The UDP
// port the kernel picks may be taken for TCP by another process (tests run
// in parallel), so it tries again with a new port.
func listenPair() (net.PacketConn, net.Listener, error) {
	var err error
	for range 20 {
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("dnstest: listen udp: %w", err)
		}
		var l net.Listener
		l, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", pc.LocalAddr().(*net.UDPAddr).Port))
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
	}
	return nil, nil, fmt.Errorf("dnstest: listen tcp: %w", err)
}

// Add parses zone-file lines and adds their records.
func (s *Server) Add(zone string) error {
	zp := dns.NewZoneParser(strings.NewReader(zone), ".", "dnstest")
	s.mu.Lock()
	defer s.mu.Unlock()
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		name := strings.ToLower(rr.Header().Name)
		s.records[name] = append(s.records[name], rr)
	}
	if err := zp.Err(); err != nil {
		return fmt.Errorf("dnstest: zone: %w", err)
	}
	return nil
}

// Remove deletes every record of the given name and type (dns.TypeANY for all).
func (s *Server) Remove(name string, qtype uint16) {
	name = strings.ToLower(dns.Fqdn(name))
	s.mu.Lock()
	defer s.mu.Unlock()
	var keep []dns.RR
	for _, rr := range s.records[name] {
		if qtype != dns.TypeANY && rr.Header().Rrtype != qtype {
			keep = append(keep, rr)
		}
	}
	s.records[name] = keep
}

// Fail makes every query for name answer with rcode (e.g. dns.RcodeServerFailure);
// rcode 0 clears it.
func (s *Server) Fail(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[strings.ToLower(dns.Fqdn(name))] = rcode
}

// Delay makes answers for name wait d before being sent (to test time-outs).
func (s *Server) Delay(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delays[strings.ToLower(dns.Fqdn(name))] = d
}

// Close stops the server.
func (s *Server) Close() {
	s.udp.Shutdown()
	s.tcp.Shutdown()
}

// ServeDNS answers from the records held: exact matches, else CNAME chasing
// within the zone, else NXDOMAIN (or NOERROR/NODATA if the name has records).
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	rcode, failing := s.failures[name]
	delay := s.delays[name]
	s.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	if failing && rcode != 0 {
		m.Rcode = rcode
		w.WriteMsg(m)
		return
	}
	s.mu.Lock()
	for i := 0; i < 8; i++ { // follow CNAMEs inside the zone, bounded
		rrs, exists := s.records[name]
		var cname *dns.CNAME
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, dns.Copy(rr))
			} else if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if len(m.Answer) > 0 && m.Answer[len(m.Answer)-1].Header().Rrtype == q.Qtype || cname == nil {
			if !exists && len(m.Answer) == 0 && !s.hasSubdomains(name) {
				m.Rcode = dns.RcodeNameError
			}
			break
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		name = strings.ToLower(cname.Target)
	}
	s.mu.Unlock()
	// Keep UDP answers within the client's buffer; the client retries over TCP.
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// hasSubdomains reports whether name is an empty non-terminal (NODATA, not
// NXDOMAIN). Called with s.mu held.
func (s *Server) hasSubdomains(name string) bool {
	for n := range s.records {
		if strings.HasSuffix(n, "."+name) {
			return true
		}
	}
	return false
}
