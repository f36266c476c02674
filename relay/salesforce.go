package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce"
)

// connectSalesforce wires the Salesforce client into the relay: escalations
// go to the durable outbox in the same transaction as the outcome that
// caused them, and backup addresses are looked up in the org.
func (s *Server) connectSalesforce() error {
	cfg := s.cfg.Salesforce
	client, err := salesforce.New(cfg, &http.Client{Timeout: cfg.Timeout})
	if err != nil {
		return err
	}
	log := s.log.With().Str("component", "salesforce").Logger()
	s.Outbox = salesforce.NewOutbox(s.Store.DB, client, salesforce.OutboxOptions{
		Log: &log, InitialBackoff: cfg.RetryBackoff, MaxBackoff: cfg.MaxBackoff,
		OnDone: func(e salesforce.Escalation, caseID string) {
			if s.Cluster != nil {
				s.Cluster.EscalationFinished(e.ID)
			}
			if e.RecordOnly {
				log.Info().Str("queue_id", e.QueueID).Msg("hard bounce of the primary address recorded in Salesforce (delivered to the backup)")
				return
			}
			s.recordCase(e, caseID, nil)
			log.Info().Str("queue_id", e.QueueID).Str("case_id", caseID).Msg("Case opened")
		},
		OnRetry: func(e salesforce.Escalation) {
			if s.Cluster != nil {
				if payload, err := json.Marshal(e); err == nil {
					s.Cluster.Escalated(e.ID, e.QueueID, payload)
				}
			}
		},
		OnDead: func(e salesforce.Escalation, caseID string, err error) {
			if s.Cluster != nil {
				// Dead letters stay on this node's disk, for an
				// operator's `latchkey outbox retry` here.
				s.Cluster.EscalationFinished(e.ID)
			}
			if caseID != "" {
				// The Case is open; only a later step failed. The trail
				// must still name it.
				s.recordCase(e, caseID, err)
			}
			log.Error().Err(err).Str("queue_id", e.QueueID).Str("escalation", e.ID).Str("case_id", caseID).
				Msg("escalation dead-lettered; `latchkey outbox retry` after fixing the cause")
		},
	})
	s.SalesforceClient = client
	s.sfLog = log
	if lc := cfg.Lifecycle; lc.Enabled {
		s.Lifecycle = salesforce.NewLifecycle(s.Store.DB, client, lc, log.With().Str("part", "lifecycle").Logger())
		s.Lifecycle.Update = func(fn func(txn *badger.Txn) error) error {
			return s.Store.Update(func(tx *queue.Tx) error { return fn(tx.Txn) })
		}
		s.Store.OnAudit = s.Lifecycle.Record
	}
	s.BackupLookup = func(ctx context.Context, email string) (string, error) {
		b, err := client.BackupAddress(ctx, email)
		if err == salesforce.ErrNotFound {
			return "", nil
		}
		return b, err
	}
	s.Escalate = func(tx *queue.Tx, e Escalation) error {
		rcpt := e.Item.Rcpt
		if e.Item.OrigRcpt != "" {
			rcpt = e.Item.OrigRcpt
		}
		esc := salesforce.Escalation{
			ID: e.Item.ID + "-" + e.Trigger, QueueID: e.Item.ID, Class: e.Item.Class, Recipient: rcpt, Trigger: e.Trigger,
			Reason: e.Reason, Status: e.Status, RemoteMTA: e.Remote, Diagnostic: e.Text, MessageID: e.Item.MessageID,
			AcceptedAt: e.Item.Accepted, FailedAt: time.Now(),
		}
		if e.Item.OrigRcpt != "" && e.Item.BackupTried {
			// The reset went to the backup address and failed there too:
			// the Case says both, the primary's bounce first.
			esc.Backup, esc.BackupDiagnostic = maskAddress(e.Item.Rcpt), e.Text
			esc.Diagnostic = primaryBounce(e.Item)
		}
		return s.putEscalation(tx, esc)
	}
	s.RecordBounce = func(tx *queue.Tx, it *queue.Item, status, reason, remote, text string) error {
		if !cfg.SetBounceFields {
			return nil
		}
		esc := salesforce.Escalation{
			ID: it.ID + "-" + salesforce.TriggerBounceRecord, QueueID: it.ID, Class: it.Class, Recipient: it.Rcpt,
			Trigger: salesforce.TriggerBounceRecord, Reason: reason, Status: status, RemoteMTA: remote, Diagnostic: text,
			MessageID: it.MessageID, AcceptedAt: it.Accepted, FailedAt: time.Now(), RecordOnly: true,
		}
		return s.putEscalation(tx, esc)
	}
	return nil
}

// putEscalation stores esc in the outbox, in the transaction of the
// outcome that caused it, and in a cluster shares it once committed, so
// that a survivor opens the Case if this node dies before Salesforce has
// it.
func (s *Server) putEscalation(tx *queue.Tx, esc salesforce.Escalation) error {
	added, err := s.Outbox.Add(tx.Txn, esc)
	if err != nil {
		return err
	}
	tx.After(s.Outbox.Wake)
	if c := s.Cluster; c != nil && added {
		payload, err := json.Marshal(esc)
		if err != nil {
			return fmt.Errorf("relay: escalation %s: %w", esc.ID, err)
		}
		c.HoldDone(esc.QueueID)
		tx.OnAbort(func() { c.ReleaseDone(esc.QueueID) })
		tx.After(func() { c.Escalated(esc.ID, esc.QueueID, payload) })
	}
	return nil
}

// primaryBounce is the reply that refused the primary address: the first
// permanent attempt on record (the redirect to the backup followed it).
func primaryBounce(it *queue.Item) string {
	for _, a := range it.History {
		if a.Permanent {
			return strings.TrimSpace(fmt.Sprintf("%d %s %s", a.Code, a.Enhanced, a.Text))
		}
	}
	return ""
}

// maskAddress keeps the first character of the local part and the domain,
// as the Case and the Salesforce record show a backup address.
func maskAddress(a string) string {
	local, domain, ok := strings.Cut(a, "@")
	if !ok || local == "" {
		return "***"
	}
	return local[:1] + "***@" + domain
}

// recordCase records in the audit trail that Salesforce opened the Case
// caseID for e; followUp is the error that dead-lettered a later step
// (bounce fields, Task), if one did.
func (s *Server) recordCase(e salesforce.Escalation, caseID string, followUp error) {
	fields := map[string]string{"trigger": e.Trigger, "case_id": caseID, "via": "salesforce"}
	if followUp != nil {
		fields["follow_up_failed"] = s.redact(oneLine(followUp.Error()))
	}
	err := s.Store.Update(func(tx *queue.Tx) error {
		return tx.Audit(&audit.Event{Type: audit.Escalated, QueueID: e.QueueID, MessageID: e.MessageID, Class: e.Class,
			Recipient: e.Recipient, Fields: fields})
	})
	if err != nil {
		s.sfLog.Error().Err(err).Str("queue_id", e.QueueID).Msg("cannot record the Case in the audit trail")
	}
}
