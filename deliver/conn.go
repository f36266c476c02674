package deliver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// conn is one SMTP connection to one MX address, past EHLO (and STARTTLS).
type conn struct {
	c         *smtp.Client
	raw       net.Conn // the TCP connection, for deadlines, closing and peeking
	wire      net.Conn // what go-smtp talks over (TLS, or raw): the pipelined transaction writes here
	p         *pipe    // the pipelined transaction's reader and writer, once used
	key       poolKey
	host, ip  string
	tls       string // "TLS1.3", …, or "none"
	verified  bool
	msgs      int       // messages sent over it
	dirty     bool      // a transaction may be open: RSET before the next one
	idleSince time.Time // when it was put in the pool
}

// poolKey identifies connections that are interchangeable: same address and
// same name (the name is what the certificate was checked against). Every
// pooled connection meets the configured TLS policy; one that an MTA-STS
// policy in enforce mode may use must also be verified, which pool.get checks
// on the connection rather than splitting the key.
type poolKey struct {
	addr, host string
}

// attemptError is a failure of one connection before the message was handed
// over, so trying another connection or MX is safe.
type attemptError struct {
	stage    string          // connect, greeting, ehlo, starttls, tls, mail, rcpt, data, mta-sts
	reply    *smtp.SMTPError // the server's reply, if there was one
	err      error
	enhanced string // the RFC 3463 code to report when there is no reply
	sts      bool   // the failure is the MTA-STS policy's doing
	tls      string // the session's TLS ("TLS1.3", "none"), "" before it was known
	verified bool   // the session's certificate verified
}

func (e *attemptError) Error() string {
	return fmt.Sprintf("deliver: %s: %v", e.stage, e.err)
}

func (e *attemptError) Unwrap() error { return e.err }

func newAttemptError(stage, enhanced string, err error) *attemptError {
	ae := &attemptError{stage: stage, err: err, enhanced: enhanced}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		ae.reply = se
	}
	return ae
}

func tlsName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLS1.3"
	case tls.VersionTLS12:
		return "TLS1.2"
	case tls.VersionTLS11:
		return "TLS1.1"
	case tls.VersionTLS10:
		return "TLS1.0"
	}
	return "TLS"
}

// prefixConn replays a greeting to go-smtp's Client, which insists on reading
// one, after this package has done the clear-text part of the dialogue
// itself (see handshake).
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// dial connects to ip and brings the session to the point where MAIL can be
// sent, under tlsPolicy (the configured one, or TLSVerify when an MTA-STS
// policy enforces it). Under the opportunistic policy a failed TLS handshake
// is retried in clear on a new connection, as Postfix does: encryption is a
// bonus there, and a broken TLS stack on the other side must not stop the
// mail.
func (d *Deliverer) dial(ctx context.Context, host, ip, tlsPolicy string) (*conn, error) {
	cn, err := d.dialOnce(ctx, host, ip, tlsPolicy, true)
	var ae *attemptError
	if err != nil && tlsPolicy == TLSOpportunistic && errors.As(err, &ae) && ae.stage == "tls" && ctx.Err() == nil {
		d.log.Info().Str("host", host).Str("ip", ip).Err(err).Msg("deliver: TLS handshake failed, retrying in clear")
		return d.dialOnce(ctx, host, ip, tlsPolicy, false)
	}
	return cn, err
}

func (d *Deliverer) dialOnce(ctx context.Context, host, ip, tlsPolicy string, useTLS bool) (*conn, error) {
	addr := net.JoinHostPort(ip, strconv.Itoa(d.cfg.Port))
	dialer := net.Dialer{Timeout: d.cfg.ConnectTimeout, LocalAddr: d.localAddr}
	raw, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, newAttemptError("connect", "4.4.1", err)
	}
	// A cancelled context must abort a blocked read at once; closing is the
	// only way that also works while go-smtp sets its own deadlines.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	cn, err := d.handshake(ctx, raw, host, ip, tlsPolicy, useTLS)
	if !stop() && err == nil {
		err = newAttemptError("connect", "4.4.2", ctx.Err())
	}
	if err != nil {
		raw.Close()
		return nil, err
	}
	cn.key = poolKey{addr: addr, host: host}
	return cn, nil
}

// handshake reads the greeting, says EHLO and does STARTTLS by hand, then
// hands the connection to go-smtp. By hand because go-smtp's STARTTLS
// helpers say "EHLO localhost" before TLS, which some receivers hold against
// the sender; and doing it here lets us refuse a server that sends data
// right after its STARTTLS reply (the CVE-2011-0411 injection).
func (d *Deliverer) handshake(ctx context.Context, raw net.Conn, host, ip, tlsPolicy string, useTLS bool) (*conn, error) {
	raw.SetDeadline(time.Now().Add(d.cfg.CommandTimeout))
	tp := textproto.NewConn(raw)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, newAttemptError("greeting", "4.4.2", replyErr(err))
	}
	ext := map[string]bool{}
	if err := tp.PrintfLine("EHLO %s", d.cfg.Hostname); err != nil {
		return nil, newAttemptError("ehlo", "4.4.2", err)
	}
	_, msg, err := tp.ReadResponse(250)
	if err != nil {
		var te *textproto.Error
		if !errors.As(err, &te) || te.Code/100 != 5 {
			return nil, newAttemptError("ehlo", "4.4.2", replyErr(err))
		}
		// EHLO not understood: go-smtp falls back to HELO below; no STARTTLS.
	} else {
		for _, line := range strings.Split(msg, "\n")[1:] {
			kw, _, _ := strings.Cut(line, " ")
			ext[strings.ToUpper(kw)] = true
		}
	}

	cn := &conn{raw: raw, host: host, ip: ip, tls: "none"}
	var next net.Conn
	switch {
	case ext["STARTTLS"] && useTLS:
		if err := tp.PrintfLine("STARTTLS"); err != nil {
			return nil, newAttemptError("starttls", "4.4.2", err)
		}
		if _, _, err := tp.ReadResponse(220); err != nil {
			var te *textproto.Error
			if tlsPolicy != TLSOpportunistic || !errors.As(err, &te) {
				return nil, newAttemptError("starttls", "4.7.5", replyErr(err))
			}
			// Refused (RFC 3207 4: 454 and the like): the session goes on
			// in clear, which the opportunistic policy allows.
			d.log.Info().Str("host", host).Str("ip", ip).Err(err).Msg("deliver: STARTTLS refused, continuing in clear")
			next = &prefixConn{Conn: raw, r: io.MultiReader(strings.NewReader("220 plain\r\n"), tp.R)}
			break
		}
		if tp.R.Buffered() > 0 {
			return nil, newAttemptError("starttls", "4.7.5", errors.New("data pipelined after the STARTTLS reply"))
		}
		tc := tls.Client(raw, d.tlsConfig(host, cn, tlsPolicy))
		hctx, cancel := context.WithTimeout(ctx, d.cfg.CommandTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return nil, newAttemptError("tls", "4.7.5", err)
		}
		cn.tls = tlsName(tc.ConnectionState().Version)
		next = &prefixConn{Conn: tc, r: io.MultiReader(strings.NewReader("220 tls\r\n"), tc)}
	case tlsPolicy != TLSOpportunistic:
		tp.PrintfLine("QUIT") // best effort; nothing of the message was sent
		why := errors.New("STARTTLS not offered and the TLS policy requires it")
		if !useTLS {
			why = errors.New("TLS handshake failed and the TLS policy requires it")
		}
		return nil, newAttemptError("starttls", "4.7.10", why)
	default:
		// Keep what the textproto reader buffered: nothing, normally.
		next = &prefixConn{Conn: raw, r: io.MultiReader(strings.NewReader("220 plain\r\n"), tp.R)}
	}
	raw.SetDeadline(time.Time{})

	c := smtp.NewClient(next)
	c.CommandTimeout = d.cfg.CommandTimeout
	c.SubmissionTimeout = d.cfg.DataTimeout
	if err := c.Hello(d.cfg.Hostname); err != nil {
		ae := newAttemptError("ehlo", "4.4.2", err)
		ae.tls, ae.verified = cn.tls, cn.verified
		return nil, ae
	}
	cn.c, cn.wire = c, next
	return cn, nil
}

// tlsConfig checks the certificate itself so that, under the opportunistic
// policy, a certificate that does not verify only gets recorded instead of
// costing a second connection.
func (d *Deliverer) tlsConfig(host string, cn *conn, tlsPolicy string) *tls.Config {
	return &tls.Config{
		ServerName:         host,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified below, by policy
		VerifyConnection: func(cs tls.ConnectionState) error {
			if d.cfg.InsecureSkipVerify {
				return nil
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("deliver: no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				DNSName: host, Intermediates: inter, Roots: d.roots,
			})
			if err == nil {
				cn.verified = true
				return nil
			}
			if tlsPolicy == TLSVerify {
				return fmt.Errorf("deliver: certificate of %s: %w", host, err)
			}
			d.log.Debug().Str("host", host).Err(err).Msg("deliver: certificate does not verify; using TLS anyway")
			return nil
		},
	}
}

// replyErr turns a textproto reply error into go-smtp's SMTPError, with the
// enhanced code split off.
func replyErr(err error) error {
	var te *textproto.Error
	if !errors.As(err, &te) {
		return err
	}
	se := &smtp.SMTPError{Code: te.Code, Message: te.Msg}
	if code, rest, ok := splitEnhanced(te.Msg); ok {
		se.EnhancedCode = code
		se.Message = rest
	}
	return se
}

// splitEnhanced splits "5.1.1 text" into the enhanced code and the text.
func splitEnhanced(s string) (smtp.EnhancedCode, string, bool) {
	first, rest, _ := strings.Cut(s, " ")
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return smtp.EnhancedCode{}, s, false
	}
	var code smtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || len(p) == 0 || len(p) > 3 {
			return smtp.EnhancedCode{}, s, false
		}
		code[i] = n
	}
	if code[0] < 2 || code[0] > 5 {
		return smtp.EnhancedCode{}, s, false
	}
	return code, rest, true
}

// quit ends a connection politely but without waiting long.
func (cn *conn) quit() {
	cn.c.CommandTimeout = 2 * time.Second
	cn.c.Quit()
	cn.raw.Close()
}
