// Package netports finds free loopback TCP ports for tests that must name
// a port in a configuration before the listener exists (NATS routes, a
// cluster's peers).
package netports

import (
	"net"
	"testing"
)

// Free returns n distinct loopback ports that were free a moment ago. They
// are held open together while chosen, so the n are distinct; another
// process may still take one before the test binds it.
func Free(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
