package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/relay"
	"github.com/latchkey/latchkey/salesforce"
)

// The operator commands (queue, suppress, audit, outbox) all talk to the
// admin API. With a relay running they call its admin listener over HTTP;
// with it stopped they open the database themselves and serve the same API
// in process. Badger allows one process at a time, so this is the only way
// the commands can work in both cases, and one code path serves both.

// adminTokenEnv overrides the token file.
const adminTokenEnv = "LATCHKEY_ADMIN_TOKEN"

// probeTimeout bounds the check for a running relay.
const probeTimeout = time.Second

// adminConn is a way to the admin API; Close releases the database when it
// was opened in process.
type adminConn struct {
	*admin.Client
	Remote bool
	close  func() error
}

func (c *adminConn) Close() error { return c.close() }

// adminToken reads the admin API's bearer token: the environment variable,
// else the configured token file (default admin.token in the data dir, the
// file `latchkey serve` creates).
func adminToken(cfg *conf.Config) (string, error) {
	if t := strings.TrimSpace(os.Getenv(adminTokenEnv)); t != "" {
		return t, nil
	}
	f := cfg.Admin.TokenFile
	if f == "" {
		f = "admin.token"
	}
	b, err := os.ReadFile(cfg.Path(f))
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("%s is empty", cfg.Path(f))
	}
	return t, nil
}

// probeAdmin returns the base URL of a relay's admin API that answers
// /healthz at listen, or "" when none does.
func probeAdmin(listen string) string {
	if listen == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	// A wildcard listener is reached on loopback.
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	base := "http://" + net.JoinHostPort(host, port)
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
	if err != nil {
		return ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return base
}

// connectAdmin returns the way to the admin API for cfg.
func connectAdmin(cfg *conf.Config) (*adminConn, error) {
	if base := probeAdmin(cfg.Admin.Listen); base != "" {
		tok, err := adminToken(cfg)
		if err != nil {
			return nil, fmt.Errorf("the relay is running but its admin token cannot be read (set %s): %w", adminTokenEnv, err)
		}
		return &adminConn{Client: &admin.Client{BaseURL: base, Token: tok, HTTP: &http.Client{}}, Remote: true,
			close: func() error { return nil }}, nil
	}
	return openLocal(cfg)
}

// openLocal opens the database (the relay is stopped) and serves the admin
// API in process over it, as the relay would.
func openLocal(cfg *conf.Config) (*adminConn, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	// The same key file (created the same way) as the relay's boot, so that
	// events written here continue the relay's chain.
	keyFile := cfg.Audit.KeyFile
	if keyFile == "" {
		keyFile = "audit.key"
	}
	key, err := relay.EnsureSecret(cfg.Path(keyFile), 32)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	nop := zerolog.Nop()
	dir := filepath.Join(cfg.DataDir, "db")
	st, err := queue.OpenStore(dir, nop)
	if err != nil {
		where := "nothing answers at admin.listen"
		if cfg.Admin.Listen != "" {
			where = "nothing answers at " + cfg.Admin.Listen
		}
		return nil, fmt.Errorf("cannot open the database %s (%s; is a relay running with another admin address?): %w", dir, where, err)
	}
	readOnly := false
	if st.Audit, err = audit.Open(st.DB, key); errors.Is(err, audit.ErrBadKey) {
		// The chain head does not verify (forged, or another key): nothing
		// may be appended, but the auditor must still be able to read and
		// verify the trail. Serve reads only.
		st.Audit, readOnly = nil, true
	} else if err != nil {
		st.Close()
		return nil, err
	} else if from, _ := st.Audit.UnsignedTail(); from != 0 {
		// Events after the signed head: the relay records that at its
		// next start; a change made here first would hide where they end.
		st.Audit, readOnly = nil, true
	}
	q, err := queue.New(st, nop)
	if err != nil {
		st.Close()
		return nil, err
	}
	var ob *salesforce.Outbox
	if cfg.Salesforce.Enabled {
		// No client: listing and retrying only move items between states;
		// the relay's worker sends them when it runs.
		ob = salesforce.NewOutbox(st.DB, nil, salesforce.OutboxOptions{})
	}
	var lc *salesforce.Lifecycle
	if cfg.Salesforce.Enabled && cfg.Salesforce.Lifecycle.Enabled {
		lc = salesforce.NewLifecycle(st.DB, nil, cfg.Salesforce.Lifecycle, zerolog.Nop()) // read only: stats and dead records
	}
	var raw [16]byte
	rand.Read(raw[:])
	tok := hex.EncodeToString(raw[:])
	extra := map[string]http.Handler{}
	if pol, err := relay.LoadPolicy(cfg); err == nil {
		extra["GET /api/v1/stats"] = relay.StatsHandler(st.DB, pol.Get)
	}
	h := admin.Handler(admin.Options{Token: tok, Queue: q, Store: st, AuditKey: key, Outbox: ob, Lifecycle: lc, Log: nop, Extra: extra})
	if readOnly {
		h = readOnlyHandler(h)
	}
	return &adminConn{
		Client: &admin.Client{BaseURL: "http://latchkey.invalid", Token: tok, HTTP: &http.Client{Transport: admin.Transport(h)}},
		close:  st.Close,
	}, nil
}

// readOnlyHandler serves only reads: the database's audit chain head does
// not verify, so a change would be made without its audit event.
func readOnlyHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]string{"error": "the audit trail does not verify (its chain head is forged or signed " +
				"with another key, or events follow it): read-only; run `latchkey audit verify`"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// parseInterspersed parses flags that may come before or after the
// positional arguments (`audit show ID -json`).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// opCmd is the shared frame of an operator command: flags (with -config),
// a connection, and errors printed as "latchkey NAME: message".
type opCmd struct {
	name   string
	fs     *flag.FlagSet
	config *string
	stdout io.Writer
	stderr io.Writer
}

func newOp(name string, stdout, stderr io.Writer) *opCmd {
	fs := newFlags(name, stderr)
	return &opCmd{name: name, fs: fs, config: fs.String("config", "", "configuration file"), stdout: stdout, stderr: stderr}
}

// parse parses args and checks the number of positional arguments; usage
// is printed (and false returned) when they do not fit.
func (c *opCmd) parse(args []string, nargs int, usage string) ([]string, bool) {
	pos, err := parseInterspersed(c.fs, args)
	if err != nil {
		return nil, false
	}
	if len(pos) != nargs {
		fmt.Fprintf(c.stderr, "usage: latchkey %s %s\n", c.name, usage)
		return nil, false
	}
	return pos, true
}

// connect loads the configuration and connects; run calls fn with the
// connection and turns its error into the exit status.
func (c *opCmd) run(fn func(ctx context.Context, a *adminConn) error) int {
	cfg, ok := loadConfig(*c.config, c.stderr)
	if !ok {
		return 2
	}
	a, err := connectAdmin(cfg)
	if err != nil {
		c.fail(err)
		return 1
	}
	defer a.Close()
	if err := fn(context.Background(), a); err != nil {
		if !errors.Is(err, errReported) {
			c.fail(err)
		}
		return 1
	}
	return 0
}

// errReported is returned by a command that printed its failure itself.
var errReported = errors.New("reported")

func (c *opCmd) fail(err error) {
	fmt.Fprintf(c.stderr, "latchkey %s: %v\n", c.name, err)
}

// parseWhen reads a time: RFC 3339, or a duration meaning that long ago.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration", s)
	}
	return t, nil
}
