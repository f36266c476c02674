package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/queue"
)

func init() {
	register("audit show", "one message's timeline by queue id or Message-ID (relay stopped)", cmdAuditShow)
	register("audit verify", "walk the audit hash chain and name every changed, inserted or missing event (relay stopped)", cmdAuditVerify)
	register("audit export", "export audit events as csv or jsonl (relay stopped)", cmdAuditExport)
	register("queue list", "list queued items (relay stopped)", cmdQueueList)
	register("queue show", "show one queue item (relay stopped)", cmdQueueShow)
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
