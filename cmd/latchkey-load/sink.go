package main

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// sinkOptions configure the receiving MX.
type sinkOptions struct {
	addr string
	tls  bool
	// verifyEvery checks the DKIM signature of every n-th message (1: all,
	// 0: none). Verification runs off the SMTP transaction, in one
	// goroutine, so it never adds to the measured latency.
	verifyEvery int
	// txt answers the verifier's key look-ups: lower-case name → values.
	txt map[string][]string
	// deferAll answers every RCPT with 451 (an MX that is down for mail).
	deferAll bool
	// rejectPrefix answers 550 5.1.1 to the recipients that start with it,
	// so that a hard bounce (suppression, escalation) can be tried out.
	rejectPrefix string
	// bulkDelay holds the end of DATA of bulk messages (a slow MX for bulk).
	bulkDelay time.Duration
}

// sink is a receiving MX that records each message's arrival by X-Load-ID.
type sink struct {
	opts  sinkOptions
	smtp  *smtpsink.Sink
	Addr  string
	start time.Time

	mu   sync.Mutex
	cond *sync.Cond
	// seen is keyed by the whole X-Load-ID, not the sequence number alone:
	// every send run numbers from 0, and a sink left running across two runs
	// must not count the second run's messages as the relay's duplicates.
	seen    map[loadKey]bool
	lat     []time.Duration
	byClass map[string][]time.Duration
	first   time.Time
	// minSent is the earliest send time seen: the start of the window when
	// the sender runs in another process.
	minSent time.Time
	last    time.Time
	dup     int
	noID    int
	arrived int

	verifyQ   chan []byte
	verifyWG  sync.WaitGroup
	dkimOK    int
	dkimFail  int
	firstFail string
}

func startSink(o sinkOptions) (*sink, error) {
	s := &sink{opts: o, seen: map[loadKey]bool{}, byClass: map[string][]time.Duration{}, start: time.Now()}
	s.cond = sync.NewCond(&s.mu)
	so := smtpsink.Options{Addr: o.addr, TLS: o.tls, Discard: true, Data: s.data}
	if o.deferAll || o.rejectPrefix != "" {
		prefix := strings.ToLower(o.rejectPrefix)
		so.Rcpt = func(rcpt string) *smtp.SMTPError {
			if prefix != "" && strings.HasPrefix(strings.ToLower(rcpt), prefix) {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "latchkey-load: no such user"}
			}
			if o.deferAll {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "latchkey-load: deferring everything"}
			}
			return nil
		}
	}
	ss, err := smtpsink.New(so)
	if err != nil {
		return nil, fmt.Errorf("latchkey-load: sink: %w", err)
	}
	s.smtp, s.Addr = ss, ss.Addr
	if o.verifyEvery > 0 {
		s.verifyQ = make(chan []byte, 1<<16)
		s.verifyWG.Add(1)
		go s.verifier()
	}
	return s, nil
}

// data runs at the end of each DATA: it records the arrival before anything
// else so that the latency excludes the sink's own work.
func (s *sink) data(_ string, _ []string, msg []byte) *smtp.SMTPError {
	now := time.Now()
	class := headerValue(msg, loadClassHeader)
	seq, sent, ok := parseLoadID(headerValue(msg, loadIDHeader))
	s.mu.Lock()
	s.arrived++
	if s.first.IsZero() {
		s.first = now
	}
	s.last = now
	n := s.arrived
	switch {
	case !ok:
		s.noID++
	case s.seen[loadKey{seq, sent.UnixNano()}]:
		s.dup++
	default:
		s.seen[loadKey{seq, sent.UnixNano()}] = true
		if s.minSent.IsZero() || sent.Before(s.minSent) {
			s.minSent = sent
		}
		d := now.Sub(sent)
		s.lat = append(s.lat, d)
		s.byClass[class] = append(s.byClass[class], d)
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	if s.verifyQ != nil && (n-1)%s.opts.verifyEvery == 0 {
		s.verifyQ <- msg
	}
	if class == "bulk" && s.opts.bulkDelay > 0 {
		time.Sleep(s.opts.bulkDelay)
	}
	return nil
}

func (s *sink) verifier() {
	defer s.verifyWG.Done()
	opts := &msgdkim.VerifyOptions{LookupTXT: s.lookupTXT}
	for msg := range s.verifyQ {
		vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(msg), opts)
		fail := ""
		switch {
		case err != nil:
			fail = err.Error()
		case len(vs) == 0:
			fail = "no DKIM-Signature"
		default:
			for _, v := range vs {
				if v.Err != nil {
					fail = fmt.Sprintf("d=%s: %v", v.Domain, v.Err)
					break
				}
			}
		}
		s.mu.Lock()
		if fail != "" {
			s.dkimFail++
			if s.firstFail == "" {
				s.firstFail = fail
			}
		} else {
			s.dkimOK++
		}
		s.mu.Unlock()
	}
}

func (s *sink) lookupTXT(name string) ([]string, error) {
	v, ok := s.opts.txt[strings.ToLower(strings.TrimSuffix(name, "."))]
	if !ok {
		return nil, fmt.Errorf("latchkey-load: no TXT record for %s", name)
	}
	return v, nil
}

// wait blocks until n distinct messages arrived or timeout passed; it
// reports whether they all did.
func (s *sink) wait(n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer t.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.seen) < n && time.Now().Before(deadline) {
		s.cond.Wait()
	}
	return len(s.seen) >= n
}

// waitClass is wait for the messages of one X-Load-Class only.
func (s *sink) waitClass(class string, n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer t.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.byClass[class]) < n && time.Now().Before(deadline) {
		s.cond.Wait()
	}
	return len(s.byClass[class]) >= n
}

// count is the number of distinct messages received.
func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// close stops the SMTP server and finishes the pending verifications.
func (s *sink) close() {
	s.smtp.Close()
	if s.verifyQ != nil {
		close(s.verifyQ)
		s.verifyWG.Wait()
		s.verifyQ = nil
	}
}

// report summarises the arrivals; since is the start of the measurement.
func (s *sink) report(since time.Time) SinkReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := SinkReport{Arrived: s.arrived, Duplicates: s.dup, NoID: s.noID, DKIMOK: s.dkimOK, DKIMFail: s.dkimFail,
		FirstFail: s.firstFail, E2E: summarize(append([]time.Duration(nil), s.lat...))}
	if !s.last.IsZero() {
		r.Seconds = s.last.Sub(since).Seconds()
		if r.Seconds > 0 {
			r.MsgPerSec = float64(len(s.lat)) / r.Seconds
		}
	}
	if len(s.byClass) > 1 {
		r.Classes = map[string]Percentiles{}
		for c, d := range s.byClass {
			r.Classes[c] = summarize(append([]time.Duration(nil), d...))
		}
	}
	return r
}

// zoneServer is an authoritative DNS server for the test domain on a fixed
// loopback address, so that a relay (latchkey's delivery.resolver) can be
// pointed at it. It answers from memory; unknown names get NXDOMAIN.
type zoneServer struct {
	Addr     string
	mu       sync.Mutex
	records  map[string][]dns.RR
	udp, tcp *dns.Server
}

func startZone(addr, zone string) (*zoneServer, error) {
	z := &zoneServer{records: map[string][]dns.RR{}}
	zp := dns.NewZoneParser(strings.NewReader(zone), ".", "latchkey-load")
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		n := strings.ToLower(rr.Header().Name)
		z.records[n] = append(z.records[n], rr)
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("latchkey-load: zone: %w", err)
	}
	if err := loopbackOnly(addr); err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("latchkey-load: dns listen: %w", err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("latchkey-load: dns listen: %w", err)
	}
	z.Addr = pc.LocalAddr().String()
	started := make(chan struct{}, 2)
	z.udp = &dns.Server{PacketConn: pc, Handler: z, NotifyStartedFunc: func() { started <- struct{}{} }}
	z.tcp = &dns.Server{Listener: l, Handler: z, NotifyStartedFunc: func() { started <- struct{}{} }}
	go z.udp.ActivateAndServe()
	go z.tcp.ActivateAndServe()
	<-started
	<-started
	return z, nil
}

func (z *zoneServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		z.mu.Lock()
		rrs, ok := z.records[strings.ToLower(q.Name)]
		z.mu.Unlock()
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	// Large TXT answers (RSA keys) must not be cut off over UDP.
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	w.WriteMsg(m)
}

func (z *zoneServer) close() {
	z.udp.Shutdown()
	z.tcp.Shutdown()
}

// loopbackOnly refuses any listen address outside 127.0.0.0/8: the tool is
// for measuring on one machine, never for sending mail anywhere.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("latchkey-load: address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return fmt.Errorf("latchkey-load: address %q is not in 127.0.0.0/8", addr)
	}
	return nil
}

// txtZoneLines turns "name=value" DKIM records into zone lines and a lookup
// map for the verifier.
func txtRecords(recs []string) (zone string, txt map[string][]string, err error) {
	txt = map[string][]string{}
	var b strings.Builder
	for _, r := range recs {
		name, val, ok := strings.Cut(r, "=")
		if !ok || name == "" {
			return "", nil, fmt.Errorf("latchkey-load: DKIM record %q: want selector._domainkey.domain=v=DKIM1; ...", r)
		}
		name = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
		val = strings.TrimSpace(val)
		txt[name] = append(txt[name], val)
		fmt.Fprintf(&b, "%s. 300 IN TXT", name)
		for len(val) > 0 {
			n := min(len(val), 255)
			fmt.Fprintf(&b, " %q", val[:n])
			val = val[n:]
		}
		b.WriteString("\n")
	}
	return b.String(), txt, nil
}

// zoneTXT parses zone-file text (such as `latchkey dns records` prints) and
// returns its TXT records, lower-case name without the final dot → the
// record's strings joined, for the DKIM verifier. file names the source in
// errors.
func zoneTXT(zone, file string) (map[string][]string, error) {
	txt := map[string][]string{}
	zp := dns.NewZoneParser(strings.NewReader(zone), ".", file)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if t, isTXT := rr.(*dns.TXT); isTXT {
			name := strings.ToLower(strings.TrimSuffix(t.Hdr.Name, "."))
			txt[name] = append(txt[name], strings.Join(t.Txt, ""))
		}
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("latchkey-load: zone: %w", err)
	}
	return txt, nil
}

// add serves more zone lines.
func (z *zoneServer) add(zone string) error {
	zp := dns.NewZoneParser(strings.NewReader(zone), ".", "latchkey-load")
	z.mu.Lock()
	defer z.mu.Unlock()
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		n := strings.ToLower(rr.Header().Name)
		z.records[n] = append(z.records[n], rr)
	}
	if err := zp.Err(); err != nil {
		return fmt.Errorf("latchkey-load: zone: %w", err)
	}
	return nil
}
