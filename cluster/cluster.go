// Package cluster lets several latchkey nodes share what must be decided
// once for all of them, on NATS JetStream: an accepted message is stored on
// a quorum of replicas before the 250, so that another node can deliver it
// when the one that took it dies; and the reset rules (supersede, dedupe,
// per-recipient rate limits) are decided with compare-and-set in
// JetStream's key-value buckets, so that a newer reset accepted on node B
// supersedes the older one queued on node A.
//
// Each node keeps its own Badger queue and audit chain and delivers what it
// accepted (the single-node code path, unchanged). The cluster adds, around
// it: the intake stream (every accepted message, by node), the done bucket
// (every item that reached a final state), the heartbeats, and adoption: a
// node whose heartbeat stops is adopted by one survivor, which queues every
// item of it not recorded done and delivers them (at least once: an item
// delivered in the moment before the node died is delivered again, and
// counted). See docs/architecture.md, "Several nodes".
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Config is the [cluster] table of latchkey.toml.
type Config struct {
	Enabled bool `toml:"enabled"`
	// Node is this node's name, unique in the cluster (default: hostname).
	Node string `toml:"node"`
	// Listen is the embedded NATS server's route address, where the
	// other nodes connect.
	Listen string `toml:"listen"`
	// Peers are the other nodes' route addresses (host:port).
	Peers []string `toml:"peers"`
	// Replicas is how many nodes store each message before the 250.
	Replicas int `toml:"replicas"`
	// SecretFile holds the shared secret the nodes' routes authenticate
	// with (and, with External, the NATS password as user:password).
	SecretFile string `toml:"secret_file"`
	// External, when not empty, are the client URLs of an external NATS
	// cluster to use instead of the embedded server.
	External []string `toml:"external"`
	// TLSCert and TLSKey are this node's route certificate and key (PEM
	// files; relative paths are in data_dir), TLSCA the CA bundle the other nodes'
	// certificates must chain to. With the three, the routes are TLS 1.2
	// or later and each side verifies the other's certificate; the
	// certificate must name the host the other nodes dial in their peers.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	TLSCA   string `toml:"tls_ca"`
	// Retention is how long the intake stream keeps a message: longer than
	// any class's deadline.
	Retention time.Duration `toml:"retention"`
	// Heartbeat is how often a node says it is alive; DeadAfter how long
	// without a heartbeat before a survivor adopts its queue.
	Heartbeat time.Duration `toml:"heartbeat"`
	DeadAfter time.Duration `toml:"dead_after"`
}

// Defaults fills what the file left out.
func (c *Config) Defaults(hostname string) {
	if c.Node == "" {
		c.Node, _, _ = strings.Cut(hostname, ".")
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.Retention == 0 {
		c.Retention = 96 * time.Hour
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 2 * time.Second
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = 10 * time.Second
	}
}

// Validate reports what is wrong with an enabled configuration, one
// "key: problem" error per problem (keys relative to [cluster]).
func (c *Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	add := func(k, f string, a ...any) { errs = append(errs, fmt.Errorf("%s: %s", k, fmt.Sprintf(f, a...))) }
	if !nodeNameRe(c.Node) {
		add("node", "must be letters, digits, '-' or '_' (at most 64), got %q", c.Node)
	}
	if len(c.External) == 0 {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			add("listen", "%q is not host:port", c.Listen)
		}
		for i, peer := range c.Peers {
			if _, _, err := net.SplitHostPort(peer); err != nil {
				add(fmt.Sprintf("peers.%d", i), "%q is not host:port", peer)
			}
		}
		if len(c.Peers) == 0 {
			// JetStream refuses a cluster without routes, and a node
			// alone would only add round trips to the single-node mode.
			add("peers", "empty: list the other nodes' route addresses (a cluster needs two nodes or more), or set enabled = false for one node")
		}
		if c.Replicas > len(c.Peers)+1 {
			add("replicas", "%d replicas need at least %d nodes; %d are listed (this one and cluster.peers)", c.Replicas, c.Replicas, len(c.Peers)+1)
		}
	}
	for i, u := range c.External {
		if pu, err := url.Parse(u); err != nil || pu.Host == "" {
			add(fmt.Sprintf("external.%d", i), "%q is not a NATS URL (nats://host:port)", u)
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		add("replicas", "must be 1 to 5, got %d", c.Replicas)
	}
	tlsKeys := []struct{ k, v string }{{"tls_cert", c.TLSCert}, {"tls_key", c.TLSKey}, {"tls_ca", c.TLSCA}}
	var set []string
	for _, f := range tlsKeys {
		if f.v != "" {
			set = append(set, f.k)
		}
	}
	for _, f := range tlsKeys {
		switch {
		case len(set) == 0:
		case len(c.External) > 0 && f.v != "":
			add(f.k, "does not apply with external (it is for the embedded server's routes; for TLS to the external cluster, use tls:// URLs)")
		case len(c.External) > 0:
		case f.v == "":
			add(f.k, "is needed with %s", strings.Join(set, " and "))
		}
	}
	if c.SecretFile == "" {
		add("secret_file", "is needed: the nodes authenticate each other with the secret in it")
	}
	if c.DeadAfter < 3*c.Heartbeat {
		add("dead_after", "must be at least three heartbeats (%v), got %v", 3*c.Heartbeat, c.DeadAfter)
	}
	return errors.Join(errs...)
}

func nodeNameRe(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Names of the stream and buckets.
const (
	streamIntake = "LK_INTAKE"
	subjIntake   = "lk.intake."
	// The items a node adopted, stored again under its name, so that a
	// node adopting it adopts them too.
	streamAdopted = "LK_ADOPTED"
	subjAdopted   = "lk.adopted."
	bucketDone    = "lk_done"
	bucketNewest  = "lk_newest"
	bucketDedupe  = "lk_dedupe"
	bucketRate    = "lk_rate"
	bucketAlive   = "lk_alive"
	bucketMember  = "lk_members"
	bucketAdopt   = "lk_adopt"
	bucketSupp    = "lk_suppress"
	bucketOutbox  = "lk_outbox"
	bucketShared  = "lk_shared"
)

// Node is this latchkey's member of the cluster.
type Node struct {
	cfg Config
	log zerolog.Logger
	ns  *server.Server // nil in external mode
	nc  *nats.Conn
	js  jetstream.JetStream

	done, newest, dedupe, rate, alive, members, adopt, suppress, outbox, shared jetstream.KeyValue

	// incarnation names this run of the node: adoption takes over one
	// incarnation's queue, so that a node restarted in time keeps its own.
	incarnation string
	prev        string // the incarnation before this one ("" on a new node)
	dir         string

	beats atomic.Int64 // heartbeats stored by this run

	// publishIntake stores an accepted message in the intake stream
	// (a test makes it time out after storing).
	publishIntake func(ctx context.Context, msg *nats.Msg, msgID string) error

	mu      sync.Mutex
	pending map[string]string // item id → state: done records not yet stored
	escs    map[string]*escOp // escalation id → change not yet stored
	holds   map[string]int    // item id → escalations being committed
	flush   chan struct{}
	stats   Stats
}

// Stats are the cluster's counters for this node.
type Stats struct {
	Adopted      int // items queued here from a dead node's intake
	HandedOver   int // items of this node's previous run that a survivor adopted
	Superseded   int // items ended here because a newer reset was accepted elsewhere
	Deduplicated int // submissions answered as duplicates of one another node took
	// EscalationsAdopted are Salesforce escalations taken over from a
	// dead node's outbox.
	EscalationsAdopted int
}

// Start joins the cluster: it starts the embedded NATS server (or connects
// to the external one), waits until JetStream answers, and makes sure the
// stream and buckets exist. dir is where the embedded server keeps its
// store and this node its incarnation file.
func Start(ctx context.Context, cfg Config, dir string, log zerolog.Logger) (*Node, error) {
	n := &Node{cfg: cfg, log: log.With().Str("component", "cluster").Logger(), dir: dir, pending: map[string]string{}, escs: map[string]*escOp{}, holds: map[string]int{}, flush: make(chan struct{}, 1)}
	secret, err := readSecret(cfg.SecretFile)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	var opts []nats.Option
	opts = append(opts, nats.Name("latchkey "+cfg.Node), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	urls := strings.Join(cfg.External, ",")
	if len(cfg.External) == 0 {
		n.ns, err = startServer(cfg, dir, secret, n.log)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.InProcessServer(n.ns), nats.UserInfo("latchkey", secret))
		urls = n.ns.ClientURL()
	} else if user, pass, ok := strings.Cut(secret, ":"); ok {
		opts = append(opts, nats.UserInfo(user, pass))
	}
	n.nc, err = nats.Connect(urls, opts...)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: connect to NATS: %w", err)
	}
	n.js, err = jetstream.New(n.nc)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := n.setup(ctx); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.join(ctx); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// readSecret reads the shared secret, refusing an empty or short one.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cluster: secret_file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 {
		return "", fmt.Errorf("cluster: secret_file %s: want at least 16 characters, got %d", path, len(s))
	}
	return s, nil
}

// startServer starts the embedded NATS server: JetStream on, routes to
// the peers authenticated with the shared secret (and mutual TLS with
// tls_cert, tls_key and tls_ca), latchkey connected in process.
func startServer(cfg Config, dir, secret string, log zerolog.Logger) (*server.Server, error) {
	host, portStr, _ := net.SplitHostPort(cfg.Listen)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen %q: %w", cfg.Listen, err)
	}
	var routes []*url.URL
	for _, p := range cfg.Peers {
		routes = append(routes, &url.URL{Scheme: "nats", User: url.UserPassword("latchkey", secret), Host: p})
	}
	opts := &server.Options{
		ServerName: cfg.Node,
		// The client port is needed (routing waits for it) but only this
		// process uses it, in process: a random loopback port behind
		// the secret.
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		Username: "latchkey", Password: secret,
		JetStream: true,
		StoreDir:  filepath.Join(dir, "jetstream"),
		// The stored messages hold live reset links: encrypted at rest,
		// as Badger is.
		JetStreamKey: secret,
		Cluster: server.ClusterOpts{
			Name: "latchkey", Host: host, Port: port,
			Username: "latchkey", Password: secret,
			ConnectRetries: -1,
		},
		Routes: routes,
		NoSigs: true,
		NoLog:  true,
	}
	if cfg.TLSCert != "" {
		// The routes stay nats:// URLs: a route's TLS handshake comes
		// first on the connection, whatever the scheme.
		opts.Cluster.TLSConfig, err = routeTLS(cfg, log)
		if err != nil {
			return nil, err
		}
		opts.Cluster.TLSTimeout = 5 // seconds, for the handshake
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("cluster: NATS server: %w", err)
	}
	nl := natsLogger{l: log, fatal: make(chan string, 1)}
	ns.SetLoggerV2(nl, false, false, false)
	go ns.Start()
	ready := make(chan bool, 1)
	go func() { ready <- ns.ReadyForConnections(30 * time.Second) }()
	// A server that cannot start says why on its log (a port taken,
	// JetStream refusing its configuration) and never gets ready: that
	// reason is the error, at once, not "not ready" after 30 s.
	select {
	case ok := <-ready:
		if ok {
			return ns, nil
		}
		ns.Shutdown()
		return nil, fmt.Errorf("cluster: NATS server on %s not ready within 30s", cfg.Listen)
	case why := <-nl.fatal:
		// ready comes in its time, to nobody (it is buffered).
		ns.Shutdown()
		return nil, fmt.Errorf("cluster: NATS server on %s: %s", cfg.Listen, why)
	}
}

// routeTLS makes the routes' TLS configuration: this node's certificate,
// presented both when it accepts a route and when it dials one, and the CA
// pool every peer's certificate must chain to, in both directions (as
// nats-server does for cluster { tls { verify: true } }). It checks the
// node's own certificate against the pool first, so that a certificate
// the peers would refuse is an error here rather than a cluster that never
// forms.
func routeTLS(cfg Config, log zerolog.Logger) (*tls.Config, error) {
	certPEM, err := os.ReadFile(cfg.TLSCert)
	if err != nil {
		return nil, fmt.Errorf("cluster: tls_cert: %w", err)
	}
	keyPEM, err := os.ReadFile(cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("cluster: tls_key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster: tls_cert %s, tls_key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
	}
	caPEM, err := os.ReadFile(cfg.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("cluster: tls_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cluster: tls_ca %s: no PEM certificate in it", cfg.TLSCA)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("cluster: tls_cert %s: %w", cfg.TLSCert, err)
		}
		inter.AddCert(c)
	}
	// A route's certificate serves both ends: the dialled node's as a
	// server's, the dialling node's as a client's.
	for _, u := range []struct {
		eku  x509.ExtKeyUsage
		name string
	}{{x509.ExtKeyUsageServerAuth, "serverAuth"}, {x509.ExtKeyUsageClientAuth, "clientAuth"}} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u.eku}}); err != nil {
			return nil, fmt.Errorf("cluster: tls_cert %s does not verify against tls_ca %s for %s, so the other nodes would refuse it: %w", cfg.TLSCert, cfg.TLSCA, u.name, err)
		}
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen); host != "" && !isUnspecified(host) {
		if err := cert.Leaf.VerifyHostname(host); err != nil {
			log.Warn().Err(err).Str("tls_cert", cfg.TLSCert).Msgf("the route certificate does not name the listen address %s: a node that dials this address will refuse it", host)
		}
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

func isUnspecified(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// setup creates the stream and buckets, retrying while JetStream has no
// quorum yet (the other nodes are still starting).
func (n *Node) setup(ctx context.Context) error {
	r := n.cfg.Replicas
	kvs := []struct {
		dst *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&n.done, jetstream.KeyValueConfig{Bucket: bucketDone, TTL: n.cfg.Retention}},
		{&n.newest, jetstream.KeyValueConfig{Bucket: bucketNewest, TTL: n.cfg.Retention}},
		{&n.dedupe, jetstream.KeyValueConfig{Bucket: bucketDedupe, TTL: 7 * 24 * time.Hour}},
		{&n.rate, jetstream.KeyValueConfig{Bucket: bucketRate, TTL: 7 * 24 * time.Hour}},
		{&n.alive, jetstream.KeyValueConfig{Bucket: bucketAlive, TTL: 3 * n.cfg.DeadAfter}},
		{&n.members, jetstream.KeyValueConfig{Bucket: bucketMember}},
		{&n.adopt, jetstream.KeyValueConfig{Bucket: bucketAdopt, TTL: n.cfg.Retention}},
		{&n.suppress, jetstream.KeyValueConfig{Bucket: bucketSupp}},
		// Longer than any escalation stays pending (12 attempts, at most
		// 30 minutes apart), so that only the marks of escalations taken
		// over from a node that never came back expire.
		{&n.outbox, jetstream.KeyValueConfig{Bucket: bucketOutbox, TTL: 30 * 24 * time.Hour}},
		{&n.shared, jetstream.KeyValueConfig{Bucket: bucketShared}},
	}
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		// A short wait per call: a request sent while the cluster has no
		// metadata leader yet is never answered, and what a call that
		// timed out did on the server is kept for the next try. Measured
		// forming the test's cluster (2 vCPU): a 30 s wait per attempt
		// took 61-92 s, 5 s per attempt 11-57 s, 2 s per call 5-28 s.
		wait := 2 * time.Second
		if attempt >= 20 {
			wait = 5 * time.Second // a slow network: let a call finish
		}
		call := func(f func(ctx context.Context) error) error {
			cctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			return f(cctx)
		}
		last = func() error {
			streams := []jetstream.StreamConfig{
				{Name: streamAudit, Subjects: []string{subjAudit + ">"}, Storage: jetstream.FileStorage,
					Replicas: r, MaxAge: 400 * 24 * time.Hour},
				{Name: streamIntake, Subjects: []string{subjIntake + ">"}, Storage: jetstream.FileStorage,
					Replicas: r, MaxAge: n.cfg.Retention, Duplicates: 10 * time.Minute},
				{Name: streamAdopted, Subjects: []string{subjAdopted + ">"}, Storage: jetstream.FileStorage,
					Replicas: r, MaxAge: n.cfg.Retention, Duplicates: 10 * time.Minute},
			}
			for _, sc := range streams {
				if err := call(func(ctx context.Context) error { _, err := n.js.CreateOrUpdateStream(ctx, sc); return err }); err != nil {
					return fmt.Errorf("stream %s: %w", sc.Name, err)
				}
			}
			for _, k := range kvs {
				k.cfg.Replicas, k.cfg.Storage = r, jetstream.FileStorage
				// The bucket's stream as nats.go would make it, but read
				// from the leader only: with direct reads any replica
				// answers, and a lagging one would show an old heartbeat
				// (a live node taken for dead), miss a newer reset or an
				// item already done. Every node writes the same config,
				// so nodes starting together agree.
				err := call(func(ctx context.Context) error {
					if _, err := n.js.CreateOrUpdateStream(ctx, kvStream(k.cfg)); err != nil {
						return err
					}
					kv, err := n.js.KeyValue(ctx, k.cfg.Bucket)
					*k.dst = kv
					return err
				})
				if err != nil {
					return fmt.Errorf("bucket %s: %w", k.cfg.Bucket, err)
				}
			}
			return nil
		}()
		if last == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		n.log.Debug().Err(last).Msg("JetStream not ready yet")
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("cluster: JetStream did not become ready (are %d of the nodes up?): %w", n.cfg.Replicas/2+1, last)
}

// kvStream is the stream of a key-value bucket: nats.go's layout (so that
// its KeyValue binds to it), with leader-only reads.
func kvStream(c jetstream.KeyValueConfig) jetstream.StreamConfig {
	dup := 2 * time.Minute
	if c.TTL > 0 && c.TTL < dup {
		dup = c.TTL
	}
	return jetstream.StreamConfig{
		Name: "KV_" + c.Bucket, Subjects: []string{"$KV." + c.Bucket + ".>"},
		MaxMsgsPerSubject: 1, MaxBytes: -1, MaxAge: c.TTL, MaxMsgSize: -1, MaxMsgs: -1, MaxConsumers: -1,
		Storage: c.Storage, Replicas: c.Replicas, AllowRollup: true, DenyDelete: true, Duplicates: dup,
		Discard: jetstream.DiscardNew, AllowDirect: false,
	}
}

// join settles this node's previous incarnation and starts a new one. If
// a survivor adopted the previous one, Previous reports it (the relay then
// hands its local items over); if not, this node claims it back first, so
// that nobody adopts it now that it is alive again.
func (n *Node) join(ctx context.Context) error {
	path := filepath.Join(n.dir, "incarnation")
	if b, err := os.ReadFile(path); err == nil {
		n.prev = strings.TrimSpace(string(b))
	}
	var buf [6]byte
	rand.Read(buf[:])
	n.incarnation = hex.EncodeToString(buf[:])
	if err := os.WriteFile(path+".tmp", []byte(n.incarnation+"\n"), 0o600); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := n.members.Put(cctx, n.cfg.Node, []byte(n.incarnation)); err != nil {
		return fmt.Errorf("cluster: register: %w", err)
	}
	if _, err := n.alive.Put(cctx, n.cfg.Node, []byte(n.incarnation)); err != nil {
		return fmt.Errorf("cluster: heartbeat: %w", err)
	}
	return nil
}

// PreviousAdopted reports whether a survivor adopted this node's previous
// incarnation (and so delivers its items), waiting while the adoption is
// still running. It claims the incarnation back when nobody had.
func (n *Node) PreviousAdopted(ctx context.Context) (by string, err error) {
	if n.prev == "" {
		return "", nil
	}
	k := adoptKey(n.cfg.Node, n.prev)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := n.adopt.Create(cctx, k, []byte("self"))
		if err == nil {
			cancel()
			return "", nil
		}
		e, gerr := n.adopt.Get(cctx, k)
		cancel()
		if gerr != nil {
			return "", fmt.Errorf("cluster: adoption record: %w", gerr)
		}
		v := string(e.Value())
		switch {
		case v == "self":
			return "", nil
		case strings.HasPrefix(v, "done "):
			return strings.TrimPrefix(v, "done "), nil
		}
		// "started <node> <incarnation>": wait for the survivor to finish
		// queueing, unless that survivor's run is gone too. Then this
		// node takes its queue back: what the survivor marked adopted is
		// handed over item by item, the rest is delivered here.
		if who, inc, ok := startedBy(v); ok {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			gone := n.runGone(cctx, who, inc)
			if gone {
				_, err = n.adopt.Update(cctx, k, []byte("done "+who), e.Revision())
			}
			cancel()
			if gone && err == nil {
				n.log.Warn().Str("started_by", who).Msg("the survivor adopting this node's previous run is gone; taking the rest of the queue back")
				return who, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func adoptKey(node, incarnation string) string { return node + "." + incarnation }

// Name is this node's name.
func (n *Node) Name() string { return n.cfg.Node }

// Stats returns this node's cluster counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

func (n *Node) count(f func(*Stats)) {
	n.mu.Lock()
	f(&n.stats)
	n.mu.Unlock()
}

// Close leaves the cluster: the connection, then the embedded server.
func (n *Node) Close() {
	if n.nc != nil {
		n.nc.Close()
	}
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
}

// hashKey makes a bucket key of a rule's key: keys hold recipients, which
// stay out of the bucket's subject names (and their length limit).
func hashKey(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:20])
}

// errNoQuorum marks a write the cluster could not store on a quorum.
var errNoQuorum = errors.New("cluster: not stored on a quorum of nodes")

// natsLogger sends the embedded server's log lines to zerolog, and its
// first fatal one to fatal.
type natsLogger struct {
	l     zerolog.Logger
	fatal chan string
}

func (z natsLogger) Noticef(f string, v ...any) { z.l.Debug().Msgf(f, v...) }
func (z natsLogger) Warnf(f string, v ...any)   { z.l.Warn().Msgf(f, v...) }
func (z natsLogger) Fatalf(f string, v ...any) {
	z.l.Error().Msgf(f, v...)
	select {
	case z.fatal <- fmt.Sprintf(f, v...):
	default:
	}
}
func (z natsLogger) Errorf(f string, v ...any) { z.l.Warn().Msgf(f, v...) }
func (z natsLogger) Debugf(f string, v ...any) { z.l.Debug().Msgf(f, v...) }
func (z natsLogger) Tracef(f string, v ...any) {}
