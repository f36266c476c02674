package admin_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
)

// Every {id} route takes the message id of "250 … queued as", a queue item
// id and the Message-ID, and acts on what the id names.
func TestIDKinds(t *testing.T) {
	e := setup(t, nil)
	c := e.c
	now := time.Now()
	two := e.enqueue(t, "reset", "<two@example.test>", now, "a@example.test", "b@example.test")
	other := e.enqueue(t, "reset", "<other@example.test>", now, "c@example.test")
	msgID := two[0].MsgID

	ids := func(items []queue.Item) string {
		var s []string
		for _, it := range items {
			s = append(s, it.ID)
		}
		return strings.Join(s, ",")
	}
	both := two[0].ID + "," + two[1].ID
	for _, c2 := range []struct{ id, want string }{
		{msgID, both},
		{two[1].ID, two[1].ID},
		{"<two@example.test>", both},
		{"two@example.test", both},
		{other[0].MsgID, other[0].ID},
	} {
		var got []queue.Item
		call(t, c, "GET", "/api/v1/queue/"+url.PathEscape(c2.id), nil, &got)
		if ids(got) != c2.want {
			t.Errorf("queue show %s: %s, want %s", c2.id, ids(got), c2.want)
		}
	}
	if st, msg := status(t, c, "GET", "/api/v1/queue/"+queue.NewMsgID(now), nil); st != 404 || !strings.Contains(msg, "message id") {
		t.Errorf("unknown message id: %d %q, want 404 naming the kinds looked up", st, msg)
	}
	if st, _ := status(t, c, "GET", "/api/v1/queue/"+url.PathEscape("<nobody@example.test>"), nil); st != 404 {
		t.Errorf("unknown Message-ID: %d, want 404", st)
	}

	// Retry on the message id makes both recipients due.
	var got []queue.Item
	call(t, c, "POST", "/api/v1/queue/"+msgID+"/retry", nil, &got)
	if ids(got) != both {
		t.Fatalf("retry by message id answered %s", ids(got))
	}
	for _, it := range got {
		if !it.Due.Before(two[0].Due) {
			t.Errorf("retry by message id: %s due %v, want now", it.ID, it.Due)
		}
	}
	// Drop one recipient by item id, then the message by Message-ID: only the
	// one still queued is dropped, and the answer shows both.
	call(t, c, "POST", "/api/v1/queue/"+two[0].ID+"/drop", admin.DropRequest{By: "alice"}, &got)
	call(t, c, "POST", "/api/v1/queue/"+url.PathEscape("<two@example.test>")+"/drop", admin.DropRequest{By: "bob"}, &got)
	if len(got) != 2 || got[0].State != queue.StateDropped || got[1].State != queue.StateDropped ||
		!strings.Contains(got[0].Reason, "alice") || !strings.Contains(got[1].Reason, "bob") {
		t.Errorf("drop by Message-ID: %+v", got)
	}
	if st, msg := status(t, c, "POST", "/api/v1/queue/"+msgID+"/retry", nil); st != 409 || !strings.Contains(msg, "dropped") {
		t.Errorf("retry of a dropped message: %d %q, want 409", st, msg)
	}
	var o []queue.Item
	call(t, c, "GET", "/api/v1/queue/"+other[0].ID, nil, &o)
	if o[0].State != queue.StateQueued {
		t.Errorf("the other message changed: %+v", o[0])
	}

	// The audit trail: the message id gives the whole message, an item id
	// the message's events and that item's.
	types := func(evs []audit.Event) string {
		var s []string
		for _, ev := range evs {
			s = append(s, ev.Type+":"+ev.QueueID)
		}
		return strings.Join(s, " ")
	}
	var evs []audit.Event
	call(t, c, "GET", "/api/v1/audit/messages/"+msgID, nil, &evs)
	// The retries are on record too: an operator's action is audited.
	want := "received: queued:" + two[0].ID + " queued:" + two[1].ID + " retried:" + two[0].ID + " retried:" + two[1].ID +
		" dropped:" + two[0].ID + " dropped:" + two[1].ID
	if types(evs) != want {
		t.Errorf("audit by message id:\n got %s\nwant %s", types(evs), want)
	}
	call(t, c, "GET", "/api/v1/audit/messages/"+two[1].ID, nil, &evs)
	want = "received: queued:" + two[1].ID + " retried:" + two[1].ID + " dropped:" + two[1].ID
	if types(evs) != want {
		t.Errorf("audit by item id:\n got %s\nwant %s", types(evs), want)
	}
	call(t, c, "GET", "/api/v1/audit/messages/"+url.PathEscape("two@example.test"), nil, &evs)
	if len(evs) != 7 {
		t.Errorf("audit by Message-ID: %s", types(evs))
	}
	if st, _ := status(t, c, "GET", "/api/v1/audit/messages/"+queue.NewMsgID(now), nil); st != 404 {
		t.Errorf("audit of an unknown message id: %d, want 404", st)
	}

	// A click by the message id of a one-recipient message finds its item;
	// of a two-recipient one it is ambiguous.
	var cr admin.ClickResult
	call(t, c, "POST", "/api/v1/events/clicked", admin.ClickRequest{QueueID: other[0].MsgID}, &cr)
	if cr.QueueID != other[0].ID {
		t.Errorf("click by message id: %+v", cr)
	}
	if st, _ := status(t, c, "POST", "/api/v1/events/clicked", admin.ClickRequest{QueueID: msgID}); st != 409 {
		t.Errorf("click by the message id of two recipients: %d, want 409", st)
	}
}
