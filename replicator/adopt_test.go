package replicator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zaptest"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/kafkatest"
)

// failbackConfig is the config of the klink beside to: one link from from,
// mirroring topics under the same names, with consumer-group offsets synced.
func failbackConfig(t *testing.T, from, to *kafkatest.Cluster, name string, mts ...config.MirrorTopic) *config.Config {
	cfg := testConfig(t, from, to, config.Properties{"consumer.offset.sync.enable": "true", "consumer.offset.sync.ms": "200"}, mts...)
	cfg.Links[0].Name = name
	cfg.Links[0].ConsumerGroupFilters = []config.TopicFilter{{FilterType: "INCLUDE", Name: "*"}}
	return cfg
}

// stopMirrors reloads r with mts (each with the state that stops it:
// PROMOTE or FAILOVER) and waits until every one is STOPPED.
func stopMirrors(t *testing.T, r *Replicator, cfg *config.Config, mts ...config.MirrorTopic) {
	t.Helper()
	r.Reload(withMirrors(cfg, mts...))
	for _, mt := range mts {
		waitState(t, r, mt.Name, linkstate.Stopped, 30*time.Second)
	}
}

// produceTxn writes n records per partition of topic in one committed and
// one aborted transaction: markers in both logs, at the same offsets.
func produceTxn(t *testing.T, c *kafkatest.Cluster, topic string, partitions int32, n int, tag string) {
	t.Helper()
	for _, end := range []kgo.TransactionEndTry{kgo.TryCommit, kgo.TryAbort} {
		cl := newClient(t, c, kgo.TransactionalID("failback-"+tag), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		produceN(t, cl, topic, partitions, n, fmt.Sprintf("%s-txn-%v", tag, end))
		if err := cl.EndTransaction(context.Background(), end); err != nil {
			t.Fatal(err)
		}
		cl.Close()
	}
}

// The runbook of the README's "Failover and failback", step by step, each a
// config edit and a reload: A→B mirroring; PROMOTE on B; producers and a
// consumer group move to B and go on; a B→A link with adopt: true on A's
// side catches A up with only what B got since; PROMOTE on A; producers
// return to A. A ends identical to B at every offset, and the group's
// position survives both moves.
func TestFailoverAndFailback(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		a, b := testClusters(t, k)
		const parts = 3
		createTopic(t, a, "orders", parts, nil)
		onA := newClient(t, a, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceN(t, onA, "orders", parts, 40, "a1")
		produceTxn(t, a, "orders", parts, 5, "a")
		produceN(t, onA, "orders", parts, 20, "a2")
		commitOn(t, a, "g", "orders", map[int32]int64{0: 10, 1: 20, 2: 30})

		// 1. A→B: the klink beside B mirrors orders.
		cfgB := failbackConfig(t, a, b, "a-to-b", config.MirrorTopic{Name: "orders"})
		rB, stopB := runReplicator(t, cfgB)
		waitCaughtUp(t, a, b, 30*time.Second, [2]string{"orders", "orders"})
		waitCommitted(t, b, "g", "orders", map[int32]int64{0: 10, 1: 20, 2: 30})

		// 2. PROMOTE on B: the mirror catches up, stops, and is an
		// ordinary topic.
		stopMirrors(t, rB, cfgB, config.MirrorTopic{Name: "orders", State: "PROMOTE"})
		aAtPromote := endOffsets(t, a, "orders")

		// 3. Producers and the group move to B, and go on there.
		onB := newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceN(t, onB, "orders", parts, 30, "b1")
		produceTxn(t, b, "orders", parts, 4, "b")
		produceN(t, onB, "orders", parts, 10, "b2")
		bEnd := endOffsets(t, b, "orders")
		onBGroup := map[int32]int64{}
		for p := range int32(parts) {
			onBGroup[p] = bEnd[p] - 7 - int64(p)
		}
		commitOn(t, b, "g", "orders", onBGroup)
		stopB() // the klink beside B is not needed any more

		// Someone gave A's topic settings of its own meanwhile: adoption
		// makes them a mirror's before the first append.
		set := func(k, v string) kadm.AlterConfig { return kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: &v} }
		aAdm := kadm.NewClient(newClient(t, a))
		if _, err := aAdm.AlterTopicConfigs(context.Background(), []kadm.AlterConfig{set("compression.type", "gzip"), set("message.timestamp.before.max.ms", "3600000")}, "orders"); err != nil {
			t.Fatal(err)
		}

		// 4. B→A on A's side, adopting A's topic: it is a prefix of B's.
		// klink plan says so first.
		cfgA := failbackConfig(t, b, a, "b-to-a", config.MirrorTopic{Name: "orders", Adopt: true})
		aEndBefore := endOffsets(t, a, "orders")
		wantPlan := fmt.Sprintf("adopts the existing destination topic (a prefix of the source topic): mirroring goes on from its end offsets 0:%d 1:%d 2:%d", aEndBefore[0], aEndBefore[1], aEndBefore[2])
		if it := planAdoption(t, cfgA, "orders"); it.Action != "create" || !strings.Contains(it.Detail, wantPlan) {
			t.Fatalf("plan: %+v, want a detail saying %q", it, wantPlan)
		}
		rA, _ := runReplicator(t, cfgA)
		waitCaughtUp(t, b, a, 30*time.Second, [2]string{"orders", "orders"})
		if m := waitState(t, rA, "orders", linkstate.Active, 15*time.Second); m.Reason != "" {
			t.Fatalf("adopted mirror: %+v", m)
		}
		if l := rA.Status().Links[0]; l.PartitionsRunning != parts || l.PartitionsStarting != 0 {
			t.Fatalf("link status: %d partitions running, %d starting; want %d and 0", l.PartitionsRunning, l.PartitionsStarting, parts)
		}
		// What A already held was not copied again: the mirror's
		// counters cover only what B got after the promote.
		var mirrored int64
		for _, p := range mirrorStatus(t, rA, "orders").Partitions {
			mirrored += p.RecordsMirrored
		}
		if most, least := int64(parts*(30+2*4+10)), int64(parts*(30+10)); mirrored > most || mirrored < least {
			t.Fatalf("the failback mirrored %d records; B got %d..%d since the promote (A had %v)", mirrored, least, most, aAtPromote)
		}
		requireSameRecords(t, readAll(t, b, "orders"), readAll(t, a, "orders"))
		for p := range int32(parts) {
			requireIdenticalBatches(t, b, a, "orders", "orders", p)
		}
		waitCommitted(t, a, "g", "orders", onBGroup)
		for k, want := range map[string]string{"compression.type": "producer", "message.timestamp.before.max.ms": ""} {
			if got, err := topicConfigOf(aAdm, "orders", k); err != nil || got != want {
				t.Fatalf("adopted topic's %s: %q (%v), want %q", k, got, err, want)
			}
		}

		// 5. PROMOTE on A; producers return to A, and klink writes no more.
		stopMirrors(t, rA, cfgA, config.MirrorTopic{Name: "orders", Adopt: true, State: "PROMOTE"})
		requireSameRecords(t, readAll(t, b, "orders"), readAll(t, a, "orders"))
		produceN(t, onA, "orders", parts, 5, "a3")
		time.Sleep(500 * time.Millisecond)
		aEnd := endOffsets(t, a, "orders")
		for p := range int32(parts) {
			if aEnd[p] != bEnd[p]+5 {
				t.Fatalf("A[%d] ends at %d after the failback and 5 new records, B at %d", p, aEnd[p], bEnd[p])
			}
		}

		// 6. B's klink (its state file as it was) mirrors A again: the old
		// link goes, a new one adopts B's topic, a prefix of A's now.
		cfgB2 := failbackConfig(t, a, b, "a-to-b-2", config.MirrorTopic{Name: "orders", Adopt: true})
		cfgB2.StateDir = cfgB.StateDir
		rB2, _ := runReplicator(t, cfgB2)
		waitCaughtUp(t, a, b, 30*time.Second, [2]string{"orders", "orders"})
		var m2 MirrorStatus
		waitFor(t, 15*time.Second, "a-to-b-2's mirror ACTIVE", func() bool {
			for _, l := range rB2.Status().Links {
				for _, m := range l.Mirrors {
					if l.Name == "a-to-b-2" && m.Name == "orders" {
						m2 = m
					}
				}
			}
			return m2.State == string(linkstate.Active)
		})
		requireSameRecords(t, readAll(t, a, "orders"), readAll(t, b, "orders"))
		var again int64
		for _, p := range m2.Partitions {
			again += p.RecordsMirrored
		}
		if again != parts*5 {
			t.Fatalf("mirroring A again copied %d records; A got %d since", again, parts*5)
		}

		// The group resumes on A where it stopped on B.
		want := readAll(t, b, "orders")
		c := newClient(t, a, kgo.ConsumerGroup("g"), kgo.ConsumeTopics("orders"), kgo.DisableAutoCommit())
		first := map[int32]*kgo.Record{}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for len(first) < parts && ctx.Err() == nil {
			c.PollRecords(ctx, 100).EachRecord(func(r *kgo.Record) {
				if _, ok := first[r.Partition]; !ok {
					first[r.Partition] = r
				}
			})
		}
		for p := range int32(parts) {
			r := first[p]
			if r == nil {
				t.Fatalf("the group read nothing from A[%d]", p)
			}
			// The first record at or after the committed offset (a
			// marker may stand at it).
			var exp *kgo.Record
			for _, s := range want[p] {
				if s.Offset >= onBGroup[p] {
					exp = s
					break
				}
			}
			if exp == nil || r.Offset != exp.Offset || string(r.Key) != string(exp.Key) || string(r.Value) != string(exp.Value) || !r.Timestamp.Equal(exp.Timestamp) {
				t.Fatalf("A[%d]: the group resumed at offset %d (%s), want offset %d on B (%v)", p, r.Offset, r.Key, onBGroup[p], exp)
			}
		}
	})
}

// After an unplanned failover the old primary holds records that were never
// mirrored: adopting it is refused before a single append, naming the
// partition and the offsets, and A is left as it was.
func TestAdoptRefusesUnmirroredTail(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		a, b := testClusters(t, k)
		createTopic(t, a, "orders", 3, nil)
		createTopic(t, a, "deep", 1, nil)
		onA := newClient(t, a, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceN(t, onA, "orders", 3, 50, "a1")
		produceN(t, onA, "deep", 1, 100, "a1")
		cfgB := failbackConfig(t, a, b, "a-to-b", config.MirrorTopic{Name: "orders"}, config.MirrorTopic{Name: "deep"})
		rB, _ := runReplicator(t, cfgB)
		waitCaughtUp(t, a, b, 30*time.Second, [2]string{"orders", "orders"}, [2]string{"deep", "deep"})

		// A crash of A in all but name: B fails over at once, and A got
		// records B never saw: 7 on partition 1 while B's producers
		// write 4 there too, 3 on partition 2 while nothing is written
		// on B. Partition 0 is an exact prefix.
		stopMirrors(t, rB, cfgB, config.MirrorTopic{Name: "orders", State: "FAILOVER"}, config.MirrorTopic{Name: "deep", State: "FAILOVER"})
		// deep: the two logs part far more than the last 1,000 offsets
		// before the end, in small batches: where is found by bisection.
		for i := range 30 {
			produceSync(t, onA, recordsFor("deep", 0, 50, fmt.Sprintf("lost%d", i))...)
			produceSync(t, newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner())), recordsFor("deep", 0, 55, fmt.Sprintf("b%d", i))...)
		}
		produceSync(t, onA, recordsFor("orders", 1, 7, "lost")...)
		produceSync(t, onA, recordsFor("orders", 2, 3, "lost")...)
		produceSync(t, newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner())), recordsFor("orders", 1, 4, "b")...)
		produceSync(t, newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner())), recordsFor("orders", 0, 6, "b")...)
		before := readAll(t, a, "orders")

		cfgA := failbackConfig(t, b, a, "b-to-a", config.MirrorTopic{Name: "orders", Adopt: true})
		if it := planAdoption(t, cfgA, "orders"); it.Action != "refuse" || !strings.Contains(it.Detail, "partition 1: 7 records at offsets 50..56 were never mirrored") {
			t.Fatalf("plan: %+v, want the refusal", it)
		}
		cfgA.Links[0].MirrorTopics = append(cfgA.Links[0].MirrorTopics, config.MirrorTopic{Name: "deep", Adopt: true})
		rA, _ := runReplicator(t, cfgA)
		waitRefused(t, rA, "deep", "partition 0: 1,500 records at offsets 100..1,599 were never mirrored")
		m := waitRefused(t, rA, "orders", "were never mirrored")
		for _, want := range []string{
			"partition 1: 7 records at offsets 50..56 were never mirrored",
			"partition 2: 3 records at offsets 50..52 were never mirrored",
			"adopting would need them removed",
		} {
			if !strings.Contains(m.Reason, want) {
				t.Errorf("refusal %q does not say %q", m.Reason, want)
			}
		}
		if strings.Contains(m.Reason, "partition 0") {
			t.Errorf("refusal names partition 0, an exact prefix: %q", m.Reason)
		}
		time.Sleep(time.Second)
		requireSameRecords(t, before, readAll(t, a, "orders"))

		// The README's way out: the operator deletes A's topic (after
		// saving the unmirrored records); at its next check klink creates
		// it and copies all of B, at B's offsets.
		adm := kadm.NewClient(newClient(t, a))
		if _, err := adm.DeleteTopics(context.Background(), "orders"); err != nil {
			t.Fatal(err)
		}
		waitCaughtUp(t, b, a, 60*time.Second, [2]string{"orders", "orders"})
		waitState(t, rA, "orders", linkstate.Active, 15*time.Second)
		requireSameRecords(t, readAll(t, b, "orders"), readAll(t, a, "orders"))

		// Without adopt, an existing topic is refused as before, and the
		// refusal names the way out.
		c, d := testClusters(t, k)
		createTopic(t, c, "plain", 1, nil)
		createTopic(t, d, "plain", 1, nil)
		rD, _ := runReplicator(t, testConfig(t, c, d, nil, config.MirrorTopic{Name: "plain"}))
		// (A mirror that may not adopt fails for good, as before.)
		if m := waitState(t, rD, "plain", linkstate.Failed, 30*time.Second); !strings.Contains(m.Reason, "adopt: true") {
			t.Fatalf("refusal without adopt: %q", m.Reason)
		}
	})
}

// waitRefused waits until mirror's reason says why adoption was refused,
// and checks that the refusal left it PENDING (nothing written; checked
// again later), not FAILED.
func waitRefused(t *testing.T, r *Replicator, mirror, why string) MirrorStatus {
	t.Helper()
	var m MirrorStatus
	waitFor(t, 30*time.Second, "mirror "+mirror+" refusing adoption", func() bool {
		m = mirrorStatus(t, r, mirror)
		return strings.Contains(m.Reason, why)
	})
	if m.State != string(linkstate.Pending) || !strings.Contains(m.Reason, "nothing was written, and klink checks again every 30 s") {
		t.Fatalf("mirror %s after the refusal: %s: %s", mirror, m.State, m.Reason)
	}
	return m
}

// planAdoption is klink plan's item for mirror of a new link in cfg, with
// the adoption previewed against the clusters.
func planAdoption(t *testing.T, cfg *config.Config, mirror string) PlanItem {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	items := PreviewAdoptions(ctx, cfg, planChanges(nil, map[string]map[string]mirrorView{}, cfg), zaptest.NewLogger(t))
	for _, it := range items {
		if it.Mirror == mirror {
			return it
		}
	}
	t.Fatalf("no plan item for mirror %s: %+v", mirror, items)
	return PlanItem{}
}

// topicConfigOf is a topic's dynamic config value ("" if not set).
func topicConfigOf(adm *kadm.Client, topic, key string) (string, error) {
	rcs, err := adm.DescribeTopicConfigs(context.Background(), topic)
	if err != nil {
		return "", err
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		return "", err
	}
	for _, c := range rc.Configs {
		if c.Key == key && c.Value != nil && c.Source == kmsg.ConfigSourceDynamicTopicConfig {
			return *c.Value, nil
		}
	}
	return "", nil
}

// recordsFor is n records for one partition.
func recordsFor(topic string, p int32, n int, tag string) []*kgo.Record {
	var rs []*kgo.Record
	for i := range n {
		rs = append(rs, &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "%s-%d", tag, i), Value: fmt.Appendf(nil, "%s record %d", tag, i)})
	}
	return rs
}

// A topic that shares nothing with the source, or has another partition
// count, is refused with what differs.
func TestAdoptRefusesStrangers(t *testing.T) {
	a, b := testClusters(t, kafkatest.KFake)
	createTopic(t, a, "orders", 2, nil)
	createTopic(t, b, "orders", 2, nil)
	createTopic(t, a, "wide", 2, nil)
	createTopic(t, b, "wide", 3, nil)
	produceN(t, newClient(t, a, kgo.RecordPartitioner(kgo.ManualPartitioner())), "orders", 2, 10, "a")
	produceN(t, newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner())), "orders", 2, 10, "b")
	// The source's retention removed everything the destination holds:
	// nothing proves it a prefix.
	createTopic(t, a, "aged", 1, nil)
	createTopic(t, b, "aged", 1, nil)
	produceN(t, newClient(t, a, kgo.RecordPartitioner(kgo.ManualPartitioner())), "aged", 1, 30, "a")
	produceN(t, newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner())), "aged", 1, 10, "b")
	var gone kadm.Offsets
	gone.Add(kadm.Offset{Topic: "aged", Partition: 0, At: 20, LeaderEpoch: -1})
	if _, err := kadm.NewClient(newClient(t, a)).DeleteRecords(context.Background(), gone); err != nil {
		t.Fatal(err)
	}
	// A transaction left open on the destination by an old producer.
	createTopic(t, a, "open", 1, nil)
	createTopic(t, b, "open", 1, nil)
	produceN(t, newClient(t, a, kgo.RecordPartitioner(kgo.ManualPartitioner())), "open", 1, 5, "a")
	txn := newClient(t, b, kgo.TransactionalID("left-open"), kgo.DefaultProduceTopic("open"))
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceSync(t, txn, &kgo.Record{Value: []byte("never ended")})

	r, _ := runReplicator(t, testConfig(t, a, b, nil, config.MirrorTopic{Name: "orders", Adopt: true}, config.MirrorTopic{Name: "wide", Adopt: true},
		config.MirrorTopic{Name: "aged", Adopt: true}, config.MirrorTopic{Name: "open", Adopt: true}))
	waitRefused(t, r, "orders", "partition 0: not a copy of the source: the destination's first batch, at offset 0, differs")
	waitRefused(t, r, "wide", "it has 3 partitions, source topic wide has 2")
	waitRefused(t, r, "aged", "partition 0: cannot be proven a prefix: the destination holds offsets 0..9 and the source no longer holds any of them (its log starts at 20)")
	waitRefused(t, r, "open", "partition 0: a transaction is open on the destination at offset 0")
	if got := endOffsets(t, b, "orders"); got[0] != 10 || got[1] != 10 {
		t.Fatalf("the refused topic changed: ends %v", got)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 89303: "89,303", 1204: "1,204", 1234567: "1,234,567", -1000: "-1,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

// Compacted topics: after the promote both clusters' cleaners compact on
// their own schedules, so the old primary's batches no longer match the new
// primary's; adoption proves what compaction keeps instead, and the way
// back leaves A holding what B holds. A topic whose old primary got records
// that were never mirrored is refused all the same.
func TestFailbackCompacted(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		a, b := testClusters(t, k, cleanerOpts)
		for _, tp := range []string{"ct", "lost"} {
			createTopic(t, a, tp, 2, compactedTopicConfigs)
			produceChangelog(t, a, tp, 0)
			produceChangelog(t, a, tp, 1)
		}
		compact(t, a, "ct", 2)
		cfgB := failbackConfig(t, a, b, "a-to-b", config.MirrorTopic{Name: "ct"}, config.MirrorTopic{Name: "lost"})
		rB, stopB := runReplicator(t, cfgB)
		waitCaughtUp(t, a, b, 30*time.Second, [2]string{"ct", "ct"}, [2]string{"lost", "lost"})
		stopMirrors(t, rB, cfgB, config.MirrorTopic{Name: "ct", State: "PROMOTE"}, config.MirrorTopic{Name: "lost", State: "FAILOVER"})
		stopB()

		// B goes on and compacts; A's "lost" got a round B never saw.
		produceChangelog(t, b, "ct", 2)
		produceChangelog(t, b, "lost", 2)
		produceChangelog(t, a, "lost", 3)
		compact(t, b, "ct", 2)
		compact(t, a, "lost", 2)
		if changed := countHoleyBatches(t, b, "ct", 2); changed == 0 {
			t.Fatal("B's compaction left no batch with holes: the old batches would still match")
		}
		lostBefore := readAll(t, a, "lost")

		cfgA := failbackConfig(t, b, a, "b-to-a", config.MirrorTopic{Name: "ct", Adopt: true}, config.MirrorTopic{Name: "lost", Adopt: true})
		rA, _ := runReplicator(t, cfgA)
		waitCaughtUp(t, b, a, 30*time.Second, [2]string{"ct", "ct"})
		if m := waitState(t, rA, "ct", linkstate.Active, 15*time.Second); m.Reason != "" {
			t.Fatalf("adopted compacted mirror: %+v", m)
		}
		t.Logf("after the failback: %d records held on both sides", requireCompactionKept(t, b, a, "ct"))
		waitRefused(t, rA, "lost", "adopting would need them removed")
		requireSameRecords(t, lostBefore, readAll(t, a, "lost"))
	})
}

// mirrorTopicOptions.adopt: a link that auto-creates its mirrors adopts the
// old primary's topics the same way. (Without it they are refused: checked
// by hand, by turning the option off in mirror.adopts.)
func TestAdoptAutoCreated(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		a, b := testClusters(t, k)
		for _, tp := range []string{"orders", "payments"} {
			createTopic(t, a, tp, 2, nil)
			produceN(t, newClient(t, a, kgo.RecordPartitioner(kgo.ManualPartitioner())), tp, 2, 30, "a")
		}
		cfgB := failbackConfig(t, a, b, "a-to-b", config.MirrorTopic{Name: "orders"}, config.MirrorTopic{Name: "payments"})
		rB, stopB := runReplicator(t, cfgB)
		waitCaughtUp(t, a, b, 30*time.Second, [2]string{"orders", "orders"}, [2]string{"payments", "payments"})
		stopMirrors(t, rB, cfgB, config.MirrorTopic{Name: "orders", State: "PROMOTE"}, config.MirrorTopic{Name: "payments", State: "PROMOTE"})
		stopB()
		for _, tp := range []string{"orders", "payments"} {
			produceN(t, newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner())), tp, 2, 15, "b")
		}

		cfgA := failbackConfig(t, b, a, "b-to-a")
		cfgA.Links[0].Configs["auto.create.mirror.topics.refresh.ms"] = "300"
		cfgA.Links[0].MirrorTopicOptions = config.MirrorTopicOptions{Adopt: true, AutoCreateTopics: config.AutoCreateTopics{Enabled: true, TopicFilters: []config.TopicFilter{
			{FilterType: "INCLUDE", Name: "*", PatternType: "LITERAL"},
		}}}
		rA, _ := runReplicator(t, cfgA)
		waitCaughtUp(t, b, a, 30*time.Second, [2]string{"orders", "orders"}, [2]string{"payments", "payments"})
		for _, tp := range []string{"orders", "payments"} {
			waitState(t, rA, tp, linkstate.Active, 15*time.Second)
			requireSameRecords(t, readAll(t, b, tp), readAll(t, a, tp))
			for p := range int32(2) {
				requireIdenticalBatches(t, b, a, tp, tp, p)
			}
		}
	})
}
