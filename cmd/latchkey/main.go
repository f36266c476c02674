// Command latchkey is the password-reset relay: `latchkey serve` runs it, and
// the other subcommands check its configuration and DNS, generate keys, and
// inspect its queue, audit trail and bounces.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/trace"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/policy"
	"github.com/latchkey/latchkey/relay"
)

// command is one subcommand: its words ("dns check"), a one-line summary and
// the function that runs it with the remaining arguments.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var commands []command

func register(name, summary string, run func(args []string, stdout, stderr io.Writer) int) {
	commands = append(commands, command{name, summary, run})
}

func init() {
	policy.DefaultSource = conf.DefaultPolicy
	register("serve", "run the relay", cmdServe)
	register("config check", "validate latchkey.toml and the policy file; print every error with file, line and key", cmdConfigCheck)
	register("dkim keygen", "generate a DKIM key and print the TXT record to publish", cmdKeygen)
	register("passwd", "hash a submission password for users_file or [[submission.users]]", cmdPasswd)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		// Asked for: on standard output, so that `latchkey help | less`
		// works, and success.
		usage(stdout)
		return 0
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	}
	// Longest match first: "dns check" before "dns".
	sort.SliceStable(commands, func(i, j int) bool {
		return strings.Count(commands[i].name, " ") > strings.Count(commands[j].name, " ")
	})
	for _, c := range commands {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.name {
			return c.run(args[len(words):], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "latchkey: unknown command %q\n\n", strings.Join(args, " "))
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: latchkey COMMAND [flags]\n\ncommands:")
	cs := append([]command(nil), commands...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-22s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-22s %s\n", "help", "this list")
	fmt.Fprintf(w, "  %-22s %s\n", "version", "the module version, VCS revision and Go version of this binary")
	fmt.Fprintln(w, "\nRun 'latchkey COMMAND -h' for a command's flags.")
}

// versionString describes this binary from the build information the Go
// toolchain embeds: the module version ("(devel)" when built from a
// checkout), the VCS revision and time, and whether the tree was modified.
func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "latchkey (no build information)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, at, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = " (modified)"
			}
		}
	}
	out := "latchkey " + v
	if rev != "" {
		out += " revision " + rev + dirty
		if at != "" {
			out += " " + at
		}
	}
	return out + " " + bi.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH + "; rsa signing: " + dkim.RSAEngine
}

// newFlags returns a flag set that prints errors to stderr and does not exit.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("latchkey "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// loadConfig loads the configuration and prints its errors.
func loadConfig(path string, stderr io.Writer) (*conf.Config, bool) {
	cfg, err := conf.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, false
	}
	return cfg, true
}

func newLogger(cfg *conf.Config, stderr io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	var w io.Writer = stderr
	console := cfg.LogFormat == "console"
	if cfg.LogFormat == "auto" {
		if f, ok := stderr.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				console = true
			}
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", stderr)
	path := fs.String("config", "", "configuration file (default: the shipped trial configuration)")
	pidFile := fs.String("pidfile", "", "write the process id to this file while running (removed on exit)")
	traceFile := fs.String("trace", os.Getenv("LATCHKEY_TRACE"), "write a Go execution trace (runtime/trace) to this file until the relay stops (default $LATCHKEY_TRACE)")
	if fs.Parse(args) != nil {
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		fmt.Fprintln(stderr, "latchkey: not starting with an invalid configuration")
		return 2
	}
	log := newLogger(cfg, stderr)
	if *traceFile != "" {
		// For finding what makes the latency tail (docs/benchmarks.md):
		// `go tool trace` reads it.
		f, err := os.Create(*traceFile)
		if err != nil {
			log.Error().Err(err).Msg("cannot write the execution trace")
			return 1
		}
		if err := trace.Start(f); err != nil {
			log.Error().Err(err).Msg("cannot start the execution trace")
			return 1
		}
		defer func() { trace.Stop(); f.Close() }()
		log.Info().Str("file", *traceFile).Msg("writing an execution trace")
	}
	if n, _ := cfg.MemoryLimitBytes(); n > 0 {
		if env := os.Getenv("GOMEMLIMIT"); env != "" {
			log.Info().Str("GOMEMLIMIT", env).Str("memory_limit", cfg.MemoryLimit).Msg("GOMEMLIMIT is set: it wins over memory_limit")
		} else {
			debug.SetMemoryLimit(n)
			log.Info().Str("memory_limit", cfg.MemoryLimit).Msg("Go memory limit set")
		}
	}

	if cfg.Trial {
		log.Warn().Str("data_dir", cfg.DataDir).Msg("running the shipped TRIAL configuration: loopback only, self-signed certificate, generated keys and user; use -config for a real deployment")
	}
	srv, err := relay.Boot(cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return 1
	}
	// After Boot, which made data_dir (the README's pid file is in it).
	if *pidFile != "" {
		if err := writePidFile(*pidFile); err != nil {
			srv.Shutdown()
			log.Error().Err(err).Msg("cannot start")
			return 1
		}
		defer os.Remove(*pidFile)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			srv.Reload()
		}
	}()
	if err := srv.Run(ctx); err != nil {
		log.Error().Err(err).Msg("relay stopped with an error")
		return 1
	}
	log.Info().Msg("relay stopped")
	return 0
}

// writePidFile writes this process's id to path, refusing to overwrite the
// pid file of a relay that still runs: two relays cannot share one database,
// and the second would take the first one's pid file with it on exit.
func writePidFile(path string) error {
	if b, err := os.ReadFile(path); err == nil {
		var pid int
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &pid); err == nil && pid > 0 && pid != os.Getpid() {
			if syscall.Kill(pid, 0) == nil {
				return fmt.Errorf("pid file %s: process %d is running", path, pid)
			}
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

func cmdConfigCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("config check", stderr)
	path := fs.String("config", "", "configuration file (default: the shipped trial configuration)")
	if fs.Parse(args) != nil {
		return 2
	}
	cfg, err := conf.Load(*path)
	if err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	bad := false
	// ACME renews only if its challenge port is free: say so now rather
	// than when the certificate is about to expire.
	if err := cfg.TLS.ACME.CheckPort(); err != nil {
		fmt.Fprintf(stdout, "%s: tls.acme.%v\n", cfg.File, err)
		bad = true
	}
	if cfg.PolicyFile != "" {
		if _, err := policy.Open(cfg.PolicyFile); err != nil {
			fmt.Fprintln(stdout, err)
			bad = true
		}
	} else if _, err := policy.Parse("(embedded) policy.toml", conf.DefaultPolicy); err != nil {
		fmt.Fprintln(stdout, err)
		bad = true
	}
	if bad {
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK\n", cfg.File)
	return 0
}

func cmdKeygen(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("dkim keygen", stderr)
	domain := fs.String("domain", "", "signing domain (d=)")
	selector := fs.String("selector", "", "selector (s=)")
	algo := fs.String("algo", "rsa", "rsa or ed25519")
	bits := fs.Int("bits", 2048, "RSA key size")
	out := fs.String("out", "", "private key file (default: <domain>.<selector>.pem in the current directory)")
	if fs.Parse(args) != nil {
		return 2
	}
	if *domain == "" || *selector == "" {
		fmt.Fprintln(stderr, "latchkey dkim keygen: -domain and -selector are required")
		return 2
	}
	if strings.EqualFold(strings.TrimSpace(*algo), "rsa") && *bits < 2048 {
		// dkim accepts 1024-bit keys (RFC 8301) so that old ones still
		// load, but `dns check` fails them: do not make a new one.
		fmt.Fprintf(stderr, "latchkey dkim keygen: -bits %d: use at least 2048 (receivers distrust smaller RSA keys)\n", *bits)
		return 2
	}
	if *out == "" {
		*out = fmt.Sprintf("%s.%s.pem", *domain, *selector)
	}
	if _, err := os.Stat(*out); err == nil {
		fmt.Fprintf(stderr, "latchkey dkim keygen: %s exists; not overwriting a key\n", *out)
		return 1
	}
	key, err := dkim.GenerateKey(*algo, *bits)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := dkim.WriteKeyFile(*out, key); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	rec, err := dkim.PublicRecord(key.Public())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote %s (mode 0600); publish this record:\n", *out)
	fmt.Fprintln(stdout, dkim.ZoneLine(*selector, *domain, rec))
	return 0
}

func cmdPasswd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("passwd", stderr)
	user := fs.String("user", "", "user name (prints name:hash for users_file)")
	if fs.Parse(args) != nil {
		return 2
	}
	const prompt = "password (read from standard input, one line):"
	var line string
	if fd := int(os.Stdin.Fd()); term.IsTerminal(fd) {
		// Not echoed: the password must not stay on the screen or in a
		// terminal recording. Echo goes off before the prompt shows, so
		// that a password pasted at once is not echoed either.
		restore, err := noEcho(fd)
		if err != nil {
			fmt.Fprintln(stderr, "latchkey passwd:", err)
			return 1
		}
		fmt.Fprintln(stderr, prompt)
		var b []byte
		if restore != nil {
			defer restore()
			var l string
			l, err = bufio.NewReader(io.LimitReader(os.Stdin, 1024)).ReadString('\n')
			if err == io.EOF {
				err = nil
			}
			b = []byte(l)
		} else {
			b, err = term.ReadPassword(fd)
		}
		fmt.Fprintln(stderr)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		line = string(b)
	} else {
		fmt.Fprintln(stderr, prompt)
		// One line, not to end-of-file.
		l, err := bufio.NewReader(io.LimitReader(os.Stdin, 1024)).ReadString('\n')
		if err != nil && err != io.EOF {
			fmt.Fprintln(stderr, err)
			return 1
		}
		line = l
	}
	pass := strings.TrimRight(line, "\r\n")
	if len(pass) < 12 {
		fmt.Fprintln(stderr, "latchkey passwd: use at least 12 characters")
		return 1
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.DefaultCost)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *user != "" {
		fmt.Fprintf(stdout, "%s:%s\n", *user, hash)
	} else {
		fmt.Fprintln(stdout, string(hash))
	}
	return 0
}
