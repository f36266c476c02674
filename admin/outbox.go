package admin

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"

	"github.com/latchkey/latchkey/salesforce"
)

// escalationIDRE is the outbox's rule for escalation ids.
var escalationIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (s *server) noOutbox(w http.ResponseWriter) bool {
	if s.o.Outbox == nil {
		writeError(w, http.StatusNotFound, "Salesforce is not enabled: there is no escalation outbox")
		return true
	}
	return false
}

// outboxStates lists what ?state= selects: by default what needs attention
// (pending and dead), "all" adds the finished ones.
func outboxStates(v string) ([]string, error) {
	switch v {
	case "":
		return []string{salesforce.StatePending, salesforce.StateDead}, nil
	case "all":
		return []string{salesforce.StatePending, salesforce.StateDead, salesforce.StateDone}, nil
	case salesforce.StatePending, salesforce.StateDead, salesforce.StateDone:
		return []string{v}, nil
	}
	return nil, fmt.Errorf("state: %q is not pending, dead, done or all", clip(v, 32))
}

func (s *server) outboxList(w http.ResponseWriter, r *http.Request) {
	if s.noOutbox(w) {
		return
	}
	states, err := outboxStates(r.URL.Query().Get("state"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out := []salesforce.Item{}
	for _, st := range states {
		items, err := s.o.Outbox.List(st)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		out = append(out, items...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	writeJSON(w, http.StatusOK, out)
}

// RecordsAnswer is GET /api/v1/outbox/records: the reset records waiting for
// Salesforce and those it refused for good.
type RecordsAnswer struct {
	salesforce.LifecycleStats
	DeadRecords []salesforce.DeadRecord `json:"dead_records"`
}

func (s *server) outboxRecords(w http.ResponseWriter, r *http.Request) {
	if s.o.Lifecycle == nil {
		writeError(w, http.StatusNotFound, "[salesforce.lifecycle] is not enabled: no reset records are sent")
		return
	}
	dead, err := s.o.Lifecycle.DeadRecords()
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if dead == nil {
		dead = []salesforce.DeadRecord{}
	}
	writeJSON(w, http.StatusOK, RecordsAnswer{LifecycleStats: s.o.Lifecycle.Stats(), DeadRecords: dead})
}

// findOutbox returns the item with id in any state (nil when unknown).
func (s *server) findOutbox(id string) (*salesforce.Item, error) {
	for _, st := range []string{salesforce.StateDead, salesforce.StatePending, salesforce.StateDone} {
		items, err := s.o.Outbox.List(st)
		if err != nil {
			return nil, err
		}
		for i := range items {
			if items[i].ID == id {
				return &items[i], nil
			}
		}
	}
	return nil, nil
}

// outboxRetry sends a dead-lettered escalation again. Only dead items can be
// retried: a pending one is already being tried, a done one has its Case.
func (s *server) outboxRetry(w http.ResponseWriter, r *http.Request) {
	if s.noOutbox(w) {
		return
	}
	id := r.PathValue("id")
	if !escalationIDRE.MatchString(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("id: %q is not an escalation id", clip(id, 80)))
		return
	}
	it, err := s.findOutbox(id)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	switch {
	case it == nil:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no escalation %s", id))
		return
	case it.State == salesforce.StatePending:
		writeError(w, http.StatusConflict, fmt.Sprintf("escalation %s is pending already (attempt %d)", id, it.Attempts))
		return
	case it.State == salesforce.StateDone:
		writeError(w, http.StatusConflict, fmt.Sprintf("escalation %s is done (Case %s)", id, it.CaseID))
		return
	}
	if err := s.o.Outbox.Retry(id); err != nil {
		// Gone from the dead letters between the look-up and the retry.
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	s.o.Log.Info().Str("escalation", id).Str("remote", r.RemoteAddr).Msg("admin: outbox retry")
	it, err = s.findOutbox(id)
	if err != nil || it == nil {
		writeJSON(w, http.StatusOK, map[string]string{"id": id, "state": salesforce.StatePending})
		return
	}
	writeJSON(w, http.StatusOK, it)
}
