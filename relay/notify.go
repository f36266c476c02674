package relay

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/queue"
)

// notifySender queues an RFC 3464 DSN to the original envelope sender of a
// message that bounced ([inbound] notify_sender), so Salesforce's own bounce
// handling can record it. It is sent from the null sender (a DSN must never
// cause another) and returns only the original headers: the body may hold
// the reset link. It runs after the bounce is committed; a DSN that cannot
// be queued is logged, the bounce itself is already on record.
func (s *Server) notifySender(it *queue.Item, body []byte, v bounce.Verdict, remote, text string, now time.Time) {
	if it.From == "" {
		return // the message was itself a notification
	}
	rcpt := it.Rcpt
	if it.OrigRcpt != "" {
		rcpt = it.OrigRcpt
	}
	status := v.Status
	if status == "" {
		status = "5.0.0"
	}
	var hdrs []byte
	if len(body) > 0 {
		if h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(body))); err == nil {
			var b bytes.Buffer
			if textproto.WriteHeader(&b, h) == nil {
				hdrs = b.Bytes()
			}
		}
	}
	host := s.cfg.Hostname
	msgID := queue.NewMsgID(now)
	messageID := "<" + msgID + "@" + host + ">"
	dsn, err := bounce.BuildDSN(bounce.DSNOptions{
		ReportingMTA: host, From: "Mail Delivery System <mailer-daemon@" + it.Domain + ">", To: it.From,
		ArrivalDate: it.Accepted, Date: now, MessageID: messageID,
		Recipients: []bounce.DSNRecipient{{Recipient: rcpt, Action: "failed", Status: status, RemoteMTA: remote,
			Diagnostic: text, LastAttempt: now}},
		OriginalHeaders: hdrs,
	})
	if err != nil {
		s.log.Error().Err(err).Str("queue_id", it.ID).Msg("cannot build the DSN for the sender")
		return
	}
	pol := s.Policy.Get()
	class := pol.Class("transactional")
	if class == nil {
		class = pol.DefaultClass()
	}
	deadline, _ := class.Deadline(nil, now)
	signed := dsn
	if sig, err := s.Keys.Sign(it.Domain, dsn); err == nil {
		signed = append(sig, dsn...)
	} else {
		// Sent anyway: an unsigned DSN still reaches Salesforce's bounce
		// handling, but say why DMARC may fail it.
		s.log.Warn().Err(err).Str("queue_id", it.ID).Str("domain", it.Domain).Msg("DSN to the sender goes out unsigned")
	}
	item := &queue.Item{ID: queue.ItemID(msgID, 0), MsgID: msgID, Class: class.Name, Priority: class.Priority,
		Rcpt: it.From, Domain: it.Domain, Accepted: now, Deadline: deadline, Cutoff: class.Cutoff(deadline), Due: now}
	m := &queue.Message{MsgID: msgID, Body: signed, Items: []*queue.Item{item}, Events: []*audit.Event{{
		Time: now, Type: audit.Received, MessageID: messageID, Class: class.Name, Recipient: it.From,
		Fields: map[string]string{"dsn_for": it.ID, "queue_id": msgID, "status": status}}}}
	if _, err := s.Queue.Enqueue(m); err != nil {
		s.log.Error().Err(err).Str("queue_id", it.ID).Msg("cannot queue the DSN for the sender")
		return
	}
	s.log.Info().Str("queue_id", it.ID).Str("dsn", msgID).Str("to", strings.ToLower(it.From)).Msg(fmt.Sprintf("DSN queued to the sender (%s)", status))
}
