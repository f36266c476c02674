package relay

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/queue"
)

// inbound is a session on the bounce listener: the MX of the bounce
// subdomains. It takes mail only for valid signed VERP addresses, needs no
// AUTH and relays nothing.
type inbound struct {
	s     *Server
	conn  *smtp.Conn
	ids   []string // queue ids from the VERP recipients
	log   zerolog.Logger
	count int
}

var errNoSuchBounceAddr = smtpErr(550, [3]int{5, 1, 1}, "No such bounce address")

func (s *Server) newInbound(c *smtp.Conn) (smtp.Session, error) {
	return &inbound{s: s, conn: c, log: s.log.With().Str("listener", "inbound").Str("client", remoteIP(c).String()).Logger()}, nil
}

func (in *inbound) Mail(string, *smtp.MailOptions) error { return nil }

func (in *inbound) Rcpt(to string, _ *smtp.RcptOptions) error {
	id, dom, err := bounce.DecodeVERP(in.s.verpKey, to)
	if err != nil || in.s.cfg.Domain(dom) == nil {
		if errors.Is(err, bounce.ErrBadMAC) {
			in.log.Warn().Str("rcpt", to).Msg("forged bounce address refused")
		}
		in.s.reject("bounce_address")
		return errNoSuchBounceAddr
	}
	for _, seen := range in.ids {
		if seen == id {
			return nil // one report is applied once, however often it is addressed
		}
	}
	in.ids = append(in.ids, id)
	return nil
}

func (in *inbound) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if d := doorOf(in.conn.Conn()); d != nil && d.Scan().truncated {
		// A BDAT chunk cut short by the end of the connection, which
		// go-smtp takes for a whole one: not a report to act on.
		return errConnLost
	}
	rep, err := bounce.Parse(bytes.NewReader(data))
	if err != nil {
		// Accept and record: refusing a DSN only makes the remote MTA
		// bounce the bounce.
		in.log.Warn().Err(err).Msg("unreadable bounce message")
		return nil
	}
	var busy error
	for _, id := range in.ids {
		if err := in.s.lateBounce(id, rep, in.log); err != nil {
			busy = err
		}
	}
	return busy
}

// errBounceBusy asks the remote MTA to send the report again later: the item
// it is about is being delivered right now.
var errBounceBusy = smtpErr(451, [3]int{4, 3, 0}, "Message is being delivered; try again later")

func (in *inbound) Reset()        { in.ids = nil }
func (in *inbound) Logout() error { return nil }

// bounceBusyWait is how long a report for an item being delivered waits for
// the attempt to end before it is answered 451. Most such reports arrive
// while the attempt that they follow is being recorded, a moment later.
var bounceBusyWait = 5 * time.Second

// lateBounce applies an asynchronous bounce to queue item id. It returns
// errBounceBusy when the item is still being delivered after
// bounceBusyWait, and the report must come again later; everything else is
// recorded or logged here.
func (s *Server) lateBounce(id string, rep *bounce.Report, log zerolog.Logger) error {
	end := time.Now().Add(bounceBusyWait)
	for {
		if !s.started.Load() {
			// Shutting down: the database may be closing under us. The
			// remote MTA keeps the report and sends it again.
			return errBounceBusy
		}
		if !s.lateBounceOnce(id, rep, log) {
			return nil
		}
		if time.Now().After(end) {
			log.Info().Str("queue_id", id).Msg("bounce for an item being delivered; asked for it again later")
			return errBounceBusy
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lateBounceOnce applies the report, or reports busy when the item is being
// delivered or changed state meanwhile (and must be read again).
func (s *Server) lateBounceOnce(id string, rep *bounce.Report, log zerolog.Logger) (busy bool) {
	it, err := s.Queue.Get(id)
	if err != nil || it == nil {
		log.Warn().Str("queue_id", id).Msg("bounce for an unknown queue item")
		return false
	}
	log = log.With().Str("queue_id", id).Logger()
	now := s.now()
	if rep.IsComplaint {
		// A spam complaint says nothing about whether the address works
		// and changes nothing for the message (queued or not): it is put
		// on record, and the address stops getting marketing mail: a
		// complaint is an unsubscribe (RFC 6449 §3.6), so it goes on the
		// list the shipped bulk class reads. Resets ignore that list.
		rcpt := it.Rcpt
		if it.OrigRcpt != "" {
			rcpt = it.OrigRcpt
		}
		err := s.Store.Update(func(tx *queue.Tx) error {
			if err := tx.Audit(&audit.Event{Time: now, Type: audit.Bounced, QueueID: it.ID, MessageID: it.MessageID,
				Class: it.Class, Recipient: rcpt, Fields: map[string]string{"complaint": rep.FeedbackType, "reason": "feedback"}}); err != nil {
				return err
			}
			if !unwanted(rep.FeedbackType) {
				// not-spam, auth-failure (RFC 6591) and the like are on
				// record but say nothing about the user's wishes.
				return nil
			}
			return queue.Suppress(tx, queue.Suppression{List: "unsubscribe", Address: rcpt, Reason: "complaint: " + rep.FeedbackType, Time: now})
		})
		if err != nil {
			log.Error().Err(err).Msg("cannot record complaint")
		}
		return false
	}
	var rr *bounce.Recipient
	for i := range rep.Recipients {
		r := &rep.Recipients[i]
		if strings.EqualFold(r.Recipient, it.Rcpt) {
			rr = r
			break
		}
		if rr == nil {
			rr = r
		}
	}
	if rr != nil && !strings.EqualFold(rr.Recipient, it.Rcpt) && it.OrigRcpt != "" && strings.EqualFold(rr.Recipient, it.OrigRcpt) {
		// A report about the address the item was redirected away from
		// (often a repeat of the DSN that caused the redirect): it says
		// nothing about the backup address, which must not be suppressed
		// or marked bounced for it.
		log.Info().Msg("report about the original address of a redirected item; recorded nothing")
		return false
	}
	if rr == nil || !rep.IsBounce || rr.Action == "delayed" || rr.Action == "delivered" || rr.Action == "relayed" || rr.Action == "expanded" {
		log.Info().Msg("report is not a failure; recorded nothing")
		return false
	}
	v := bounce.Verdict{Permanent: rr.Permanent, Hard: rr.Hard, Reason: rr.Reason, Status: rr.Status}
	if !v.Permanent {
		// A DSN saying "failed" with a 4.x.x status: the remote MTA gave up;
		// for us that is final for this attempt's route, but not a bad
		// address. Record it and treat it as a policy-like permanent failure.
		v.Permanent = true
	}
	body, _ := s.Queue.Body(it.MsgID)
	out := s.bounced(it, body, v, rr.RemoteMTA, s.redact(oneLine(rr.Diagnostic)), queue.Outcome{}, now)
	if !queue.Final(it.State) {
		err := s.Queue.CompleteIdle(id, out)
		switch {
		case errors.Is(err, queue.ErrInFlight), errors.Is(err, queue.ErrNotFound):
			// Being delivered, or just ended (delivered, most often):
			// decide again on its state after the attempt.
			return true
		case err != nil:
			log.Error().Err(err).Msg("cannot record bounce")
		}
		return false
	}
	requeued, err := s.Queue.Reopen(id, out)
	if errors.Is(err, queue.ErrNotDelivered) {
		// It already has its outcome (bounced and escalated, expired, …):
		// a repeated report must not record or escalate it again.
		log.Info().Str("state", it.State).Msg("late bounce for an item that did not end delivered; recorded nothing")
		return false
	}
	if errors.Is(err, queue.ErrTooLate) {
		// The backup address can no longer get this reset (its cut-off
		// passed, its body is gone, or a newer reset replaced it): decide
		// as if it had been tried, so that the reset ends bounced and is
		// escalated.
		tried := *it
		tried.BackupTried = true
		requeued, err = s.Queue.Reopen(id, s.bounced(&tried, body, v, rr.RemoteMTA, s.redact(oneLine(rr.Diagnostic)), queue.Outcome{}, now))
	}
	if err != nil {
		log.Error().Err(err).Msg("cannot record bounce")
		return false
	}
	log.Info().Bool("backup", requeued).Str("reason", string(v.Reason)).Msg("asynchronous bounce recorded")
	return false
}

// unwanted reports whether an ARF feedback type (RFC 5965 7.3) says the
// user does not want the mail: only these stop marketing mail to them.
func unwanted(feedbackType string) bool {
	switch strings.ToLower(strings.TrimSpace(feedbackType)) {
	case "abuse", "fraud", "virus", "opt-out", "":
		// An ARF without a type is taken as the complaint it most
		// often is.
		return true
	}
	return false
}
