package kconn

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// RTT is the least round-trip time the kernel has measured on the
// connection's TCP socket (TCP_INFO's min_rtt: the path's own delay; the
// smoothed RTT also holds the peer's time to answer, since a request's
// acknowledgement rides on its answer), and false when it cannot be had: a
// connection that is not a TCP socket (a network link's tunnel stream), or
// a kernel or socket without a measurement.
func (c *Conn) RTT() (time.Duration, bool) {
	sc, ok := socketOf(c.nc)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil || info.Min_rtt == 0 {
		return 0, false
	}
	return time.Duration(info.Min_rtt) * time.Microsecond, true
}

// socketOf unwraps TLS (and anything else that names the connection it
// wraps) down to the operating system's socket.
func socketOf(nc net.Conn) (syscall.Conn, bool) {
	for range 8 {
		if tc, ok := nc.(*net.TCPConn); ok {
			return tc, true
		}
		w, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nil, false
		}
		nc = w.NetConn()
	}
	return nil, false
}
