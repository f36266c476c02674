package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/dkim"
	"github.com/latchkey/latchkey/dnscheck"
	"github.com/latchkey/latchkey/queue"
)

func init() {
	register("bounce parse", "show what the bounce parser sees in each file (-json for one object per file)", cmdBounceParse)
	register("dns records", "print the DNS records to publish for every transactional domain", cmdDNSRecords)
	register("dns check", "check the live SPF, DKIM, DMARC, MX and PTR records (exit 0 pass, 1 warnings, 2 failures)", cmdDNSCheck)
	register("audit show", "one message's timeline by queue id or Message-ID (relay stopped)", cmdAuditShow)
	register("audit verify", "walk the audit hash chain and name every changed, inserted or missing event (relay stopped)", cmdAuditVerify)
	register("audit export", "export audit events as csv or jsonl (relay stopped)", cmdAuditExport)
	register("queue list", "list queued items (relay stopped)", cmdQueueList)
	register("queue show", "show one queue item (relay stopped)", cmdQueueShow)
}

func cmdBounceParse(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bounce parse", stderr)
	asJSON := fs.Bool("json", false, "one JSON object per file")
	if fs.Parse(args) != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: latchkey bounce parse [-json] FILE...")
		return 2
	}
	rc := 0
	for _, f := range fs.Args() {
		fh, err := os.Open(f)
		if err != nil {
			fmt.Fprintln(stderr, err)
			rc = 1
			continue
		}
		rep, err := bounce.Parse(fh)
		fh.Close()
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", f, err)
			rc = 1
			continue
		}
		if *asJSON {
			err = rep.WriteJSON(stdout, f)
		} else {
			err = rep.WriteText(stdout, f)
		}
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	return rc
}

// dnsInput builds the checker's input from the configuration and the keys.
func dnsInput(cfg *conf.Config, ips []string, domain string) (dnscheck.Input, error) {
	in := dnscheck.Input{Hostname: cfg.Hostname, Resolver: cfg.Delivery.Resolver, Timeout: 5 * time.Second}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return in, fmt.Errorf("-ip %q is not an IP address", s)
		}
		in.OutboundIPs = append(in.OutboundIPs, ip)
	}
	for _, d := range cfg.Domains {
		if domain != "" && !strings.EqualFold(domain, d.Name) {
			continue
		}
		dd := dnscheck.Domain{Name: d.Name, BounceDomain: d.BounceDomain}
		for _, s := range d.DKIM {
			key, err := dkim.LoadKeyFile(cfg.Path(s.KeyFile))
			if err != nil {
				return in, fmt.Errorf("%w (run `latchkey serve` once, or `latchkey dkim keygen`, to create it)", err)
			}
			dd.Selectors = append(dd.Selectors, dnscheck.Selector{Name: s.Selector, PublicKey: key.Public()})
		}
		in.Domains = append(in.Domains, dd)
	}
	if len(in.Domains) == 0 {
		return in, fmt.Errorf("no transactional domain %q in the configuration", domain)
	}
	return in, nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// dnsFlags are the flags `dns records` and `dns check` share.
type dnsFlags struct {
	path, domain *string
	ips          multiFlag
}

func addDNSFlags(fs *flag.FlagSet) *dnsFlags {
	f := &dnsFlags{
		path:   fs.String("config", "", "configuration file"),
		domain: fs.String("domain", "", "only this transactional domain"),
	}
	fs.Var(&f.ips, "ip", "outbound IP address of latchkey (repeat for several)")
	return f
}

// input loads the configuration and builds the checker's input; ok is false
// after it has said what is wrong on stderr.
func (f *dnsFlags) input(cmd string, stderr io.Writer) (in dnscheck.Input, rc int, ok bool) {
	cfg, ok := loadConfig(*f.path, stderr)
	if !ok {
		return in, 2, false
	}
	in, err := dnsInput(cfg, f.ips, *f.domain)
	if err != nil {
		fmt.Fprintf(stderr, "latchkey %s: %v\n", cmd, err)
		return in, 1, false
	}
	return in, 0, true
}

func cmdDNSRecords(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("dns records", stderr)
	df := addDNSFlags(fs)
	rua := fs.String("rua", "", "DMARC aggregate report address, e.g. dmarc@example.com (default: none)")
	if fs.Parse(args) != nil {
		return 2
	}
	in, rc, ok := df.input("dns records", stderr)
	if !ok {
		return rc
	}
	if len(df.ips) == 0 {
		// Without them the SPF records would be "v=spf1 -all": published,
		// that refuses every message latchkey sends.
		fmt.Fprintln(stderr, "latchkey dns records: give latchkey's outbound addresses with -ip (repeat for several)")
		return 2
	}
	for _, l := range dnscheck.Records(in, *rua) {
		fmt.Fprintln(stdout, l)
	}
	return 0
}

func cmdDNSCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("dns check", stderr)
	df := addDNSFlags(fs)
	asJSON := fs.Bool("json", false, "JSON output")
	if fs.Parse(args) != nil {
		return 2
	}
	in, _, ok := df.input("dns check", stderr)
	if !ok {
		return 2 // could not check counts as a failure
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep := dnscheck.Check(ctx, in)
	var err error
	if *asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	return rep.ExitCode()
}

// openDB opens the relay's database read-only. Badger allows one process
// at a time, so these commands need the relay stopped.
func openDB(path string, stderr io.Writer) (*conf.Config, *badger.DB, bool) {
	cfg, ok := loadConfig(path, stderr)
	if !ok {
		return nil, nil, false
	}
	opts := badger.DefaultOptions(filepath.Join(cfg.DataDir, "db")).WithReadOnly(true).WithLogger(nil)
	db, err := badger.Open(opts)
	if err != nil {
		fmt.Fprintf(stderr, "latchkey: cannot open the database (is the relay running? stop it first): %v\n", err)
		return nil, nil, false
	}
	return cfg, db, true
}

func auditKey(cfg *conf.Config) ([]byte, error) {
	f := cfg.Audit.KeyFile
	if f == "" {
		f = "audit.key"
	}
	b, err := os.ReadFile(cfg.Path(f))
	return []byte(strings.TrimSpace(string(b))), err
}

func cmdAuditShow(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit show", stderr)
	path := fs.String("config", "", "configuration file")
	asJSON := fs.Bool("json", false, "JSON lines")
	if fs.Parse(args) != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: latchkey audit show [-config FILE] [-json] QUEUE-ID|MESSAGE-ID")
		return 2
	}
	_, db, ok := openDB(*path, stderr)
	if !ok {
		return 1
	}
	defer db.Close()
	evs, err := audit.Show(db, fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	for _, ev := range evs {
		if *asJSON {
			enc.Encode(ev)
			continue
		}
		var b strings.Builder
		audit.FormatDetails(&b, ev.Fields)
		fmt.Fprintf(stdout, "%s  %-14s %-20s %-30s %s\n", ev.Time.UTC().Format(time.RFC3339Nano), ev.Type, ev.QueueID, ev.Recipient, b.String())
	}
	return 0
}

func cmdAuditVerify(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit verify", stderr)
	path := fs.String("config", "", "configuration file")
	if fs.Parse(args) != nil {
		return 2
	}
	cfg, db, ok := openDB(*path, stderr)
	if !ok {
		return 1
	}
	defer db.Close()
	key, err := auditKey(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "latchkey audit verify: audit key:", err)
		return 1
	}
	rep, err := audit.Verify(db, key)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "events %d, seq %d..%d, signed head at %d\n", rep.Events, rep.FirstSeq, rep.LastSeq, rep.HeadSeq)
	for _, p := range rep.Problems {
		fmt.Fprintf(stdout, "PROBLEM %+v\n", p)
	}
	if !rep.OK() {
		fmt.Fprintln(stdout, "FAIL: the audit trail does not verify")
		return 1
	}
	fmt.Fprintln(stdout, "OK: the chain verifies")
	return 0
}

func cmdAuditExport(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit export", stderr)
	path := fs.String("config", "", "configuration file")
	format := fs.String("format", "csv", "csv or jsonl")
	since := fs.String("since", "", "RFC 3339 time or duration ago (e.g. 720h)")
	until := fs.String("until", "", "RFC 3339 time")
	if fs.Parse(args) != nil {
		return 2
	}
	var s, u time.Time
	var err error
	if s, err = parseWhen(*since); err != nil {
		fmt.Fprintln(stderr, "-since:", err)
		return 2
	}
	if u, err = parseWhen(*until); err != nil {
		fmt.Fprintln(stderr, "-until:", err)
		return 2
	}
	_, db, ok := openDB(*path, stderr)
	if !ok {
		return 1
	}
	defer db.Close()
	if err := audit.Export(db, stdout, *format, s, u); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Parse(time.RFC3339, s)
}

func cmdQueueList(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("queue list", stderr)
	path := fs.String("config", "", "configuration file")
	class := fs.String("class", "", "only this class")
	state := fs.String("state", "", "queued (default: live items), delivered, bounced, expired, superseded, dropped, or all")
	if fs.Parse(args) != nil {
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 2
	}
	st, q, ok := openQueue(cfg, stderr)
	if !ok {
		return 1
	}
	defer st.Close()
	if *state == "queued" {
		*state = ""
	}
	items, err := q.List(queue.Filter{Class: *class, State: *state})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, it := range items {
		fmt.Fprintf(stdout, "%s  %-13s %-10s %-30s attempts=%d due=%s deadline=%s %s\n", it.ID, it.Class, it.State, it.Rcpt,
			it.Attempts, it.Due.UTC().Format(time.RFC3339), it.Deadline.UTC().Format(time.RFC3339), it.Reason)
	}
	return 0
}

func cmdQueueShow(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("queue show", stderr)
	path := fs.String("config", "", "configuration file")
	if fs.Parse(args) != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: latchkey queue show [-config FILE] ID")
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 2
	}
	st, q, ok := openQueue(cfg, stderr)
	if !ok {
		return 1
	}
	defer st.Close()
	it, err := q.Get(fs.Arg(0))
	if err != nil || it == nil {
		fmt.Fprintf(stderr, "latchkey queue show: no item %q\n", fs.Arg(0))
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.Encode(it)
	return 0
}

func openQueue(cfg *conf.Config, stderr io.Writer) (*queue.Store, *queue.Queue, bool) {
	st, err := queue.OpenStore(filepath.Join(cfg.DataDir, "db"), newLogger(&conf.Config{LogLevel: "error", LogFormat: "json"}, io.Discard))
	if err != nil {
		fmt.Fprintf(stderr, "latchkey: cannot open the database (is the relay running? stop it first): %v\n", err)
		return nil, nil, false
	}
	q, err := queue.New(st, newLogger(&conf.Config{LogLevel: "error", LogFormat: "json"}, io.Discard))
	if err != nil {
		st.Close()
		fmt.Fprintln(stderr, err)
		return nil, nil, false
	}
	return st, q, true
}
