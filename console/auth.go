package console

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Roles. An auditor reads everything and changes nothing.
const (
	RoleAdmin   = "admin"
	RoleAuditor = "auditor"
)

// TokenUser is the name a session signed in with the admin token carries
// in the log and the audit trail.
const TokenUser = "admin-token"

// Session lifetimes: a console left open on a desk signs itself out.
const (
	sessionIdle = time.Hour
	sessionMax  = 12 * time.Hour
	maxSessions = 10000
)

// Login throttling: enough for typos, not for guessing.
const (
	maxLoginFailures = 10
	failureWindow    = 10 * time.Minute
)

const (
	sessionCookie = "latchkey_console"
	loginCookie   = "latchkey_login" // the login form's CSRF value
	cookiePath    = "/console/"
)

type user struct {
	role string
	hash []byte
}

// LoadUsers reads a users file: one "name:role:bcrypt-hash" per line (role
// admin or auditor; `latchkey passwd` prints the hash), # comments and
// blank lines allowed. Errors name the file and line.
func LoadUsers(path string) (map[string]user, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("console: users file: %w", err)
	}
	users := map[string]user{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok1 := strings.Cut(line, ":")
		role, hash, ok2 := strings.Cut(rest, ":")
		switch {
		case !ok1 || !ok2 || name == "":
			return nil, fmt.Errorf("console: %s:%d: want name:role:bcrypt-hash", path, n)
		case role != RoleAdmin && role != RoleAuditor:
			return nil, fmt.Errorf("console: %s:%d: role %q: want %s or %s", path, n, role, RoleAdmin, RoleAuditor)
		case !strings.HasPrefix(hash, "$2"):
			return nil, fmt.Errorf("console: %s:%d: the password is not a bcrypt hash (make one with latchkey passwd)", path, n)
		case name == TokenUser:
			return nil, fmt.Errorf("console: %s:%d: %q is the admin token's name; pick another", path, n, name)
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("console: %s:%d: user %q is defined twice", path, n, name)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("console: %s:%d: user %q: %v", path, n, name, err)
		}
		users[name] = user{role: role, hash: []byte(hash)}
	}
	return users, sc.Err()
}

type session struct {
	id, user, role, csrf string
	started, seen        time.Time
}

type sessions struct {
	mu    sync.Mutex
	byID  map[string]*session
	fails map[string][]time.Time // remote host → failed logins in the window
	now   func() time.Time
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{byID: map[string]*session{}, fails: map[string][]time.Time{}, now: now}
}

func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (ss *sessions) create(name, role string) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := ss.now()
	if len(ss.byID) >= maxSessions {
		ss.expireLocked(now)
	}
	s := &session{id: randomToken(), user: name, role: role, csrf: randomToken(), started: now, seen: now}
	ss.byID[s.id] = s
	return s
}

func (ss *sessions) expireLocked(now time.Time) {
	for id, s := range ss.byID {
		if now.Sub(s.seen) > sessionIdle || now.Sub(s.started) > sessionMax {
			delete(ss.byID, id)
		}
	}
}

// get returns the live session a request's cookie names, or nil.
func (ss *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.byID[c.Value]
	if s == nil {
		return nil
	}
	now := ss.now()
	if now.Sub(s.seen) > sessionIdle || now.Sub(s.started) > sessionMax {
		delete(ss.byID, s.id)
		return nil
	}
	s.seen = now
	return s
}

func (ss *sessions) end(id string) {
	ss.mu.Lock()
	delete(ss.byID, id)
	ss.mu.Unlock()
}

func remoteHost(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// throttled reports whether the request's host failed too many logins.
func (ss *sessions) throttled(host string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := ss.now()
	keep := ss.fails[host][:0]
	for _, t := range ss.fails[host] {
		if now.Sub(t) < failureWindow {
			keep = append(keep, t)
		}
	}
	if len(keep) == 0 {
		delete(ss.fails, host)
	} else {
		ss.fails[host] = keep
	}
	return len(keep) >= maxLoginFailures
}

func (ss *sessions) failed(host string) {
	ss.mu.Lock()
	ss.fails[host] = append(ss.fails[host], ss.now())
	ss.mu.Unlock()
}

// authenticate checks a login: a user from the users file, or, with the
// name left empty, the admin token.
func (c *Console) authenticate(name, password string) (role string, ok bool) {
	if name == "" || name == TokenUser {
		if len(c.token) == 0 {
			return "", false
		}
		return RoleAdmin, subtle.ConstantTimeCompare([]byte(password), c.token) == 1
	}
	u, found := c.users[name]
	if !found {
		// The same work for an unknown name: timing does not say which
		// names exist.
		bcrypt.CompareHashAndPassword(c.dummy, []byte(password))
		return "", false
	}
	return u.role, bcrypt.CompareHashAndPassword(u.hash, []byte(password)) == nil
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: cookiePath, MaxAge: maxAge,
		HttpOnly: true, Secure: c.o.Secure || r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// csrfOK checks a form's csrf field against want in constant time.
func csrfOK(r *http.Request, want string) bool {
	got := r.PostFormValue("csrf")
	return want != "" && got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
