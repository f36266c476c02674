package relay

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/queue"
)

// A message that is all header (no empty line, no body: RFC 5322 allows it)
// was answered 451 because DKIM signing could not find the end of the
// header; Salesforce would retry it for ever.
func TestSubmitHeaderOnlyMessage(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	replies := e.rawSubmit(t, "From: Acme <noreply@example.com>\r\nTo: <jane@dest.test>\r\nSubject: ping\r\nMessage-ID: <hdronly@sfdc.net>")
	if !strings.HasPrefix(replies[0], "250 ") {
		t.Fatalf("end of DATA answered %q, want 250", replies[0])
	}
	ms := e.sink.Wait(1, 5*time.Second)
	if len(ms) != 1 || !bytes.Contains(ms[0].Data, []byte("Subject: ping\r\n")) {
		t.Fatalf("delivered %d messages", len(ms))
	}
}

// A Message-ID header present but empty got a second Message-ID added
// above it: RFC 5322 allows one, and receivers refuse or thread such mail
// wrongly. The empty one is now treated as the malformed header it is.
func TestSubmitEmptyMessageIDNotDoubled(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	msg := bytes.Replace(resetMsg("jane@dest.test", "emptyid"), []byte("Message-ID: <emptyid.abc@sfdc.net>"), []byte("Message-ID: "), 1)
	_, err := send(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test"}, msg)
	if err == nil {
		ms := e.sink.Wait(1, 5*time.Second)
		if n := bytes.Count(bytes.ToLower(ms[0].Data), []byte("\nmessage-id:")); n != 1 {
			t.Fatalf("delivered with %d Message-ID headers, want 1", n)
		}
		return
	}
	if code, enh := smtpCode(err); code != 554 || enh != "5.6.0" {
		t.Fatalf("end of DATA: %v", err)
	}
}

// The same recipient given twice (in any case) got two copies of the same
// reset, and counted twice against its rate limit.
func TestSubmitDuplicateRecipientOneCopy(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy})
	id := e.sendID(e.client("PLAIN"), "noreply@example.com", []string{"jane@dest.test", "Jane@DEST.test", "bob@dest.test"},
		resetMsg("jane@dest.test", "duprcpt"))
	waitFor(t, "two deliveries", 5*time.Second, func() bool { return e.sink.Count() >= 2 })
	waitFor(t, "items final", 5*time.Second, func() bool {
		for i := 0; i < 3; i++ {
			if it := itemState(e, queue.ItemID(id, i)); it != nil && !queue.Final(it.State) {
				return false
			}
		}
		return true
	})
	time.Sleep(300 * time.Millisecond)
	jane := 0
	for _, m := range e.sink.Messages() {
		for _, r := range m.To {
			if strings.EqualFold(r, "jane@dest.test") {
				jane++
			}
		}
	}
	if jane != 1 {
		t.Errorf("jane got %d copies, want 1", jane)
	}
}
