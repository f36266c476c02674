package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"time"

	"github.com/latchkey/latchkey/acmecert"
)

// ACMETuning adjusts the ACME renewal schedule; tests set it to see a
// renewal within seconds. Zero values keep the production defaults.
type ACMETuning struct {
	RenewCheckEvery time.Duration
	RenewWindow     float64
	NoARI           bool
}

// acmeStartTimeout bounds the wait for a first certificate at start; after
// it the listeners open with the fallback certificate and the ACME client
// keeps trying in the background.
const acmeStartTimeout = time.Minute

// newACME makes the ACME manager of [tls.acme]; the certificate reloader
// serves its certificate first and the files' (or the self-signed one) until
// it has one.
func (s *Server) newACME(t ACMETuning) error {
	c := s.cfg
	m, err := acmecert.New(c.TLS.ACME, acmecert.Options{
		Hostname: c.Hostname, Dir: c.Path("acme"), Log: s.log.With().Str("component", "acme").Logger(),
		RenewCheckEvery: t.RenewCheckEvery, RenewWindow: t.RenewWindow, NoARI: t.NoARI,
		OnRenewal: func(renewal bool, err error) {
			if m := s.Metrics; m != nil {
				m.ACMEAttempt(renewal, err)
			}
		},
	})
	if err != nil {
		return err
	}
	s.acme = m
	s.certs.acme = m
	return nil
}

// startACME loads or obtains the certificate before the listeners open. An
// error is a configuration ACME cannot work with; a CA that does not answer
// is not one (the fallback certificate is served meanwhile).
func (s *Server) startACME(ctx context.Context) error {
	if !s.cfg.TLS.ACME.Enabled {
		return nil
	}
	if err := s.newACME(s.ACME); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, acmeStartTimeout)
	defer cancel()
	if err := s.acme.Start(ctx); err != nil {
		s.log.Error().Err(err).Strs("names", s.acme.Names()).
			Msg("ACME: no certificate yet; STARTTLS serves the fallback certificate (Salesforce's RequiredVerify refuses it) until one is obtained")
		return nil
	}
	if leaf := s.acme.Certificate(); leaf != nil {
		s.log.Info().Strs("names", s.acme.Names()).Time("not_after", leaf.NotAfter).Str("issuer", leaf.Issuer.CommonName).
			Msg("ACME: certificate in service")
	}
	return nil
}

// certInService is the certificate the listeners serve to a client
// without SNI, for metrics and the console.
func (s *Server) certInService() *x509.Certificate {
	c, _ := s.certs.getCertificate(&tls.ClientHelloInfo{})
	if c == nil || len(c.Certificate) == 0 {
		return nil
	}
	if c.Leaf != nil {
		return c.Leaf
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}
