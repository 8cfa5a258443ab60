package bench

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/klink-io/klink/netlink"
	"github.com/klink-io/klink/netlink/netlinktest"
)

// ackSink reads 1 MiB messages and answers each with one byte, so a writer
// measures delivered throughput, not what buffers absorbed.
func ackSink(b *testing.B, tlsCfg *tls.Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1<<20)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write([]byte{1}); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// push writes b.N messages of 1 MiB, up to 8 unacknowledged.
func push(b *testing.B, c net.Conn) {
	msg := make([]byte, 1<<20)
	b.SetBytes(int64(len(msg)))
	acks := make(chan struct{}, 8)
	done := make(chan error, 1)
	go func() {
		var one [1]byte
		for i := 0; i < b.N; i++ {
			if _, err := io.ReadFull(c, one[:]); err != nil {
				done <- err
				return
			}
			<-acks
		}
		done <- nil
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		acks <- struct{}{}
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// Throughput through a network link (endpoint -> TLS + yamux -> service ->
// TCP) next to direct TCP and direct TLS connections to the same kind of
// sink, in one run:
//
//	go test -run '^$' -bench NetworkLink -benchtime 2000x ./bench/
func BenchmarkNetworkLink(b *testing.B) {
	certs := netlinktest.New(b)
	sink := ackSink(b, nil)
	b.Run("direct", func(b *testing.B) {
		c, err := net.Dial("tcp", sink)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		push(b, c)
	})
	// A direct TLS connection: what SSL / SASL_SSL to a broker costs.
	tlsSink := ackSink(b, &tls.Config{Certificates: []tls.Certificate{certs.Server}})
	b.Run("direct-tls", func(b *testing.B) {
		c, err := tls.Dial("tcp", tlsSink, certs.ClientTLS(b, "", ""))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		push(b, c)
	})
	b.Run("network-link", func(b *testing.B) {
		svc, err := netlink.Listen("127.0.0.1:0", netlink.ServiceConfig{Name: "bench", TLS: &tls.Config{Certificates: []tls.Certificate{certs.Server}, ClientCAs: certs.Pool},
			Accept: netlink.Accept{Networks: []string{"n-1"}}, Allow: []string{sink}}, zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go svc.Serve(ctx)
		cert, key := certs.Endpoint(b, "env-1", "n-1")
		ep := netlink.NewEndpoint(netlink.EndpointConfig{Name: "bench", Address: svc.Addr(), TLS: certs.ClientTLS(b, cert, key)}, zap.NewNop())
		go ep.Run(ctx)
		for ep.Status().State != netlink.Ready {
			time.Sleep(10 * time.Millisecond)
		}
		c, err := ep.Dial(ctx, "tcp", sink)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		push(b, c)
	})
}
