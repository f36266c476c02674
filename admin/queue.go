package admin

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"github.com/latchkey/latchkey/queue"
)

// Default and largest page of a list.
const (
	defaultLimit = 1000
	maxLimit     = 100000
)

var queueStates = []string{queue.StateQueued, queue.StateDelivered, queue.StateBounced, queue.StateExpired,
	queue.StateSuperseded, queue.StateDropped, "all"}

// parseLimit reads ?limit= (default defaultLimit, at most maxLimit).
func parseLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, fmt.Errorf("limit: want a number from 1 to %d, got %q", maxLimit, v)
	}
	return n, nil
}

func (s *server) queueList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	if state != "" && !contains(queueStates, state) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("state: %q is not one of %s", state, strings.Join(queueStates, ", ")))
		return
	}
	if state == queue.StateQueued {
		state = "" // the live items
	}
	limit, err := parseLimit(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	items, err := s.o.Queue.List(queue.Filter{Class: q.Get("class"), State: state, Limit: limit})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if items == nil {
		items = []*queue.Item{}
	}
	writeJSON(w, http.StatusOK, items)
}

// item looks up the {id} of the request and answers 400 or 404 itself.
func (s *server) item(w http.ResponseWriter, r *http.Request) (*queue.Item, bool) {
	id := r.PathValue("id")
	if !queue.ValidID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("id: %q is not a queue id", clip(id, 64)))
		return nil, false
	}
	it, err := s.o.Queue.Get(id)
	if err != nil {
		s.internal(w, r, err)
		return nil, false
	}
	if it == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no queue item %s", id))
		return nil, false
	}
	return it, true
}

func (s *server) queueShow(w http.ResponseWriter, r *http.Request) {
	if it, ok := s.item(w, r); ok {
		writeJSON(w, http.StatusOK, it)
	}
}

func (s *server) queueRetry(w http.ResponseWriter, r *http.Request) {
	it, ok := s.item(w, r)
	if !ok {
		return
	}
	if queue.Final(it.State) {
		writeError(w, http.StatusConflict, fmt.Sprintf("item %s is %s; only queued items can be retried", it.ID, it.State))
		return
	}
	if err := s.o.Queue.Retry(it.ID); err != nil {
		s.queueConflict(w, r, it.ID, err)
		return
	}
	s.o.Log.Info().Str("queue_id", it.ID).Str("remote", r.RemoteAddr).Msg("admin: retry")
	s.queueShow(w, r)
}

// DropRequest is the body of POST /api/v1/queue/{id}/drop.
type DropRequest struct {
	By     string `json:"by"`
	Reason string `json:"reason"`
}

func (s *server) queueDrop(w http.ResponseWriter, r *http.Request) {
	var req DropRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if err := checkText("by", req.By, 100); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := checkText("reason", req.Reason, 500); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	it, ok := s.item(w, r)
	if !ok {
		return
	}
	if queue.Final(it.State) {
		writeError(w, http.StatusConflict, fmt.Sprintf("item %s is already %s", it.ID, it.State))
		return
	}
	by := strings.TrimSpace(req.By)
	if by == "" {
		by = "admin-api"
	}
	if err := s.o.Queue.Drop(it.ID, by, strings.TrimSpace(req.Reason)); err != nil {
		s.queueConflict(w, r, it.ID, err)
		return
	}
	s.o.Log.Info().Str("queue_id", it.ID).Str("by", by).Str("remote", r.RemoteAddr).Msg("admin: drop")
	s.queueShow(w, r)
}

// queueConflict maps the queue's refusals to 409 (the item changed state
// between the look-up and the change, or is being delivered right now).
func (s *server) queueConflict(w http.ResponseWriter, r *http.Request, id string, err error) {
	switch {
	case errors.Is(err, queue.ErrInFlight):
		writeError(w, http.StatusConflict, fmt.Sprintf("item %s is being delivered right now; try again", id))
	case errors.Is(err, queue.ErrNotFound):
		writeError(w, http.StatusConflict, fmt.Sprintf("item %s is no longer queued", id))
	default:
		s.internal(w, r, err)
	}
}

// checkText refuses over-long values and control characters in free text
// that ends up in the audit trail.
func checkText(field, v string, max int) error {
	if len(v) > max {
		return fmt.Errorf("%s: longer than %d bytes", field, max)
	}
	for _, c := range v {
		if unicode.IsControl(c) || c == unicode.ReplacementChar {
			return fmt.Errorf("%s: contains a control or invalid character", field)
		}
	}
	return nil
}

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
