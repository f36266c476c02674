package policy

import (
	"errors"
	"testing"
	"time"

	"github.com/latchkey/latchkey/conf/tomlconf"
)

func FuzzParse(f *testing.F) {
	f.Add(string(shippedSource(f)))
	f.Add(minimal)
	f.Add(testPolicy)
	f.Add(minimal + "[[rules]]\nclass = \"a\"\n[rules.header]\nX-Foo = \"(\"\n")
	f.Add(minimal + "supersede = true\nsupersede_key = [\"recipient\", \"header:X-SFDC-LK\"]\n")
	f.Add("default_class = \"a\"\n[[classes]]\nname = \"a\"\nexpiry = \"3d\"\nretry = [\"0s\"]\nworkers = 0\n")
	f.Fuzz(func(t *testing.T, src string) {
		p, err := Parse("f.toml", []byte(src))
		if err != nil {
			var es tomlconf.Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not tomlconf.Errors: %T %v", err, err)
			}
			for _, e := range es {
				if e.File != "f.toml" {
					t.Fatalf("error without the file: %v", e)
				}
			}
			return
		}
		if p.DefaultClass() == nil || len(p.Classes()) == 0 {
			t.Fatal("valid policy without classes or default class")
		}
		m := &Meta{EnvelopeFrom: "a@b.c", Rcpts: []string{"u@x.y"}, AuthUser: "u",
			Header: hdr("From", "a@b.c", "Subject", "s", "X-LK-Expires", "1740830700")}
		acc := time.Unix(1740830400, 0)
		for _, c := range p.Classes() {
			if c.Workers < 1 || c.Expiry <= 0 || len(c.Retry) == 0 || c.Margin >= c.Expiry {
				t.Fatalf("invalid class accepted: %+v", *c)
			}
			d, _ := c.Deadline(m, acc)
			if d.After(acc.Add(c.Expiry)) {
				t.Fatalf("deadline past the window")
			}
			if next, ok := c.NextRetry(3, acc, acc, d, nil); ok && next.After(c.Cutoff(d)) {
				t.Fatalf("retry past the cut-off")
			}
			c.SupersedeKeyFor(m, "u@x.y")
			c.DedupeKeys("<id@x>", "ab", "u@x.y")
		}
		if p.Classify(m) == nil {
			t.Fatal("Classify returned nil")
		}
	})
}

// FuzzMeta feeds untrusted header values to everything that reads them.
func FuzzMeta(f *testing.F) {
	f.Add("noreply@example.com", `"A <b>" <c@d>`, "2025-03-01T12:10:00Z", "forgotPassword", "u@test.invalid")
	f.Add("<>", "<", "Sat, 01 Mar 2025 12:15:00 +0000", "", "@")
	f.Add("", "a@b (c", "99999999999999999999", "\x00", "<<>>")
	p, err := Parse("t.toml", []byte(testPolicy))
	if err != nil {
		f.Fatal(err)
	}
	acc := time.Unix(1740830400, 0)
	f.Fuzz(func(t *testing.T, env, from, expires, category, rcpt string) {
		m := &Meta{EnvelopeFrom: env, Rcpts: []string{rcpt},
			Header: hdr("From", from, "X-LK-Expires", expires, "X-SFDC-EmailCategory", category, "X-SFDC-LK", category)}
		c := p.Classify(m)
		if c == nil {
			t.Fatal("nil class")
		}
		for _, c := range p.Classes() {
			d, _ := c.Deadline(m, acc)
			if d.After(acc.Add(c.Expiry)) || !d.After(acc) {
				t.Fatalf("deadline %v outside (accepted, accepted+expiry]", d)
			}
			c.SupersedeKeyFor(m, rcpt)
			c.DedupeKeys(expires, category, rcpt)
		}
	})
}

func BenchmarkClassify(b *testing.B) {
	p := shipped(b)
	cases := []struct {
		name string
		m    *Meta
	}{
		// A Salesforce reset: matched by the second rule.
		{"reset", &Meta{EnvelopeFrom: "bounce@bnc.example.net", AuthUser: "salesforce", Rcpts: []string{"user@example.org"},
			Header: hdr("From", "Example <noreply@example.com>", "Subject", "Reset your password",
				"Message-ID", "<abc.123@sfdc.net>", "X-SFDC-LK", "00D000000000001", "X-SFDC-EmailCategory", "forgotPassword")}},
		// A notification no rule matches: every rule is evaluated.
		{"default", &Meta{EnvelopeFrom: "support@example.com", AuthUser: "salesforce", Rcpts: []string{"user@example.org"},
			Header: hdr("From", "Support <support@example.com>", "Subject", "Case 123 updated",
				"Message-ID", "<def.456@sfdc.net>", "X-SFDC-LK", "00D000000000001", "X-SFDC-EmailCategory", "caseNotification")}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Classify(c.m)
			}
		})
	}
}
