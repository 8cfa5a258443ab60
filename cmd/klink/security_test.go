package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// klink as a process with a wrong source password: LINK_FAILED with a
// reason; the password file fixed and SIGHUP sent, it mirrors record by
// record. Neither password appears in its log, /status, klink status,
// klink plan or its state file.
func TestWrongPasswordFixedBySighup(t *testing.T) {
	const right, wrong = "Right-pw-8812", "Wrong-pw-2218"
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("sec-src"), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "klink", right))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, dst, _ := clusterPair(t, kafkatest.KFake, kafkatest.Brokers(1))
	mech := kgo.SASL(scram.Auth{User: "klink", Pass: right}.AsSha512Mechanism())
	mirrorcheck.ClientOpts(src.ListenAddrs(), mech)
	cl, err := mirrorcheck.NewClient(src.ListenAddrs(), kgo.DefaultProduceTopic("orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 25; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	pw := filepath.Join(dir, "source.pass")
	if err := os.WriteFile(pw, []byte(wrong), 0o600); err != nil {
		t.Fatal(err)
	}
	path, state := filepath.Join(dir, "klink.yaml"), filepath.Join(dir, "state")
	yaml := fmt.Sprintf(`stateDir: %s
admin: {listen: "127.0.0.1:0"}
log: {level: debug, format: json}
destination: {bootstrap: [%q]}
links:
  - name: sec
    source:
      bootstrap: [%q]
      sasl: {mechanism: SCRAM-SHA-512, username: klink, passwordFile: %s}
    configs: {cluster.link.retry.timeout.ms: 500}
    mirrorTopics:
      - {name: orders}
`, state, dst.ListenAddrs()[0], src.ListenAddrs()[0], pw)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, logs := startKlinkLogged(t, "run", "--config", path)
	addr := adminAddress(t, logs)
	waitUntil(t, 30*time.Second, "the link LINK_FAILED with a reason", func() bool {
		s := klinkStatus(t, addr)
		return len(s.Links) == 1 && s.Links[0].State == "LINK_FAILED" && strings.Contains(s.Links[0].Error, "SASL")
	})

	if code, body := httpGet(t, "http://"+addr+"/readyz"); code != 503 || !strings.Contains(body, "link sec is LINK_FAILED") {
		t.Fatalf("/readyz with a failed link: %d %s", code, body)
	}
	if err := os.WriteFile(pw, []byte(right), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the mirror ACTIVE", func() bool {
		s := klinkStatus(t, addr)
		return len(s.Links) == 1 && len(s.Links[0].Mirrors) == 1 && s.Links[0].Mirrors[0].State == "ACTIVE"
	})
	waitUntil(t, 30*time.Second, "the destination to catch up", func() bool {
		o, err := dstOffsets(ctx, dst, "orders")
		if err != nil {
			return false
		}
		e, _ := o.Lookup("orders", 0)
		return e.Offset == 25
	})
	sr, err := mirrorcheck.ReadAll(ctx, src.ListenAddrs(), "orders", mirrorcheck.ReadCommitted)
	if err != nil {
		t.Fatal(err)
	}
	dr, err := mirrorcheck.ReadAll(ctx, dst.ListenAddrs(), "orders", mirrorcheck.ReadCommitted)
	if err != nil {
		t.Fatal(err)
	}
	if n, _, err := mirrorcheck.Compare(sr, dr); err != nil || n != 25 {
		t.Fatalf("%d records identical: %v", n, err)
	}

	outputs := map[string]string{
		"klink status": klinkOutput(t, "status", "--config", path, "--admin", addr, "-o", "json"),
		"klink plan":   klinkOutput(t, "plan", "--config", path, "--admin", addr),
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("klink exited with %v after SIGTERM", err)
	}
	outputs["log"] = logs.String()
	db, err := os.ReadFile(filepath.Join(state, "klink.db"))
	if err != nil {
		t.Fatal(err)
	}
	outputs["state file"] = string(db)
	for what, out := range outputs {
		for _, secret := range []string{right, wrong} {
			if strings.Contains(out, secret) {
				t.Fatalf("a password appears in %s", what)
			}
		}
	}
}
