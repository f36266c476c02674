package audit

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func TestURLHashes(t *testing.T) {
	l := &Log{urlKey: deriveKey(testKey, "url")}
	cases := []struct {
		name string
		body string
		want []string
	}{
		{
			name: "plain text",
			body: "Content-Type: text/plain\r\n\r\nHi,\r\nreset here: https://corp.test/r?t=abc1.\r\nOr (http://corp.test/help).\r\n",
			want: []string{"https://corp.test/r?t=abc1", "http://corp.test/help"},
		},
		{
			name: "html href with entities",
			body: "Content-Type: text/html\r\n\r\n<p><a href=\"https://corp.test/r?t=abc2&amp;u=7\">Reset</a> <a href='HTTPS://corp.test/x'>x</a></p>",
			want: []string{"https://corp.test/r?t=abc2&u=7", "HTTPS://corp.test/x"},
		},
		{
			name: "quoted-printable soft break and =3D",
			body: "Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
				"Reset: https://corp.test/reset?token=3Dabc3def=\r\nghi&user=3D42\r\n",
			want: []string{"https://corp.test/reset?token=abc3defghi&user=42"},
		},
		{
			name: "multipart alternative, base64 html, duplicate link",
			body: "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=BB\r\n\r\n" +
				"--BB\r\nContent-Type: text/plain\r\n\r\nGo to https://corp.test/r?t=abc4\r\n" +
				"--BB\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
				b64("<a href=\"https://corp.test/r?t=abc4\">go</a> <img src=\"https://cdn.corp.test/logo.png\">") + "\r\n" +
				"--BB\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
				b64("not scanned https://corp.test/in-image") + "\r\n--BB--\r\n",
			want: []string{"https://corp.test/r?t=abc4", "https://cdn.corp.test/logo.png"},
		},
		{
			name: "no header: raw quoted-printable fallback",
			body: "just text https://corp.test/r?t=3Dabc5=\r\nxyz and more",
			want: []string{"https://corp.test/r?t=abc5xyz"},
		},
		{
			name: "no links",
			body: "Content-Type: text/plain\r\n\r\nnothing to see, ftp://x is not http\r\n",
			want: nil,
		},
	}
	for _, c := range cases {
		got := l.URLHashes([]byte(c.body))
		var want []string
		for _, u := range c.want {
			want = append(want, l.URLHash(u))
		}
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("%s: URLHashes = %v, want hashes of %q (urls found: %q)", c.name, got, c.want, findURLs([]byte(c.body)))
		}
		for _, h := range got {
			if len(h) != 32 || strings.Contains(c.body, h) {
				t.Errorf("%s: hash %q is not a 16-byte hex digest", c.name, h)
			}
		}
	}
	// The hash is keyed: another key gives another hash.
	other := &Log{urlKey: deriveKey([]byte("another key, 16+ bytes"), "url")}
	if other.URLHash("https://corp.test/r") == l.URLHash("https://corp.test/r") {
		t.Error("URL hash does not depend on the key")
	}
	if BodyDigest([]byte("abc")) != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Error("BodyDigest is not SHA-256 hex")
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// exportDB holds two lives with awkward details (spaces, quotes, "=",
// newlines, commas, unicode, an empty value).
func exportDB(t *testing.T) (*badger.DB, []Event) {
	t.Helper()
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	l := openLog(t, db)
	evs := append(life("Q1", "<m1@x>", 0), life("Q2", "<m2@x>", 100)...)
	evs[3].Fields["reply"] = "451 4.7.1 try \"later\", a=b\nsecond line"
	evs[4].Fields["reason"] = ""
	evs[5].Fields["by"] = "Zoë, ops \\ team"
	evs[6].Fields = nil
	commit(t, db, l, evs[:8]...)
	commit(t, db, l, evs[8:]...)
	all, err := Query(db, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return db, all
}

func sameEvent(a, b Event) bool {
	if len(a.Fields) == 0 && len(b.Fields) == 0 {
		a.Fields, b.Fields = nil, nil
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb) && a.Time.Equal(b.Time)
}

func TestExportCSVRoundTrip(t *testing.T) {
	db, all := exportDB(t)
	var buf bytes.Buffer
	if err := Export(db, &buf, "csv", time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rows[0], CSVHeader) {
		t.Errorf("header = %v", rows[0])
	}
	rows = rows[1:]
	if len(rows) != len(all) {
		t.Fatalf("%d rows, want %d", len(rows), len(all))
	}
	for i, row := range rows {
		ev, err := eventFromCSV(row)
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		if !sameEvent(ev, all[i]) {
			t.Errorf("row %d: got %+v, want %+v", i, ev, all[i])
		}
		// An auditor can re-check the chain from the CSV alone.
		if !bytes.Equal(ComputeHash(&ev), ev.Hash) {
			t.Errorf("row %d: hash does not verify from the CSV", i)
		}
	}
	if rows[0][1] != t0.Format(time.RFC3339Nano) || !strings.HasSuffix(rows[0][1], "Z") {
		t.Errorf("time column = %q, want RFC 3339 UTC", rows[0][1])
	}
}

func eventFromCSV(row []string) (Event, error) {
	seq, err := strconv.ParseUint(row[0], 10, 64)
	if err != nil {
		return Event{}, err
	}
	tm, err := time.Parse(time.RFC3339Nano, row[1])
	if err != nil {
		return Event{}, err
	}
	fields, err := ParseDetails(row[8])
	if err != nil {
		return Event{}, err
	}
	prev, err := decodeHash(row[9], true)
	if err != nil {
		return Event{}, err
	}
	hash, err := decodeHash(row[10], false)
	if err != nil {
		return Event{}, err
	}
	return Event{Seq: seq, Time: tm, Type: row[2], QueueID: row[3], MessageID: row[4], Class: row[5],
		Recipient: row[6], Sender: row[7], Fields: fields, Prev: prev, Hash: hash}, nil
}

func TestExportJSONLRoundTrip(t *testing.T) {
	db, all := exportDB(t)
	var buf bytes.Buffer
	if err := Export(db, &buf, "jsonl", time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&buf)
	i := 0
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if i >= len(all) || !sameEvent(ev, all[i]) {
			t.Fatalf("line %d: %s", i, sc.Text())
		}
		i++
	}
	if i != len(all) {
		t.Errorf("%d lines, want %d", i, len(all))
	}
	var line map[string]any
	b, _ := json.Marshal(all[1])
	if err := json.Unmarshal(b, &line); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"seq", "time", "type", "queue_id", "message_id", "class", "recipient", "sender", "fields", "prev", "hash"} {
		if _, ok := line[k]; !ok {
			t.Errorf("JSON has no %q field: %s", k, b)
		}
	}
}

func TestExportWindowAndFormat(t *testing.T) {
	db, _ := exportDB(t)
	var buf bytes.Buffer
	if err := Export(db, &buf, "jsonl", t0.Add(100*time.Second), t0.Add(103*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(buf.Bytes(), []byte("\n")); n != 3 {
		t.Errorf("window export: %d lines, want 3", n)
	}
	if err := Export(db, io.Discard, "xml", time.Time{}, time.Time{}); err == nil {
		t.Error("Export accepted format xml")
	}
	if err := Export(db, failingWriter{}, "csv", time.Time{}, time.Time{}); err == nil {
		t.Error("Export hid a write error")
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestDetailsRoundTrip(t *testing.T) {
	for _, m := range []map[string]string{
		{},
		{"a": "b"},
		{"reply": "550 5.1.1 <x@y> unknown \"user\"", "e": "", "k=v": "x y", "tab": "a\tb", "bs": `a\b`, "u": "Zoë"},
	} {
		var b strings.Builder
		FormatDetails(&b, m)
		got, err := ParseDetails(b.String())
		if err != nil {
			t.Fatalf("ParseDetails(%q): %v", b.String(), err)
		}
		if len(got) != len(m) {
			t.Errorf("%q: got %v, want %v", b.String(), got, m)
		}
		for k, v := range m {
			if got[k] != v {
				t.Errorf("%q: %q = %q, want %q", b.String(), k, got[k], v)
			}
		}
	}
}

func FuzzEventUnmarshal(f *testing.F) {
	ev := Event{Seq: 7, Time: t0, Type: Delivered, QueueID: "Q", MessageID: "<m@x>", Fields: map[string]string{"code": "250"}}
	ev.Prev = ComputeHash(&ev)
	ev.Hash = ComputeHash(&ev)
	seed, _ := json.Marshal(ev)
	f.Add(seed)
	f.Add([]byte(`{"seq":1,"time":"2026-01-01T00:00:00Z","type":"received","hash":"00"}`))
	f.Add([]byte(`{"seq":-1,"time":"x","type":"","fields":{"a":1}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev Event
		if err := ev.UnmarshalJSON(data); err != nil {
			return
		}
		// Whatever decodes must re-encode to something that decodes the same
		// and hashes the same: Verify relies on it.
		b, err := ev.MarshalJSON()
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var again Event
		if err := again.UnmarshalJSON(b); err != nil {
			t.Fatalf("decode of re-encoded %s: %v", b, err)
		}
		if !bytes.Equal(ComputeHash(&ev), ComputeHash(&again)) {
			t.Fatalf("hash changed across re-encoding: %s", b)
		}
	})
}

func FuzzDecodeStored(f *testing.F) {
	ev := Event{Seq: 7, Time: t0, Type: Delivered, QueueID: "Q", MessageID: "<m@x>", Fields: map[string]string{"code": "250", "mx": "mx.x"}}
	ev.Prev = ComputeHash(&ev)
	ev.Hash = ComputeHash(&ev)
	f.Add(encodeStored(&ev))
	ev.Prev, ev.Fields = nil, nil
	ev.Hash = ComputeHash(&ev)
	f.Add(encodeStored(&ev))
	f.Add([]byte(canonicalTag))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev Event
		if err := ev.decodeStored(data); err != nil {
			return
		}
		// Strict canonical form: what decodes re-encodes to the same bytes,
		// so a stored event's hash covers exactly what is shown and exported.
		if got := encodeStored(&ev); !bytes.Equal(got, data) {
			t.Fatalf("re-encoding differs:\n got %q\nwant %q", got, data)
		}
		// The in-place View (what Verify and the figures read) sees the same
		// event, and its Canonical part is what the hash covers.
		var v View
		if err := v.parse(data); err != nil {
			t.Fatalf("Event decodes but View does not: %v", err)
		}
		if string(v.QueueID) != ev.QueueID || string(v.Type) != ev.Type || !v.Time.Equal(ev.Time) || v.Seq != ev.Seq {
			t.Fatalf("View %+v differs from Event %+v", v, ev)
		}
		for k, val := range ev.Fields {
			if got := v.Field(k); string(got) != val || got == nil {
				t.Fatalf("View.Field(%q) = %q, want %q", k, got, val)
			}
		}
		if v.Field("no such field\x00") != nil {
			t.Fatal("View.Field found an absent key")
		}
		if !bytes.Equal(append(bytes.Clone(v.Canonical), v.Hash...), data) {
			t.Fatal("View's Canonical and Hash do not make up the stored value")
		}
		b, err := ev.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var again Event
		if err := again.UnmarshalJSON(b); err != nil {
			t.Fatalf("JSON of a stored event does not decode: %s: %v", b, err)
		}
		if !bytes.Equal(encodeStored(&again), data) {
			t.Fatalf("JSON round trip changed the event: %s", b)
		}
	})
}

func FuzzCheckpointDecode(f *testing.F) {
	cp := &Checkpoint{Seq: 3, Prev: make([]byte, 32), Time: t0, Before: t0, Removed: 2}
	cp.MAC = cp.mac(deriveKey(testKey, "sign"))
	seed, _ := encodeCheckpoint(cp)
	f.Add(seed)
	f.Add([]byte(`{"seq":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cp, err := decodeCheckpoint(data)
		if err != nil {
			return
		}
		// A decoded checkpoint must survive re-encoding (Prune writes what
		// Verify reads) and its MAC check must not panic.
		b, err := encodeCheckpoint(cp)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := decodeCheckpoint(b); err != nil {
			t.Fatalf("decode of re-encoded %s: %v", b, err)
		}
		_ = cp.mac(deriveKey(testKey, "sign"))
		_, _ = decodeHead(testKey, data)
	})
}

func FuzzURLHashes(f *testing.F) {
	f.Add([]byte("Content-Type: text/html\r\n\r\n<a href=\"https://x.test/?a=1&amp;b=2\">x</a>"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nhttps://x=\r\n.test/=3D\r\n--b--"))
	f.Add([]byte("no header https://x.test"))
	l := &Log{urlKey: deriveKey(testKey, "url")}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, h := range l.URLHashes(body) {
			if len(h) != 32 {
				t.Fatalf("hash %q", h)
			}
		}
	})
}

var bench struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bench.dir != "" && os.Getenv("AUDIT_BENCH_DIR") == "" {
		os.RemoveAll(bench.dir)
	}
	os.Exit(code)
}

const benchEvents = 1_000_000

// benchDB returns, read-only, a database holding a chain of 1,000,000
// events, built once per process in batches of 5,000 as a busy committer
// would. Read-only: no compactions run beside the measured work.
func benchDB(b *testing.B) *badger.DB {
	const total = benchEvents
	bench.once.Do(func() {
		// AUDIT_BENCH_DIR keeps the built database between runs (for
		// profiling); it is built there only if empty.
		if d := os.Getenv("AUDIT_BENCH_DIR"); d != "" {
			bench.dir = d
			if ents, _ := os.ReadDir(d); len(ents) > 0 {
				return
			}
			bench.err = os.MkdirAll(d, 0o700)
		} else {
			bench.dir, bench.err = os.MkdirTemp("", "audit-bench-")
		}
		if bench.err != nil {
			return
		}
		db := openDB(b, bench.dir)
		defer db.Close()
		l := openLog(b, db)
		start := time.Now()
		for i := 0; i < total; {
			txn := db.NewTransaction(true)
			for j := 0; j < 5000 && i < total; j, i = j+1, i+1 {
				ev := &Event{Time: t0.Add(time.Duration(i) * time.Millisecond), Type: Attempt,
					QueueID: fmt.Sprintf("Q%07d", i/7), MessageID: fmt.Sprintf("<%07d@corp.test>", i/7),
					Class: "reset", Recipient: fmt.Sprintf("user%d@example.test", i/7), Sender: "noreply@corp.test",
					Fields: map[string]string{"mx": "mx.example.test", "ip": "192.0.2.1", "code": "250", "latency_ms": "412"}}
				if bench.err = l.Append(txn, ev); bench.err != nil {
					txn.Discard()
					return
				}
			}
			if bench.err = txn.Commit(); bench.err != nil {
				return
			}
		}
		b.Logf("built %d events in %v", total, time.Since(start))
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	db, err := badger.Open(badger.DefaultOptions(bench.dir).WithLogger(nil).WithReadOnly(true))
	if err != nil {
		b.Fatal(err)
	}
	return db
}

// BenchmarkExport1M exports the 1,000,000-event chain to io.Discard as CSV
// and reports the bytes allocated per event and the peak live heap seen
// while exporting (sampled every 20ms).
func BenchmarkExport1M(b *testing.B) {
	db := benchDB(b)
	defer db.Close()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > peak.Load() {
					peak.Store(ms.HeapAlloc)
				}
			}
		}
	}()
	b.ResetTimer()
	for range b.N {
		if err := Export(db, io.Discard, "csv", time.Time{}, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	close(stop)
	<-done
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N*benchEvents), "alloc-B/event")
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(before.HeapAlloc)/(1<<20), "start-heap-MB")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchEvents), "ns/event")
}

// BenchmarkVerify1M verifies the 1,000,000-event chain.
func BenchmarkVerify1M(b *testing.B) {
	db := benchDB(b)
	defer db.Close()
	b.ResetTimer()
	for range b.N {
		r, err := Verify(db, testKey)
		if err != nil || !r.OK() || r.Events != benchEvents {
			b.Fatalf("Verify = %+v, %v", r, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchEvents), "ns/event")
}
