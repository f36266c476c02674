package deliver

import (
	"net"
	"syscall"
)

// alive reports whether an idle connection still looks usable, without a
// round trip: a peek that finds EOF (the server hung up) or unsolicited data
// (typically "421 idle timeout") means it is not.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	ok = false
	err = rc.Read(func(fd uintptr) bool {
		// Nothing to read (EAGAIN) is the only healthy answer.
		_, _, e := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = e == syscall.EAGAIN
		return true
	})
	return err == nil && ok
}
