package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"golang.org/x/crypto/bcrypt"

	"github.com/latchkey/latchkey/conf"
)

// users checks submission passwords against stored hashes.
type users struct {
	hashes map[string][]byte
	// dummy is compared against for unknown users so that timing does not
	// reveal which names exist.
	dummy []byte
}

func loadUsers(c *conf.Config) (*users, error) {
	u := &users{hashes: map[string][]byte{}}
	u.dummy, _ = bcrypt.GenerateFromPassword([]byte("latchkey-dummy"), bcrypt.MinCost)
	for _, x := range c.Submission.Users {
		u.hashes[x.Name] = []byte(x.PasswordHash)
	}
	if f := c.Submission.UsersFile; f != "" {
		path := c.Path(f)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("relay: users file: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || line[0] == '#' {
				continue
			}
			name, hash, ok := strings.Cut(line, ":")
			if !ok || name == "" || !strings.HasPrefix(hash, "$2") {
				return nil, fmt.Errorf("relay: %s:%d: want name:bcrypt-hash", path, n)
			}
			if _, dup := u.hashes[name]; dup {
				// One of two passwords would silently stop working.
				return nil, fmt.Errorf("relay: %s:%d: user %q is already defined (in this file or in [[submission.users]])", path, n, name)
			}
			u.hashes[name] = []byte(hash)
		}
	}
	return u, nil
}

func (u *users) check(name, password string) bool {
	h, ok := u.hashes[name]
	if !ok {
		bcrypt.CompareHashAndPassword(u.dummy, []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword(h, []byte(password)) == nil
}

// failLimiter counts failed AUTH attempts per client address in a window.
type failLimiter struct {
	max    int
	window time.Duration

	mu    sync.Mutex
	fails map[string][]time.Time
}

func newFailLimiter(max int, window time.Duration) *failLimiter {
	return &failLimiter{max: max, window: window, fails: map[string][]time.Time{}}
}

func (l *failLimiter) prune(ip string, now time.Time) []time.Time {
	ts := l.fails[ip]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > l.window {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.fails, ip)
	} else {
		l.fails[ip] = ts
	}
	return ts
}

// blocked reports whether ip has used up its failures.
func (l *failLimiter) blocked(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.prune(ip, time.Now())) >= l.max
}

// fail records a failure and reports whether ip is now blocked.
func (l *failLimiter) fail(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	ts := append(l.prune(ip, now), now)
	l.fails[ip] = ts
	return len(ts) >= l.max
}

// loginServer is the server side of AUTH LOGIN (draft-murchison-sasl-login),
// which go-sasl no longer ships and Salesforce offers besides PLAIN.
type loginServer struct {
	auth     func(user, pass string) error
	step     int
	username string
}

var errLoginSyntax = errors.New("relay: unexpected LOGIN response")

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step = 1
		if len(response) > 0 { // initial response carries the user name
			s.username = string(response)
			s.step = 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		s.username = string(response)
		s.step = 2
		return []byte("Password:"), false, nil
	case 2:
		s.step = 3
		return nil, true, s.auth(s.username, string(response))
	}
	return nil, false, errLoginSyntax
}

var _ sasl.Server = (*loginServer)(nil)
