package console

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// How long a computed answer is served before it is computed again. The
// four figures over a week of 100,000 resets take most of a second to
// compute from the audit trail, and the chain's verification as long: a
// console reloaded every few seconds must not redo them each time.
const (
	statsTTL  = 30 * time.Second
	verifyTTL = 5 * time.Minute
)

type cacheEntry struct {
	at         time.Time
	body       []byte
	refreshing bool
}

// cache holds API answers by path, served stale while a background call
// refreshes them.
type cache struct {
	mu sync.Mutex
	m  map[string]*cacheEntry
}

// get decodes path's answer into out and returns when it was computed: the
// cached one if younger than ttl; a stale one while it is refreshed in the
// background; a new one, waited for, when there is none or fresh is set.
func (c *Console) cached(ctx context.Context, path string, ttl time.Duration, fresh bool, out any) (time.Time, error) {
	c.cache.mu.Lock()
	if c.cache.m == nil {
		c.cache.m = map[string]*cacheEntry{}
	}
	e := c.cache.m[path]
	now := c.o.Now()
	if e != nil && !fresh {
		if now.Sub(e.at) >= ttl && !e.refreshing {
			e.refreshing = true
			go c.refresh(path)
		}
		at, body := e.at, e.body
		c.cache.mu.Unlock()
		return at, json.Unmarshal(body, out)
	}
	c.cache.mu.Unlock()
	var raw json.RawMessage
	if err := c.get(ctx, path, &raw); err != nil {
		return time.Time{}, err
	}
	c.store(path, now, raw)
	return now, json.Unmarshal(raw, out)
}

func (c *Console) refresh(path string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	at := c.o.Now()
	var raw json.RawMessage
	err := c.get(ctx, path, &raw)
	c.cache.mu.Lock()
	defer c.cache.mu.Unlock()
	e := c.cache.m[path]
	if e == nil {
		return
	}
	e.refreshing = false
	if err != nil {
		c.o.Log.Warn().Err(err).Str("path", path).Msg("console: background refresh failed; serving the older answer")
		return
	}
	if at.After(e.at) {
		e.at, e.body = at, raw
	}
}

func (c *Console) store(path string, at time.Time, body []byte) {
	c.cache.mu.Lock()
	defer c.cache.mu.Unlock()
	if e := c.cache.m[path]; e == nil || at.After(e.at) {
		c.cache.m[path] = &cacheEntry{at: at, body: body}
	}
}
