package deliver

import (
	"sync"
	"time"
)

// pool keeps idle connections per MX address for reuse: a new connection with
// STARTTLS costs several round trips and a handshake, far more than the
// message itself.
type pool struct {
	maxIdle     int
	idleTimeout time.Duration
	maxMsgs     int

	mu     sync.Mutex
	idle   map[poolKey][]*conn
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup // janitor and background QUITs
}

func newPool(maxIdle int, idleTimeout time.Duration, maxMsgs int) *pool {
	p := &pool{maxIdle: maxIdle, idleTimeout: idleTimeout, maxMsgs: maxMsgs,
		idle: map[poolKey][]*conn{}, done: make(chan struct{})}
	if maxIdle > 0 {
		p.wg.Add(1)
		go p.janitor()
	}
	return p
}

// get returns the most recently used healthy idle connection for key, or nil.
// With verifiedOnly (an MTA-STS policy in enforce mode) it takes only a
// connection whose certificate verified, and leaves the others to deliveries
// without that policy: domains of one provider share its MX hosts.
func (p *pool) get(key poolKey, verifiedOnly bool) *conn {
	for {
		p.mu.Lock()
		list := p.idle[key]
		i := len(list) - 1
		for verifiedOnly && i >= 0 && !list[i].verified {
			i--
		}
		if i < 0 {
			p.mu.Unlock()
			return nil
		}
		cn := list[i]
		copy(list[i:], list[i+1:])
		list[len(list)-1] = nil
		p.idle[key] = list[:len(list)-1]
		if len(p.idle[key]) == 0 {
			delete(p.idle, key)
		}
		p.mu.Unlock()
		if time.Since(cn.idleSince) < p.idleTimeout && alive(cn.raw) {
			return cn
		}
		cn.raw.Close()
	}
}

// put keeps cn for reuse, or ends it when the pool is full, closed, or cn has
// carried its share of messages.
func (p *pool) put(cn *conn) {
	p.mu.Lock()
	if p.closed || p.maxIdle == 0 || (p.maxMsgs > 0 && cn.msgs >= p.maxMsgs) || len(p.idle[cn.key]) >= p.maxIdle {
		if p.closed {
			p.mu.Unlock()
			cn.raw.Close()
			return
		}
		p.wg.Add(1) // under the lock, so that close cannot be waiting yet
		p.mu.Unlock()
		go func() { defer p.wg.Done(); cn.quit() }() // off the delivery's path
		return
	}
	cn.idleSince = time.Now()
	p.idle[cn.key] = append(p.idle[cn.key], cn)
	p.mu.Unlock()
}

func (p *pool) janitor() {
	defer p.wg.Done()
	t := time.NewTicker(max(p.idleTimeout/2, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		var expired []*conn
		p.mu.Lock()
		for key, list := range p.idle {
			keep := list[:0]
			for _, cn := range list {
				if time.Since(cn.idleSince) >= p.idleTimeout {
					expired = append(expired, cn)
				} else {
					keep = append(keep, cn)
				}
			}
			if len(keep) == 0 {
				delete(p.idle, key)
			} else {
				p.idle[key] = keep
			}
		}
		p.mu.Unlock()
		for _, cn := range expired {
			cn.quit()
		}
	}
}

// idleCount returns how many connections are idle.
func (p *pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.idle {
		n += len(l)
	}
	return n
}

// close ends every idle connection and refuses new ones.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	idle := p.idle
	p.idle = map[poolKey][]*conn{}
	close(p.done)
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, list := range idle {
		for _, cn := range list {
			wg.Add(1)
			go func() { defer wg.Done(); cn.quit() }()
		}
	}
	wg.Wait()
	p.wg.Wait()
}
