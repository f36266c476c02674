package relay

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/console"
	"github.com/latchkey/latchkey/dnscheck"
	"github.com/latchkey/latchkey/metrics"
)

// wireMetrics makes m the relay's Observer and gives it the scrape-time
// sources: queue depth, the Salesforce outbox and API usage.
func (s *Server) wireMetrics(m *metrics.Metrics) {
	s.Metrics = m
	s.Observe = m
	m.SetQueueSource(func() []metrics.QueueDepth {
		now := s.now()
		var out []metrics.QueueDepth
		seen := map[string]bool{}
		for class, d := range s.Queue.Depth() {
			seen[class] = true
			var age time.Duration
			if !d.Oldest.IsZero() {
				age = now.Sub(d.Oldest)
			}
			out = append(out,
				metrics.QueueDepth{Class: class, State: "queued", Count: d.Live - d.InFlight, OldestAge: age},
				metrics.QueueDepth{Class: class, State: "in_flight", Count: d.InFlight, OldestAge: age})
		}
		// Empty lanes report 0 rather than vanishing from the graphs.
		for _, c := range s.Policy.Get().Classes() {
			if !seen[c.Name] {
				out = append(out, metrics.QueueDepth{Class: c.Name, State: "queued"}, metrics.QueueDepth{Class: c.Name, State: "in_flight"})
			}
		}
		return out
	})
	if s.Outbox != nil {
		m.SetOutboxSource(s.Outbox.Stats)
	}
	if s.SalesforceClient != nil {
		m.SetAPIUsageSource(s.SalesforceClient.APIUsage)
	}
	if s.Lifecycle != nil {
		m.SetLifecycleSource(func() metrics.Lifecycle {
			st := s.Lifecycle.Stats()
			return metrics.Lifecycle{Pending: st.Pending, Dead: st.Dead, Calls: st.Calls, Sent: st.Sent, Throttled: st.Throttled}
		})
	}
	m.SetCertSource(func() time.Time {
		if c := s.certInService(); c != nil {
			return c.NotAfter
		}
		return time.Time{}
	})
	s.OnDNS = func(rep *dnscheck.Report) {
		rs := make([]metrics.DNSResult, 0, len(rep.Checks))
		for _, c := range rep.Checks {
			d := c.Domain
			if d == "" {
				d = s.cfg.Hostname
			}
			rs = append(rs, metrics.DNSResult{Domain: d, Check: c.Check, Status: string(c.Status)})
		}
		m.SetDNSResults(rs)
	}
}

// ready says whether the relay can take mail: listeners up, queue open.
func (s *Server) ready() error {
	if !s.started.Load() {
		return errors.New("relay not started (or shutting down)")
	}
	return nil
}

// startAdmin serves the admin HTTP API: probes, /metrics and /api/v1/…
// behind the bearer token.
func (s *Server) startAdmin(ctx context.Context) error {
	addr := s.cfg.Admin.Listen
	if addr == "" {
		return nil
	}
	extra := map[string]http.Handler{
		"GET /api/v1/dns":     http.HandlerFunc(s.serveDNSStatus),
		"GET /api/v1/stats":   StatsHandler(s.Store.DB, s.Policy.Get),
		"GET /api/v1/cluster": http.HandlerFunc(s.serveClusterStatus),
	}
	if s.Metrics != nil {
		extra["GET /metrics"] = s.Metrics.Handler()
	}
	h := admin.Handler(admin.Options{
		Token: string(s.adminToken), Queue: s.Queue, Store: s.Store, AuditKey: s.auditKey, Outbox: s.Outbox, Lifecycle: s.Lifecycle,
		Ready: s.ready, Extra: extra, Log: s.log.With().Str("component", "admin").Logger(),
	})
	if s.cfg.Admin.Console {
		users := ""
		if f := s.cfg.Admin.ConsoleUsersFile; f != "" {
			users = s.cfg.Path(f)
		}
		c, err := console.New(console.Options{API: h, Token: string(s.adminToken), UsersFile: users,
			Secure: s.cfg.Admin.ConsoleSecureCookie, Log: s.log.With().Str("component", "console").Logger(),
			CertNotAfter: func() time.Time {
				if c := s.certInService(); c != nil {
					return c.NotAfter
				}
				return time.Time{}
			}})
		if err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		h = console.Mount(h, c)
		s.background(func() { c.Warm(ctx) })
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("relay: admin listen %s: %w", addr, err)
	}
	s.AdminAddr = l.Addr()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	s.adminSrv = srv
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("admin API stopped")
		}
	}()
	return nil
}

func (s *Server) serveDNSStatus(w http.ResponseWriter, r *http.Request) {
	rep, at := s.DNS.Last()
	w.Header().Set("Content-Type", "application/json")
	if rep == nil {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"error": "no DNS check has completed yet"})
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"checked_at": at.UTC(), "checks": rep.Checks, "exit_code": rep.ExitCode()})
}

// anchorAudit logs the audit chain head (sequence number and hash) at start
// and every interval. The log leaves the host (journald, a log shipper):
// someone who later puts an old signed head back from a backup to hide the
// events after it is caught by comparing `latchkey audit verify`'s head
// with these lines, which the head's signature alone cannot do.
func (s *Server) anchorAudit(ctx context.Context, every time.Duration) {
	if s.Store.Audit == nil || s.auditKey == nil {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if seq, hash, err := audit.SignedHead(s.Store.DB, s.auditKey); err != nil {
			s.log.Error().Err(err).Msg("audit chain head: cannot read it")
		} else {
			s.log.Info().Uint64("seq", seq).Str("hash", hex.EncodeToString(hash)).Msg("audit chain head")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pruneAudit deletes audit events older than the retention, at start and
// daily; the chain stays verifiable from a signed checkpoint.
func (s *Server) pruneAudit(ctx context.Context) {
	keep := s.cfg.Audit.Retention
	if keep <= 0 || s.auditKey == nil {
		return
	}
	for {
		n, err := audit.Prune(s.Store.DB, s.auditKey, s.now().Add(-keep))
		if err != nil {
			s.log.Error().Err(err).Msg("audit retention: pruning failed; will retry")
		} else if n > 0 {
			s.log.Info().Int("events", n).Dur("retention", keep).Msg("audit retention: pruned old events")
		}
		t := time.NewTimer(24 * time.Hour)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
