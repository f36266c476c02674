package relay

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
)

// A relay that finds events after the signed chain head at start records
// them as an integrity event and starts anyway; verify keeps naming them.
func TestBootRecordsUnsignedTail(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	id := queue.ItemID(e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "integ1")), 0)
	// Delivered and recorded, so that the restart does not send it again.
	waitFor(t, "delivered", 5*time.Second, func() bool { it := itemState(e, id); return it != nil && it.State == queue.StateDelivered })
	key := e.srv.auditKey
	e.stop()

	// Someone with the database but not the key adds a well-chained event
	// and puts the old head back.
	st, err := queue.OpenStore(filepath.Join(e.dir, "db"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var head []byte
	st.DB.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte("a/h"))
		if err == nil {
			head, err = item.ValueCopy(nil)
		}
		return err
	})
	l, err := audit.Open(st.DB, key)
	if err != nil {
		t.Fatal(err)
	}
	txn := st.DB.NewTransaction(true)
	if err := l.Append(txn, &audit.Event{Type: audit.Delivered, QueueID: "forgedforgedforgaa", Recipient: "victim@dest.test"}); err != nil {
		t.Fatal(err)
	}
	if err := txn.Set([]byte("a/h"), head); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	forged, _ := l.Head()
	st.Close()

	e.start(nil)
	evs, err := audit.Query(e.srv.Store.DB, audit.Filter{Type: audit.Integrity})
	if err != nil || len(evs) != 1 || evs[0].Fields["from"] != evs[0].Fields["to"] || evs[0].Seq != forged+1 {
		t.Fatalf("integrity events %+v, %v; want one naming seq %d", evs, err, forged)
	}
	rep, err := audit.Verify(e.srv.Store.DB, key)
	if err != nil || rep.OK() || len(rep.Problems) != 1 || rep.Problems[0].Seq != forged {
		t.Errorf("verify after the restart: %v %+v; want the forged event reported", err, rep)
	}
	// And the relay works: a reset still goes out.
	e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"bob@dest.test"}, resetMsg("bob@dest.test", "integ2"))
	if got := e.sink.Wait(2, 5*time.Second); len(got) != 2 {
		t.Errorf("%d deliveries after the restart, want 2", len(got))
	}
}

// The relay logs the signed chain head at start (and hourly), so that the
// head `audit verify` reports can be compared with lines kept off the host.
func TestAuditHeadAnchoredInLog(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	id := queue.ItemID(e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, resetMsg("jane@dest.test", "anchor1")), 0)
	waitFor(t, "delivered", 5*time.Second, func() bool { it := itemState(e, id); return it != nil && it.State == queue.StateDelivered })
	var logs syncBuffer
	restartLogged(e, &logs)
	rep, err := audit.Verify(e.srv.Store.DB, e.srv.auditKey)
	if err != nil || rep.HeadSeq == 0 {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	want := fmt.Sprintf(`"seq":%d,"hash":"%s","message":"audit chain head"`, rep.HeadSeq, hex.EncodeToString(rep.HeadHash))
	waitFor(t, "anchor logged", 5*time.Second, func() bool { return strings.Contains(logs.String(), want) })
}

// A DKIM key file that other users can read is warned about at start.
func TestOpenKeyFileWarned(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	file := e.srv.cfg.KeyEntries()[0].KeyFile
	var logs syncBuffer
	restartLogged(e, &logs)
	if strings.Contains(logs.String(), "readable by other users") {
		t.Fatalf("warned about a 0600 key:\n%.1000s", logs.String())
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs2 syncBuffer
	restartLogged(e, &logs2)
	if !strings.Contains(logs2.String(), "readable by other users") || !strings.Contains(logs2.String(), file) {
		t.Errorf("no warning for a 0644 key file %s", file)
	}
}
