// Package admin is latchkey's authenticated admin HTTP API: the queue, the
// suppression lists, the audit trail, click reports and the Salesforce
// outbox, as JSON under /api/v1/, plus the unauthenticated /healthz and
// /readyz probes.
//
// The same Handler serves two callers: the running relay mounts it on its
// admin listener, and the latchkey CLI, when the relay is stopped, opens the
// database itself and calls the Handler in process through Transport, so the
// commands have one code path whether or not a relay is running (Badger
// allows one process at a time, so the CLI cannot open the database while
// the relay runs).
//
// Every route but the probes requires "Authorization: Bearer <token>"
// (compared in constant time). Errors are JSON objects {"error": "..."} with
// the status that says what went wrong: 400 bad input (naming the field),
// 401 no or wrong token, 403 no token configured, 404 unknown id, 409 a
// state that does not allow the change, 413 a body over its limit, 503 not
// ready. docs/api.md documents every route.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce"
)

// Options are what the admin API serves.
type Options struct {
	// Token is the bearer token every route but /healthz and /readyz
	// requires. Empty: those routes answer 403 (never open by accident).
	Token string
	Queue *queue.Queue
	// Store is the database: clicked events are written through its
	// committer, audit reads use Store.DB.
	Store *queue.Store
	// AuditKey verifies the chain head and checkpoints (/api/v1/audit/verify).
	AuditKey []byte
	// Outbox is nil when Salesforce is disabled; the outbox routes then
	// answer 404.
	Outbox *salesforce.Outbox
	// Lifecycle is nil unless [salesforce.lifecycle] is enabled.
	Lifecycle *salesforce.Lifecycle
	// Ready reports readiness for /readyz; nil means ready.
	Ready func() error
	// Extra mounts more authenticated routes, keyed by ServeMux pattern
	// (e.g. "/metrics", "GET /api/v1/stats").
	Extra map[string]http.Handler
	Log   zerolog.Logger
}

// Body limits: JSON requests are small; a suppression import may be a large
// export from a mailing tool.
const (
	maxJSONBody   = 1 << 20
	maxImportBody = 64 << 20
)

type server struct {
	o     Options
	token []byte
	api   *http.ServeMux
}

// Handler returns the admin API.
func Handler(o Options) http.Handler {
	s := &server{o: o, token: []byte(o.Token), api: http.NewServeMux()}
	m := s.api
	m.HandleFunc("GET /api/v1/queue", s.queueList)
	m.HandleFunc("GET /api/v1/queue/depth", s.queueDepth)
	m.HandleFunc("GET /api/v1/queue/{id}", s.queueShow)
	m.HandleFunc("POST /api/v1/queue/{id}/retry", s.queueRetry)
	m.HandleFunc("POST /api/v1/queue/{id}/drop", s.queueDrop)

	m.HandleFunc("GET /api/v1/suppressions", s.suppressList)
	m.HandleFunc("PUT /api/v1/suppressions/{list}/{addr}", s.suppressAdd)
	m.HandleFunc("DELETE /api/v1/suppressions/{list}/{addr}", s.suppressRemove)
	m.HandleFunc("POST /api/v1/suppressions/{list}/import", s.suppressImport)

	m.HandleFunc("GET /api/v1/audit/messages/{id...}", s.auditShow)
	m.HandleFunc("GET /api/v1/audit/events", s.auditEvents)
	m.HandleFunc("GET /api/v1/audit/export", s.auditExport)
	m.HandleFunc("GET /api/v1/audit/verify", s.auditVerify)
	m.HandleFunc("POST /api/v1/events/clicked", s.clicked)
	m.HandleFunc("POST /api/v1/events/completed", s.completed)

	m.HandleFunc("GET /api/v1/outbox", s.outboxList)
	m.HandleFunc("GET /api/v1/outbox/records", s.outboxRecords)
	m.HandleFunc("POST /api/v1/outbox/{id}/retry", s.outboxRetry)

	for pattern, h := range o.Extra {
		s.mount(pattern, h)
	}
	// The catch-all turns the mux's plain-text 404 and 405 into JSON.
	m.HandleFunc("/", s.notFound)
	return s
}

// mount adds an extra route; a pattern that conflicts with a built-in one is
// logged and skipped rather than taking the whole API down.
func (s *server) mount(pattern string, h http.Handler) {
	defer func() {
		if r := recover(); r != nil {
			s.o.Log.Error().Str("pattern", pattern).Interface("panic", r).Msg("admin: extra route not mounted")
		}
	}()
	s.api.Handle(pattern, h)
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	case "/readyz":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		if s.o.Ready != nil {
			if err := s.o.Ready(); err != nil {
				writeError(w, http.StatusServiceUnavailable, err.Error())
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		return
	}
	if len(s.token) == 0 {
		writeError(w, http.StatusForbidden, "the admin API has no token configured")
		return
	}
	if !s.authorized(r) {
		// The token is never logged; the remote address is enough to
		// notice someone guessing.
		s.o.Log.Warn().Str("remote", r.RemoteAddr).Str("path", r.URL.Path).Msg("admin: unauthorized request")
		w.Header().Set("WWW-Authenticate", `Bearer realm="latchkey"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	s.api.ServeHTTP(w, r)
}

func (s *server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), s.token) == 1
}

// notFound answers an unmatched request: 405 when the path exists for
// another method, 404 otherwise.
func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, p := s.api.Handler(r2); p != "/" && p != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		methodNotAllowed(w, strings.Join(allow, ", "))
		return
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed; use "+allow)
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"admin: cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, Error{Error: msg})
}

// internal answers 500 for an unexpected error; the detail goes to the log
// and, since only operators hold the token, to the answer too.
func (s *server) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.o.Log.Error().Err(err).Str("path", r.URL.Path).Msg("admin: request failed")
	writeError(w, http.StatusInternalServerError, err.Error())
}

// decodeJSON reads a JSON body of at most maxJSONBody bytes into v. An empty
// body leaves v as it is. It answers the error itself and returns false.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxJSONBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil || errors.Is(err, io.EOF):
		return true
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", mbe.Limit))
	default:
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
	}
	return false
}
