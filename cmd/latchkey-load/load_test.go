package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// buildLatchkey builds cmd/latchkey once per test run.
func buildLatchkey(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "latchkey-load-test-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "latchkey")
		if out, err := exec.Command("go", "build", "-o", binPath, "../latchkey").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// TestRunAgainstRelay runs the whole tool against the real binary: 50
// messages from 4 connections, dual RSA + Ed25519 signing; every message
// must arrive once with signatures that verify against the published keys.
func TestRunAgainstRelay(t *testing.T) {
	bin := buildLatchkey(t)
	o := runOptions{latchkeyBin: bin, workdir: t.TempDir(), dkimAlgo: "both", verifyEvery: 1,
		timeout: 60 * time.Second, logLevel: "info"}
	o.send = sendOptions{conns: 4, n: 50, size: 4096, to: "user{n}@dest.test", from: "noreply@example.com", bulkShare: 0.2, runID: "t1"}
	rep, err := doRun(o)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	rep.text(&b)
	t.Log("\n" + b.String())
	if rep.Send.Accepted != 50 || rep.Send.Failed != 0 {
		t.Fatalf("accepted %d, failed %d (%s)", rep.Send.Accepted, rep.Send.Failed, rep.Send.FirstErr)
	}
	if rep.Sink.E2E.N != 50 || rep.Sink.Duplicates != 0 || rep.Sink.NoID != 0 {
		t.Fatalf("sink: %d distinct arrivals, %d duplicates, %d without id; want 50, 0, 0", rep.Sink.E2E.N, rep.Sink.Duplicates, rep.Sink.NoID)
	}
	if rep.Sink.DKIMOK != 50 || rep.Sink.DKIMFail != 0 {
		t.Fatalf("DKIM: %d verified, %d failed (%s)", rep.Sink.DKIMOK, rep.Sink.DKIMFail, rep.Sink.FirstFail)
	}
	if rep.Relay == nil || rep.Relay.PID == 0 || rep.Relay.RSSMB <= 0 {
		t.Fatalf("relay usage not read: %+v", rep.Relay)
	}
	// The kinds add up to the whole (shared memory is the small rest).
	if u := rep.Relay; u.AnonMB <= 0 || u.AnonMB+u.FileMB > u.RSSMB+0.1 || u.AnonMB+u.FileMB < u.RSSMB*0.9 {
		t.Errorf("RSS %.1f MB = anonymous %.1f + file-backed %.1f?", u.RSSMB, u.AnonMB, u.FileMB)
	}
	if _, err := os.Stat(filepath.Join(o.workdir, "data", "db")); err != nil {
		t.Fatalf("relay data not under the workdir: %v", err)
	}
}

// TestSinkCountsUnsigned: the sink's DKIM check can fail. Messages sent
// straight to it carry no signature, so every one is a DKIM failure.
func TestSinkCountsUnsigned(t *testing.T) {
	sk, err := startSink(sinkOptions{addr: "127.0.0.2:0", tls: true, verifyEvery: 1, txt: map[string][]string{}})
	if err != nil {
		t.Fatal(err)
	}
	defer sk.close()
	rep, start := runSend(sendOptions{addr: sk.Addr, startTLS: true, conns: 2, n: 6, rate: 200, size: 2048,
		to: "user{n}@dest.test", from: "noreply@example.com", runID: "t2"})
	if rep.Accepted != 6 {
		t.Fatalf("accepted %d of 6: %s", rep.Accepted, rep.FirstErr)
	}
	if !sk.wait(6, 10*time.Second) {
		t.Fatalf("%d of 6 arrived", sk.count())
	}
	sk.close()
	r := sk.report(start)
	if r.DKIMFail != 6 || r.DKIMOK != 0 || !strings.Contains(r.FirstFail, "no DKIM-Signature") {
		t.Fatalf("DKIM verified %d, failed %d (%q); want 0 and 6 for unsigned mail", r.DKIMOK, r.DKIMFail, r.FirstFail)
	}
	if r.E2E.N != 6 || r.E2E.P50 <= 0 {
		t.Fatalf("latency not recorded: %+v", r.E2E)
	}
}

func TestLoadIDAndHeaders(t *testing.T) {
	sent := time.Unix(1700000000, 123456789)
	msg := buildMessage(msgSpec{from: "noreply@example.com", to: "u1@dest.test", class: "bulk", seq: 42, sent: sent, size: 4096, runID: "r"})
	if n := len(msg); n < 3800 || n > 4400 {
		t.Errorf("message is %d bytes, want about 4096", n)
	}
	if strings.Contains(strings.ReplaceAll(string(msg), "\r\n", ""), "\n") {
		t.Error("message has a bare LF")
	}
	seq, got, ok := parseLoadID(headerValue(msg, "x-load-id"))
	if !ok || seq != 42 || !got.Equal(sent) {
		t.Errorf("parseLoadID = %d, %v, %v; want 42, %v", seq, got, ok, sent)
	}
	if c := headerValue(msg, loadClassHeader); c != "bulk" {
		t.Errorf("class header = %q", c)
	}
	if headerValue(msg, "List-Unsubscribe") == "" {
		t.Error("bulk message without List-Unsubscribe")
	}
	for _, bad := range []string{"", "1", "x 2", "1 y", "1 2 3"} {
		if _, _, ok := parseLoadID(bad); ok {
			t.Errorf("parseLoadID(%q) accepted", bad)
		}
	}
}

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p := summarize(d)
	if p.N != 100 || p.P50 != 50 || p.P90 != 90 || p.P99 != 99 || p.Max != 100 {
		t.Fatalf("summarize = %+v", p)
	}
	if got := summarize(nil); got.N != 0 {
		t.Fatalf("summarize(nil) = %+v", got)
	}
}

func TestLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:25": true, "127.9.9.9:1": true, "10.0.0.1:25": false,
		"[::1]:25": false, "example.com:25": false, "127.0.0.1": false} {
		if err := loopbackOnly(addr); (err == nil) != ok {
			t.Errorf("loopbackOnly(%q) = %v", addr, err)
		}
	}
	if code := run([]string{"send", "-addr", "192.0.2.1:25", "-n", "1"}, new(strings.Builder), new(strings.Builder)); code != 2 {
		t.Errorf("send to a non-loopback address: exit %d, want 2", code)
	}
}

// TestFillThenRestart: messages written by fill are the relay's queue when
// it restarts on that directory (its "queue loaded" line counts them).
func TestFillThenRestart(t *testing.T) {
	bin := buildLatchkey(t)
	dir := t.TempDir()
	env, err := writeRelayEnv(relaySetup{dir: dir, dkimAlgo: "ed25519", resolver: "127.0.0.1:9", mxPort: "9"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fillQueue(env.cfgPath, 30, 4); err != nil {
		t.Fatal(err)
	}
	p, err := startRelayBin(bin, env, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p.stop()
	log, err := os.ReadFile(env.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), `"items":30,`) {
		t.Fatalf("relay did not load the 30 filled items; its log:\n%s", log)
	}
}

// TestRunDirect: the harness ceiling mode sends to the sink alone and still
// accounts for every message.
func TestRunDirect(t *testing.T) {
	o := runOptions{direct: true, verifyEvery: 1, timeout: 20 * time.Second}
	o.send = sendOptions{conns: 2, n: 20, size: 1024, to: "user{n}@dest.test", from: "noreply@example.com", runID: "t3"}
	rep, err := doRun(o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Send.Accepted != 20 || rep.Sink.E2E.N != 20 || rep.Sink.DKIMFail != 0 || rep.E2EMsgPerSec <= 0 {
		t.Fatalf("direct run: %+v", rep)
	}
}

// TestUsage: -h answers on stdout with exit 0 and names every command the
// dispatcher knows, including the sink's DNS server a relay needs.
func TestUsage(t *testing.T) {
	var out, errOut strings.Builder
	if code := run([]string{"-h"}, &out, &errOut); code != 0 {
		t.Fatalf("-h: exit %d, stderr %q", code, errOut.String())
	}
	for _, cmd := range []string{"\n  run ", "\n  send ", "\n  sink ", "\n  restart ", "\n  fill ", "\n  relay ", "-dns-listen"} {
		if !strings.Contains(out.String(), cmd) {
			t.Errorf("usage does not mention %q:\n%s", cmd, out.String())
		}
	}
	errOut.Reset()
	if code := run([]string{"nope"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "sink") {
		t.Errorf("unknown command: exit %d, stderr %q; want 2 and the usage", code, errOut.String())
	}
}

// TestSinkDuplicatesAcrossRuns: a sink left running across two send runs
// (each numbering its messages from 0) reports no duplicates, while the same
// message arriving twice is one.
func TestSinkDuplicatesAcrossRuns(t *testing.T) {
	sk, err := startSink(sinkOptions{addr: "127.0.0.2:0", tls: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sk.close()
	for _, id := range []string{"a", "b"} {
		rep, _ := runSend(sendOptions{addr: sk.Addr, startTLS: true, conns: 1, n: 3, size: 1024,
			to: "user{n}@dest.test", from: "noreply@example.com", runID: id})
		if rep.Accepted != 3 {
			t.Fatalf("run %s: accepted %d of 3: %s", id, rep.Accepted, rep.FirstErr)
		}
	}
	if !sk.wait(6, 10*time.Second) {
		t.Fatalf("%d distinct of 6 arrived", sk.count())
	}
	msg := buildMessage(msgSpec{from: "noreply@example.com", to: "u@dest.test", class: "reset", seq: 0,
		sent: time.Now(), size: 1024, runID: "c"})
	sk.data("", nil, msg)
	sk.data("", nil, msg)
	sk.close()
	r := sk.report(time.Now())
	if r.Arrived != 8 || r.Duplicates != 1 || sk.count() != 7 {
		t.Fatalf("arrived %d, duplicates %d, distinct %d; want 8, 1, 7", r.Arrived, r.Duplicates, sk.count())
	}
}

// TestZoneTXT: the output of `latchkey dns records` (comments, split TXT
// strings, MX, A, PTR) is read as is, and a DKIM key split over two strings
// comes back joined.
func TestZoneTXT(t *testing.T) {
	zone := `; acme.test
acme.test. 3600 IN TXT "v=spf1 ip4:127.0.0.1 -all"
s1._domainkey.acme.test. 3600 IN TXT "v=DKIM1; k=rsa; p=AAAA" "BBBB"
bounce.acme.test. 3600 IN MX 10 relay.acme.test.
relay.acme.test. 3600 IN A 127.0.0.1
1.0.0.127.in-addr.arpa. 3600 IN PTR relay.acme.test.
`
	txt, err := zoneTXT(zone, "zone.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got := txt["s1._domainkey.acme.test"]; len(got) != 1 || got[0] != "v=DKIM1; k=rsa; p=AAAABBBB" {
		t.Errorf("DKIM record = %q", got)
	}
	if len(txt) != 2 {
		t.Errorf("%d TXT names, want 2: %v", len(txt), txt)
	}
	if _, err := zoneTXT("acme.test. 3600 IN TXT \"unterminated\n", "zone.txt"); err == nil || !strings.Contains(err.Error(), "zone.txt") {
		t.Errorf("bad zone: err = %v, want one naming the file", err)
	}
}

// TestSinkReject: recipients starting with -reject get a 550 5.1.1 at RCPT,
// the others are accepted.
func TestSinkReject(t *testing.T) {
	sk, err := startSink(sinkOptions{addr: "127.0.0.2:0", tls: true, rejectPrefix: "Bad"})
	if err != nil {
		t.Fatal(err)
	}
	defer sk.close()
	bad, _ := runSend(sendOptions{addr: sk.Addr, startTLS: true, conns: 1, n: 2, size: 1024,
		to: "bad{n}@dest.test", from: "noreply@example.com", runID: "r1"})
	if bad.Accepted != 0 || bad.Failed != 2 || !strings.Contains(bad.FirstErr, "550") {
		t.Fatalf("to bad*: accepted %d, failed %d (%s); want 0, 2 and a 550", bad.Accepted, bad.Failed, bad.FirstErr)
	}
	good, _ := runSend(sendOptions{addr: sk.Addr, startTLS: true, conns: 1, n: 2, size: 1024,
		to: "good{n}@dest.test", from: "noreply@example.com", runID: "r2"})
	if good.Accepted != 2 {
		t.Fatalf("to good*: accepted %d of 2 (%s)", good.Accepted, good.FirstErr)
	}
}
