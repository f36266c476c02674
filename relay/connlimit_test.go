package relay

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// TestConnectionLimits opens real connections from several loopback
// addresses to the inbound listener, limited to 3 in all and 2 per address.
func TestConnectionLimits(t *testing.T) {
	e := newEnv(t, envOpts{preStart: func(s *Server) {
		s.cfg.Inbound.MaxConnections, s.cfg.Inbound.MaxConnectionsPerIP = 3, 2
	}})
	addr := e.srv.InboundAddrs[0].String()
	dial := func(from string) (net.Conn, string) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", from, err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("greeting to %s: %v", from, err)
		}
		return c, strings.TrimSpace(line)
	}
	expect := func(greeting, want string) {
		t.Helper()
		if !strings.HasPrefix(greeting, want) {
			t.Errorf("greeting %q, want %q", greeting, want)
		}
	}
	a1, g := dial("127.0.0.1")
	expect(g, "220 ")
	_, g = dial("127.0.0.1")
	expect(g, "220 ")
	_, g = dial("127.0.0.1")
	expect(g, "421 4.7.0 relay.test Too many connections from your address")
	_, g = dial("127.0.0.3")
	expect(g, "220 ")
	_, g = dial("127.0.0.4")
	expect(g, "421 4.7.0 relay.test Too many connections;")

	// A closed session gives its slot back.
	a1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, g := dial("127.0.0.1")
		if strings.HasPrefix(g, "220 ") {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("slot not released after close: %q", g)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The submission listener has its own limit (100 by default).
	if c, err := net.DialTimeout("tcp", e.submitAddr(), 5*time.Second); err != nil {
		t.Fatal(err)
	} else {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		expect(line, "220 ")
	}
}

func TestConnLimit(t *testing.T) {
	l := newConnLimit(0, 1)
	a, b := addrIP(&net.TCPAddr{IP: net.ParseIP("192.0.2.1")}), addrIP(&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.2")})
	if l.acquire(a) != "" || l.acquire(b) != "" {
		t.Fatal("first connection of each address refused")
	}
	if l.acquire(a) == "" {
		t.Error("second connection from the same address allowed with a per-address limit of 1")
	}
	l.release(a)
	if l.acquire(a) != "" {
		t.Error("slot not given back")
	}
	if l.release(a); len(l.byIP) != 1 || l.total != 1 {
		t.Errorf("after release: %d addresses, %d in all; want 1, 1", len(l.byIP), l.total)
	}
	if unlimited := newConnLimit(0, 0); unlimited.acquire(a) != "" || unlimited.acquire(a) != "" {
		t.Error("a limit of 0 refused a connection")
	}
}
