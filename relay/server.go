// Package relay wires latchkey together: the SMTP submission listener that
// Salesforce Email Relay connects to, the inbound listener that receives
// bounces at the signed VERP addresses, and the delivery handler that the
// queue's workers call.
//
// One accepted message goes: Session.Data → checks (smuggling, From domain,
// org id) → policy.Classify → Received and Message-ID prepended → dkim.Sign →
// queue.Enqueue (durable, with its audit events) → 250. Delivery: a class
// lane's worker → Server.Deliver → deliver.Deliverer → an Outcome the queue
// commits.
package relay

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/acmecert"
	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/cluster"
	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/deliver"
	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/dnscheck"
	"github.com/latchkey/latchkey/metrics"
	"github.com/latchkey/latchkey/policy"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce"
)

// Server is a running relay.
type Server struct {
	cfg     *conf.Config
	log     zerolog.Logger
	Store   *queue.Store
	Queue   *queue.Queue
	Keys    *dkim.Keyring
	Policy  *policy.Store
	verpKey []byte

	users *users
	fails *failLimiter
	certs *certReloader
	acme  *acmecert.Manager // nil unless [tls.acme] enabled
	// ACME tunes the [tls.acme] renewal schedule; set before Start (tests).
	ACME ACMETuning

	delivMu    sync.RWMutex
	deliverers map[string]*deliver.Deliverer // one per class lane; a reload may add one

	// BackupLookup finds a recipient's backup address when the message does
	// not carry one (Salesforce supplies it); nil means header only.
	BackupLookup func(ctx context.Context, email string) (string, error)
	// Escalate, when set, is called inside the transaction that records an
	// outcome needing escalation (the Salesforce outbox).
	Escalate func(tx *queue.Tx, e Escalation) error

	// Outbox and SalesforceClient are set when [salesforce] is enabled.
	Outbox           *salesforce.Outbox
	SalesforceClient *salesforce.Client
	// RecordBounce, when Salesforce is on, records a hard bounce of the
	// primary address on its Contact or Lead when the reset goes on to a
	// backup address (no Case: support need not act).
	RecordBounce func(tx *queue.Tx, it *queue.Item, status, reason, remote, text string) error
	// Lifecycle reports every reset to its Latchkey_Reset__c record ([salesforce.lifecycle]).
	Lifecycle *salesforce.Lifecycle
	// Cluster is this node's membership of [cluster] (nil on one node).
	Cluster *cluster.Node
	// sharedFP is what shareConfig last stored in the cluster, and
	// loggedDiffs what it last logged as differing (one goroutine at a
	// time: at join, then shareConfigEvery).
	sharedFP    map[string]string
	loggedDiffs string
	sfLog       zerolog.Logger // the Salesforce component's log

	// Hooks for metrics; nil is fine.
	Observe Observer
	// DNS holds the latest background DNS check; OnDNS, when set, gets
	// each new report (metrics).
	DNS   DNSStatus
	OnDNS func(*dnscheck.Report)
	// DNSCheckEvery is the background DNS check's period; 0 turns it off.
	DNSCheckEvery time.Duration
	// Metrics is set by Boot (nil in a relay built with New alone).
	Metrics *metrics.Metrics
	// AdminAddr is the admin API's address once started.
	AdminAddr  net.Addr
	adminSrv   *http.Server
	adminToken []byte
	auditKey   []byte
	started    atomic.Bool

	subs     []*smtp.Server
	inbounds []*smtp.Server
	// SubmissionAddrs and InboundAddrs are the addresses listened on.
	SubmissionAddrs []net.Addr
	InboundAddrs    []net.Addr

	conns sync.Map // remote address → *trackedConn

	// bg tracks the background loops (outbox, DNS checks, audit pruning,
	// calibration, policy watch): Close ends them and waits, so that none
	// is still reading the database when the caller closes it.
	bg       sync.WaitGroup
	bgCancel context.CancelFunc
	now      func() time.Time
}

// Escalation is a reset that needs a human: handed to Server.Escalate.
type Escalation struct {
	Trigger string // hard_bounce | expired | suppressed
	Item    *queue.Item
	Reason  string
	Status  string
	Remote  string
	Text    string
}

// Observer receives events for metrics (package metrics implements it).
type Observer interface {
	Session()
	Rejected(reason string)
	AuthFailed()
	Signed(d time.Duration)
	// Held is a 250 held back because the class's delivery backlog was
	// full, for d; late says the backlog was still full when it was sent.
	Held(class string, d time.Duration, late bool)
	// Attempt is one delivery attempt: delivered, temporary, permanent or
	// error (no reply).
	Attempt(class, result string)
	// Outcome is a final state (delivered, bounced, expired, superseded,
	// dropped) with the time since acceptance, or "escalated", after commit.
	Outcome(class, state, reason string, latency time.Duration)
}

// Options are what New needs besides the configuration.
type Options struct {
	Config *conf.Config
	Log    zerolog.Logger
	Store  *queue.Store
	Keys   *dkim.Keyring
	Policy *policy.Store
	// VERPKey signs bounce addresses.
	VERPKey []byte
	// CertFile/KeyFile are the resolved TLS files.
	CertFile, KeyFile string
	// AdminToken is the admin API's bearer token; AuditKey the audit
	// trail's key (verification, retention checkpoints).
	AdminToken, AuditKey []byte
}

// New prepares a relay; Start opens its listeners and workers.
func New(o Options) (*Server, error) {
	s := &Server{
		cfg: o.Config, log: o.Log, Store: o.Store, Keys: o.Keys, Policy: o.Policy, verpKey: o.VERPKey,
		adminToken: o.AdminToken, auditKey: o.AuditKey,
		deliverers: map[string]*deliver.Deliverer{}, now: time.Now, DNSCheckEvery: time.Hour,
	}
	var err error
	if s.users, err = loadUsers(o.Config); err != nil {
		return nil, err
	}
	s.fails = newFailLimiter(o.Config.Submission.MaxAuthFailures, o.Config.Submission.AuthFailureWindow)
	if s.certs, err = newCertReloader(o.CertFile, o.KeyFile); err != nil {
		return nil, err
	}
	certLog := o.Log.With().Str("component", "tls").Logger()
	s.certs.log = &certLog
	if !o.Config.TLS.ACME.Enabled {
		if c := s.certs.cert; c.Leaf != nil && time.Until(c.Leaf.NotAfter) < 14*24*time.Hour {
			certLog.Warn().Str("cert", o.CertFile).Time("not_after", c.Leaf.NotAfter).Msg("TLS certificate expires within 14 days (or has expired): renew it")
		}
	}
	if s.Queue, err = queue.New(o.Store, o.Log); err != nil {
		return nil, err
	}
	if o.Config.Salesforce.Enabled {
		if err := s.connectSalesforce(); err != nil {
			return nil, err
		}
	} else if pending, dead := salesforce.NewOutbox(o.Store.DB, nil, salesforce.OutboxOptions{}).Stats(); pending+dead > 0 {
		// Escalations queued while [salesforce] was on wait for it to be
		// turned on again (and then go to whatever org is configured).
		s.log.Warn().Int("pending", pending).Int("dead", dead).
			Msg("[salesforce] is disabled but escalations wait in its outbox; they are sent when it is enabled again")
	}
	return s, nil
}

// Config returns the relay's configuration.
func (s *Server) Config() *conf.Config { return s.cfg }

// Start listens on the configured addresses and starts the delivery workers.
func (s *Server) Start(ctx context.Context) error {
	c := s.cfg
	if err := s.startACME(ctx); err != nil {
		return err
	}
	workers := map[string]int{}
	for _, cl := range s.Policy.Get().Classes() {
		workers[cl.Name] = cl.Workers
		d, err := s.newDeliverer(cl.Name)
		if err != nil {
			return err
		}
		s.delivMu.Lock()
		s.deliverers[cl.Name] = d
		s.delivMu.Unlock()
	}
	subLimit := newConnLimit(c.Submission.MaxConnections, c.Submission.MaxConnectionsPerIP)
	subTLS := s.certs.tlsConfig(c.Submission.MinTLS)
	subDoor := newDoorConfig(subTLS, c.Hostname, true, c.Submission.CommandTimeout, s.log)
	for _, addr := range c.Submission.Listen {
		srv := newSMTPServer(smtp.BackendFunc(s.newSubmission), c.Hostname, s.log)
		srv.MaxMessageBytes = c.Submission.MaxMessageBytes
		srv.MaxRecipients = c.Submission.MaxRecipients
		srv.ReadTimeout = c.Submission.CommandTimeout
		srv.WriteTimeout = c.Submission.CommandTimeout
		l, err := s.listen(addr, subLimit, subDoor)
		if err != nil {
			s.Close()
			return err
		}
		s.subs = append(s.subs, srv)
		s.SubmissionAddrs = append(s.SubmissionAddrs, l.Addr())
		go srv.Serve(l)
	}
	inLimit := newConnLimit(c.Inbound.MaxConnections, c.Inbound.MaxConnectionsPerIP)
	inTLS := s.certs.tlsConfig("1.2")
	inDoor := newDoorConfig(inTLS, c.Hostname, false, 2*time.Minute, s.log)
	for _, addr := range c.Inbound.Listen {
		srv := newSMTPServer(smtp.BackendFunc(s.newInbound), c.Hostname, s.log)
		srv.MaxMessageBytes = c.Inbound.MaxMessageBytes
		srv.MaxRecipients = 10
		srv.ReadTimeout = 2 * time.Minute
		srv.WriteTimeout = 2 * time.Minute
		l, err := s.listen(addr, inLimit, inDoor)
		if err != nil {
			s.Close()
			return err
		}
		s.inbounds = append(s.inbounds, srv)
		s.InboundAddrs = append(s.InboundAddrs, l.Addr())
		go srv.Serve(l)
	}
	if s.Observe != nil {
		s.Queue.OnFinal = s.Observe.Outcome
	}
	if s.Cluster != nil {
		s.Queue.OnFinish = s.Cluster.Done
		s.Store.OnSuppress = s.Cluster.Suppressed
	}
	s.Queue.Start(ctx, s, workers)
	bgctx, cancel := context.WithCancel(ctx)
	s.bgCancel = cancel
	if s.Cluster != nil {
		s.background(func() { s.Cluster.Run(bgctx, clusterLocal{s}) })
		s.background(func() { s.shareConfigEvery(bgctx, 30*time.Second) })
		s.background(func() {
			s.Cluster.RunCheckpoints(bgctx, func() (uint64, []byte, error) { return audit.SignedHead(s.Store.DB, s.auditKey) })
		})
	}
	if s.Outbox != nil {
		s.background(func() { s.Outbox.Run(bgctx) })
	}
	if s.Lifecycle != nil {
		s.background(func() {
			if err := s.Lifecycle.Run(bgctx); err != nil {
				s.log.Error().Err(err).Msg("salesforce lifecycle stopped")
			}
		})
	}
	if s.DNSCheckEvery > 0 {
		s.background(func() { s.watchDNS(bgctx, s.DNSCheckEvery) })
	}
	s.background(func() { s.pruneAudit(bgctx) })
	s.background(func() { s.anchorAudit(bgctx, time.Hour) })
	s.background(func() { s.calibrate(bgctx, time.Hour) })
	if err := s.startAdmin(bgctx); err != nil {
		s.Close()
		return err
	}
	s.started.Store(true)
	if s.Policy.File() != "" {
		// Edits take effect without SIGHUP too; a broken edit keeps the
		// running policy and is logged with file, line and key.
		s.background(func() {
			s.Policy.Watch(bgctx, 2*time.Second, s.policyChanged)
		})
	}
	ev := s.log.Info().Strs("submission", addrStrings(s.SubmissionAddrs)).Strs("inbound", addrStrings(s.InboundAddrs))
	if s.AdminAddr != nil {
		ev = ev.Str("admin", s.AdminAddr.String())
	}
	ev.Str("rsa_signing", dkim.RSAEngine).Msg("relay started")
	return nil
}

// background runs f in a goroutine that Close waits for.
func (s *Server) background(f func()) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f()
	}()
}

// policyChanged logs the outcome of a policy file change seen by Watch.
func (s *Server) policyChanged(_ *policy.Policy, err error) {
	if err != nil {
		s.log.Error().Err(err).Msg("policy file changed but is invalid; keeping the running policy")
		return
	}
	s.log.Info().Str("file", s.Policy.File()).Msg("policy reloaded")
	s.addLanes()
}

func addrStrings(as []net.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// Close stops listening, waits for deliveries in progress and closes the
// delivery pools. The store is the caller's to close.
func (s *Server) Close() {
	s.started.Store(false)
	if s.adminSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.adminSrv.Shutdown(ctx)
		cancel()
	}
	for _, srv := range append(s.subs, s.inbounds...) {
		srv.Close()
	}
	s.Queue.Stop()
	if s.acme != nil {
		s.acme.Stop()
	}
	if s.bgCancel != nil {
		s.bgCancel()
	}
	s.bg.Wait()
	if s.Cluster != nil {
		s.Cluster.Close()
	}
	s.delivMu.Lock()
	for _, d := range s.deliverers {
		d.Close()
	}
	s.delivMu.Unlock()
}

// newDeliverer makes the delivery pool of one class lane.
func (s *Server) newDeliverer(class string) (*deliver.Deliverer, error) {
	d, err := deliver.New(s.cfg.Delivery, s.log.With().Str("lane", class).Logger())
	if err != nil {
		return nil, fmt.Errorf("relay: delivery for class %s: %w", class, err)
	}
	d.SetSTSStore(stsStore{s.Store})
	return d, nil
}

// deliverer returns the delivery pool of class: its own, or (for a class a
// reload removed) any.
func (s *Server) deliverer(class string) *deliver.Deliverer {
	s.delivMu.RLock()
	defer s.delivMu.RUnlock()
	if d := s.deliverers[class]; d != nil {
		return d
	}
	for _, d := range s.deliverers {
		return d
	}
	return nil
}

// addLanes gives each class of the running policy that has no lane yet (a
// reload added it) its delivery pool and workers. A class removed by a
// reload keeps its lane: its queued items are delivered by it.
func (s *Server) addLanes() {
	if !s.started.Load() {
		return
	}
	for _, cl := range s.Policy.Get().Classes() {
		s.delivMu.Lock()
		_, ok := s.deliverers[cl.Name]
		if !ok && !s.started.Load() {
			// Close ran meanwhile (a SIGHUP racing shutdown): a pool made
			// now would never be closed.
			s.delivMu.Unlock()
			return
		}
		if !ok {
			d, err := s.newDeliverer(cl.Name)
			if err != nil {
				s.delivMu.Unlock()
				s.log.Error().Err(err).Str("class", cl.Name).Msg("no delivery lane for the new class")
				continue
			}
			s.deliverers[cl.Name] = d
		}
		s.delivMu.Unlock()
		if !ok {
			s.Queue.AddWorkers(cl.Name, cl.Workers)
			s.log.Info().Str("class", cl.Name).Int("workers", cl.Workers).Msg("delivery lane started for a class the policy added")
		}
	}
}

// newSMTPServer makes a go-smtp server to run behind doors: the door does
// STARTTLS (so go-smtp has no TLS configuration, and allows AUTH because the
// door refuses it before TLS) and bounds command lines (so go-smtp's line
// limit is off, and message lines of any length reach the session).
func newSMTPServer(be smtp.Backend, hostname string, log zerolog.Logger) *smtp.Server {
	srv := smtp.NewServer(be)
	srv.Domain = hostname
	srv.AllowInsecureAuth = true
	srv.MaxLineLength = 0
	srv.ErrorLog = zlogAdapter{log}
	return srv
}

// listen opens a listener whose connections are tracked (so that one can be
// closed right after its next reply, after too many failed AUTHs), limited
// by limit (shared by every address of one listener kind) and served
// through doors.
func (s *Server) listen(addr string, limit *connLimit, door *doorConfig) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("relay: listen %s: %w", addr, err)
	}
	return &trackedListener{Listener: l, s: s, limit: limit, door: door}, nil
}

type trackedListener struct {
	net.Listener
	s     *Server
	limit *connLimit
	door  *doorConfig
}

func (l *trackedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrIP(c.RemoteAddr())
		if why := l.limit.acquire(ip); why != "" {
			l.s.reject("too_many_connections")
			l.s.log.Warn().Str("client", ip.String()).Str("listener", l.Addr().String()).Msg(why)
			go turnAway(c, l.s.cfg.Hostname, why)
			continue
		}
		tc := &trackedConn{Conn: c, s: l.s, release: func() { l.limit.release(ip) }}
		l.s.conns.Store(c.RemoteAddr().String(), tc)
		return newDoor(tc, l.door), nil
	}
}

type trackedConn struct {
	net.Conn
	s         *Server
	release   func() // gives back the connection's slot
	closeNext atomic.Bool
	closed    atomic.Bool
}

func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.closeNext.Load() {
		c.Close()
	}
	return n, err
}

func (c *trackedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.s.conns.Delete(c.Conn.RemoteAddr().String())
		c.release()
	}
	return c.Conn.Close()
}

func (s *Server) tracked(c *smtp.Conn) *trackedConn {
	if v, ok := s.conns.Load(c.Conn().RemoteAddr().String()); ok {
		return v.(*trackedConn)
	}
	return nil
}

func remoteIP(c *smtp.Conn) netip.Addr { return addrIP(c.Conn().RemoteAddr()) }

// zlogAdapter routes go-smtp's own error log lines (accept errors, panics)
// to zerolog.
type zlogAdapter struct{ l zerolog.Logger }

func (z zlogAdapter) Printf(f string, v ...any) { z.l.Warn().Str("component", "smtp").Msgf(f, v...) }
func (z zlogAdapter) Println(v ...any)          { z.l.Warn().Str("component", "smtp").Msg(fmt.Sprint(v...)) }

// smtpErr builds a reply.
func smtpErr(code int, enh [3]int, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode(enh), Message: msg}
}
