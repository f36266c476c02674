package relay

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/metrics"
	"github.com/latchkey/latchkey/policy"
	"github.com/latchkey/latchkey/queue"
)

// Boot prepares everything a relay needs from its configuration: the data
// directory, generated trial secrets and keys, the database, the audit log
// and the policy. It does not start listening; call Start on the result.
func Boot(cfg *conf.Config, log zerolog.Logger) (*Server, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("relay: data directory: %w", err)
	}
	created, err := dkim.EnsureKeys(cfg.KeyEntries(), 2048)
	if err != nil {
		return nil, err
	}
	for _, p := range created {
		log.Warn().Str("file", p).Msg("generated a DKIM key; publish its record (latchkey dns records) before sending real mail")
		if cfg.Cluster.Enabled {
			log.Warn().Str("file", p).Msg("[cluster]: this key is this node's alone; every node must sign with the same one: copy one node's file to the others (docs/operations.md, \"Several nodes\", step 2)")
		}
	}
	keys, err := dkim.LoadKeyring(cfg.KeyEntries())
	if err != nil {
		return nil, err
	}
	warnOpenKeys(cfg, log)
	certFile, keyFile := cfg.Path(cfg.Submission.TLSCert), cfg.Path(cfg.Submission.TLSKey)
	if cfg.Submission.TLSCert == "" {
		certFile, keyFile = cfg.Path("tls/trial-cert.pem"), cfg.Path("tls/trial-key.pem")
		made, err := EnsureSelfSigned(certFile, keyFile, cfg.Hostname)
		if err != nil {
			return nil, err
		}
		if cfg.TLS.ACME.Enabled {
			// Served only until ACME has a certificate (or if it never can).
			log.Info().Bool("created", made).Str("cert", certFile).Msg("self-signed fallback certificate ready; [tls.acme] provides the real one")
		} else {
			log.Warn().Bool("created", made).Str("cert", certFile).Msg("using a self-signed certificate: for trying latchkey out only; Salesforce's RequiredVerify needs a CA-signed one")
		}
	}
	if len(cfg.Submission.Users) == 0 && cfg.Submission.UsersFile == "" {
		pass, err := EnsureSecret(cfg.Path("trial-password"), 12)
		if err != nil {
			return nil, err
		}
		hash, err := bcrypt.GenerateFromPassword(pass, bcrypt.DefaultCost)
		if err != nil {
			return nil, err
		}
		cfg.Submission.Users = []conf.User{{Name: "relay", PasswordHash: string(hash)}}
		log.Warn().Str("user", "relay").Str("password_file", cfg.Path("trial-password")).Msg("no users configured: trial user created")
	}
	verpFile := cfg.VERP.KeyFile
	if verpFile == "" {
		verpFile = "verp.key"
	}
	_, missing := os.Stat(cfg.Path(verpFile))
	verpKey, err := EnsureSecret(cfg.Path(verpFile), 32)
	if err != nil {
		return nil, err
	}
	if missing != nil && cfg.Cluster.Enabled {
		// A bounce comes back to any node; only the key that signed its
		// address recognises it.
		log.Warn().Str("file", cfg.Path(verpFile)).Msg("[cluster]: generated a VERP key of this node's own; every node must have the same one: copy one node's file to the others (docs/operations.md, \"Several nodes\", step 2)")
	}
	auditFile := cfg.Audit.KeyFile
	if auditFile == "" {
		auditFile = "audit.key"
	}
	auditKey, err := EnsureSecret(cfg.Path(auditFile), 32)
	if err != nil {
		return nil, err
	}
	adminFile := cfg.Admin.TokenFile
	if adminFile == "" {
		adminFile = "admin.token"
	}
	var adminToken []byte
	if cfg.Admin.Listen != "" {
		if adminToken, err = EnsureSecret(cfg.Path(adminFile), 32); err != nil {
			return nil, err
		}
	}
	pol, err := LoadPolicy(cfg)
	if err != nil {
		return nil, err
	}
	store, err := queue.OpenStore(filepath.Join(cfg.DataDir, "db"), log)
	if err != nil {
		return nil, err
	}
	if store.Audit, err = audit.Open(store.DB, auditKey); err != nil {
		store.Close()
		return nil, err
	}
	if ev := store.Audit.IntegrityEvent(); ev != nil {
		// Tampering found: record it in the trail before anything else
		// (Verify reports it on every run from now on), and start anyway:
		// refusing would stop password resets, which is what an attacker
		// who can write the database but not forge the head would want.
		from, to := store.Audit.UnsignedTail()
		log.Error().Uint64("from_seq", from).Uint64("to_seq", to).
			Msg("audit trail: events after the signed chain head were not written by latchkey (tampering or damage); recorded as an integrity event; run `latchkey audit verify`")
		if err := store.Update(func(tx *queue.Tx) error { return tx.Audit(ev) }); err != nil {
			store.Close()
			return nil, fmt.Errorf("relay: recording the audit integrity problem: %w", err)
		}
	}
	s, err := New(Options{Config: cfg, Log: log, Store: store, Keys: keys, Policy: pol, VERPKey: verpKey,
		CertFile: certFile, KeyFile: keyFile, AdminToken: adminToken, AuditKey: auditKey})
	if err != nil {
		store.Close()
		return nil, err
	}
	if cfg.Cluster.Enabled {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		err := s.joinCluster(ctx)
		cancel()
		if err != nil {
			if s.Cluster != nil {
				s.Cluster.Close()
			}
			store.Close()
			return nil, err
		}
	}
	s.wireMetrics(metrics.New())
	if md := cfg.Delivery.Maildir; md != "" {
		// Nothing leaves the machine, so the published records do not
		// matter yet: nine FAIL lines would only alarm a newcomer.
		s.DNSCheckEvery = 0
		ev := log.Info()
		if !cfg.Trial {
			ev = log.Warn() // a real configuration that sends no mail out
		}
		ev.Str("maildir", filepath.Join(md, "new")).
			Msg("mail is delivered to the local maildir, not to the recipients' servers; DNS check off (latchkey dns records prints what to publish before real delivery)")
	}
	return s, nil
}

// LoadPolicy reads the configured policy file, or the shipped one.
func LoadPolicy(cfg *conf.Config) (*policy.Store, error) {
	if cfg.PolicyFile == "" {
		p, err := policy.Parse("(embedded) policy.toml", conf.DefaultPolicy)
		if err != nil {
			return nil, err
		}
		return policy.NewStore("", p), nil
	}
	return policy.Open(cfg.PolicyFile)
}

// Shutdown stops the relay and closes its database.
func (s *Server) Shutdown() error {
	s.Close()
	return s.Store.Close()
}

// Run starts s and blocks until ctx ends, then shuts it down.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		s.Store.Close()
		return err
	}
	<-ctx.Done()
	return s.Shutdown()
}

// Reload re-reads the policy file and the DKIM keys (SIGHUP). A broken file
// keeps what is running; the error is logged with file, line and key.
func (s *Server) Reload() {
	if s.Policy.File() != "" {
		if err := s.Policy.Reload(); err != nil {
			s.log.Error().Err(err).Msg("policy reload failed; keeping the running policy")
		} else {
			s.log.Info().Str("file", s.Policy.File()).Msg("policy reloaded")
			s.addLanes()
		}
	}
	if err := s.Keys.Reload(); err != nil {
		s.log.Error().Err(err).Msg("DKIM key reload failed; keeping the loaded keys")
	} else {
		s.log.Info().Msg("DKIM keys reloaded")
	}
}

// warnOpenKeys warns about secret files that other users can read: a DKIM
// key lets anyone sign mail as the domain (OpenDKIM refuses to start with
// one). A warning, not a refusal: a relay that does not start sends no
// reset at all.
func warnOpenKeys(cfg *conf.Config, log zerolog.Logger) {
	for _, k := range cfg.KeyEntries() {
		if fi, err := os.Stat(k.KeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn().Str("file", k.KeyFile).Str("mode", fi.Mode().Perm().String()).
				Msg("DKIM private key is readable by other users; chmod 600 it")
		}
	}
}
