package console

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// How long a computed answer is served before it is computed again. The
// four figures over a day or a week of 100,000 resets take about half a
// second to compute from the audit trail, and the chain's verification
// about as long (docs/benchmarks.md): no page waits for them. Warm computes
// them at start and keeps them this fresh while the console is in use,
// and at most idleTTL old when nobody looks.
const (
	statsTTL  = 30 * time.Second
	verifyTTL = 5 * time.Minute
	idleTTL   = 10 * time.Minute
	// inUse is how long after the last page the console counts as in use.
	inUse = 10 * time.Minute
)

const verifyPath = "/api/v1/audit/verify"

type cacheEntry struct {
	at         time.Time
	body       []byte
	refreshing bool
}

// cache holds API answers by path, served stale while a background call
// refreshes them.
type cache struct {
	mu     sync.Mutex
	m      map[string]*cacheEntry
	viewed time.Time // the last page that read the cache
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
	c.cache.viewed = now
	// An entry without a body is Warm's first computation, still running.
	if e != nil && e.body != nil && !fresh {
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
		e = &cacheEntry{}
		c.cache.m[path] = e
	}
	e.refreshing = false
	if err != nil && e.body == nil {
		e.at = at // Warm tries again after the TTL, not at every tick
	}
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

// Warm computes what the console caches (the figures of every overview
// window and the chain's verification) at once and then keeps them fresh
// until ctx ends, so that no page waits for a computation: each answer is
// computed again when older than its TTL while the console is in use (an
// overview or audit page within the last inUse), and when older than
// idleTTL otherwise. The
// relay runs it beside the admin listener.
func (c *Console) Warm(ctx context.Context) { c.warm(ctx, 5*time.Second) }

func (c *Console) warm(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		c.warmPass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// warmPass computes, one at a time, every cached answer that is due.
func (c *Console) warmPass(ctx context.Context) {
	type job struct {
		path string
		ttl  time.Duration
	}
	var jobs []job
	for _, w := range windows {
		jobs = append(jobs, job{statsPath(w.Span, w.Bucket), statsTTL})
	}
	jobs = append(jobs, job{verifyPath, verifyTTL})
	for _, j := range jobs {
		if ctx.Err() != nil {
			return
		}
		c.cache.mu.Lock()
		if c.cache.m == nil {
			c.cache.m = map[string]*cacheEntry{}
		}
		now := c.o.Now()
		ttl := j.ttl
		if now.Sub(c.cache.viewed) > inUse {
			ttl = max(ttl, idleTTL)
		}
		e := c.cache.m[j.path]
		due := e == nil || (!e.refreshing && now.Sub(e.at) >= ttl)
		if due {
			if e == nil {
				e = &cacheEntry{}
				c.cache.m[j.path] = e
			}
			e.refreshing = true
		}
		c.cache.mu.Unlock()
		if due {
			c.refresh(j.path) // one at a time: the relay's CPU is for mail
		}
	}
}
