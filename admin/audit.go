package admin

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
)

// clickSkew is how far in the future a reported click time may be: the
// reporter's clock is not ours.
const clickSkew = 2 * time.Minute

func parseTime(field, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %q is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)", field, clip(v, 64))
	}
	return t, nil
}

// parseWindow reads the since and until parameters (RFC 3339, either may be
// absent) and refuses a reversed window, which would give an empty answer
// that reads as "nothing happened".
func parseWindow(q url.Values) (since, until time.Time, err error) {
	if since, err = parseTime("since", q.Get("since")); err != nil {
		return
	}
	if until, err = parseTime("until", q.Get("until")); err != nil {
		return
	}
	if !since.IsZero() && !until.IsZero() && !since.Before(until) {
		err = errors.New("until: must be after since")
	}
	return
}

func (s *server) auditShow(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := checkID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	evs, err := s.lifeline(id)
	if errors.Is(err, audit.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no audit events for %q (looked up as %s)", clip(id, 200), idHelp))
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, evs)
}

func (s *server) auditEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := audit.Filter{Recipient: q.Get("recipient"), Class: q.Get("class"), Type: q.Get("type"),
		QueueID: q.Get("queue_id"), SFDCUser: q.Get("sfdc_user"), SFDCOrg: q.Get("sfdc_org")}
	if f.Type == "" {
		f.Type = q.Get("outcome") // the word for the final event type
	}
	if f.Type != "" && !slices.Contains(audit.Types, f.Type) {
		// A typo would otherwise read as "no such events".
		writeError(w, http.StatusBadRequest, fmt.Sprintf("type: %q is not an event type (%s)", f.Type, strings.Join(audit.Types, ", ")))
		return
	}
	var err error
	if f.Since, f.Until, err = parseWindow(q); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if f.Limit, err = parseLimit(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	evs, err := audit.Query(s.o.Store.DB, f)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if evs == nil {
		evs = []audit.Event{}
	}
	writeJSON(w, http.StatusOK, evs)
}

// flushWriter sends every write on at once, so an export streams to the
// client as audit.Export produces it (in its 64 KiB chunks) and memory stays
// flat however long the trail is.
type flushWriter struct {
	w http.ResponseWriter
	f http.Flusher
}

func (fw flushWriter) Write(p []byte) (int, error) {
	n, err := fw.w.Write(p)
	if fw.f != nil {
		fw.f.Flush()
	}
	return n, err
}

func (s *server) auditExport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := q.Get("format")
	if format == "" {
		format = "csv"
	}
	var ctype string
	switch format {
	case "csv":
		ctype = "text/csv; charset=utf-8"
	case "jsonl":
		ctype = "application/jsonl"
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("format: %q is not csv or jsonl", clip(format, 32)))
		return
	}
	since, until, err := parseWindow(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="latchkey-audit.%s"`, format))
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	if err := audit.Export(s.o.Store.DB, flushWriter{w, f}, format, since, until); err != nil {
		s.o.Log.Error().Err(err).Msg("admin: audit export failed midway")
		// The status is gone; aborting the response makes the client see a
		// truncated transfer instead of a clean end of a partial export.
		panic(http.ErrAbortHandler)
	}
}

// VerifyResult is the answer of GET /api/v1/audit/verify.
type VerifyResult struct {
	OK        bool            `json:"ok"`
	Events    int             `json:"events"`
	FirstSeq  uint64          `json:"first_seq"`
	LastSeq   uint64          `json:"last_seq"`
	HeadSeq   uint64          `json:"head_seq"`
	HeadHash  string          `json:"head_hash,omitempty"` // hex; the relay logs it hourly (anchors)
	Pruned    *PrunedInfo     `json:"pruned,omitempty"`
	Problems  []VerifyProblem `json:"problems"`
	Truncated bool            `json:"truncated,omitempty"`
}

// PrunedInfo describes the checkpoint the chain is verified from.
type PrunedInfo struct {
	Seq     uint64    `json:"seq"`
	Before  time.Time `json:"before"`
	Removed int       `json:"removed"`
	Time    time.Time `json:"time"`
}

// VerifyProblem is one piece of tamper evidence.
type VerifyProblem struct {
	Kind   string     `json:"kind"`
	Seq    uint64     `json:"seq"`
	SeqEnd uint64     `json:"seq_end,omitempty"`
	Time   *time.Time `json:"time,omitempty"`
	Detail string     `json:"detail"`
	Text   string     `json:"text"` // the whole problem in words
}

func (s *server) auditVerify(w http.ResponseWriter, r *http.Request) {
	if len(s.o.AuditKey) == 0 {
		writeError(w, http.StatusServiceUnavailable, "no audit key configured; cannot verify the chain head")
		return
	}
	rep, err := audit.Verify(s.o.Store.DB, s.o.AuditKey)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	res := VerifyResult{OK: rep.OK(), Events: rep.Events, FirstSeq: rep.FirstSeq, LastSeq: rep.LastSeq,
		HeadSeq: rep.HeadSeq, HeadHash: hex.EncodeToString(rep.HeadHash), Truncated: rep.Truncated, Problems: []VerifyProblem{}}
	if c := rep.Checkpoint; c != nil {
		res.Pruned = &PrunedInfo{Seq: c.Seq, Before: c.Before, Removed: c.Removed, Time: c.Time}
	}
	for _, p := range rep.Problems {
		vp := VerifyProblem{Kind: p.Kind, Seq: p.Seq, SeqEnd: p.SeqEnd, Detail: p.Detail, Text: p.String()}
		if !p.Time.IsZero() {
			t := p.Time
			vp.Time = &t
		}
		res.Problems = append(res.Problems, vp)
	}
	writeJSON(w, http.StatusOK, res)
}

// ClickRequest is the body of POST /api/v1/events/clicked: exactly one of
// QueueID and MessageID, and the time of the click (default now).
type ClickRequest struct {
	QueueID   string `json:"queue_id"`
	MessageID string `json:"message_id"`
	// LinkSHA256 is the SHA-256 (hex) of the exact link the user opened:
	// the reset page can compute it without sending the link or its token.
	LinkSHA256 string `json:"link_sha256"`
	Time       string `json:"time"`
}

// ClickResult is the answer: the recorded event and whether the item had
// been reported clicked before.
type ClickResult struct {
	QueueID   string    `json:"queue_id"`
	MessageID string    `json:"message_id,omitempty"`
	Recipient string    `json:"recipient"`
	Class     string    `json:"class"`
	Time      time.Time `json:"time"`
	Seq       uint64    `json:"seq"`
	Duplicate bool      `json:"duplicate"`
}

// clicked records that a message's link was used, completed that the user
// finished the reset. A repeated report is recorded too (it is a fact; a
// user may open the link twice) and flagged "duplicate": the completion
// rate and the Salesforce record count an item once.
func (s *server) clicked(w http.ResponseWriter, r *http.Request)   { s.report(w, r, audit.Clicked) }
func (s *server) completed(w http.ResponseWriter, r *http.Request) { s.report(w, r, audit.Completed) }

func (s *server) report(w http.ResponseWriter, r *http.Request, typ string) {
	var req ClickRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if n := btoi(req.QueueID != "") + btoi(req.MessageID != "") + btoi(req.LinkSHA256 != ""); n != 1 {
		writeError(w, http.StatusBadRequest, "queue_id, message_id, link_sha256: give exactly one")
		return
	}
	now := time.Now()
	at := now
	if req.Time != "" {
		t, err := time.Parse(time.RFC3339, req.Time)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("time: %q is not an RFC 3339 time", clip(req.Time, 64)))
			return
		}
		if t.After(now.Add(clickSkew)) {
			writeError(w, http.StatusBadRequest, "time: in the future")
			return
		}
		at = t
	}
	it, ok := s.clickTarget(w, r, req)
	if !ok {
		return
	}
	if at.Before(it.Accepted.Truncate(time.Second)) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("time: before the message was accepted (%s)", it.Accepted.UTC().Format(time.RFC3339)))
		return
	}
	if s.o.Store.Audit == nil {
		s.internal(w, r, errors.New("admin: the audit log is not open; cannot record a "+typ+" event"))
		return
	}
	prior, err := audit.Query(s.o.Store.DB, audit.Filter{QueueID: it.ID, Type: typ, Limit: 1})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	ev := &audit.Event{Time: at, Type: typ, QueueID: it.ID, MessageID: it.MessageID,
		Class: it.Class, Recipient: it.Rcpt}
	if len(prior) > 0 {
		ev.Fields = map[string]string{"duplicate": "true"}
	}
	if err := s.o.Store.Update(func(tx *queue.Tx) error { return tx.Audit(ev) }); err != nil {
		s.internal(w, r, err)
		return
	}
	s.o.Log.Info().Str("queue_id", it.ID).Bool("duplicate", len(prior) > 0).Msg("admin: " + typ + " recorded")
	writeJSON(w, http.StatusCreated, ClickResult{QueueID: it.ID, MessageID: it.MessageID, Recipient: it.Rcpt,
		Class: it.Class, Time: ev.Time, Seq: ev.Seq, Duplicate: len(prior) > 0})
}

var sha256HexRE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// clickTarget resolves the clicked item: by queue_id (an item id, or a
// message id of a one-recipient message) or by Message-ID. An id that names
// several items (several recipients) is ambiguous: 409, use the item id.
func (s *server) clickTarget(w http.ResponseWriter, r *http.Request, req ClickRequest) (*queue.Item, bool) {
	if req.LinkSHA256 != "" {
		if !sha256HexRE.MatchString(req.LinkSHA256) {
			writeError(w, http.StatusBadRequest, "link_sha256: want the 64 hex digits of the link's SHA-256 (never the link itself)")
			return nil, false
		}
		items, err := s.o.Queue.LookupLink(req.LinkSHA256)
		if err != nil {
			s.internal(w, r, err)
			return nil, false
		}
		switch len(items) {
		case 0:
			writeError(w, http.StatusNotFound, "no message carried a link with that hash")
			return nil, false
		case 1:
			return items[0], true
		}
		writeError(w, http.StatusConflict, fmt.Sprintf("the link was sent to %d recipients; report the click by the item's queue_id", len(items)))
		return nil, false
	}
	field, id := "message_id", req.MessageID
	if req.QueueID != "" {
		field, id = "queue_id", req.QueueID
		if !queue.ValidID(id) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("queue_id: %q is not a queue id", clip(id, 64)))
			return nil, false
		}
	} else if len(id) > 998 {
		writeError(w, http.StatusBadRequest, "message_id: longer than 998 bytes")
		return nil, false
	}
	items, err := s.o.Queue.Lookup(id)
	if err != nil {
		s.internal(w, r, err)
		return nil, false
	}
	switch len(items) {
	case 0:
		if field == "queue_id" {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no queue item %s", id))
		} else {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no message with Message-ID %q", clip(id, 200)))
		}
		return nil, false
	case 1:
		return items[0], true
	}
	writeError(w, http.StatusConflict, fmt.Sprintf("%s %q names %d queue items (one per recipient); report the click by the item's queue_id", field, clip(id, 200), len(items)))
	return nil, false
}
