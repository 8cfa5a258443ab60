package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// notifier speaks systemd's notify protocol (sd_notify(3)): datagrams of
// KEY=VALUE lines to the socket in $NOTIFY_SOCKET. Without that variable
// (not under systemd, or Type is not notify) it does nothing.
type notifier struct {
	conn     *net.UnixConn
	watchdog time.Duration // half of WATCHDOG_USEC, 0 when no watchdog is asked for
}

func newNotifier() (*notifier, error) {
	n := &notifier{}
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return n, nil
	}
	if addr[0] == '@' { // an abstract socket
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	n.conn = conn
	if us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && us > 0 {
		if pid := os.Getenv("WATCHDOG_PID"); pid == "" || pid == strconv.Itoa(os.Getpid()) {
			n.watchdog = time.Duration(us) * time.Microsecond / 2
		}
	}
	return n, nil
}

// send sends one notification of the given lines.
func (n *notifier) send(lines ...string) {
	if n.conn == nil {
		return
	}
	n.conn.Write([]byte(strings.Join(lines, "\n") + "\n")) // best effort: systemd may be gone
}

// status is a STATUS= line (one line, as systemd shows it).
func status(s string) string {
	return "STATUS=" + strings.ReplaceAll(s, "\n", " ")
}

// reloading is the notification that a reload starts (systemd 253+ wants
// the monotonic time with it).
func reloading() []string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return []string{"RELOADING=1"}
	}
	return []string{"RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", ts.Nano()/1000)}
}

func (n *notifier) close() {
	if n.conn != nil {
		n.conn.Close()
	}
}
