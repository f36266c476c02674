package relay

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/deliver"
	"github.com/latchkey/latchkey/policy"
	"github.com/latchkey/latchkey/queue"
)

// class returns the live policy's class of an item. A class removed by a
// policy reload falls back to the default class's parameters: items already
// queued keep their deadline (it is on the item) whatever the file says now.
func (s *Server) class(name string) *policy.Class {
	p := s.Policy.Get()
	if c := p.Class(name); c != nil {
		return c
	}
	return p.DefaultClass()
}

// Deliver implements queue.Handler: one attempt to hand it to the MX.
func (s *Server) Deliver(ctx context.Context, it *queue.Item, body []byte) queue.Outcome {
	if out, ok := s.supersededElsewhere(ctx, it); ok {
		return out
	}
	d := s.deliverer(it.Class)
	// Never start a delivery that could finish after the cut-off.
	dctx, cancel := context.WithDeadline(ctx, it.Cutoff)
	defer cancel()
	r := d.Deliver(dctx, it.Sender, []string{it.Rcpt}, body)[0]
	now := s.now()
	att := s.attemptOf(r, now)
	ev := &audit.Event{Time: now, Type: audit.Attempt, Recipient: it.Rcpt, Fields: map[string]string{
		"mx": r.Host, "ip": r.IP, "tls": r.TLS, "reply": att.Text, "code": strconv.Itoa(r.Code), "enhanced": r.Enhanced,
		"attempt": strconv.Itoa(it.Attempts + 1),
	}}
	// What protected the link in transit, for the auditor: a certificate
	// that verified for the MX, and the recipient domain's MTA-STS mode.
	if r.TLS != "" && r.TLS != "none" {
		ev.Fields["tls_verified"] = strconv.FormatBool(r.TLSVerified)
	}
	if r.MTASTS != "" {
		ev.Fields["mta_sts"] = r.MTASTS
	}
	out := queue.Outcome{Attempt: att, Events: []*audit.Event{ev}}
	log := s.log.With().Str("queue_id", it.ID).Str("class", it.Class).Logger()
	switch {
	case r.Delivered:
		lat := now.Sub(it.Accepted)
		out.State, out.Reason = queue.StateDelivered, "delivered: "+att.Text
		out.Events = append(out.Events, &audit.Event{Time: now, Type: audit.Delivered, Recipient: it.Rcpt, Fields: map[string]string{
			"mx": r.Host, "reply": att.Text, "latency_ms": strconv.FormatInt(lat.Milliseconds(), 10)}})
		s.attempted(it.Class, "delivered")
		log.Info().Str("mx", r.Host).Int64("latency_ms", lat.Milliseconds()).Msg("delivered")
		return out
	case r.Permanent:
		s.attempted(it.Class, "permanent")
		v := bounce.ClassifyReply(r.Code, r.Enhanced, r.Text)
		v.Permanent = true // the MX said 5xx, or DNS said the domain takes no mail
		log.Warn().Str("mx", r.Host).Int("code", r.Code).Str("reason", string(v.Reason)).Msg("permanent failure")
		return s.bounced(it, body, v, r.Host, att.Text, out, now)
	default:
		if r.Code == 0 {
			s.attempted(it.Class, "error") // no reply: DNS or connection
		} else {
			s.attempted(it.Class, "temporary")
		}
		cl := s.class(it.Class)
		next, ok := cl.NextRetry(it.Attempts+1, it.Accepted, now, it.Deadline, rand.Int64N)
		if !ok || !next.Before(it.Cutoff) {
			return s.expired(it, out, now, fmt.Sprintf("deferred %d times, last: %s", it.Attempts+1, att.Text))
		}
		out.Retry = next
		out.Reason = att.Text
		out.Events = append(out.Events, &audit.Event{Time: now, Type: audit.Deferred, Recipient: it.Rcpt, Fields: map[string]string{
			"reply": att.Text, "next": next.UTC().Format(time.RFC3339)}})
		log.Info().Str("mx", r.Host).Str("reply", att.Text).Time("next", next).Msg("deferred")
		return out
	}
}

func (s *Server) attemptOf(r deliver.Result, now time.Time) *queue.Attempt {
	a := &queue.Attempt{Time: now, Host: r.Host, IP: r.IP, TLS: r.TLS, Code: r.Code, Enhanced: r.Enhanced,
		Text: s.redact(oneLine(r.Text)), Permanent: r.Permanent}
	if r.Err != nil {
		a.Error = s.redact(oneLine(r.Err.Error()))
		if a.Text == "" {
			a.Text = a.Error
		}
	}
	return a
}

// redact replaces URLs in a remote server's text by their keyed hashes
// before the text is stored in the queue, logged or sent to Salesforce:
// a content filter may quote the reset link it refused.
func (s *Server) redact(text string) string {
	if s.Store != nil && s.Store.Audit != nil {
		return s.Store.Audit.RedactURLs(text)
	}
	return text
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 500 {
		s = s[:500]
	}
	return s
}

// Expire implements queue.Handler for an item whose cut-off passed.
func (s *Server) Expire(it *queue.Item, now time.Time) queue.Outcome {
	reason := "deadline passed before delivery"
	if it.Last != nil {
		reason = fmt.Sprintf("deadline passed after %d attempts, last: %s", it.Attempts, it.Last.Text)
	}
	return s.expired(it, queue.Outcome{}, now, reason)
}

func (s *Server) expired(it *queue.Item, out queue.Outcome, now time.Time, reason string) queue.Outcome {
	out.State, out.Reason, out.Label = queue.StateExpired, reason, "deadline"
	out.Events = append(out.Events, &audit.Event{Time: now, Type: audit.Expired, Recipient: it.Rcpt, Fields: map[string]string{
		"reason": reason, "deadline": it.Deadline.UTC().Format(time.RFC3339)}})
	s.log.Warn().Str("queue_id", it.ID).Str("class", it.Class).Str("reason", reason).Msg("expired undelivered")
	if s.class(it.Class).Escalate.Expired {
		s.addEscalation(&out, Escalation{Trigger: "expired", Item: it, Reason: reason}, now)
	}
	return out
}

// bounced decides what a permanent failure means: a hard bounce suppresses
// the address. Either kind, for a class that escalates it, tries the
// backup address once, then escalates: a reset refused by a spam filter
// leaves the user as locked out as one sent to an unknown address.
func (s *Server) bounced(it *queue.Item, body []byte, v bounce.Verdict, remote, text string, out queue.Outcome, now time.Time) queue.Outcome {
	out.Events = append(out.Events, &audit.Event{Time: now, Type: audit.Bounced, Recipient: it.Rcpt, Fields: map[string]string{
		"permanent": strconv.FormatBool(v.Permanent), "hard": strconv.FormatBool(v.Hard), "reason": string(v.Reason),
		"status": v.Status, "remote": remote, "diagnostic": text}})
	cl := s.class(it.Class)
	trigger, escalates := "policy_bounce", cl.Escalate.PolicyBounce
	if v.Hard {
		trigger, escalates = "hard_bounce", cl.Escalate.HardBounce
		rcpt := it.Rcpt
		prev := out.Extra
		out.Extra = func(tx *queue.Tx, item *queue.Item) error {
			if prev != nil {
				if err := prev(tx, item); err != nil {
					return err
				}
			}
			return queue.Suppress(tx, queue.Suppression{List: "bounce", Address: rcpt, Reason: fmt.Sprintf("%s %s", v.Status, v.Reason), Time: now})
		}
	}
	if !it.BackupTried && escalates {
		backup, lookupErr := s.backupFor(it, body)
		// Salesforce could not say whether a backup is on file (an outage,
		// a timeout): a reset with time left waits and asks again rather
		// than escalating without trying the backup. Only a delivery that
		// is still the item's own can wait (not a late DSN).
		if lookupErr != nil && !isAsync(out) {
			if next := now.Add(backupLookupRetry); next.Before(it.Cutoff) {
				out.Retry = next
				out.Reason = "backup address look-up failed, asking again: " + oneLine(lookupErr.Error())
				out.Events = append(out.Events, &audit.Event{Time: now, Type: audit.Deferred, Recipient: it.Rcpt, Fields: map[string]string{
					"reply": text, "next": next.UTC().Format(time.RFC3339), "reason": "backup look-up failed"}})
				s.log.Warn().Str("queue_id", it.ID).Err(lookupErr).Time("next", next).
					Msg("permanent failure, but the backup address look-up failed: retrying before escalating")
				return out
			}
		}
		if backup != "" && !strings.EqualFold(backup, it.Rcpt) {
			if v.Hard && s.RecordBounce != nil {
				// Delivered at the backup or not, the primary address
				// is bad: Salesforce's record must say so, as the
				// local suppression list does.
				prev, rcpt := out.Extra, it.Rcpt
				status, reason := v.Status, string(v.Reason)
				out.Extra = func(tx *queue.Tx, item *queue.Item) error {
					if prev != nil {
						if err := prev(tx, item); err != nil {
							return err
						}
					}
					snap := *item
					snap.Rcpt = rcpt
					return s.RecordBounce(tx, &snap, status, reason, remote, text)
				}
			}
			out.Redirect, out.Retry = backup, now
			out.Events = append(out.Events, &audit.Event{Time: now, Type: audit.RetriedBackup, Recipient: backup,
				Fields: map[string]string{"original": it.Rcpt}})
			s.log.Info().Str("queue_id", it.ID).Str("trigger", trigger).Msg("permanent failure: trying the backup address")
			return out
		}
	}
	out.State, out.Reason, out.Label = queue.StateBounced, fmt.Sprintf("%s %s: %s", v.Status, v.Reason, text), string(v.Reason)
	if s.cfg.Inbound.NotifySender {
		prev := out.Extra
		out.Extra = func(tx *queue.Tx, item *queue.Item) error {
			if prev != nil {
				if err := prev(tx, item); err != nil {
					return err
				}
			}
			snap := *item
			tx.After(func() { go s.notifySender(&snap, body, v, remote, text, now) })
			return nil
		}
	}
	if escalates {
		s.addEscalation(&out, Escalation{Trigger: trigger, Item: it, Reason: string(v.Reason), Status: v.Status, Remote: remote, Text: text}, now)
	}
	return out
}

// backupLookupRetry is how long a reset waits to ask Salesforce for its
// backup address again after the look-up failed.
var backupLookupRetry = 30 * time.Second

// isAsync reports an outcome built for a late report (a DSN), which cannot
// be deferred: the item was delivered already.
func isAsync(out queue.Outcome) bool { return out.Attempt == nil }

// backupFor finds the backup address: the one given at acceptance, the
// configured header of the message, else the look-up (Salesforce). An error
// means the look-up failed: whether a backup is on file is not known.
func (s *Server) backupFor(it *queue.Item, body []byte) (string, error) {
	if it.Backup != "" {
		return it.Backup, nil
	}
	if body != nil {
		if h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(body))); err == nil {
			if b := strings.TrimSpace(h.Get(s.cfg.Inbound.BackupHeader)); b != "" {
				return b, nil
			}
		}
	}
	if s.BackupLookup != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rcpt := it.Rcpt
		if it.OrigRcpt != "" {
			rcpt = it.OrigRcpt
		}
		b, err := s.BackupLookup(ctx, rcpt)
		if err != nil {
			s.log.Warn().Err(err).Str("queue_id", it.ID).Msg("backup address look-up failed")
			return "", err
		}
		return b, nil
	}
	return "", nil
}

// addEscalation records the escalation in the outcome's transaction: an
// audit event, and the Salesforce outbox entry when configured.
func (s *Server) addEscalation(out *queue.Outcome, e Escalation, now time.Time) {
	prev := out.Extra
	out.Extra = func(tx *queue.Tx, item *queue.Item) error {
		if prev != nil {
			if err := prev(tx, item); err != nil {
				return err
			}
		}
		e.Item = item
		// A newer reset for the same user is on its way: its own fate
		// decides whether support must act, and one Case is enough.
		if newer, err := queue.Newer(tx, item); err != nil {
			return err
		} else if newer != "" {
			s.log.Info().Str("queue_id", item.ID).Str("newer", newer).Str("trigger", e.Trigger).
				Msg("not escalated: a newer reset for the same user replaced this one")
			return nil
		}
		return s.recordEscalation(tx, e, now)
	}
}

func (s *Server) recordEscalation(tx *queue.Tx, e Escalation, now time.Time) error {
	via := "log"
	if s.Escalate != nil {
		via = "salesforce"
		if err := s.Escalate(tx, e); err != nil {
			return err
		}
	}
	if s.Observe != nil {
		class, trigger := e.Item.Class, e.Trigger
		tx.After(func() { s.Observe.Outcome(class, "escalated", trigger, 0) })
	}
	rcpt := e.Item.Rcpt
	if e.Item.OrigRcpt != "" {
		rcpt = e.Item.OrigRcpt
	}
	if via == "log" {
		// Without Salesforce the log is where support learns of it.
		id, trigger, reason := e.Item.ID, e.Trigger, e.Reason
		tx.After(func() {
			s.log.Warn().Str("queue_id", id).Str("trigger", trigger).Str("reason", reason).
				Msg("escalation: support must act (no Salesforce configured)")
		})
	}
	return tx.Audit(&audit.Event{Time: now, Type: audit.Escalated, QueueID: e.Item.ID, MessageID: e.Item.MessageID,
		Class: e.Item.Class, Recipient: rcpt, Fields: map[string]string{"trigger": e.Trigger, "reason": e.Reason, "via": via}})
}

func (s *Server) attempted(class, result string) {
	if s.Observe != nil {
		s.Observe.Attempt(class, result)
	}
}
