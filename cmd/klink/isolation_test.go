package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klink-io/klink/netlink/netlinktest"
	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// Isolation: the source cluster runs inside a network namespace whose only
// way in is the network link service (on a veth pair); its brokers listen
// on the namespace's own loopback, which this host cannot reach. klink on
// the host mirrors it through the link, record by record. Needs root and
// ip(8); skips with a message elsewhere.
func TestNetworkLinkIsolation(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip(8) not installed")
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	ns, vh, vn := "klns"+hex.EncodeToString(rnd[:]), "klh"+hex.EncodeToString(rnd[:]), "kln"+hex.EncodeToString(rnd[:])
	run := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
		return nil
	}
	if err := run("netns", "add", ns); err != nil {
		t.Skipf("cannot create a network namespace here: %v", err)
	}
	t.Cleanup(func() { run("netns", "del", ns); run("link", "del", vh) })
	for _, args := range [][]string{
		{"link", "add", vh, "type", "veth", "peer", "name", vn},
		{"link", "set", vn, "netns", ns},
		{"addr", "add", "10.77.0.1/30", "dev", vh},
		{"link", "set", vh, "up"},
		{"netns", "exec", ns, "ip", "addr", "add", "10.77.0.2/30", "dev", vn},
		{"netns", "exec", ns, "ip", "link", "set", vn, "up"},
		{"netns", "exec", ns, "ip", "link", "set", "lo", "up"},
	} {
		if err := run(args...); err != nil {
			t.Skipf("cannot set up the namespace's network here: %v", err)
		}
	}

	// The source, inside the namespace.
	dir := t.TempDir()
	srcBin := filepath.Join(dir, "isolatedsource")
	if out, err := exec.Command("go", "build", "-o", srcBin, "github.com/klink-io/klink/netlink/netlinktest/isolatedsource").CombinedOutput(); err != nil {
		t.Fatalf("building the isolated source: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	const records = 50
	srcCmd := exec.Command("ip", "netns", "exec", ns, srcBin, fmt.Sprint(port), fmt.Sprint(records))
	stdin, _ := srcCmd.StdinPipe()
	stdout, _ := srcCmd.StdoutPipe()
	srcCmd.Stderr = os.Stderr
	if err := srcCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); srcCmd.Wait() }()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("isolated source: %q %v", line, err)
	}
	source := fmt.Sprintf("127.0.0.1:%d", port)
	if c, err := net.DialTimeout("tcp", source, time.Second); err == nil {
		c.Close()
		t.Fatalf("the host reaches %s directly: not isolated", source)
	}

	// The network link service, inside the namespace, reachable on the veth.
	certs := netlinktest.New(t)
	svcCfg := filepath.Join(dir, "service.yaml")
	os.WriteFile(svcCfg, []byte(fmt.Sprintf(`stateDir: %s
admin: {listen: "off"}
log: {level: info, format: json}
networkLinks:
  services:
    - name: east
      listen: 10.77.0.2:9443
      tls: {enabled: true, caFile: %s, certFile: %s, keyFile: %s}
      accept: {networks: [n-1]}
      source: {bootstrap: [%q]}
`, filepath.Join(dir, "svc-state"), certs.CAFile, certs.ServerCert, certs.ServerKey, source)), 0o600)
	var svcLogs syncBuffer
	svc := exec.Command("ip", "netns", "exec", ns, klinkBinary, "netlink", "serve", "--config", svcCfg)
	svc.Stdout, svc.Stderr = &svcLogs, &svcLogs
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { svc.Process.Kill(); svc.Wait() }()

	// klink on the host, the destination beside it.
	dst := kafkatest.Start(t, kafkatest.KFake, "destination", kafkatest.Brokers(1), kafkatest.Strict())
	cert, key := certs.Endpoint(t, "env-1", "n-1")
	cfg := filepath.Join(dir, "klink.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`stateDir: %s
admin: {listen: "off"}
log: {level: info, format: json}
destination: {bootstrap: [%q]}
networkLinks:
  endpoints:
    - name: to-east
      service: {address: "10.77.0.2:9443", serverName: "127.0.0.1"}
      tls: {enabled: true, caFile: %s, certFile: %s, keyFile: %s}
links:
  - name: iso
    source: {bootstrap: [%q], networkLink: to-east}
    mirrorTopics:
      - {name: orders}
`, filepath.Join(dir, "state"), dst.ListenAddrs()[0], certs.CAFile, cert, key, source)), 0o600)
	var logs syncBuffer
	defer func() {
		if t.Failed() {
			t.Logf("klink log:\n%s\nservice log:\n%s", logs.String(), svcLogs.String())
		}
	}()
	cmd := startKlink(t, cfg, &logs)
	defer cmd.Process.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitUntil(t, 45*time.Second, "the mirror through the link", func() bool {
		o, err := dstOffsets(ctx, dst, "orders")
		if err != nil {
			return false
		}
		e, _ := o.Lookup("orders", 0)
		return e.Offset == records
	})
	got, err := mirrorcheck.ReadPartition(ctx, dst.ListenAddrs(), "orders", 0, mirrorcheck.ReadCommitted)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != records {
		t.Fatalf("%d records on the destination, want %d", len(got), records)
	}
	for i, d := range got {
		s := netlinktest.Record(i)
		s.Offset = int64(i)
		if err := mirrorcheck.Same(s, d); err != nil {
			t.Fatalf("offset %d: %v", i, err)
		}
	}
}
