package deliver

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func FuzzSplitEnhanced(f *testing.F) {
	for _, s := range []string{"5.1.1 no such user", "2.0.0", "4.2.2 full", "550 x", "5.1 x", "9.9.9 x", "5.01.001 y", "", " ", "5..1 x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		code, rest, ok := splitEnhanced(s)
		if !ok {
			if rest != s {
				t.Fatalf("not ok but text changed: %q -> %q", s, rest)
			}
			return
		}
		if code[0] < 2 || code[0] > 5 || code[1] < 0 || code[2] < 0 || len(rest) >= len(s) {
			t.Fatalf("%q -> %v %q", s, code, rest)
		}
	})
}

// FuzzServerDialogue plays arbitrary server bytes against the whole client
// side: greeting, EHLO parsing, STARTTLS, MAIL/RCPT/DATA and reply parsing.
// Whatever the server says, there must be no panic, no hang, and results
// must be consistent.
func FuzzServerDialogue(f *testing.F) {
	f.Add([]byte("220 hi\r\n250-mx\r\n250-STARTTLS\r\n250 8BITMIME\r\n220 go\r\n"))
	f.Add([]byte("220 hi\r\n250 mx\r\n250 mx\r\n250 ok\r\n250 ok\r\n550 5.1.1 nope\r\n354 go\r\n250 2.0.0 queued\r\n"))
	f.Add([]byte("220 hi\r\n250-mx\r\n250 SIZE 10\r\n250 mx\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n554 5.7.1 spam\r\n"))
	f.Add([]byte("554 5.7.1 go away\r\n"))
	f.Add([]byte("220 hi\r\n500 what\r\n500 what\r\n250 helo\r\n421 4.3.2 bye\r\n"))
	f.Add([]byte("220-multi\r\n220 line\r\n250 mx\r\n250 mx\r\n452 4.2.2 full\r\n"))
	cfg := testConfig("127.0.0.1:1", 25)
	cfg.CommandTimeout = time.Second
	cfg.DataTimeout = time.Second
	d := &Deliverer{cfg: cfg, log: zerolog.Nop()}
	rcpts := []string{"a@example.test", "b@example.test"}
	f.Fuzz(func(t *testing.T, script []byte) {
		cli, srv := net.Pipe()
		defer cli.Close()
		go func() { srv.Write(script); srv.Close() }()
		go io.Copy(io.Discard, srv)
		ctx := context.Background()
		cn, err := d.handshake(ctx, cli, "mx.example.test", "127.0.0.1", TLSOpportunistic, true)
		if err != nil {
			return
		}
		results := make([]Result, len(rcpts))
		aerr, _ := d.transact(ctx, cn, "s@sender.test", rcpts, []int{0, 1}, []byte(msg), results)
		if aerr != nil {
			return
		}
		for _, r := range results {
			if r.Delivered && (r.Permanent || r.Code != 250) {
				t.Fatalf("inconsistent %s", r)
			}
			if r.Permanent && r.Code/100 != 5 {
				t.Fatalf("permanent without 5xx: %s", r)
			}
		}
	})
}

func FuzzParseSTSRecord(f *testing.F) {
	for _, s := range []string{"v=STSv1; id=20160831085700Z;", "v=STSv1;id=a", "v=STSv1; x=y; id=a; ", "v=STSv1;; id=a",
		"v=STSv1", "v=STSv1; id=a; id=b", "v=spf1 -all", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseSTSRecord(s)
		if err != nil {
			if id != "" {
				t.Fatalf("%q: id %q with error %v", s, id, err)
			}
			return
		}
		if len(id) < 1 || len(id) > 32 || !isAlnum(id) || !strings.HasPrefix(s, "v=STSv1") || !strings.Contains(s, "id="+id) {
			t.Fatalf("%q: bad id %q", s, id)
		}
	})
}

func FuzzParseSTSPolicy(f *testing.F) {
	for _, s := range []string{
		"version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n",
		"version: STSv1\r\nmode: testing\r\nmx: a.test\r\nmax_age: 86400",
		"version: STSv1\nmode: none\nmax_age: 31557600\n",
		"version: STSv1\nmode: enforce\nmax_age: 1\n",
		"version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 99999999999\n",
		"",
	} {
		f.Add(s, "mx.example.net")
	}
	f.Fuzz(func(t *testing.T, s, host string) {
		p, err := ParseSTSPolicy(s)
		if err != nil {
			if p != nil {
				t.Fatalf("%q: policy with error %v", s, err)
			}
			return
		}
		if p.Mode != STSEnforce && p.Mode != STSTesting && p.Mode != STSNone {
			t.Fatalf("%q: mode %q", s, p.Mode)
		}
		if p.Mode != STSNone && len(p.MX) == 0 {
			t.Fatalf("%q: mode %s without mx", s, p.Mode)
		}
		if p.MaxAge < 0 || p.MaxAge > stsMaxAge*time.Second {
			t.Fatalf("%q: max_age %v", s, p.MaxAge)
		}
		for _, mx := range p.MX {
			if mx != strings.ToLower(mx) || strings.HasSuffix(mx, ".") || strings.Contains(strings.TrimPrefix(mx, "*."), "*") {
				t.Fatalf("%q: mx %q", s, mx)
			}
			if !strings.HasPrefix(mx, "*.") && !p.MatchMX(mx) {
				t.Fatalf("%q: mx %q does not match itself", s, mx)
			}
		}
		if p.MatchMX(host) {
			h := strings.ToLower(strings.TrimSuffix(host, "."))
			named := false
			for _, mx := range p.MX {
				named = named || h == mx || strings.HasPrefix(mx, "*.") && strings.HasSuffix(h, mx[1:]) && !strings.Contains(strings.TrimSuffix(h, mx[1:]), ".")
			}
			if !named {
				t.Fatalf("%q matched %q, which it does not name", s, host)
			}
		}
	})
}
