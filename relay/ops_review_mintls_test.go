package relay

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// min_tls = "1.3" refuses a TLS 1.2 STARTTLS and accepts TLS 1.3.
func TestReviewMinTLSEnforced(t *testing.T) {
	e := newEnv(t, envOpts{noSink: true})
	e.stop()
	e.cfgText = strings.Replace(e.cfgText, "max_message_bytes = 65536", "max_message_bytes = 65536\nmin_tls = \"1.3\"", 1)
	e.start(nil)
	try := func(max uint16) error {
		c, err := smtp.DialStartTLS(e.submitAddr(), &tls.Config{InsecureSkipVerify: true, MaxVersion: max})
		if err != nil {
			return err
		}
		defer c.Close()
		// The handshake runs with the first command after STARTTLS.
		return c.Noop()
	}
	if err := try(tls.VersionTLS12); err == nil {
		t.Error("TLS 1.2 accepted with min_tls = 1.3")
	}
	if err := try(tls.VersionTLS13); err != nil {
		t.Errorf("TLS 1.3 refused: %v", err)
	}
}
