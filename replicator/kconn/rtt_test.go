package kconn

import (
	"context"
	"crypto/tls"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// RTT reads the kernel's path round trip of a TCP connection (tens of
// microseconds over loopback, after one exchange), also through TLS, and
// says it has none for a connection that is not a TCP socket.
func TestRTT(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_INFO is read on Linux only")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Dial(ctx, c.ListenAddrs()[0], Options{ClientID: "test"}) // ApiVersions: one exchange
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rtt, ok := conn.RTT()
	if !ok || rtt <= 0 || rtt > 100*time.Millisecond {
		t.Fatalf("loopback RTT %v (known %v); want a measurement of well under 100ms", rtt, ok)
	}

	// Through TLS: the socket under it.
	tc, err := net.Dial("tcp", c.ListenAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	wrapped := newConn("tls", tls.Client(tc, &tls.Config{InsecureSkipVerify: true}), Options{})
	if s, ok := socketOf(wrapped.nc); !ok || s != tc.(*net.TCPConn) {
		t.Fatalf("socket under TLS: %v %v; want the TCP connection", s, ok)
	}

	// Not a socket (a network link's tunnel stream is not one either).
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if rtt, ok := newConn("pipe", a, Options{}).RTT(); ok {
		t.Fatalf("a pipe's RTT: %v; want none", rtt)
	}
}
