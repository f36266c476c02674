package main

import (
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// With the relay stopped and the chain head forged, `audit verify` still
// runs and names the problem, and commands that would change the database
// (and so append to an untrusted chain) are refused.
func TestOfflineVerifyWithForgedHead(t *testing.T) {
	e := newCLIEnv(t)
	st, q := e.open(t)
	items := seed(t, q)
	// Someone with the database but not the key rewrites the head.
	if err := st.DB.Update(func(txn *badger.Txn) error { return txn.Set([]byte("a/h"), []byte("forged head")) }); err != nil {
		t.Fatal(err)
	}
	st.Close()

	code, out, errs := e.run(t, "audit verify")
	if code != 1 || !strings.Contains(out, "PROBLEM head") || !strings.Contains(errs, "FAIL") {
		t.Errorf("audit verify: exit %d\n%s%s", code, out, errs)
	}
	if code, out, _ := e.run(t, "queue list"); code != 0 || !strings.Contains(out, items[0].ID) {
		t.Errorf("queue list (a read) refused: %d\n%s", code, out)
	}
	code, _, errs = e.run(t, "queue drop", "-by", "alice", items[0].ID)
	if code != 1 || !strings.Contains(errs, "read-only") {
		t.Errorf("queue drop on an untrusted chain: exit %d %q, want refused read-only", code, errs)
	}
}
