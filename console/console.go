// Package console is latchkey's web console, served by the admin listener
// under /console/: the four reset figures against their targets with their
// plots, the queue, every message's timeline, the queue and suppression
// actions, and the audit chain's status and export.
//
// The console holds no figures or operations of its own. Every page reads,
// and every button acts, through the admin API (package admin), called in
// process with the admin token: the numbers on the overview are the ones
// `latchkey stats` prints and the actions are the ones `latchkey queue` and
// `latchkey suppress` run, by the same code.
//
// Pages are html/template, rendered on the server with their plots as SVG;
// the console needs no JavaScript. A person signs in with the admin token
// (role admin) or as a user of the users file (role admin or auditor) and
// gets a session cookie (HttpOnly, SameSite=Strict, Secure over TLS); every
// form carries the session's CSRF token; an auditor's POST is refused; every
// action is in the audit trail with the person's name.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/latchkey/latchkey/admin"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options are what the console serves.
type Options struct {
	// API is the admin API handler (admin.Handler); Token is its bearer
	// token, which the console presents on every call and which also signs
	// a person in as role admin.
	API   http.Handler
	Token string
	// UsersFile, if set, holds the console's users (see LoadUsers).
	UsersFile string
	// Secure marks the cookies Secure even when the request came over
	// plain HTTP: TLS ended at a proxy in front.
	Secure bool
	// CertNotAfter is the expiry of the certificate in service (zero time:
	// none); nil when unknown.
	CertNotAfter func() time.Time
	Log          zerolog.Logger
	Now          func() time.Time // default time.Now
}

// Console is the console's http.Handler.
type Console struct {
	o     Options
	token []byte
	users map[string]user
	dummy []byte
	api   *admin.Client
	ss    *sessions
	pages map[string]*template.Template
	mux   *http.ServeMux
	cache cache
}

// New loads the users file and parses the templates.
func New(o Options) (*Console, error) {
	if o.API == nil {
		return nil, errors.New("console: no admin API")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Console{o: o, token: []byte(o.Token), users: map[string]user{}, ss: newSessions(o.Now),
		api: &admin.Client{BaseURL: "http://console", Token: o.Token, HTTP: &http.Client{Transport: admin.Transport(o.API)}}}
	if o.UsersFile != "" {
		u, err := LoadUsers(o.UsersFile)
		if err != nil {
			return nil, err
		}
		c.users = u
	}
	c.dummy, _ = bcrypt.GenerateFromPassword([]byte("latchkey-console-dummy"), bcrypt.MinCost)
	if err := c.parse(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

func (c *Console) parse() error {
	c.pages = map[string]*template.Template{}
	names, err := templateFS.ReadDir("templates")
	if err != nil {
		return err
	}
	for _, e := range names {
		n := e.Name()
		if n == "layout.html" {
			continue
		}
		t, err := template.New(n).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+n)
		if err != nil {
			return fmt.Errorf("console: template %s: %w", n, err)
		}
		c.pages[strings.TrimSuffix(n, ".html")] = t
	}
	return nil
}

// Mount serves the console at / and /console/ and everything else (the
// API, the probes, /metrics) from api.
func Mount(api http.Handler, c *Console) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" || r.URL.Path == "/console" || strings.HasPrefix(r.URL.Path, "/console/") {
			c.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

type handler func(w http.ResponseWriter, r *http.Request, s *session)

func (c *Console) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
	})
	m.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
	})
	m.Handle("GET /console/static/", http.StripPrefix("/console/", http.FileServerFS(staticFS)))
	m.HandleFunc("GET /console/login", c.loginPage)
	m.HandleFunc("POST /console/login", c.login)
	m.HandleFunc("POST /console/logout", c.auth(c.logout, false))

	m.HandleFunc("GET /console/{$}", c.auth(c.overview, false))
	m.HandleFunc("GET /console/messages", c.auth(c.messages, false))
	m.HandleFunc("GET /console/messages/{id...}", c.auth(c.message, false))
	m.HandleFunc("POST /console/retry", c.auth(c.retry, true))
	m.HandleFunc("POST /console/drop", c.auth(c.drop, true))
	m.HandleFunc("GET /console/suppressions", c.auth(c.suppressions, false))
	m.HandleFunc("POST /console/suppressions/add", c.auth(c.suppressAdd, true))
	m.HandleFunc("POST /console/suppressions/remove", c.auth(c.suppressRemove, true))
	m.HandleFunc("GET /console/audit", c.auth(c.auditPage, false))
	m.HandleFunc("GET /console/audit/export", c.auth(c.auditExport, false))
	m.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, c.ss.get(r), http.StatusNotFound, "There is no page "+r.URL.Path+".")
	})
	c.mux = m
}

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// No script, no frames, nothing from elsewhere: the pages are static
	// HTML with inline SVG.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			c.o.Log.Error().Interface("panic", p).Str("path", r.URL.Path).Msg("console: page failed")
			c.fail(w, r, nil, http.StatusInternalServerError, "The page failed; the log has the detail.")
		}
	}()
	c.mux.ServeHTTP(w, r)
}

// auth wraps a page: no session sends a browser to the login page (a POST
// gets 401); a write needs role admin and the session's CSRF token.
func (c *Console) auth(h handler, write bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.ss.get(r)
		if s == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/console/login?next="+urlQuery(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.fail(w, r, nil, http.StatusUnauthorized, "You are not signed in (or your session ended). Sign in again.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if err := r.ParseForm(); err != nil {
				c.fail(w, r, s, http.StatusBadRequest, "The form could not be read: "+err.Error())
				return
			}
			if !csrfOK(r, s.csrf) {
				c.o.Log.Warn().Str("user", s.user).Str("path", r.URL.Path).Str("remote", r.RemoteAddr).Msg("console: POST without a valid CSRF token")
				c.fail(w, r, s, http.StatusForbidden, "The form's security token is missing or wrong. Reload the page and try again.")
				return
			}
			if write && s.role != RoleAdmin {
				c.o.Log.Warn().Str("user", s.user).Str("path", r.URL.Path).Msg("console: read-only user tried a change")
				c.fail(w, r, s, http.StatusForbidden, "Your role ("+s.role+") is read-only: it cannot change the queue or the suppression lists.")
				return
			}
		}
		h(w, r, s)
	}
}

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	User    string
	Role    string
	CSRF    string
	CanEdit bool
	Flash   string
	Error   string
	Status  int
	Data    any
}

func (c *Console) render(w http.ResponseWriter, s *session, status int, name string, p page) {
	t := c.pages[name]
	if t == nil {
		http.Error(w, "console: no template "+name, http.StatusInternalServerError)
		return
	}
	if s != nil {
		p.User, p.Role, p.CSRF, p.CanEdit = s.user, s.role, s.csrf, s.role == RoleAdmin
	}
	p.Status = status
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout", p); err != nil {
		c.o.Log.Error().Err(err).Str("page", name).Msg("console: render failed")
		http.Error(w, "console: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, b.String())
}

// fail answers a clear error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, status int, msg string) {
	c.render(w, s, status, "error", page{Title: http.StatusText(status), Error: msg})
}

// apiFail turns an admin API error into a page: its 4xx status and words
// stay (an unknown id is a 404 saying so); anything else is a 502 with the
// detail logged.
func (c *Console) apiFail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	var ae *admin.APIError
	if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 {
		c.fail(w, r, s, ae.Status, ae.Message)
		return
	}
	c.o.Log.Error().Err(err).Str("path", r.URL.Path).Msg("console: admin API call failed")
	c.fail(w, r, s, http.StatusBadGateway, "The relay could not answer: "+err.Error())
}

func (c *Console) get(ctx context.Context, path string, out any) error {
	return c.api.JSON(ctx, http.MethodGet, path, nil, out)
}
