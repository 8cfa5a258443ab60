//go:build !linux

package kconn

import "time"

// RTT is the connection's round-trip time as the kernel measures it; only
// Linux is asked (TCP_INFO), elsewhere it is not known.
func (c *Conn) RTT() (time.Duration, bool) { return 0, false }
