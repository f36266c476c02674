package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
)

const cliAuditKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// cliEnv is a data directory and a configuration whose [admin] listen is a
// loopback port where a test may or may not serve the admin API.
type cliEnv struct {
	dir, data, cfg, listen, token string
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	dir := t.TempDir()
	e := &cliEnv{dir: dir, data: filepath.Join(dir, "data"), token: "cli-test-token-42"}
	if err := os.MkdirAll(e.data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.data, "audit.key"), []byte(cliAuditKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(e.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A free loopback port, closed again: nothing answers there until a
	// test serves the admin API on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.listen = ln.Addr().String()
	ln.Close()
	e.cfg = filepath.Join(dir, "latchkey.toml")
	cfg := fmt.Sprintf(`hostname = "relay.test"
data_dir = %q

[submission]
listen = ["127.0.0.1:0"]

[[domains]]
name = "example.com"
[[domains.dkim]]
selector = "ed1"
algo = "ed25519"
key_file = "dkim/ed1.pem"

[admin]
listen = %q
token_file = %q
`, e.data, e.listen, filepath.Join(dir, "token"))
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// open opens the database as the relay does.
func (e *cliEnv) open(t *testing.T) (*queue.Store, *queue.Queue) {
	t.Helper()
	st, err := queue.OpenStore(filepath.Join(e.data, "db"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if st.Audit, err = audit.Open(st.DB, []byte(cliAuditKey)); err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(st, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return st, q
}

func seed(t *testing.T, q *queue.Queue) []*queue.Item {
	t.Helper()
	now := time.Now()
	var items []*queue.Item
	for i, rcpt := range []string{"a@example.net", "b@example.net"} {
		id := queue.NewMsgID(now.Add(time.Duration(i) * time.Millisecond))
		it := &queue.Item{ID: queue.ItemID(id, 0), MsgID: id, Class: "reset", Rcpt: rcpt, MessageID: fmt.Sprintf("<m%d@example.com>", i),
			Accepted: now, Due: now.Add(time.Hour), Deadline: now.Add(2 * time.Hour), Cutoff: now.Add(2 * time.Hour)}
		if _, err := q.Enqueue(&queue.Message{MsgID: id, Body: []byte("x"), Items: []*queue.Item{it}}); err != nil {
			t.Fatal(err)
		}
		items = append(items, it)
	}
	return items
}

func (e *cliEnv) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	words := strings.Fields(args[0])
	code := run(append(append(words, "-config", e.cfg), args[1:]...), &out, &errb)
	return code, out.String(), errb.String()
}

// exercise runs the operator commands end to end; the same steps must pass
// with the relay stopped and with it running.
func (e *cliEnv) exercise(t *testing.T, items []*queue.Item) {
	code, out, errs := e.run(t, "queue list")
	if code != 0 || !strings.Contains(out, items[0].ID) || !strings.Contains(out, items[1].ID) || !strings.HasPrefix(out, "ID ") {
		t.Fatalf("queue list: %d\n%s%s", code, out, errs)
	}
	code, out, _ = e.run(t, "queue list", "-json", "-state", "queued")
	var listed []queue.Item
	if code != 0 || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 2 {
		t.Errorf("queue list -json: %d %s", code, out)
	}

	code, out, errs = e.run(t, "queue drop", "-by", "alice", "-reason", "test send", items[1].ID)
	if code != 0 || !strings.Contains(out, "dropped by alice: test send") {
		t.Errorf("queue drop: %d %q %q", code, out, errs)
	}
	code, out, _ = e.run(t, "queue list", "-state", "dropped")
	if code != 0 || !strings.Contains(out, items[1].ID) || strings.Contains(out, items[0].ID) {
		t.Errorf("queue list -state dropped: %d\n%s", code, out)
	}
	code, _, errs = e.run(t, "queue retry", items[1].ID)
	if want := "latchkey queue retry: item " + items[1].ID + " is dropped; only queued items can be retried\n"; code != 1 || errs != want {
		t.Errorf("queue retry of a dropped item: %d %q, want %q", code, errs, want)
	}
	code, out, _ = e.run(t, "queue show", items[0].ID)
	if code != 0 || !strings.Contains(out, "recipient:") || !strings.Contains(out, "a@example.net") {
		t.Errorf("queue show: %d\n%s", code, out)
	}
	// The flag after the id works too.
	code, out, _ = e.run(t, "audit show", items[1].ID, "-json")
	if code != 0 || !strings.Contains(out, `"type":"dropped"`) || !strings.Contains(out, `"by":"alice"`) || !strings.Contains(out, `"reason":"test send"`) {
		t.Errorf("audit show -json after drop: %d\n%s", code, out)
	}

	csv := filepath.Join(e.dir, "unsub.csv")
	os.WriteFile(csv, []byte("address,reason\none@example.net,unsubscribed\nnot-an-address\nTwo@Example.net\n"), 0o600)
	code, out, errs = e.run(t, "suppress import", csv)
	if code != 1 || !strings.Contains(out, "imported 2 addresses into unsubscribe from 3 rows") ||
		!strings.Contains(errs, csv+":3: address:") || !strings.Contains(errs, "1 bad rows not imported") {
		t.Errorf("suppress import: %d\n%s%s", code, out, errs)
	}
	code, out, _ = e.run(t, "suppress list")
	if code != 0 || !strings.Contains(out, "one@example.net") || !strings.Contains(out, "two@example.net") || !strings.Contains(out, "unsubscribed") {
		t.Errorf("suppress list: %d\n%s", code, out)
	}
	code, _, errs = e.run(t, "suppress remove", "three@example.net")
	if code != 1 || !strings.Contains(errs, "latchkey suppress remove: three@example.net is not on list unsubscribe") {
		t.Errorf("suppress remove of an absent address: %d %q", code, errs)
	}

	code, out, _ = e.run(t, "audit verify")
	if code != 0 || !strings.Contains(out, "OK: the chain verifies") {
		t.Errorf("audit verify: %d\n%s", code, out)
	}
	code, out, _ = e.run(t, "audit export", "-format", "csv", "-since", "1h")
	if code != 0 || !strings.HasPrefix(out, strings.Join(audit.CSVHeader, ",")+"\n") || !strings.Contains(out, ",dropped,") {
		t.Errorf("audit export: %d\n%s", code, out)
	}
	code, out, _ = e.run(t, "audit query", "-type", "suppressed", "-json")
	if code != 0 || strings.Count(out, "\n") != 2 {
		t.Errorf("audit query -type suppressed: %d\n%s", code, out)
	}
	code, _, errs = e.run(t, "outbox list")
	if code != 1 || !strings.Contains(errs, "Salesforce is not enabled") {
		t.Errorf("outbox list without Salesforce: %d %q", code, errs)
	}
}

// With the relay stopped, the commands open the database themselves.
func TestAdminCommandsRelayStopped(t *testing.T) {
	e := newCLIEnv(t)
	st, q := e.open(t)
	items := seed(t, q)
	st.Close()

	e.exercise(t, items)

	// What the commands did is in the database.
	st, q = e.open(t)
	defer st.Close()
	it, err := q.Get(items[1].ID)
	if err != nil || it == nil || it.State != queue.StateDropped {
		t.Errorf("item after drop: %+v %v", it, err)
	}
}

// With the relay running, the commands go over its admin API: the test holds
// the database open (Badger would refuse a second opener) and counts the
// requests its admin listener serves.
func TestAdminCommandsRelayRunning(t *testing.T) {
	e := newCLIEnv(t)
	st, q := e.open(t)
	defer st.Close()
	items := seed(t, q)

	var calls atomic.Int64
	h := admin.Handler(admin.Options{Token: e.token, Queue: q, Store: st, AuditKey: []byte(cliAuditKey), Log: zerolog.Nop()})
	ln, err := net.Listen("tcp", e.listen)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			calls.Add(1)
		}
		h.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	e.exercise(t, items)
	if calls.Load() < 10 {
		t.Errorf("%d API calls reached the running relay", calls.Load())
	}
	if it, _ := q.Get(items[1].ID); it == nil || it.State != queue.StateDropped {
		t.Errorf("the relay's queue does not see the drop: %+v", it)
	}

	// The token: the environment wins over the file, and a wrong one is
	// refused with the API's message.
	t.Setenv(adminTokenEnv, "wrong")
	code, _, errs := e.run(t, "queue list")
	if code != 1 || errs != "latchkey queue list: missing or wrong bearer token\n" {
		t.Errorf("wrong token: %d %q", code, errs)
	}
	t.Setenv(adminTokenEnv, e.token)
	os.Remove(filepath.Join(e.dir, "token"))
	if code, _, errs := e.run(t, "queue list"); code != 0 {
		t.Errorf("token from the environment: %d %q", code, errs)
	}
}

func TestAdminCommandsUsage(t *testing.T) {
	e := newCLIEnv(t)
	if code, _, errs := e.run(t, "queue show"); code != 2 || !strings.Contains(errs, "usage: latchkey queue show") {
		t.Errorf("queue show without an id: %d %q", code, errs)
	}
	if code, _, errs := e.run(t, "audit query", "-since", "last week"); code != 2 || !strings.Contains(errs, "-since:") {
		t.Errorf("audit query -since garbage: %d %q", code, errs)
	}
}
