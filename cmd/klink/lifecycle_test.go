package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/replicator"
	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// lifecycleConfig is the file TestSighupLifecycle edits.
type lifecycleConfig struct {
	east     []string // explicit mirrorTopics of link east: "e.<source>[:STATE]"
	west     []string // mirrors of link west ("" drops the link): "<name>:<source>"
	withWest bool
}

func (c lifecycleConfig) write(t *testing.T, path, stateDir string, src, dst *kafkatest.Cluster) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "stateDir: %s\nadmin: {listen: \"127.0.0.1:0\"}\nlog: {level: info, format: json}\n", stateDir)
	fmt.Fprintf(&b, "destination:\n  bootstrap: [%q]\nlinks:\n", dst.ListenAddrs()[0])
	fmt.Fprintf(&b, `  - name: east
    source: {bootstrap: [%q]}
    configs: {cluster.link.retry.timeout.ms: 1000, auto.create.mirror.topics.refresh.ms: 300}
    mirrorTopicOptions:
      prefix: "e."
      autoCreateTopics:
        enabled: true
        topicFilters:
          - {filterType: INCLUDE, name: "*", patternType: LITERAL}
          - {filterType: EXCLUDE, name: "tmp.", patternType: PREFIXED}
    mirrorTopics:
`, src.ListenAddrs()[0])
	if len(c.east) == 0 {
		b.WriteString("      []\n")
	}
	for _, m := range c.east {
		name, state, _ := strings.Cut(m, ":")
		fmt.Fprintf(&b, "      - {name: %s, sourceTopicName: %s", name, strings.TrimPrefix(name, "e."))
		if state != "" {
			fmt.Fprintf(&b, ", state: %s", state)
		}
		b.WriteString("}\n")
	}
	if c.withWest {
		fmt.Fprintf(&b, "  - name: west\n    source: {bootstrap: [%q]}\n    mirrorTopics:\n", src.ListenAddrs()[0])
		for _, m := range c.west {
			name, source, _ := strings.Cut(m, ":")
			fmt.Fprintf(&b, "      - {name: %s, sourceTopicName: %s}\n", name, source)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func statusMirror(s replicator.Status, name string) (replicator.MirrorStatus, string) {
	for _, l := range s.Links {
		for _, m := range l.Mirrors {
			if m.Name == name {
				return m, l.State
			}
		}
	}
	return replicator.MirrorStatus{}, ""
}

// klink as a process through a mirror topic's whole life, driven by
// editing its file and sending SIGHUP: auto-create with a prefix and
// filters, a new source topic, partitions added, promote with lag and once
// caught up, remove a mirror, remove a link, a deleted source topic, the
// source cluster closed and reopened. Every mirror is checked record by
// record against its source at the end.
func TestSighupLifecycle(t *testing.T) {
	dir := t.TempDir()
	src := kafkatest.Start(t, kafkatest.KFake, "source", kafkatest.Brokers(1), kafkatest.Restartable())
	dst := kafkatest.Start(t, kafkatest.KFake, "destination", kafkatest.Brokers(1), kafkatest.Strict())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := func() (*kgo.Client, *kadm.Client) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl, kadm.NewClient(cl)
	}
	cl, adm := client()
	produce := func(cl *kgo.Client, topic string, partition int32, n int, tag string) {
		t.Helper()
		for i := 0; i < n; i++ {
			r := &kgo.Record{Topic: topic, Partition: partition, Key: fmt.Appendf(nil, "%s-%d", tag, i), Value: fmt.Appendf(nil, "%s %s %d", topic, tag, i)}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tp := range []string{"orders", "payments", "events", "tmp.x", "refunds"} {
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, tp); err != nil {
			t.Fatal(err)
		}
		produce(cl, tp, 0, 20, "first")
	}

	path, state := filepath.Join(dir, "klink.yaml"), filepath.Join(dir, "state")
	cfg := lifecycleConfig{withWest: true, west: []string{"w.orders:orders", "w.events:events"}}
	cfg.write(t, path, state, src, dst)
	cmd, logs := startKlinkLogged(t, "run", "--config", path)
	addr := adminAddress(t, logs)
	// The daemon runs with sysmon kept awake (sysmon.go): it started
	// itself again, the same process, with GODEBUG set.
	if !hasGodebug(os.Getenv("GODEBUG"), "schedtrace") { // else klink keeps the caller's
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(env, []byte(sysmonAwake+"\x00")) {
			t.Fatalf("klink run's environment has no GODEBUG=%s", sysmonAwake)
		}
	}
	reload := func(c lifecycleConfig) {
		t.Helper()
		c.write(t, path, state, src, dst)
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	waitMirror := func(name, state string, limit time.Duration) replicator.MirrorStatus {
		t.Helper()
		var m replicator.MirrorStatus
		waitUntil(t, limit, name+" "+state, func() bool {
			m, _ = statusMirror(klinkStatus(t, addr), name)
			return m.State == state
		})
		return m
	}
	caughtUp := func(srcTopic, dstTopic string) {
		t.Helper()
		waitUntil(t, 30*time.Second, dstTopic+" to catch up with "+srcTopic, func() bool {
			se, err := adm.ListEndOffsets(ctx, srcTopic)
			if err != nil {
				return false
			}
			de, err := dstOffsets(ctx, dst, dstTopic)
			if err != nil {
				return false
			}
			ok := len(se.Offsets()) > 0
			se.Each(func(o kadm.ListedOffset) {
				if d, found := de.Lookup(dstTopic, o.Partition); !found || d.Offset != o.Offset {
					ok = false
				}
			})
			return ok
		})
	}

	// Auto-create with prefix and filters, next to an explicit link.
	for _, m := range []string{"e.orders", "e.payments", "e.events", "e.refunds", "w.orders", "w.events"} {
		waitMirror(m, "ACTIVE", 30*time.Second)
	}
	if m, _ := statusMirror(klinkStatus(t, addr), "e.tmp.x"); m.Name != "" {
		t.Fatal("an excluded topic was auto-mirrored")
	}
	// A new source topic appears; a partition is added to another.
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "audit"); err != nil {
		t.Fatal(err)
	}
	produce(cl, "audit", 0, 10, "new")
	if _, err := adm.CreatePartitions(ctx, 1, "payments"); err != nil {
		t.Fatal(err)
	}
	cl2, _ := client()
	produce(cl2, "payments", 1, 10, "grown")
	waitMirror("e.audit", "ACTIVE", 30*time.Second)
	caughtUp("audit", "e.audit")
	caughtUp("payments", "e.payments")

	// Promote with lag: an open source transaction keeps the source's
	// high watermark ahead of what can be mirrored.
	txn, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.TransactionalID("life-txn"), kgo.DefaultProduceTopic("orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Key: []byte("txn"), Value: []byte("in a transaction")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cfg.east = []string{"e.orders:PROMOTE"}
	reload(cfg)
	waitMirror("e.orders", "PENDING_STOPPED", 15*time.Second)
	time.Sleep(1500 * time.Millisecond)
	if m, _ := statusMirror(klinkStatus(t, addr), "e.orders"); m.State != "PENDING_STOPPED" {
		t.Fatalf("promoted with lag: %+v", m)
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	m := waitMirror("e.orders", "STOPPED", 30*time.Second)
	if se, _ := adm.ListEndOffsets(ctx, "orders"); m.Stop == nil || m.Stop.By != "PROMOTE" || m.Stop.LastSourceOffsets[0] != se.Offsets()["orders"][0].At {
		t.Fatalf("promote stop record %+v", m.Stop)
	}
	// Promote once caught up.
	cfg.east = []string{"e.orders:PROMOTE", "e.payments:PROMOTE"}
	reload(cfg)
	waitMirror("e.payments", "STOPPED", 30*time.Second)

	// Remove a mirror, then the whole link.
	caughtUp("orders", "w.orders")
	caughtUp("events", "w.events")
	cfg.west = []string{"w.orders:orders"}
	reload(cfg)
	if m := waitMirror("w.events", "STOPPED", 15*time.Second); m.Stop == nil || m.Stop.By != "REMOVED" {
		t.Fatalf("removed mirror: %+v", m.Stop)
	}
	cfg.withWest = false
	reload(cfg)
	waitMirror("w.orders", "STOPPED", 15*time.Second)
	waitUntil(t, 15*time.Second, "link west REMOVED", func() bool {
		_, ls := statusMirror(klinkStatus(t, addr), "w.orders")
		return ls == "REMOVED"
	})

	// A deleted source topic.
	if _, err := adm.DeleteTopics(ctx, "refunds"); err != nil {
		t.Fatal(err)
	}
	waitMirror("e.refunds", "SOURCE_UNAVAILABLE", 20*time.Second)

	// The source cluster closed and reopened.
	cl.Close()
	cl2.Close()
	src.Stop(t)
	waitMirror("e.events", "LINK_FAILED", 20*time.Second)
	src.Restart(t)
	waitMirror("e.events", "ACTIVE", 40*time.Second)
	cl3, adm3 := client()
	adm = adm3
	produce(cl3, "events", 0, 20, "after")
	caughtUp("events", "e.events")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("klink exited with %v after SIGTERM", err)
	}
	// Record by record: every mirror equals its source (the stopped ones
	// as the source was when they stopped: nothing was written since).
	for pair, want := range map[[2]string]int{
		{"orders", "e.orders"}: 20, {"payments", "e.payments"}: 30, {"events", "e.events"}: 40,
		{"audit", "e.audit"}: 10, {"orders", "w.orders"}: 20, {"events", "w.events"}: 20,
	} {
		sr, err := mirrorcheck.ReadAll(ctx, src.ListenAddrs(), pair[0], mirrorcheck.ReadCommitted)
		if err != nil {
			t.Fatal(err)
		}
		dr, err := mirrorcheck.ReadAll(ctx, dst.ListenAddrs(), pair[1], mirrorcheck.ReadCommitted)
		if err != nil {
			t.Fatal(err)
		}
		if pair[1] == "w.events" { // stopped before the source grew
			for p := range sr {
				sr[p] = sr[p][:min(len(sr[p]), len(dr[p]))]
			}
		}
		n, _, err := mirrorcheck.Compare(sr, dr)
		if pair[0] == "orders" {
			want++ // the committed transaction's record
		}
		if err != nil || n != want {
			t.Fatalf("%s -> %s: %d records identical (want %d): %v", pair[0], pair[1], n, want, err)
		}
	}
}
