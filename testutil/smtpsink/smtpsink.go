// Package smtpsink runs a receiving SMTP server on loopback for tests and for
// the load tool.
//
// A Sink accepts every message (unless told otherwise through the Rcpt and
// Data hooks), keeps it in memory and counts connections, so that tests of the
// outbound side can check what arrived, over how many connections, with or
// without TLS, and how many transactions ran at once.
package smtpsink

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Options configure a Sink. The zero value listens on 127.0.0.1 on a free port,
// without STARTTLS, accepting everything.
type Options struct {
	// Addr is the "host:port" to listen on; any 127.x address. Port 0 picks a
	// free port.
	Addr string
	// TLS makes the sink offer STARTTLS with a self-signed certificate made in
	// memory (for "localhost", the MX names in CertNames and 127.0.0.0/8 IPs
	// listened on).
	TLS bool
	// BrokenTLS offers STARTTLS but only TLS 1.0, so that modern clients'
	// handshakes fail (to test fallbacks).
	BrokenTLS bool
	// CertNames are extra DNS names put in the certificate.
	CertNames []string
	// Delay is waited before answering the end of DATA, to keep transactions
	// open long enough for concurrency to be observable.
	Delay time.Duration
	// Mail, when set, answers MAIL FROM; a nil return accepts it.
	Mail func(from string) *smtp.SMTPError
	// Rcpt, when set, answers each RCPT TO; a nil return accepts it.
	Rcpt func(rcpt string) *smtp.SMTPError
	// Data, when set, answers the end of DATA; a nil return accepts the
	// message. Returning ErrDrop closes the connection without a reply.
	Data func(from string, rcpts []string, data []byte) *smtp.SMTPError
	// Discard counts messages without keeping them (for benchmarks and load).
	Discard bool
	// DropMidData makes the sink close the connection after reading the first
	// bytes of the message, without a reply and without keeping the message.
	DropMidData bool
}

// ErrDrop, returned by a Data hook, makes the sink close the connection
// instead of answering, as a crashing server would.
var ErrDrop = &smtp.SMTPError{Code: 0, Message: "smtpsink: drop"}

// Message is one message received.
type Message struct {
	From     string
	To       []string
	Data     []byte
	Received time.Time
	TLS      bool
}

// Sink is a running receiving server.
type Sink struct {
	// Addr is the "host:port" the sink listens on.
	Addr string
	// CertPool holds the sink's self-signed certificate (nil without TLS), for
	// clients that want to verify it.
	CertPool *x509.CertPool

	srv *smtp.Server
	l   net.Listener

	mu          sync.Mutex
	cond        *sync.Cond
	opts        Options
	msgs        []Message
	count       int
	conns       int
	active      int // transactions between MAIL and the end of DATA/RSET
	maxActive   int
	openConns   int
	maxOpenConn int
	closed      bool
}

// Start starts a sink and closes it when the test ends.
func Start(t testing.TB, opts Options) *Sink {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("smtpsink: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a sink without a test; call Close when done.
func New(opts Options) (*Sink, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("smtpsink: addr %q: %w", opts.Addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		// Tests must never listen on, or be pointed at, anything but loopback.
		return nil, fmt.Errorf("smtpsink: addr %q is not a loopback address", opts.Addr)
	}
	l, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("smtpsink: listen: %w", err)
	}
	s := &Sink{Addr: l.Addr().String(), l: l, opts: opts}
	s.cond = sync.NewCond(&s.mu)
	srv := smtp.NewServer(backend{s})
	srv.Domain = "sink.test"
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.MaxMessageBytes = 64 << 20
	srv.MaxRecipients = 1000
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if opts.TLS || opts.BrokenTLS {
		cert, pool, err := selfSigned(append([]string{"localhost"}, opts.CertNames...), net.ParseIP(host))
		if err != nil {
			l.Close()
			return nil, err
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if opts.BrokenTLS {
			srv.TLSConfig.MinVersion, srv.TLSConfig.MaxVersion = tls.VersionTLS10, tls.VersionTLS10
		}
		s.CertPool = pool
	}
	s.srv = srv
	go srv.Serve(&countingListener{Listener: l, s: s})
	return s, nil
}

// Close stops the sink and closes its connections.
func (s *Sink) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.srv.Close()
}

// Messages returns a copy of the messages received so far.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Count returns how many messages were received.
func (s *Sink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Conns returns how many connections were accepted.
func (s *Sink) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// MaxConcurrent returns the most transactions (MAIL to the end of DATA) that
// were open at once.
func (s *Sink) MaxConcurrent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxActive
}

// MaxOpenConns returns the most connections that were open at once.
func (s *Sink) MaxOpenConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxOpenConn
}

// Wait waits until at least n messages have arrived or timeout passes, and
// returns the messages received by then.
func (s *Sink) Wait(n int, timeout time.Duration) []Message {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.count < n && !s.closed && time.Now().Before(deadline) {
		s.cond.Wait()
	}
	return append([]Message(nil), s.msgs...)
}

// SetRcpt replaces the RCPT hook.
func (s *Sink) SetRcpt(f func(rcpt string) *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Rcpt = f
}

// SetData replaces the DATA hook.
func (s *Sink) SetData(f func(from string, rcpts []string, data []byte) *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Data = f
}

// SetDropMidData switches DropMidData.
func (s *Sink) SetDropMidData(drop bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.DropMidData = drop
}

// SetDelay changes Delay.
func (s *Sink) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Delay = d
}

type backend struct{ s *Sink }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{s: b.s, c: c}, nil
}

// countingListener counts connections itself, because go-smtp makes a new
// Session after STARTTLS and so sessions are not connections.
type countingListener struct {
	net.Listener
	s *Sink
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s := l.s
	s.mu.Lock()
	s.conns++
	s.openConns++
	s.maxOpenConn = max(s.maxOpenConn, s.openConns)
	s.mu.Unlock()
	return &countedConn{Conn: c, s: s}, nil
}

type countedConn struct {
	net.Conn
	s    *Sink
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		c.s.openConns--
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

type session struct {
	s     *Sink
	c     *smtp.Conn
	from  string
	rcpts []string
	inTx  bool
}

// begin and end guard inTx with the sink's lock: go-smtp's Server.Close
// calls Logout from another goroutine while a session may be in Data.
func (ss *session) begin() {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if ss.inTx {
		return
	}
	ss.inTx = true
	ss.s.active++
	ss.s.maxActive = max(ss.s.maxActive, ss.s.active)
}

func (ss *session) end() {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if !ss.inTx {
		return
	}
	ss.inTx = false
	ss.s.active--
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	ss.s.mu.Lock()
	hook := ss.s.opts.Mail
	ss.s.mu.Unlock()
	if hook != nil {
		if e := hook(from); e != nil {
			return e
		}
	}
	ss.begin()
	ss.from = from
	ss.rcpts = nil
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	hook := ss.s.opts.Rcpt
	ss.s.mu.Unlock()
	if hook != nil {
		if e := hook(to); e != nil {
			return e
		}
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	defer ss.end()
	ss.s.mu.Lock()
	hook, delay, drop := ss.s.opts.Data, ss.s.opts.Delay, ss.s.opts.DropMidData
	ss.s.mu.Unlock()
	if drop {
		io.ReadFull(r, make([]byte, 16))
		ss.c.Conn().Close()
		return errors.New("smtpsink: dropped")
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if hook != nil {
		if e := hook(ss.from, ss.rcpts, data); e != nil {
			if e == ErrDrop {
				ss.c.Conn().Close()
			}
			return e
		}
	}
	_, isTLS := ss.c.TLSConnectionState()
	ss.s.mu.Lock()
	ss.s.count++
	if !ss.s.opts.Discard {
		ss.s.msgs = append(ss.s.msgs, Message{
			From: ss.from, To: append([]string(nil), ss.rcpts...), Data: data, Received: time.Now(), TLS: isTLS,
		})
	}
	ss.s.cond.Broadcast()
	ss.s.mu.Unlock()
	return nil
}

func (ss *session) Reset() {
	ss.end()
	ss.from, ss.rcpts = "", nil
}

func (ss *session) Logout() error {
	ss.end()
	return nil
}

// selfSigned makes an ECDSA certificate valid for names and ip, and a pool
// that trusts it.
func selfSigned(names []string, ip net.IP) (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("smtpsink: key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              names,
		IPAddresses:           []net.IP{ip},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("smtpsink: certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("smtpsink: certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
