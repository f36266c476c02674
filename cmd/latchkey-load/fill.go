package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/policy"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/relay"
)

// fillQueue writes n bulk messages straight into the queue of a stopped
// relay's data directory, shaped as the submission path writes them (item,
// signed body, received and signed audit events, dedupe keys), due in an
// hour so that a restarted relay holds them rather than sends them. It is
// how a 1,000,000-message queue is built in minutes instead of the hours
// SMTP submission would take; the restart measured on it is the relay's
// real start-up. Nothing is DKIM-signed: a fixed placeholder header stands
// in for the signature's bytes.
func fillQueue(cfgPath string, n, workers int) (time.Duration, error) {
	cfg, err := conf.Load(cfgPath)
	if err != nil {
		return 0, err
	}
	verpKey, err := relay.EnsureSecret(cfg.Path("verp.key"), 32)
	if err != nil {
		return 0, err
	}
	auditKey, err := relay.EnsureSecret(cfg.Path("audit.key"), 32)
	if err != nil {
		return 0, err
	}
	pol, err := policy.Parse("(embedded) policy.toml", conf.DefaultPolicy)
	if err != nil {
		return 0, err
	}
	class := pol.Class("bulk")
	if class == nil {
		return 0, fmt.Errorf("latchkey-load: the shipped policy has no bulk class")
	}
	log := zerolog.Nop()
	store, err := queue.OpenStore(filepath.Join(cfg.DataDir, "db"), log)
	if err != nil {
		return 0, err
	}
	defer store.Close()
	if store.Audit, err = audit.Open(store.DB, auditKey); err != nil {
		return 0, err
	}
	q, err := queue.New(store, log)
	if err != nil {
		return 0, err
	}
	sig := []byte("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=lk1; b=placeholder\r\n")
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				now := time.Now()
				rcpt := fmt.Sprintf("user%d@dest.test", i)
				body := buildMessage(msgSpec{from: "noreply@example.com", to: rcpt, class: "bulk", seq: 2_000_000_000 + i, sent: now, size: 4096, runID: "fill"})
				sum := sha256.Sum256(body)
				bodyHex := hex.EncodeToString(sum[:])
				msgID := queue.NewMsgID(now)
				messageID := fmt.Sprintf("fill.%d@load.example.com", i)
				deadline := now.Add(class.Expiry)
				it := &queue.Item{ID: queue.ItemID(msgID, 0), MsgID: msgID, Class: class.Name, Priority: class.Priority,
					From: "noreply@example.com", Rcpt: rcpt, Domain: "example.com", MessageID: messageID,
					AuthUser: "load", ClientIP: "127.0.0.1", Accepted: now, Deadline: deadline, Cutoff: class.Cutoff(deadline),
					Due: now.Add(time.Hour)}
				it.Sender = bounce.EncodeVERP(verpKey, it.ID, "example.com")
				m := &queue.Message{MsgID: msgID, Body: append(append([]byte(nil), sig...), body...), Items: []*queue.Item{it},
					DedupeWindow: class.DedupeWindow, DedupeKeys: class.DedupeKeys(messageID, bodyHex, rcpt),
					Events: []*audit.Event{
						{Time: now, Type: audit.Received, MessageID: messageID, Class: class.Name, Recipient: rcpt, Sender: "noreply@example.com",
							Fields: map[string]string{"client_ip": "127.0.0.1", "auth_user": "load", "tls": "TLS 1.3", "body_sha256": bodyHex, "queue_id": msgID}},
						{Time: now, Type: audit.Signed, MessageID: messageID, Class: class.Name,
							Fields: map[string]string{"domain": "example.com", "selectors": "lk1", "queue_id": msgID}},
					}}
				if _, err := q.Enqueue(m); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(t0), firstErr
}
