package sftest

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/latchkey/latchkey/salesforce"
)

// ClientConfig returns an enabled client-credentials configuration pointing
// at the fake, with the consumer key and secret written to files in dir.
func (s *Server) ClientConfig(dir string) (salesforce.Config, error) {
	cfg := salesforce.DefaultConfig()
	cfg.Enabled = true
	cfg.MyDomainURL = s.URL
	cfg.ClientIDFile = filepath.Join(dir, "sf-client-id")
	cfg.ClientSecretFile = filepath.Join(dir, "sf-client-secret")
	if err := os.WriteFile(cfg.ClientIDFile, []byte(s.opts.ClientID+"\n"), 0o600); err != nil {
		return cfg, fmt.Errorf("sftest: %w", err)
	}
	if err := os.WriteFile(cfg.ClientSecretFile, []byte(s.opts.ClientSecret+"\n"), 0o600); err != nil {
		return cfg, fmt.Errorf("sftest: %w", err)
	}
	return cfg, nil
}
