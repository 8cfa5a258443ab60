package replicator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/kafkatest"
)

// withMirrors returns a copy of cfg (same state dir and clusters) whose
// first link mirrors ms.
func withMirrors(cfg *config.Config, ms ...config.MirrorTopic) *config.Config {
	c := *cfg
	c.Links = slices.Clone(cfg.Links)
	c.Links[0].MirrorTopics = ms
	return &c
}

func mirrorStatus(t *testing.T, r *Replicator, name string) MirrorStatus {
	t.Helper()
	for _, l := range r.Status().Links {
		for _, m := range l.Mirrors {
			if m.Name == name {
				return m
			}
		}
	}
	return MirrorStatus{}
}

func waitState(t *testing.T, r *Replicator, name string, state linkstate.MirrorState, limit time.Duration) MirrorStatus {
	t.Helper()
	var m MirrorStatus
	waitFor(t, limit, fmt.Sprintf("mirror %s to be %s", name, state), func() bool {
		m = mirrorStatus(t, r, name)
		return m.State == string(state)
	})
	return m
}

// produceN writes n records to each partition of topic.
func produceN(t *testing.T, cl *kgo.Client, topic string, partitions int32, n int, tag string) {
	t.Helper()
	var rs []*kgo.Record
	for p := int32(0); p < partitions; p++ {
		for i := 0; i < n; i++ {
			rs = append(rs, &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "%s-%d", tag, i), Value: fmt.Appendf(nil, "%s record %d of partition %d", tag, i, p)})
		}
	}
	produceSync(t, cl, rs...)
}

// steadyProducer writes to topic until stopped; it returns how many
// records it wrote.
func steadyProducer(t *testing.T, c *kafkatest.Cluster, topic string) (stop func() int64) {
	cl := newClient(t, c, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0))
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%50), Value: fmt.Appendf(nil, "steady %d", i)}).FirstErr(); err != nil {
				if ctx.Err() == nil {
					t.Error(err)
				}
				return
			}
			n.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() int64 {
		cancel()
		wg.Wait()
		return n.Load()
	}
}

// Pause, resume and a change to one mirror leave the other mirror of the
// link running untouched: same partition goroutines, and its destination
// keeps growing during the reloads.
func TestReloadPauseResumeOthersUntouched(t *testing.T) {
	src, dst := testClusters(t, kafkatest.KFake)
	createTopic(t, src, "paused", 2, nil)
	createTopic(t, src, "busy", 1, nil)
	cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "paused"}, config.MirrorTopic{Name: "busy"})
	r, _ := runReplicator(t, cfg)
	cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceN(t, cl, "paused", 2, 50, "before")
	stopBusy := steadyProducer(t, src, "busy")
	waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"paused", "paused"})
	waitState(t, r, "busy", linkstate.Active, 30*time.Second)
	busyParts := partitionsOf(r, "busy")

	// Sample the busy mirror's destination end while reloading.
	var samples []int64
	var smu sync.Mutex
	sampling, stopSampling := context.WithCancel(context.Background())
	var swg sync.WaitGroup
	swg.Add(1)
	go func() {
		defer swg.Done()
		for sampling.Err() == nil {
			e := endOffsets(t, dst, "busy")[0]
			smu.Lock()
			samples = append(samples, e)
			smu.Unlock()
			time.Sleep(200 * time.Millisecond)
		}
	}()

	res := r.Reload(withMirrors(cfg, config.MirrorTopic{Name: "paused", State: "PAUSE"}, config.MirrorTopic{Name: "busy"}))
	if !res.OK || len(res.Applied) != 1 || !strings.Contains(res.Applied[0], "paused: state PAUSE") {
		t.Fatalf("reload: %+v", res)
	}
	waitState(t, r, "paused", linkstate.Paused, 15*time.Second)
	pausedAt := endOffsets(t, dst, "paused")
	produceN(t, cl, "paused", 2, 50, "while-paused")
	time.Sleep(1500 * time.Millisecond) // a paused mirror must not move
	if now := endOffsets(t, dst, "paused"); now[0] != pausedAt[0] || now[1] != pausedAt[1] {
		t.Fatalf("paused mirror moved: %v -> %v", pausedAt, now)
	}
	r.Reload(withMirrors(cfg, config.MirrorTopic{Name: "paused"}, config.MirrorTopic{Name: "busy"}))
	waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"paused", "paused"})
	waitState(t, r, "paused", linkstate.Active, 15*time.Second)
	requireSameRecords(t, readAll(t, src, "paused"), readAll(t, dst, "paused"))

	stopSampling()
	swg.Wait()
	wrote := stopBusy()
	waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"busy", "busy"})
	requireSameRecords(t, readAll(t, src, "busy"), readAll(t, dst, "busy"))
	if now := partitionsOf(r, "busy"); !slices.Equal(now, busyParts) {
		t.Fatal("the unchanged mirror's partitions were restarted by the reloads")
	}
	// Its destination grew between every two samples but for at most
	// one (a sample can fall between two appends).
	stalls := 0
	for i := 1; i < len(samples); i++ {
		if samples[i] <= samples[i-1] {
			stalls++
		}
	}
	if len(samples) < 8 || stalls > 1 {
		t.Fatalf("unchanged mirror's progress during the reloads (every 200ms): %v", samples)
	}
	t.Logf("busy mirror: %d records written, destination end sampled %v", wrote, samples)
}

func partitionsOf(r *Replicator, mirrorName string) []*partition {
	for _, l := range r.links {
		l.mu.Lock()
		ms := slices.Clone(l.mirrors)
		l.mu.Unlock()
		for _, m := range ms {
			if m.name == mirrorName {
				return m.partitionsSnapshot()
			}
		}
	}
	return nil
}

// PROMOTE waits for the mirror to catch up with the source's high
// watermark (PENDING_STOPPED while a source transaction is open), then stops it for good: STOPPED, the last source
// offsets recorded, and nothing more written by klink even as the source
// grows. The topic is an ordinary topic: anyone may write into it.
func TestReloadPromote(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "promo", 1, nil)
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "promo"})
		r, _ := runReplicator(t, cfg)
		stopProducer := steadyProducer(t, src, "promo")
		waitState(t, r, "promo", linkstate.Active, 30*time.Second)
		time.Sleep(300 * time.Millisecond)

		// An open source transaction: the mirror cannot catch up with the
		// source's high watermark until it ends.
		txn := newClient(t, src, kgo.TransactionalID("open-txn"), kgo.DefaultProduceTopic("promo"))
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		produceSync(t, txn, &kgo.Record{Key: []byte("txn"), Value: []byte("in an open transaction")})

		r.Reload(withMirrors(cfg, config.MirrorTopic{Name: "promo", State: "PROMOTE"}))
		waitState(t, r, "promo", linkstate.PendingStopped, 15*time.Second)
		time.Sleep(1500 * time.Millisecond)
		if m := mirrorStatus(t, r, "promo"); m.State != string(linkstate.PendingStopped) {
			t.Fatalf("promoted while behind the source: %+v", m)
		}
		stopProducer()
		if err := txn.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
		m := waitState(t, r, "promo", linkstate.Stopped, 30*time.Second)
		srcEnd := endOffsets(t, src, "promo")[0]
		if m.Stop == nil || m.Stop.By != "PROMOTE" || m.Stop.LastSourceOffsets[0] != srcEnd {
			t.Fatalf("stop record %+v; the source ends at %d", m.Stop, srcEnd)
		}
		requireSameRecords(t, readAll(t, src, "promo"), readAll(t, dst, "promo"))

		// klink never writes into it again; an ordinary producer may.
		produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "promo", 1, 20, "after")
		own := newClient(t, dst, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceN(t, own, "promo", 1, 3, "own")
		time.Sleep(time.Second)
		if end := endOffsets(t, dst, "promo")[0]; end != srcEnd+3 {
			t.Fatalf("destination end %d after the promote, want %d (its own 3 records only)", end, srcEnd+3)
		}
		// Asking for ACTIVE again is refused with a way out.
		r.Reload(withMirrors(cfg, config.MirrorTopic{Name: "promo"}))
		waitFor(t, 10*time.Second, "the refusal", func() bool {
			return strings.Contains(mirrorStatus(t, r, "promo").Refused, "remove it from mirrorTopics")
		})
	})
}

// FAILOVER stops at once, whatever the lag; removing a mirror fails it
// over too; removing the link fails over all its mirrors. Topics stay.
func TestReloadFailoverAndRemove(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		for _, tp := range []string{"fo", "gone", "stay"} {
			createTopic(t, src, tp, 1, nil)
		}
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "fo"}, config.MirrorTopic{Name: "gone"}, config.MirrorTopic{Name: "stay"})
		r, stop := runReplicator(t, cfg)
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		for _, tp := range []string{"fo", "gone", "stay"} {
			produceN(t, cl, tp, 1, 30, "x")
		}
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"fo", "fo"}, [2]string{"gone", "gone"}, [2]string{"stay", "stay"})

		res := r.Reload(withMirrors(cfg, config.MirrorTopic{Name: "fo", State: "FAILOVER"}, config.MirrorTopic{Name: "stay"}))
		if len(res.Applied) != 2 {
			t.Fatalf("reload applied %v", res.Applied)
		}
		for name, by := range map[string]string{"fo": "FAILOVER", "gone": "REMOVED"} {
			m := waitState(t, r, name, linkstate.Stopped, 15*time.Second)
			if m.Stop == nil || m.Stop.By != by || m.Stop.LastSourceOffsets[0] != 30 {
				t.Fatalf("%s: stop record %+v", name, m.Stop)
			}
			if got := endOffsets(t, dst, name)[0]; got != 30 {
				t.Fatalf("%s: destination end %d after the stop, want 30 (topic kept)", name, got)
			}
		}
		if m := mirrorStatus(t, r, "stay"); m.State != string(linkstate.Active) {
			t.Fatalf("untouched mirror: %+v", m)
		}

		// Removing the link fails over its remaining mirror.
		empty := *cfg
		empty.Links = nil
		r.Reload(&empty)
		m := waitState(t, r, "stay", linkstate.Stopped, 15*time.Second)
		if m.Stop == nil || m.Stop.By != "REMOVED" {
			t.Fatalf("stay: %+v", m.Stop)
		}
		if st := r.Status().Links[0].State; st != LinkRemoved {
			t.Fatalf("removed link shows %s", st)
		}

		// After a restart the link's history is still in status: every
		// mirror with its stop record.
		stop()
		r, _ = runReplicator(t, &empty)
		waitFor(t, 15*time.Second, "the removed link's mirrors in status after a restart", func() bool {
			ls := r.Status().Links
			if len(ls) != 1 || ls[0].State != LinkRemoved || len(ls[0].Mirrors) != 3 {
				return false
			}
			for _, m := range ls[0].Mirrors {
				if m.State != string(linkstate.Stopped) || m.Stop == nil || m.Stop.LastSourceOffsets[0] != 30 {
					return false
				}
			}
			return true
		})
	})
}

// The source cluster goes away for longer than the link's retry timeout:
// its mirrors show LINK_FAILED, and go back to ACTIVE by themselves when
// it returns (same data dir, same port), mirroring on exactly. A deleted
// source topic shows SOURCE_UNAVAILABLE.
func TestLinkFailedAndSourceUnavailable(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) { linkFailedAndSourceUnavailable(t, k, 1) })
}

// The same where the source watch asks for the topics only every 30 s, as
// it does at many thousands of partitions: between, its ticks ask for no
// topics, and still see the source gone; the deleted topic is seen first by
// the fetchers' own metadata requests, then confirmed by a tick that names
// it, long before the next pass. On kfake, the requests that name a topic
// are counted: the other ticks must not.
func TestLinkFailedAndSourceUnavailableAtScale(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		watchTopicsPartitions.Store(1) // "lf"'s 120 partitions: a topic pass every 30 s
		t.Cleanup(func() { watchTopicsPartitions.Store(defaultWatchTopicsPartitions) })
		linkFailedAndSourceUnavailable(t, k, 120)
	})
}

func linkFailedAndSourceUnavailable(t *testing.T, k kafkatest.Kind, lfPartitions int32) {
	if k == kafkatest.Kafka {
		kafkatest.RequireManaged(t)
	}
	src := kafkatest.Start(t, k, "source", kafkatest.Brokers(1), kafkatest.Restartable())
	dst := kafkatest.Start(t, k, "destination", kafkatest.Strict())
	createTopic(t, src, "lf", lfPartitions, nil)
	createTopic(t, src, "del", 1, nil)
	cfg := testConfig(t, src, dst, config.Properties{"cluster.link.retry.timeout.ms": "1000"}, config.MirrorTopic{Name: "lf"}, config.MirrorTopic{Name: "del"})
	r, _ := runReplicator(t, cfg)
	cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceN(t, cl, "lf", 1, 20, "before")
	produceN(t, cl, "del", 1, 5, "before")
	// Both mirrors fetching before "del" goes (a real broker can answer
	// klink's first look before it shows a topic just created).
	waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"lf", "lf"}, [2]string{"del", "del"})
	// Past the first topic pass (and every partition's own start,
	// which asks for its topic), 16 ticks (a quarter of the 1 s retry
	// timeout apart) name no topic: 121 partitions at one a tick put
	// the next pass 30 s away.
	waitState(t, r, "lf", linkstate.Active, 30*time.Second)
	time.Sleep(time.Second)
	if lfPartitions > 1 && k == kafkatest.KFake {
		var named atomic.Int32
		fake := src.Fake()
		fake.ControlKey(int16(kmsg.Metadata), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
			fake.KeepControl()
			for _, rt := range kreq.(*kmsg.MetadataRequest).Topics {
				if rt.Topic != nil && *rt.Topic == "lf" {
					named.Add(1)
				}
			}
			return nil, nil, false
		})
		time.Sleep(4 * time.Second)
		if n := named.Load(); n > 2 { // a topic pass and the fetchers' own 30 s refresh may fall in
			t.Fatalf("%d metadata requests named the topic in 4 s; the source watch should name it every 30 s", n)
		}
	}

	// A deleted source topic.
	if _, err := kadm.NewClient(cl).DeleteTopics(context.Background(), "del"); err != nil {
		t.Fatal(err)
	}
	// At scale, within a third of the time to the next topic pass: seen
	// by the fetchers, confirmed by a tick that names the topic.
	within := 20 * time.Second
	if lfPartitions > 1 {
		within = 10 * time.Second
	}
	m := waitState(t, r, "del", linkstate.SourceUnavailable, within)
	if !strings.Contains(m.Reason, "source topic del does not exist") {
		t.Fatalf("reason %q", m.Reason)
	}
	cl.Close()

	// The source cluster goes away, then comes back.
	src.Stop(t)
	m = waitState(t, r, "lf", linkstate.LinkFailed, 20*time.Second)
	if !strings.Contains(m.Reason, "cluster.link.retry.timeout.ms 1000") {
		t.Fatalf("reason %q", m.Reason)
	}
	src.Restart(t)
	waitState(t, r, "lf", linkstate.Active, 60*time.Second)
	if m := mirrorStatus(t, r, "del"); m.State != string(linkstate.SourceUnavailable) {
		t.Fatalf("mirror del is %s after the source came back; its topic is still gone", m.State)
	}
	produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "lf", 1, 20, "after")
	waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"lf", "lf"})
	requireSameRecords(t, readAll(t, src, "lf"), readAll(t, dst, "lf"))
	if got := len(readAll(t, dst, "lf")[0]); got != 40 {
		t.Fatalf("destination has %d records, want 40", got)
	}
}

// autoCreateTopics with a prefix and filters: every selected source topic
// gets a mirror named prefix+topic, excluded and internal ones do not, a
// new source topic is picked up within the refresh interval, and
// partitions added to a source topic are mirrored.
func TestAutoCreateMirrors(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		for _, tp := range []string{"orders", "payments", "tmp.scratch"} {
			createTopic(t, src, tp, 1, nil)
		}
		cfg := testConfig(t, src, dst, config.Properties{"auto.create.mirror.topics.refresh.ms": "300"},
			config.MirrorTopic{Name: "east.orders", SourceTopicName: "orders"})
		cfg.Links[0].MirrorTopicOptions = config.MirrorTopicOptions{Prefix: "east.", AutoCreateTopics: config.AutoCreateTopics{Enabled: true, TopicFilters: []config.TopicFilter{
			{FilterType: "INCLUDE", Name: "*", PatternType: "LITERAL"},
			{FilterType: "EXCLUDE", Name: "tmp.", PatternType: "PREFIXED"},
		}}}
		r, _ := runReplicator(t, cfg)
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		for _, tp := range []string{"orders", "payments", "tmp.scratch"} {
			produceN(t, cl, tp, 1, 25, tp)
		}
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"orders", "east.orders"}, [2]string{"payments", "east.payments"})
		requireSameRecords(t, readAll(t, src, "payments"), readAll(t, dst, "east.payments"))
		requireSameRecords(t, readAll(t, src, "orders"), readAll(t, dst, "east.orders"))

		// A new source topic, and a partition added to one.
		createTopic(t, src, "refunds", 1, nil)
		produceN(t, cl, "refunds", 1, 10, "refunds")
		if _, err := kadm.NewClient(cl).CreatePartitions(context.Background(), 1, "payments"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the new partition in the producer's metadata", func() bool {
			return len(endOffsets(t, src, "payments")) == 2
		})
		produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "payments", 2, 5, "grown")
		waitFor(t, 30*time.Second, "east.refunds and the new partition of east.payments", func() bool {
			return len(endOffsets(t, dst, "east.payments")) == 2 && len(endOffsets(t, dst, "east.refunds")) == 1
		})
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"refunds", "east.refunds"}, [2]string{"payments", "east.payments"})
		requireSameRecords(t, readAll(t, src, "refunds"), readAll(t, dst, "east.refunds"))
		requireSameRecords(t, readAll(t, src, "payments"), readAll(t, dst, "east.payments"))

		var names []string
		for _, m := range r.Status().Links[0].Mirrors {
			names = append(names, m.Name)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"east.orders", "east.payments", "east.refunds"}) {
			t.Fatalf("mirrors %v", names)
		}
		if _, ok := endOffsets(t, dst, "east.tmp.scratch")[0]; ok {
			t.Fatal("an excluded topic was mirrored")
		}
	})
}

// A promote waits for partitions added to the source just before it (found
// in review: it stopped without them).
func TestPromoteWaitsForNewPartitions(t *testing.T) {
	src, dst := testClusters(t, kafkatest.KFake)
	createTopic(t, src, "g", 1, nil)
	cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "g"})
	r, _ := runReplicator(t, cfg)
	produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "g", 1, 10, "a")
	waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"g", "g"})
	waitState(t, r, "g", linkstate.Active, 30*time.Second)
	if _, err := kadm.NewClient(newClient(t, src)).CreatePartitions(context.Background(), 1, "g"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the new partition", func() bool { return len(endOffsets(t, src, "g")) == 2 })
	produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "g", 2, 5, "b")
	r.Reload(withMirrors(cfg, config.MirrorTopic{Name: "g", State: "PROMOTE"}))
	m := waitState(t, r, "g", linkstate.Stopped, 60*time.Second)
	se := endOffsets(t, src, "g")
	if len(m.Stop.LastSourceOffsets) != 2 || m.Stop.LastSourceOffsets[0] != se[0] || m.Stop.LastSourceOffsets[1] != se[1] {
		t.Fatalf("stop record %+v; the source ends at %v", m.Stop, se)
	}
	requireSameRecords(t, readAll(t, src, "g"), readAll(t, dst, "g"))
}

// A mirror removed and added back at once (a revert and SIGHUP): the
// removed one stops first, records STOPPED, and the one added back refuses
// to write into it (found in review: it kept writing).
func TestRemoveThenAddBack(t *testing.T) {
	src, dst := testClusters(t, kafkatest.KFake)
	createTopic(t, src, "x", 1, nil)
	cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "x"})
	r, _ := runReplicator(t, cfg)
	stop := steadyProducer(t, src, "x")
	defer stop()
	waitState(t, r, "x", linkstate.Active, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	r.Reload(withMirrors(cfg))
	res := r.Reload(withMirrors(cfg, config.MirrorTopic{Name: "x"}))
	if len(res.Applied) != 1 || !strings.Contains(res.Applied[0], "added back") {
		t.Fatalf("reload: %+v", res)
	}
	m := waitState(t, r, "x", linkstate.Stopped, 15*time.Second)
	waitFor(t, 10*time.Second, "the refusal", func() bool {
		return strings.Contains(mirrorStatus(t, r, "x").Refused, "was stopped")
	})
	e1 := endOffsets(t, dst, "x")[0]
	time.Sleep(time.Second)
	if e2 := endOffsets(t, dst, "x")[0]; e2 != e1 || m.Stop == nil || m.Stop.LastSourceOffsets[0] != e1 {
		t.Fatalf("the stopped topic moved: %d -> %d (stop record %+v)", e1, e2, m.Stop)
	}
}

// Plan and Reload at once: no data race (run with -race; found in review).
func TestPlanDuringReload(t *testing.T) {
	cfg := &config.Config{StateDir: t.TempDir(), Destination: config.Destination{Bootstrap: []string{"127.0.0.1:1"}},
		Links: []config.Link{{Name: "l", Source: config.Source{Bootstrap: []string{"127.0.0.1:2"}}, MirrorTopics: []config.MirrorTopic{{Name: "a"}}}}}
	store, err := linkstate.Open(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r := New(cfg, store, zap.NewNop())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 200 {
			r.Reload(withMirrors(cfg, config.MirrorTopic{Name: "a", State: []string{"PAUSE", "ACTIVE"}[i%2]}))
		}
	}()
	for range 200 {
		r.Plan(cfg)
	}
	wg.Wait()
	// Filters are link settings: changing them restarts the link.
	next := withMirrors(cfg, config.MirrorTopic{Name: "a"})
	next.Links[0].ConsumerGroupFilters = []config.TopicFilter{{FilterType: "INCLUDE", Name: "x"}}
	if res := r.Reload(next); len(res.Applied) != 1 || !strings.Contains(res.Applied[0], "restarted") {
		t.Fatalf("filters changed: %+v", res)
	}
}

// Partition logs are rate-limited per message (no storm when a cluster is
// down); what is dropped is counted.
func TestPartitionLogRateLimited(t *testing.T) {
	core, seen := observer.New(zap.InfoLevel)
	log := rateLimited(zap.New(core))
	before := testutil.ToFloat64(logsDropped)
	for p := range 200 {
		log.With(zap.Int("partition", p)).Info("partition restarting")
	}
	log.Info("something else")
	if n := seen.FilterMessage("partition restarting").Len(); n != 5 {
		t.Fatalf("%d of 200 identical lines written, want 5", n)
	}
	if seen.FilterMessage("something else").Len() != 1 {
		t.Fatal("another message was limited with the first")
	}
	if d := testutil.ToFloat64(logsDropped) - before; d != 195 {
		t.Fatalf("suppressed lines counted %v, want 195", d)
	}
}
