package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/dnscheck"
	"github.com/latchkey/latchkey/relay"
)

func init() {
	register("bounce parse", "show what the bounce parser sees in each file (-json for one object per file)", cmdBounceParse)
	register("dns records", "print the DNS records to publish for every transactional domain", cmdDNSRecords)
	register("dns check", "check the live SPF, DKIM, DMARC, MX and PTR records (exit 0 pass, 1 warnings, 2 failures)", cmdDNSCheck)
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

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// dnsFlags are the flags `dns records` and `dns check` share.
type dnsFlags struct {
	path, domain, rua *string
	ips               multiFlag
}

func addDNSFlags(fs *flag.FlagSet) *dnsFlags {
	f := &dnsFlags{
		path:   fs.String("config", "", "configuration file"),
		domain: fs.String("domain", "", "only this transactional domain"),
		// Both commands take it, so that check's fixes and records print
		// the same DMARC record.
		rua: fs.String("rua", "", "DMARC aggregate report address, e.g. dmarc@example.com (default: none)"),
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
	in, err := relay.DNSInput(cfg, f.ips, *f.domain)
	if err != nil {
		fmt.Fprintf(stderr, "latchkey %s: %v\n", cmd, err)
		return in, 1, false
	}
	in.RUA = *f.rua
	return in, 0, true
}

func cmdDNSRecords(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("dns records", stderr)
	df := addDNSFlags(fs)
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
	for _, l := range dnscheck.Records(in) {
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
