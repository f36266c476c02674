package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// The id a Salesforce admin reads in the email log is the one in "250 2.0.0
// OK queued as <id>": every command that takes an id must take it, as well
// as a queue item id and the Message-ID. Driven over real SMTP against the
// relay binary, with its admin API up.
func TestIDsFromTheSMTPReply(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the relay binary")
	}
	e := newDurEnv(t, smtpsink.Options{Rcpt: func(rcpt string) *smtp.SMTPError {
		if strings.HasPrefix(rcpt, "later@") {
			return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "Mailbox busy, try later"}
		}
		return nil
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := ln.Addr().String()
	ln.Close()
	tokenFile := filepath.Join(e.dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte("ids-test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = bytes.Replace(cfg, []byte("[admin]\nlisten = \"\"\n"),
		[]byte("[admin]\nlisten = \""+adminAddr+"\"\ntoken_file = \""+tokenFile+"\"\n"), 1)
	if err := os.WriteFile(e.cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()

	c, err := e.client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("noreply@example.com", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"now@dest.test", "later@dest.test"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("From: <noreply@example.com>\r\nTo: <now@dest.test>, <later@dest.test>\r\nSubject: Reset\r\n" +
		"Message-ID: <ids-1@example.com>\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\n\r\nReset it.\r\n"))
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndex(resp.StatusText, "queued as ")
	if i < 0 {
		t.Fatalf("250 text %q names no id", resp.StatusText)
	}
	msgID := strings.TrimSpace(resp.StatusText[i+len("queued as "):])
	now, later := queue.ItemID(msgID, 0), queue.ItemID(msgID, 1)

	cli := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append(append(strings.Fields(args[0]), "-config", e.cfgPath), args[1:]...), &out, &errb)
		return code, out.String(), errb.String()
	}
	// Wait until the first recipient is delivered and the second deferred.
	if !waitFor(20e9, func() bool {
		_, out, _ := cli("queue show", "-json", msgID)
		var items []queue.Item
		json.Unmarshal([]byte(out), &items)
		return len(items) == 2 && items[0].State == queue.StateDelivered && items[1].Attempts > 0
	}) {
		_, out, errs := cli("queue show", msgID)
		t.Fatalf("not delivered and deferred:\n%s%s", out, errs)
	}

	for _, c := range []struct {
		id   string
		want []string
	}{
		{msgID, []string{now, later}},
		{"<ids-1@example.com>", []string{now, later}},
		{"ids-1@example.com", []string{now, later}},
		{later, []string{later}},
	} {
		code, out, errs := cli("queue show", c.id)
		if code != 0 {
			t.Errorf("queue show %s: %d %s", c.id, code, errs)
			continue
		}
		for _, id := range []string{now, later} {
			shown := regexp.MustCompile(`(?m)^id: +` + id + `$`).MatchString(out)
			if shown != contains(c.want, id) {
				t.Errorf("queue show %s: item %s shown = %v, want %v:\n%s", c.id, id, shown, contains(c.want, id), out)
			}
		}
	}
	unknown := queue.NewMsgID(queue.AcceptedAt(msgID))
	if code, _, errs := cli("queue show", unknown); code != 1 || !strings.Contains(errs, "no message or queue item") {
		t.Errorf("queue show of an unknown message id: %d %q", code, errs)
	}

	// The audit trail by the 250's id holds the message's whole life.
	events := func(id string) []audit.Event {
		t.Helper()
		code, out, errs := cli("audit show", "-json", id)
		if code != 0 {
			t.Fatalf("audit show %s: %d %s", id, code, errs)
		}
		var evs []audit.Event
		dec := json.NewDecoder(strings.NewReader(out))
		for dec.More() {
			var ev audit.Event
			if err := dec.Decode(&ev); err != nil {
				t.Fatal(err)
			}
			evs = append(evs, ev)
		}
		return evs
	}
	has := func(evs []audit.Event, typ, qid string) bool {
		for _, ev := range evs {
			if ev.Type == typ && (qid == "" || ev.QueueID == qid) {
				return true
			}
		}
		return false
	}
	all := events(msgID)
	for _, want := range [][2]string{{audit.Received, ""}, {audit.Signed, ""}, {audit.Queued, now}, {audit.Queued, later},
		{audit.Delivered, now}, {audit.Deferred, later}} {
		if !has(all, want[0], want[1]) {
			t.Errorf("audit show %s lacks %s %s", msgID, want[0], want[1])
		}
	}
	one := events(later)
	if !has(one, audit.Received, "") || !has(one, audit.Signed, "") || !has(one, audit.Deferred, later) || has(one, audit.Delivered, "") {
		t.Errorf("audit show %s: want received, signed and its own events only, got %v", later, one)
	}
	if byHeader := events("<ids-1@example.com>"); len(byHeader) < len(all) {
		t.Errorf("audit show by Message-ID: %d events, by message id %d", len(byHeader), len(all))
	}

	// queue list: postqueue's columns and a summary.
	code, out, errs := cli("queue list")
	if code != 0 || !strings.HasPrefix(out, "ID ") {
		t.Fatalf("queue list: %d\n%s%s", code, out, errs)
	}
	for _, col := range []string{"CLASS", "ARRIVAL", "SIZE", "SENDER", "RECIPIENT", "STATE", "LAST REASON"} {
		if !strings.Contains(strings.SplitN(out, "\n", 2)[0], col) {
			t.Errorf("queue list header lacks %s:\n%s", col, out)
		}
	}
	if !strings.Contains(out, later) || strings.Contains(out, now) || !strings.Contains(out, "noreply@example.com") ||
		!strings.Contains(out, "450 4.2.1") || !strings.Contains(out, "1 message (1 queue item), ") {
		t.Errorf("queue list:\n%s", out)
	}

	// Retry and drop by the message id and the Message-ID act on every
	// recipient still queued.
	code, out, errs = cli("queue retry", msgID)
	if code != 0 || !strings.Contains(out, later+": due now") || !strings.Contains(out, now+": delivered, left as it is") {
		t.Errorf("queue retry %s: %d %q %q", msgID, code, out, errs)
	}
	code, out, errs = cli("queue drop", "-by", "ops", "-reason", "test", "<ids-1@example.com>")
	if code != 0 && strings.Contains(errs, "being delivered") {
		waitFor(5e9, func() bool {
			code, out, errs = cli("queue drop", "-by", "ops", "-reason", "test", "<ids-1@example.com>")
			return code == 0
		})
	}
	if code != 0 || !strings.Contains(out, later+": dropped: dropped by ops: test") {
		t.Errorf("queue drop by Message-ID: %d %q %q", code, out, errs)
	}
	if code, out, _ := cli("queue list"); code != 0 || out != "queue is empty\n" {
		t.Errorf("queue list of an empty queue: %d %q", code, out)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
