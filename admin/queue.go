package admin

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
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
	f := queue.Filter{Class: q.Get("class"), State: state, Limit: limit, Rcpt: strings.TrimSpace(q.Get("rcpt"))}
	if err := checkText("rcpt", f.Rcpt, 320); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if f.Since, f.Until, err = parseWindow(q); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch o := q.Get("order"); o {
	case "", "oldest":
	case "newest":
		f.Newest = true
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("order: %q is not oldest or newest", clip(o, 32)))
		return
	}
	if f.After = q.Get("after"); f.After != "" && !queue.ValidID(f.After) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("after: %q is not a queue item id", clip(f.After, 64)))
		return
	}
	items, err := s.o.Queue.List(f)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if items == nil {
		items = []*queue.Item{}
	}
	writeJSON(w, http.StatusOK, items)
}

// queueDepth answers the live queue per class: items waiting, being
// delivered, and the acceptance time of the oldest.
func (s *server) queueDepth(w http.ResponseWriter, r *http.Request) {
	out := []queue.LaneDepth{}
	for _, d := range s.o.Queue.Depth() {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b queue.LaneDepth) int { return strings.Compare(a.Class, b.Class) })
	writeJSON(w, http.StatusOK, out)
}

// The {id} routes answer with a JSON array of the items the id names: one
// for a queue item id, every recipient for a message id or a Message-ID.

func (s *server) queueShow(w http.ResponseWriter, r *http.Request) {
	if items, ok := s.items(w, r); ok {
		writeJSON(w, http.StatusOK, items)
	}
}

// live keeps the items that can still change; none left is a 409 naming
// their states.
func live(w http.ResponseWriter, items []*queue.Item, verb string) ([]*queue.Item, bool) {
	var out []*queue.Item
	var ended []string
	for _, it := range items {
		if queue.Final(it.State) {
			ended = append(ended, it.ID+" is "+it.State)
		} else {
			out = append(out, it)
		}
	}
	if len(out) == 0 {
		done := map[string]string{"retry": "retried", "drop": "dropped"}[verb]
		if len(items) == 1 {
			writeError(w, http.StatusConflict, fmt.Sprintf("item %s; only queued items can be %s", ended[0], done))
		} else {
			writeError(w, http.StatusConflict, fmt.Sprintf("nothing to %s: %s; only queued items can be %s", verb, strings.Join(ended, ", "), done))
		}
		return nil, false
	}
	return out, true
}

// RetryRequest is the (optional) body of POST /api/v1/queue/{id}/retry.
type RetryRequest struct {
	By string `json:"by"`
}

func (s *server) queueRetry(w http.ResponseWriter, r *http.Request) {
	var req RetryRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	by, ok := actor(w, req.By)
	if !ok {
		return
	}
	items, ok := s.items(w, r)
	if !ok {
		return
	}
	todo, ok := live(w, items, "retry")
	if !ok {
		return
	}
	s.apply(w, r, items, todo, "retry", func(it *queue.Item) error { return s.o.Queue.Retry(it.ID, by) })
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
	by, ok := actor(w, req.By)
	if !ok {
		return
	}
	if err := checkText("reason", req.Reason, 500); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	items, ok := s.items(w, r)
	if !ok {
		return
	}
	todo, ok := live(w, items, "drop")
	if !ok {
		return
	}
	s.apply(w, r, items, todo, "drop", func(it *queue.Item) error {
		return s.o.Queue.Drop(it.ID, by, strings.TrimSpace(req.Reason))
	})
}

// apply runs op on each live item and answers with every item the id named,
// as they are now. An item that is being delivered right now makes the
// answer a 409 naming it (the others were changed).
func (s *server) apply(w http.ResponseWriter, r *http.Request, items, todo []*queue.Item, verb string, op func(*queue.Item) error) {
	var busy, done []string
	for _, it := range todo {
		err := op(it)
		switch {
		case err == nil:
			done = append(done, it.ID)
			s.o.Log.Info().Str("queue_id", it.ID).Str("remote", r.RemoteAddr).Msg("admin: " + verb)
		case errors.Is(err, queue.ErrInFlight):
			busy = append(busy, it.ID+" is being delivered right now")
		case errors.Is(err, queue.ErrNotFound):
			busy = append(busy, it.ID+" is no longer queued")
		default:
			s.internal(w, r, err)
			return
		}
	}
	if len(busy) > 0 {
		msg := fmt.Sprintf("cannot %s: %s; try again", verb, strings.Join(busy, ", "))
		if len(done) > 0 {
			msg += fmt.Sprintf(" (done: %s)", strings.Join(done, ", "))
		}
		writeError(w, http.StatusConflict, msg)
		return
	}
	now := make([]*queue.Item, 0, len(items))
	for _, it := range items {
		cur, err := s.o.Queue.Get(it.ID)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		if cur != nil {
			now = append(now, cur)
		}
	}
	writeJSON(w, http.StatusOK, now)
}

// actor checks the name of who asked for a change (it goes into the audit
// trail); empty is the API itself. It answers a 400 itself.
func actor(w http.ResponseWriter, by string) (string, bool) {
	by = strings.TrimSpace(by)
	if err := checkText("by", by, 100); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	if by == "" {
		by = "admin-api"
	}
	return by, true
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
