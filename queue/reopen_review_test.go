package queue

import (
	"errors"
	"testing"
	"time"

	"github.com/latchkey/latchkey/audit"
)

// A late report for an item that already ended other than delivered (a
// repeated DSN for a bounced reset) is refused with nothing written; a
// redirect of a delivered reset that a newer one replaced is too late.
func TestReopenOnlyDelivered(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	now := time.Now()
	old := testMsg("a@x.test", "a@x.test", now)
	if _, err := q.Enqueue(old); err != nil {
		t.Fatal(err)
	}
	oid := old.Items[0].ID
	if err := q.Complete(oid, Outcome{State: StateDelivered}); err != nil {
		t.Fatal(err)
	}
	newer := testMsg("a@x.test", "a@x.test", now.Add(time.Millisecond))
	if _, err := q.Enqueue(newer); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Reopen(oid, Outcome{Redirect: "b@x.test", Retry: now}); !errors.Is(err, ErrTooLate) {
		t.Fatalf("redirect of a superseded reset: %v, want ErrTooLate", err)
	}
	if it, _ := q.Get(oid); it.State != StateDelivered || it.Rcpt != "a@x.test" {
		t.Errorf("after a refused redirect: %+v", it)
	}

	nid := newer.Items[0].ID
	if err := q.Complete(nid, Outcome{State: StateBounced, Reason: "5.1.1"}); err != nil {
		t.Fatal(err)
	}
	out := Outcome{State: StateBounced, Reason: "5.1.1 again",
		Events: []*audit.Event{{Time: now, Type: audit.Escalated}}}
	if _, err := q.Reopen(nid, out); !errors.Is(err, ErrNotDelivered) {
		t.Fatalf("late outcome for a bounced item: %v, want ErrNotDelivered", err)
	}
	if it, _ := q.Get(nid); it.Reason != "5.1.1" {
		t.Errorf("bounced item rewritten: %+v", it)
	}
}
