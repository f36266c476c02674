// Command latchkey-load measures an SMTP relay end to end on one machine: a
// load generator that submits reset-like messages over STARTTLS + AUTH
// PLAIN, a receiving MX (sink) that records each message's arrival by its
// X-Load-ID header and verifies its DKIM signature, and a DNS server that
// points the test domain dest.test at the sink.
//
//	latchkey-load run  -latchkey ./latchkey [-dkim rsa|ed25519|both] [send flags]
//	latchkey-load run  -addr 127.0.0.1:10587 -user U -pass-file F -mx-listen 127.0.0.2:2526 ...
//	latchkey-load send -addr 127.0.0.1:587 -user U -pass-file F [send flags]
//	latchkey-load sink -listen 127.0.0.2:2525 [-dns-listen 127.0.0.1:5353 [-zone FILE]] [-reject PREFIX] [-expect N]
//	latchkey-load restart -latchkey ./latchkey -workdir DIR
//	latchkey-load fill -workdir DIR -n 1000000
//	latchkey-load relay -workdir DIR -resolver 127.0.0.1:5400 -mx-port 2700 -cpuprofile relay.prof
//
// run is the one the benchmarks use: everything in one process, with the
// relay either started from its binary (so its CPU time and memory can be
// read from /proc) or booted in process (-inprocess, for -cpuprofile).
// Every address must be in 127.0.0.0/8: the tool never sends mail anywhere.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/policy"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func init() {
	// As in cmd/latchkey: the in-process relay falls back on the shipped policy.
	policy.DefaultSource = conf.DefaultPolicy
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "send":
		return cmdSend(args[1:], stdout, stderr)
	case "sink":
		return cmdSink(args[1:], stdout, stderr)
	case "restart":
		return cmdRestart(args[1:], stdout, stderr)
	case "fill":
		return cmdFill(args[1:], stdout, stderr)
	case "relay":
		return cmdRelay(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "latchkey-load: unknown command %q\n%s", args[0], usage)
	return 2
}

// usage lists every command, so that "latchkey-load -h" is where a new user
// learns that the sink can also serve the DNS a relay needs for delivery.
const usage = `usage: latchkey-load COMMAND [flags]; latchkey-load COMMAND -h for its flags

  run      relay (from -latchkey or -addr), sink and sender in one process; the benchmark
  send     submit reset/bulk messages to a relay (STARTTLS + AUTH PLAIN)
  sink     a receiving MX that checks DKIM; with -dns-listen also a DNS server
           answering the MX of -domain (default dest.test) and the DKIM records,
           to use as the relay's [delivery] resolver (with [delivery] port = the
           sink's port); -zone FILE also serves the output of "latchkey dns records -ip 127.0.0.1";
           -reject PREFIX answers 550 5.1.1 to those recipients (a hard bounce)
  restart  time the relay from exec to its first SMTP greeting on an existing data dir
  fill     write N queued messages straight into a relay's database
  relay    boot the relay in this process (for -cpuprofile)

Every address must be in 127.0.0.0/8: the tool never sends mail anywhere else.
`

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// sendFlags registers the load generator's flags.
func sendFlags(fs *flag.FlagSet, o *sendOptions, passFile *string, mix *string) {
	fs.StringVar(&o.addr, "addr", "127.0.0.1:587", "relay submission address (127.0.0.0/8)")
	fs.StringVar(&o.user, "user", "", "AUTH PLAIN user (empty: no AUTH)")
	fs.StringVar(passFile, "pass-file", "", "file holding the AUTH password")
	fs.BoolVar(&o.startTLS, "starttls", true, "STARTTLS before AUTH (certificate not verified)")
	fs.IntVar(&o.conns, "conns", 8, "concurrent client connections, each kept open")
	fs.Float64Var(&o.rate, "rate", 0, "open loop at this many messages per second (0: closed loop)")
	fs.IntVar(&o.n, "n", 10000, "messages to send (0: until -duration)")
	fs.DurationVar(&o.duration, "duration", 0, "stop scheduling after this long")
	fs.IntVar(&o.size, "size", 4096, "approximate message size in bytes")
	fs.StringVar(mix, "mix", "reset=1,bulk=0", "share of reset and bulk messages")
	fs.StringVar(&o.to, "to", "user{n}@dest.test", "recipient; {n} is the message's sequence number")
	fs.StringVar(&o.from, "from", "noreply@example.com", "envelope and header sender")
}

// finishSend checks and completes the send options after parsing.
func finishSend(o *sendOptions, passFile, mix string) error {
	if passFile != "" {
		b, err := os.ReadFile(passFile)
		if err != nil {
			return fmt.Errorf("latchkey-load: %w", err)
		}
		o.pass = strings.TrimRight(string(b), "\r\n")
	}
	var reset, bulk float64
	for _, part := range strings.Split(mix, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		var f float64
		if _, err := fmt.Sscan(v, &f); err != nil || f < 0 {
			return fmt.Errorf("latchkey-load: -mix %q: want reset=W,bulk=W", mix)
		}
		switch k {
		case "reset":
			reset = f
		case "bulk":
			bulk = f
		default:
			return fmt.Errorf("latchkey-load: -mix %q: unknown class %q", mix, k)
		}
	}
	if reset+bulk == 0 {
		return fmt.Errorf("latchkey-load: -mix %q: all weights are zero", mix)
	}
	o.bulkShare = bulk / (reset + bulk)
	if o.conns < 1 {
		return fmt.Errorf("latchkey-load: -conns must be at least 1")
	}
	if o.n == 0 && o.duration == 0 {
		return fmt.Errorf("latchkey-load: give -n or -duration")
	}
	o.runID = fmt.Sprintf("load%d", time.Now().UnixNano())
	return nil
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("latchkey-load run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o runOptions
	var passFile, mix string
	var recs listFlag
	sendFlags(fs, &o.send, &passFile, &mix)
	fs.StringVar(&o.latchkeyBin, "latchkey", "", "run this latchkey binary as the relay under test (config written to -workdir)")
	fs.BoolVar(&o.direct, "direct", false, "no relay: send straight to the sink (the harness's own ceiling)")
	fs.BoolVar(&o.inProcess, "inprocess", false, "boot the relay inside this process instead (for -cpuprofile)")
	fs.StringVar(&o.workdir, "workdir", "", "relay config and data directory (default: a temporary one, removed afterwards)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary relay directory")
	fs.StringVar(&o.dkimAlgo, "dkim", "rsa", "relay's DKIM keys: rsa (2048), ed25519 or both")
	fs.StringVar(&o.policy, "policy", "", "relay's policy file (default: the shipped policy)")
	fs.StringVar(&o.logLevel, "relay-log-level", "info", "relay's log_level")
	fs.StringVar(&o.memoryLimit, "memory-limit", "", "relay's memory_limit, such as 256MiB (default: none)")
	fs.IntVar(&o.relayPID, "relay-pid", 0, "external relay: pid whose CPU time and RSS to report")
	fs.StringVar(&o.mxListen, "mx-listen", "", "sink address (default 127.0.0.2 on a free port)")
	fs.StringVar(&o.dnsListen, "dns-listen", "", "DNS address (default 127.0.0.1 on a free port)")
	fs.Var(&recs, "dkim-record", "external relay: \"selector._domainkey.domain=v=DKIM1; k=rsa; p=...\" (repeatable)")
	recFile := fs.String("dkim-records", "", "external relay: file of such records, one a line")
	fs.IntVar(&o.verifyEvery, "verify-every", 1, "verify DKIM of every n-th arrival (0: none)")
	fs.BoolVar(&o.mxDefer, "mx-defer", false, "the sink answers 451 to every RCPT (fill the queue)")
	fs.DurationVar(&o.bulkDelay, "bulk-delay", 0, "the sink holds each bulk message this long (a slow MX)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "wait at most this long for arrivals")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "with -mx-defer: wait this long after sending before reading RSS")
	fs.IntVar(&o.prefillBulk, "prefill-bulk", 0, "first submit this many bulk messages (not measured), then measure the resets only; use with -bulk-delay")
	fs.StringVar(&o.label, "label", "", "label printed with the report")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (with -inprocess: the relay too)")
	fs.StringVar(&o.memProfile, "memprofile", "", "write a heap profile of this process at the end (with -inprocess: the relay's memory)")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	if fs.Parse(args) != nil {
		return 2
	}
	if *recFile != "" {
		more, err := readRecords(*recFile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		recs = append(recs, more...)
	}
	o.dkimRecords = recs
	if err := finishSend(&o.send, passFile, mix); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if o.latchkeyBin == "" && !o.inProcess && !o.direct {
		if err := loopbackOnly(o.send.addr); err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
	}
	rep, err := doRun(o)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *jsonOut {
		writeJSON(stdout, rep)
	} else {
		rep.text(stdout)
	}
	if rep.Send.Failed > 0 || rep.Sink.DKIMFail > 0 || (!o.mxDefer && o.prefillBulk == 0 && rep.Sink.E2E.N < rep.Send.Accepted) {
		return 1
	}
	return 0
}

func cmdSend(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("latchkey-load send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o sendOptions
	var passFile, mix string
	sendFlags(fs, &o, &passFile, &mix)
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	sinkReport := fs.String("sink-report", "", "after sending, read this JSON file written by `sink -json-file` and print it too")
	sinkWait := fs.Duration("sink-wait", 10*time.Second, "with -sink-report: how long to wait for the file")
	if fs.Parse(args) != nil {
		return 2
	}
	if err := finishSend(&o, passFile, mix); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if err := loopbackOnly(o.addr); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	r, _ := runSend(o)
	if *jsonOut {
		writeJSON(stdout, r)
	} else {
		r.text(stdout)
	}
	if *sinkReport != "" {
		deadline := time.Now().Add(*sinkWait)
		for {
			b, err := os.ReadFile(*sinkReport)
			if err == nil && len(b) > 0 {
				stdout.Write(b)
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(stderr, "latchkey-load: no sink report at %s\n", *sinkReport)
				return 1
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if r.Failed > 0 {
		return 1
	}
	return 0
}

func cmdSink(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("latchkey-load sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o sinkOptions
	var recs listFlag
	fs.StringVar(&o.addr, "listen", "127.0.0.2:2525", "SMTP address (127.0.0.0/8)")
	fs.BoolVar(&o.tls, "tls", true, "offer STARTTLS (self-signed certificate)")
	noVerify := fs.Bool("no-verify", false, "do not verify DKIM signatures")
	fs.IntVar(&o.verifyEvery, "verify-every", 1, "verify DKIM of every n-th arrival")
	dnsListen := fs.String("dns-listen", "", "also serve DNS here: MX of -domain pointing at the sink, and the DKIM records")
	domain := fs.String("domain", "dest.test", "recipient domain served by -dns-listen")
	fs.Var(&recs, "dkim-record", "\"selector._domainkey.domain=v=DKIM1; ...\" (repeatable)")
	recFile := fs.String("dkim-records", "", "file of name=value DKIM records, one a line")
	expect := fs.Int("expect", 0, "report and exit after this many messages (0: on SIGINT/SIGTERM)")
	timeout := fs.Duration("timeout", 0, "with -expect: give up after this long")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	jsonFile := fs.String("json-file", "", "also write the JSON report to this file")
	zoneFile := fs.String("zone", "", "with -dns-listen: also serve this zone file, e.g. the output of `latchkey dns records -ip 127.0.0.1` (its DKIM TXT records are used for verifying too)")
	fs.BoolVar(&o.deferAll, "defer", false, "answer 451 to every RCPT")
	fs.StringVar(&o.rejectPrefix, "reject", "", "answer 550 5.1.1 to every RCPT whose address starts with this (a hard bounce)")
	fs.DurationVar(&o.bulkDelay, "bulk-delay", 0, "hold each bulk message this long")
	if fs.Parse(args) != nil {
		return 2
	}
	if *noVerify {
		o.verifyEvery = 0
	}
	if *recFile != "" {
		more, err := readRecords(*recFile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		recs = append(recs, more...)
	}
	zone, txt, err := txtRecords(recs)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if *zoneFile != "" {
		b, err := os.ReadFile(*zoneFile)
		if err != nil {
			fmt.Fprintln(stderr, "latchkey-load:", err)
			return 2
		}
		more, err := zoneTXT(string(b), *zoneFile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		for name, vals := range more {
			txt[name] = append(txt[name], vals...)
		}
		zone += string(b) + "\n"
	}
	o.txt = txt
	sk, err := startSink(o)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *dnsListen != "" {
		ip, _, _ := strings.Cut(sk.Addr, ":")
		d := strings.TrimSuffix(*domain, ".")
		z, err := startZone(*dnsListen, fmt.Sprintf("%s. 300 IN MX 10 mx.%s.\nmx.%s. 300 IN A %s\n%s", d, d, d, ip, zone))
		if err != nil {
			fmt.Fprintln(stderr, err)
			sk.close()
			return 1
		}
		defer z.close()
		fmt.Fprintf(stderr, "latchkey-load sink: DNS on %s\n", z.Addr)
	}
	fmt.Fprintf(stderr, "latchkey-load sink: SMTP on %s\n", sk.Addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	if *expect > 0 {
		done := make(chan bool, 1)
		wait := *timeout
		if wait == 0 {
			wait = 24 * time.Hour
		}
		go func() { done <- sk.wait(*expect, wait) }()
		select {
		case <-done:
		case <-sig:
		}
	} else {
		<-sig
	}
	sk.close()
	// The window starts at the earliest send time the messages carry.
	sk.mu.Lock()
	since := sk.minSent
	sk.mu.Unlock()
	if since.IsZero() {
		since = sk.start
	}
	r := sk.report(since)
	if *jsonFile != "" {
		f, err := os.Create(*jsonFile)
		if err == nil {
			writeJSON(f, r)
			f.Close()
		}
	}
	if *jsonOut {
		writeJSON(stdout, r)
	} else {
		r.text(stdout)
	}
	if r.DKIMFail > 0 {
		return 1
	}
	return 0
}

// cmdRestart measures how long latchkey takes to serve again on an existing
// data directory (left by `run -workdir DIR -mx-defer`): from exec to the
// first SMTP greeting on the submission port.
func cmdRestart(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("latchkey-load restart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("latchkey", "", "latchkey binary")
	dir := fs.String("workdir", "", "directory written by `latchkey-load run -workdir`")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	if fs.Parse(args) != nil {
		return 2
	}
	if *bin == "" || *dir == "" {
		fmt.Fprintln(stderr, "latchkey-load restart: -latchkey and -workdir are required")
		return 2
	}
	env := &relayEnv{dir: *dir, cfgPath: *dir + "/latchkey.toml", logPath: *dir + "/relay.log"}
	p, err := startRelayBin(*bin, env, 10*time.Minute)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	u, _ := readProc(p.pid)
	p.stop()
	r := struct {
		ReadySeconds float64 `json:"ready_s"`
		RSSMB        float64 `json:"rss_mb_at_ready"`
	}{p.ready.Seconds(), u.rssMB}
	if *jsonOut {
		writeJSON(stdout, r)
	} else {
		fmt.Fprintf(stdout, "serving after %.2fs; RSS %.1f MB\n", r.ReadySeconds, r.RSSMB)
	}
	return 0
}

func cmdFill(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("latchkey-load fill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("workdir", "", "directory written by `latchkey-load run -workdir` (the relay must be stopped)")
	n := fs.Int("n", 100000, "messages to add")
	workers := fs.Int("workers", 16, "concurrent enqueues (they share fsyncs)")
	if fs.Parse(args) != nil {
		return 2
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "latchkey-load fill: -workdir is required")
		return 2
	}
	d, err := fillQueue(*dir+"/latchkey.toml", *n, *workers)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "queued %d bulk messages in %.1fs (%.0f/s)\n", *n, d.Seconds(), float64(*n)/d.Seconds())
	return 0
}

// readRecords reads name=value DKIM records, one a line; # starts a comment.
func readRecords(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("latchkey-load: %w", err)
	}
	var recs []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			recs = append(recs, l)
		}
	}
	return recs, nil
}

// cmdRelay boots a load-test relay inside this process and serves until
// SIGINT/SIGTERM, so that -cpuprofile sees the relay alone while
// `latchkey-load run -addr` drives it from another process.
func cmdRelay(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("latchkey-load relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("workdir", "", "relay config and data directory")
	algo := fs.String("dkim", "rsa", "rsa, ed25519 or both")
	resolver := fs.String("resolver", "127.0.0.1:5400", "DNS server the relay resolves dest.test with (run -dns-listen)")
	mxPort := fs.String("mx-port", "2700", "port of the MX (run -mx-listen)")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the relay here")
	if fs.Parse(args) != nil {
		return 2
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "latchkey-load relay: -workdir is required")
		return 2
	}
	env, err := writeRelayEnv(relaySetup{dir: *dir, dkimAlgo: *algo, resolver: *resolver, mxPort: *mxPort})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := os.WriteFile(*dir+"/dkim-records", []byte(strings.Join(env.records, "\n")+"\n"), 0o600); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	p, err := startRelayInProcess(env)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer p.stop()
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(stdout, "relay pid %d on %s; user %s, -pass-file %s/password, -dkim-records %s/dkim-records\n",
		os.Getpid(), p.addr, env.user, *dir, *dir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return 0
}
