package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// connLimit caps a listener's open connections, in all and per client
// address, as Postfix's anvil does: a client over the limit is answered
// 421 4.7.0 and disconnected before its first command. Without it, one
// busy or hostile client could hold every session of the port-25 listener
// (each one may idle for the command timeout) and starve the DSNs latchkey
// needs to see.
type connLimit struct {
	max, perIP int // 0: no limit

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
}

func newConnLimit(max, perIP int) *connLimit {
	return &connLimit{max: max, perIP: perIP, byIP: map[netip.Addr]int{}}
}

// acquire takes a slot for a connection from ip. It returns "" on success,
// else why the connection is refused.
func (l *connLimit) acquire(ip netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return "Too many connections"
	}
	if l.perIP > 0 && l.byIP[ip] >= l.perIP {
		return "Too many connections from your address"
	}
	l.total++
	l.byIP[ip]++
	return ""
}

// release gives back the slot of a connection from ip.
func (l *connLimit) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

// addrIP is the IP of a TCP address (the zero Addr for anything else).
func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// turnAway answers a connection over the limit and closes it. The client
// gets a second to read the reply; the accept loop does not wait for it.
func turnAway(c net.Conn, hostname, why string) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write([]byte("421 4.7.0 " + hostname + " " + why + "; try again later\r\n"))
	c.Close()
}
