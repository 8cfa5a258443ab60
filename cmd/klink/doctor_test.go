package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/twmb/franz-go/pkg/kfake"
)

// advertisedElsewhere is a listener that tells kfake (which advertises its
// listeners' addresses) that it is somewhere nothing listens.
type advertisedElsewhere struct{ net.Listener }

func (advertisedElsewhere) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// klink doctor on a source whose second broker advertises an address
// nothing answers at: bootstrap passes, the advertised broker fails, and
// doctor exits non-zero; on healthy clusters it passes.
func TestDoctor(t *testing.T) {
	var n atomic.Int32
	src, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.ListenFn(func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil || n.Add(1) == 1 {
			return ln, err
		}
		return advertisedElsewhere{ln}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, dst, _ := clusterPair(t, kafkatest.KFake, kafkatest.Brokers(1))
	good, _, adm := clusterPair(t, kafkatest.KFake, kafkatest.Brokers(1))
	if _, err := adm.CreateTopic(context.Background(), 1, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}

	run := func(source string) (string, error) {
		p := filepath.Join(t.TempDir(), "klink.yaml")
		yaml := "stateDir: " + t.TempDir() + "\nadmin: {listen: \"off\"}\ndestination:\n  bootstrap: [\"" + dst.ListenAddrs()[0] + "\"]\nlinks:\n  - name: l\n    source: {bootstrap: [\"" + source + "\"]}\n    mirrorTopics:\n      - {name: orders}\n"
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(klinkBinary, "doctor", "--config", p, "--timeout", "2s").CombinedOutput()
		return string(out), err
	}
	out, err := run(src.ListenAddrs()[0])
	if err == nil {
		t.Fatalf("doctor passed with an unreachable advertised broker:\n%s", out)
	}
	var bootstrapOK, advertisedFail bool
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if strings.Contains(line, "bootstrap: kafka") && strings.Contains(line, " ok ") {
			bootstrapOK = true
		}
		if strings.Contains(line, "advertised broker") && strings.Contains(line, "127.0.0.1:1") && slicesContain(f, "FAIL") {
			advertisedFail = true
		}
	}
	if !bootstrapOK || !advertisedFail {
		t.Fatalf("doctor output (want bootstrap ok, advertised broker 127.0.0.1:1 FAIL):\n%s", out)
	}
	if out, err := run(good.ListenAddrs()[0]); err != nil || !strings.Contains(out, "checks passed") {
		t.Fatalf("doctor on healthy clusters: %v\n%s", err, out)
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
