// Package deliver takes a queued message to its recipients' mail exchangers.
//
// Delivering one message to the recipients of one domain goes:
//  1. Wait for a slot of the domain's concurrency limit (max_per_domain).
//  2. Look up the MX hosts (of an IDN, its A-label) through the configured
//     resolver (Resolver.LookupMX):
//     preference order, equal preferences shuffled; no MX means the domain
//     itself; a null MX (RFC 7505) or NXDOMAIN fails permanently, a DNS
//     failure temporarily. At the same time, find the domain's MTA-STS
//     policy (RFC 8461, mtasts.go): the _mta-sts TXT record, the policy
//     fetched over HTTPS when its id is new, cached for its max_age.
//  3. For each host in order (an MX that names an IP address instead of a
//     host is skipped), and each of its addresses (IPv4 first), maxAddrs
//     addresses in all: take an idle pooled connection to it, or connect,
//     read the greeting, EHLO and STARTTLS by the TLS policy (a refused
//     STARTTLS goes on in clear under "opportunistic" only). Under an MTA-STS policy in enforce mode,
//     hosts the policy does not list are skipped and the TLS policy is
//     "verify" (pooled connections too); in testing mode what enforce would
//     refuse is only logged.
//  4. MAIL FROM, RCPT TO for each recipient (a rejection fails that recipient
//     only), DATA. A failure before the message is handed over moves on to
//     the next address or host; the first host that answers the transaction
//     decides the results.
//  5. Return the connection to the pool for the next message.
//
// Every outcome is a Result per recipient. Replies to MAIL, RCPT and DATA
// decide permanence by their code, except a 552 to RCPT, temporary as RFC
// 5321 4.5.3.1.10 says; a non-ASCII address to an MX without SMTPUTF8 fails
// permanently (553 5.6.7, made here); everything else (no reply, connection
// lost, TLS policy, greeting refusals) is temporary, so that the queue
// retries rather than bounces.
package deliver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"
)

// maxAddrs bounds the addresses tried for one message, so that a domain with
// many dead MX hosts cannot hold a delivery worker for long.
const maxAddrs = 10

// Result is the outcome for one recipient.
type Result struct {
	Rcpt string
	// Delivered is true when the MX accepted the message for Rcpt.
	Delivered bool
	// Permanent is true when retrying will not help (bounce it).
	Permanent bool
	// Code, Enhanced ("5.1.1") and Text are the server's reply, or, when Err
	// is set, a code made here to describe the failure.
	Code     int
	Enhanced string
	Text     string
	// Host and IP are the MX that answered (or was tried last).
	Host, IP string
	// TLS is the protocol version used ("TLS1.3") or "none".
	TLS string
	// TLSVerified is true when the certificate verified for Host.
	TLSVerified bool
	// MTASTS is the mode of the recipient domain's MTA-STS policy that
	// applied: STSEnforce, STSTesting, or "" (none, or mta_sts off).
	MTASTS string
	// Err is the connection or DNS error when there was no reply.
	Err error
}

// String describes r in one line, for logs and DSNs.
func (r Result) String() string {
	var b strings.Builder
	b.WriteString(r.Rcpt)
	switch {
	case r.Delivered:
		b.WriteString(": delivered")
	case r.Permanent:
		b.WriteString(": failed")
	default:
		b.WriteString(": deferred")
	}
	if r.Code != 0 {
		fmt.Fprintf(&b, ": %d", r.Code)
		if r.Enhanced != "" {
			b.WriteString(" " + r.Enhanced)
		}
		if r.Text != "" {
			b.WriteString(" " + strings.ReplaceAll(r.Text, "\n", " "))
		}
	}
	switch {
	case r.IP != "":
		fmt.Fprintf(&b, " (%s [%s] %s)", r.Host, r.IP, r.TLS)
	case r.Host != "":
		fmt.Fprintf(&b, " (%s)", r.Host)
	}
	if r.MTASTS != "" {
		b.WriteString(" MTA-STS " + r.MTASTS)
	}
	if r.Err != nil {
		b.WriteString(": " + r.Err.Error())
	}
	return b.String()
}

// Deliverer sends messages to MX hosts, reusing connections.
type Deliverer struct {
	cfg       Config
	log       zerolog.Logger
	res       *Resolver
	pool      *pool
	localAddr net.Addr
	roots     *x509.CertPool // nil: the system roots; tests set their own

	sts      stsCache
	stsStore STSStore        // nil: policies are kept in memory only
	stsPort  int             // HTTPS port of MTA-STS policy hosts; 0 means 443 (tests set their own)
	stsCtx   context.Context // ends fetches in flight on Close
	stsStop  context.CancelFunc

	semMu sync.Mutex
	sems  map[string]*domainSem

	closeOnce sync.Once
}

type domainSem struct {
	ch   chan struct{}
	refs int
}

// New checks cfg and returns a Deliverer; Close it when done.
func New(cfg Config, log zerolog.Logger) (*Deliverer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("deliver: config: %w", err)
	}
	res, err := NewResolver(cfg.Resolver, cfg.DNSTimeout)
	if err != nil {
		return nil, err
	}
	d := &Deliverer{
		cfg:  cfg,
		log:  log,
		res:  res,
		pool: newPool(cfg.MaxIdle, cfg.IdleTimeout, cfg.MaxMessagesPerConn),
		sems: map[string]*domainSem{},
		sts:  stsCache{entries: map[string]*stsEntry{}},
	}
	d.stsCtx, d.stsStop = context.WithCancel(context.Background())
	if cfg.SourceIP != "" {
		d.localAddr = &net.TCPAddr{IP: net.ParseIP(cfg.SourceIP)}
	}
	return d, nil
}

// Resolver returns the resolver the Deliverer uses, for reuse elsewhere.
func (d *Deliverer) Resolver() *Resolver { return d.res }

// Close ends the pooled connections. Deliveries still running finish, and
// their connections are closed instead of pooled.
func (d *Deliverer) Close() {
	d.closeOnce.Do(func() {
		if d.stsStop != nil {
			d.stsStop()
		}
		d.stsClose()
		d.pool.close()
	})
}

// acquire waits for a slot of domain's concurrency limit.
func (d *Deliverer) acquire(ctx context.Context, domain string) (release func(), err error) {
	d.semMu.Lock()
	s := d.sems[domain]
	if s == nil {
		s = &domainSem{ch: make(chan struct{}, d.cfg.MaxPerDomain)}
		d.sems[domain] = s
	}
	s.refs++
	d.semMu.Unlock()
	unref := func() {
		d.semMu.Lock()
		if s.refs--; s.refs == 0 {
			delete(d.sems, domain)
		}
		d.semMu.Unlock()
	}
	select {
	case s.ch <- struct{}{}:
		return func() { <-s.ch; unref() }, nil
	case <-ctx.Done():
		unref()
		return nil, ctx.Err()
	}
}

// Deliver sends data from the envelope sender from to rcpts, which must all
// be in one domain (the caller groups them), and returns one Result per
// recipient in the order given. data is the whole message (headers, blank
// line, body); dot-stuffing and CRLF line ends are done on the way out. ctx
// bounds the whole delivery, the wait for a domain slot included; when it
// ends the connection in use is closed.
func (d *Deliverer) Deliver(ctx context.Context, from string, rcpts []string, data []byte) []Result {
	results := make([]Result, len(rcpts))
	for i, r := range rcpts {
		results[i].Rcpt = r
	}
	if len(rcpts) == 0 {
		return results
	}
	domain := domainOf(rcpts[0])
	var todo []int
	for i, r := range rcpts {
		switch {
		case domainOf(r) == "":
			results[i] = Result{Rcpt: r, Permanent: true, Code: 553, Enhanced: "5.1.3",
				Text: "bad recipient address syntax", Err: fmt.Errorf("deliver: %q has no domain", r)}
		case domainOf(r) != domain:
			// The caller broke the contract; keep the message queued for it.
			results[i] = Result{Rcpt: r, Code: 451, Enhanced: "4.3.0", Text: "recipient not in the batch's domain",
				Err: fmt.Errorf("deliver: %q is not in domain %q", r, domain)}
		default:
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return results
	}
	if d.cfg.Maildir != "" {
		d.deliverMaildir(from, rcpts, todo, data, results)
		return results
	}
	// The DNS knows an IDN only by its A-label (RFC 5890); the raw UTF-8
	// name does not exist, and the message would bounce as if the domain did
	// not.
	lookupDomain := domain
	if !isASCII(domain) {
		a, err := toASCII(domain)
		if err != nil {
			for _, i := range todo {
				results[i] = Result{Rcpt: rcpts[i], Permanent: true, Code: 553, Enhanced: "5.1.3",
					Text: "bad recipient address syntax", Err: fmt.Errorf("deliver: domain %q: %w", domain, err)}
			}
			return results
		}
		lookupDomain = a
	}
	fail := func(r Result) {
		for _, i := range todo {
			r.Rcpt = rcpts[i]
			results[i] = r
		}
	}

	release, err := d.acquire(ctx, domain)
	if err != nil {
		fail(Result{Code: 451, Enhanced: "4.4.7", Text: "delivery cancelled", Err: err})
		return results
	}
	defer release()

	// The policy look-up (a DNS query, rarely an HTTPS fetch) runs beside
	// the MX look-up so that it costs no round trip of its own.
	var pol *STSPolicy
	var polDone chan struct{}
	if d.cfg.MTASTS {
		polDone = make(chan struct{})
		go func() { defer close(polDone); pol = d.stsPolicy(ctx, lookupDomain) }()
	}
	mxs, err := d.res.LookupMX(ctx, lookupDomain)
	if polDone != nil {
		<-polDone
	}
	mode, tlsPolicy := "", d.cfg.TLS
	if pol != nil && (pol.Mode == STSEnforce || pol.Mode == STSTesting) {
		mode = pol.Mode
		defer func() {
			for _, i := range todo {
				results[i].MTASTS = mode
			}
		}()
	}
	if mode == STSEnforce {
		tlsPolicy = TLSVerify
	}
	if err != nil {
		fail(dnsResult(err, "4.4.3"))
		return results
	}
	var last *attemptError
	var lastHost, lastIP string
	tried := 0
	for _, mx := range mxs {
		if tried == maxAddrs || ctx.Err() != nil {
			break // hosts past the limit are not even looked up
		}
		if net.ParseIP(mx.Host) != nil {
			// RFC 5321 2.3.5 and 5.1: an MX names a host, never an address;
			// Postfix and Exim refuse such records too.
			last = newAttemptError("dns", "4.4.3", fmt.Errorf("MX %s of %s is an IP address, not a host name", mx.Host, domain))
			lastHost, lastIP = mx.Host, ""
			continue
		}
		if mode != "" && !pol.MatchMX(mx.Host) {
			if mode == STSTesting {
				d.log.Warn().Str("domain", domain).Str("host", mx.Host).Strs("policy_mx", pol.MX).
					Msg("deliver: MTA-STS testing: MX not in the policy; enforce would skip it")
			} else {
				last = newAttemptError("mta-sts", "4.7.5", fmt.Errorf("MX %s is not in the MTA-STS policy of %s", mx.Host, domain))
				last.sts = true
				lastHost, lastIP = mx.Host, ""
				continue
			}
		}
		ips, err := d.res.LookupIP(ctx, mx.Host)
		if err != nil {
			var de *DNSError
			if mx.Implicit && errors.As(err, &de) && de.NotFound {
				// Neither MX nor address: RFC 5321 5.1, no mail for this domain.
				fail(dnsResult(&DNSError{Name: domain, Qtype: "MX", NotFound: true, Err: err}, "5.1.2"))
				return results
			}
			last = newAttemptError("dns", "4.4.3", err)
			lastHost, lastIP = mx.Host, ""
			continue
		}
		for _, ip := range ips {
			if tried == maxAddrs || ctx.Err() != nil {
				break
			}
			tried++
			aerr := d.attempt(ctx, mx.Host, ip.String(), tlsPolicy, mode == STSEnforce, from, rcpts, todo, data, results)
			if aerr == nil {
				if r := results[todo[0]]; mode == STSTesting && !r.TLSVerified {
					d.log.Warn().Str("domain", domain).Str("host", mx.Host).Str("tls", r.TLS).
						Msg("deliver: MTA-STS testing: TLS not verified; enforce would refuse this MX")
				}
				d.logResults(domain, results, todo)
				return results
			}
			if mode == STSEnforce && (aerr.stage == "tls" || aerr.stage == "starttls") {
				aerr.sts = true
			}
			d.log.Debug().Str("domain", domain).Str("host", mx.Host).Str("ip", ip.String()).Err(aerr).Msg("deliver: attempt failed")
			last, lastHost, lastIP = aerr, mx.Host, ip.String()
		}
	}
	if ctx.Err() != nil {
		fail(Result{Code: 451, Enhanced: "4.4.7", Text: "delivery cancelled", Host: lastHost, IP: lastIP, Err: ctx.Err()})
		return results
	}
	if last == nil {
		last = newAttemptError("dns", "4.4.4", errors.New("no usable MX address"))
	}
	fail(attemptResult(last, lastHost, lastIP))
	d.logResults(domain, results, todo)
	return results
}

func (d *Deliverer) logResults(domain string, results []Result, todo []int) {
	if e := d.log.Debug(); e.Enabled() {
		for _, i := range todo {
			// Not the reply text: a content filter may quote the message's
			// links (a live reset link) in it. The relay logs a redacted one.
			r := results[i]
			d.log.Debug().Str("domain", domain).Str("rcpt", r.Rcpt).Bool("delivered", r.Delivered).Bool("permanent", r.Permanent).
				Int("code", r.Code).Str("enhanced", r.Enhanced).Str("mx", r.Host).Str("tls", r.TLS).Msg("deliver: result")
		}
	}
}

// attempt delivers over one address: a pooled connection first, and a new
// one if the pooled one turns out dead. A nil return means the server
// answered the transaction and results are final for this delivery.
// With verifiedOnly, only a pooled connection whose certificate verified is
// taken.
func (d *Deliverer) attempt(ctx context.Context, host, ip, tlsPolicy string, verifiedOnly bool, from string, rcpts []string, todo []int, data []byte, results []Result) *attemptError {
	key := poolKey{addr: net.JoinHostPort(ip, fmt.Sprint(d.cfg.Port)), host: host}
	for try := 0; try < 2; try++ {
		var cn *conn
		reused := false
		if try == 0 {
			cn = d.pool.get(key, verifiedOnly)
			reused = cn != nil
		}
		if cn == nil {
			c, err := d.dial(ctx, host, ip, tlsPolicy)
			if err != nil {
				var ae *attemptError
				if !errors.As(err, &ae) {
					ae = newAttemptError("connect", "4.4.2", err)
				}
				return ae
			}
			cn = c
		}
		aerr, keep := d.transact(ctx, cn, from, rcpts, todo, data, results)
		if keep {
			d.pool.put(cn)
		} else {
			cn.raw.Close()
		}
		if aerr == nil {
			return nil
		}
		if !reused {
			return aerr
		}
		// A pooled connection that failed before the message was handed over
		// was most likely closed by the server while idle; try a fresh one.
		d.log.Debug().Str("host", host).Str("ip", ip).Err(aerr).Msg("deliver: pooled connection failed; reconnecting")
	}
	return nil // not reached
}

// transact runs one mail transaction on cn. It returns an attemptError when
// nothing was handed over (so another connection may be tried), and whether
// cn can be reused.
func (d *Deliverer) transact(ctx context.Context, cn *conn, from string, rcpts []string, todo []int, data []byte, results []Result) (aerr *attemptError, keep bool) {
	stop := context.AfterFunc(ctx, func() { cn.raw.Close() })
	defer func() {
		if !stop() {
			keep = false // the context closed the connection
		}
	}()
	c := cn.c
	base := Result{Host: cn.host, IP: cn.ip, TLS: cn.tls, TLSVerified: cn.verified}
	// Failures here happen on a session whose TLS state is known; the
	// result (and the audit trail) must not say "none" for them.
	cnErr := func(stage, enhanced string, err error) *attemptError {
		ae := newAttemptError(stage, enhanced, err)
		ae.tls, ae.verified = cn.tls, cn.verified
		return ae
	}

	// context.AfterFunc runs its function in a goroutine of its own, even
	// for a context that has already ended: without this check, MAIL could
	// be written and the message delivered before the close lands.
	if err := ctx.Err(); err != nil {
		return cnErr("mail", "4.4.2", err), false
	}

	// RFC 5321 4.1.4: a completed transaction (DATA answered) needs no RSET
	// before the next MAIL; only an abandoned one does. Skipping it saves a
	// round trip, and go-smtp's Reset also forces a new EHLO.
	if cn.dirty {
		if err := c.Reset(); err != nil {
			return cnErr("rset", "4.4.2", err), false
		}
		cn.dirty = false
	}
	opts := &smtp.MailOptions{Size: int64(len(data))}
	from = wireAddr(from)
	wire := make([]string, len(rcpts))
	for _, i := range todo {
		wire[i] = wireAddr(rcpts[i])
	}
	if !isASCII(from) || anyNonASCII(wire, todo) {
		opts.UTF8 = true
		if ok, _ := c.Extension("SMTPUTF8"); !ok {
			// RFC 6531 3.4: without SMTPUTF8 the address cannot be sent at
			// all, so retrying only delays the bounce (Postfix: 5.6.7).
			for _, i := range todo {
				r := base
				r.Rcpt, r.Permanent, r.Code, r.Enhanced = rcpts[i], true, 553, "5.6.7"
				r.Text = "non-ASCII address, and the MX does not support SMTPUTF8"
				results[i] = r
			}
			return nil, true
		}
	}
	if ok, _ := c.Extension("PIPELINING"); ok && d.cfg.Pipelining {
		return d.transactPipelined(cn, from, opts, rcpts, wire, todo, data, results, base, cnErr)
	}
	if err := c.Mail(from, opts); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code/100 == 5 {
			// The sender is refused: the same on every MX, so final.
			for _, i := range todo {
				results[i] = replyResult(base, rcpts[i], se)
			}
			return nil, true
		}
		return cnErr("mail", "4.4.2", err), errors.As(err, &se) && se.Code != 421
	}
	cn.dirty = true
	var accepted []int
	for _, i := range todo {
		err := c.Rcpt(wire[i], nil)
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code == 421 {
			return cnErr("rcpt", "4.4.2", err), false
		}
		results[i] = replyResult(base, rcpts[i], se)
		if se.Code == 552 {
			// RFC 5321 4.5.3.1.10: 552 to RCPT (too many recipients,
			// storage) is to be treated as temporary, as 452. The code is
			// rewritten too, so that nothing downstream reads a 5xx as final.
			r := &results[i]
			r.Permanent, r.Code = false, 452
			if strings.HasPrefix(r.Enhanced, "5.") {
				r.Enhanced = "4" + r.Enhanced[1:]
			}
		}
	}
	if len(accepted) == 0 {
		if c.Reset() != nil {
			return nil, false
		}
		cn.dirty = false
		return nil, true
	}
	w, err := c.Data()
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code == 421 {
			return cnErr("data", "4.4.2", err), false
		}
		for _, i := range accepted {
			results[i] = replyResult(base, rcpts[i], se)
		}
		return nil, true
	}
	// go-smtp sets no deadline while the message is written.
	cn.raw.SetDeadline(time.Now().Add(d.cfg.DataTimeout))
	if _, err := w.Write(data); err != nil {
		lost(base, rcpts, accepted, results, err)
		return nil, false
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			lost(base, rcpts, accepted, results, err)
			return nil, false
		}
		for _, i := range accepted {
			results[i] = replyResult(base, rcpts[i], se)
		}
		cn.dirty = false
		return nil, se.Code != 421
	}
	cn.dirty = false
	cn.msgs++
	ok := base
	ok.Delivered, ok.Code, ok.Text = true, 250, resp.StatusText
	if code, rest, found := splitEnhanced(resp.StatusText); found {
		ok.Enhanced = fmt.Sprintf("%d.%d.%d", code[0], code[1], code[2])
		ok.Text = rest
	}
	for _, i := range accepted {
		ok.Rcpt = rcpts[i]
		results[i] = ok
	}
	return nil, true
}

// lost records a connection lost after the message started to go out. It is
// temporary, and a retry may duplicate the message: the server may have
// taken it (RFC 1047).
func lost(base Result, rcpts []string, accepted []int, results []Result, err error) {
	r := base
	r.Code, r.Enhanced, r.Text = 451, "4.4.2", "connection lost during DATA"
	r.Err = fmt.Errorf("deliver: data: %w", err)
	for _, i := range accepted {
		r.Rcpt = rcpts[i]
		results[i] = r
	}
}

func replyResult(base Result, rcpt string, se *smtp.SMTPError) Result {
	r := base
	r.Rcpt = rcpt
	r.Code = se.Code
	r.Text = se.Message
	r.Permanent = se.Code/100 == 5
	if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
		r.Enhanced = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return r
}

// attemptResult describes the last failed attempt. Even a 5xx greeting or
// EHLO reply is temporary: it says the host will not talk to us now, not that
// the address is bad.
func attemptResult(ae *attemptError, host, ip string) Result {
	r := Result{Host: host, IP: ip, TLS: "none"}
	if ae.tls != "" {
		r.TLS, r.TLSVerified = ae.tls, ae.verified
	}
	if ae.reply != nil {
		r.Code, r.Text = ae.reply.Code, ae.stage+": "+ae.reply.Message
		if r.Code/100 != 4 {
			r.Code = 451
		}
		r.Enhanced = ae.enhanced
		if ec := ae.reply.EnhancedCode; ec[0] == 4 {
			r.Enhanced = fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
		}
		r.Err = ae
	} else {
		r.Code, r.Enhanced, r.Text, r.Err = 451, ae.enhanced, ae.stage+" failed", ae
	}
	if ae.stage == "mta-sts" {
		r.Text = "MX host not in the domain's policy"
	}
	if ae.sts {
		r.Text = "MTA-STS: " + r.Text
	}
	return r
}

// dnsResult describes a failed MX look-up.
func dnsResult(err error, tempEnhanced string) Result {
	var de *DNSError
	if errors.As(err, &de) {
		switch {
		case de.Null:
			return Result{Permanent: true, Code: 556, Enhanced: "5.1.10", Text: "domain does not accept mail (null MX)", Err: err}
		case de.NotFound:
			return Result{Permanent: true, Code: 550, Enhanced: "5.1.2", Text: "domain does not exist", Err: err}
		}
	}
	return Result{Code: 451, Enhanced: tempEnhanced, Text: "DNS look-up failed", Err: err}
}

func domainOf(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 1 || at == len(addr)-1 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[at+1:], "."))
}

// wireAddr returns addr with its domain as an A-label when only the domain
// is non-ASCII, so that the MX needs no SMTPUTF8 for it (as Postfix does);
// an address with a non-ASCII local part is returned unchanged.
func wireAddr(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if isASCII(addr) || at < 0 || !isASCII(addr[:at]) {
		return addr
	}
	d, err := toASCII(addr[at+1:])
	if err != nil {
		return addr
	}
	return addr[:at+1] + d
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func anyNonASCII(rcpts []string, todo []int) bool {
	for _, i := range todo {
		if !isASCII(rcpts[i]) {
			return true
		}
	}
	return false
}
