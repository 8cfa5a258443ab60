package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/klink-io/klink/netlink"
	"github.com/klink-io/klink/netlink/netlinktest"
	"github.com/klink-io/klink/replicator/kafkatest"
)

// klink netlink serve as a process: an accepted endpoint connects and dials
// the source's broker through it; klink netlink status lists the
// association; removing the endpoint's network from the accept list and
// sending SIGHUP disconnects it within a second.
func TestNetlinkServe(t *testing.T) {
	src, _, _ := clusterPair(t, kafkatest.KFake, kafkatest.Brokers(1))
	c := netlinktest.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "nls.yaml")
	write := func(network string) {
		yaml := fmt.Sprintf(`stateDir: %s
admin: {listen: "127.0.0.1:0"}
log: {level: info, format: json}
networkLinks:
  services:
    - name: east
      listen: %s
      tls: {enabled: true, caFile: %s, certFile: %s, keyFile: %s}
      accept: {networks: [%s]}
      source: {bootstrap: [%q]}
`, filepath.Join(dir, "state"), listen, c.CAFile, c.ServerCert, c.ServerKey, network, src.ListenAddrs()[0])
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("n-1")
	var logs syncBuffer
	defer func() {
		if t.Failed() {
			t.Logf("klink log:\n%s", logs.String())
		}
	}()
	cmd := startKlinkArgs(t, &logs, "netlink", "serve", "--config", path)
	defer cmd.Process.Kill()
	addr := adminAddress(t, &logs)
	cert, key := c.Endpoint(t, "env-1", "n-1")
	ep := netlink.NewEndpoint(netlink.EndpointConfig{Name: "to-east", Address: listen, TLS: c.ClientTLS(t, cert, key)}, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ep.Run(ctx)
	waitUntil(t, 20*time.Second, "the endpoint READY", func() bool { return ep.Status().State == netlink.Ready })
	conn, err := ep.Dial(ctx, "tcp", src.ListenAddrs()[0])
	if err != nil {
		t.Fatalf("dial the source through the link: %v", err)
	}
	conn.Close()
	if out := klinkOutput(t, "netlink", "status", "--config", path, "--admin", addr); !strings.Contains(out, "klink://env-1/n-1") {
		t.Fatalf("klink netlink status:\n%s", out)
	}
	if _, m := httpGet(t, "http://"+addr+"/metrics"); !strings.Contains(m, `klink_network_link_associations{service="east"} 1`) {
		t.Fatalf("/metrics lacks the association:\n%s", m)
	}

	write("n-2")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	waitUntil(t, 5*time.Second, "the endpoint disconnected", func() bool { return ep.Status().State == netlink.Disconnected })
	if d := time.Since(sent); d > time.Second+200*time.Millisecond { // the reload itself takes a moment
		t.Fatalf("disconnected %s after SIGHUP", d)
	}
	waitUntil(t, 10*time.Second, "the reconnect refused", func() bool { return strings.Contains(ep.Status().Reason, "accept list") })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("klink exited with %v", err)
	}
}
