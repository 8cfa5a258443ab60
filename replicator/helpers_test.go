package replicator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// testClusters starts a source and a destination cluster of kind k (see
// kafkatest: on kfake, the destination refuses what a real broker refuses).
func testClusters(t *testing.T, k kafkatest.Kind, opts ...kafkatest.Opt) (src, dst *kafkatest.Cluster) {
	t.Helper()
	return kafkatest.Pair(t, k, opts...)
}

// testConfig is a config with one link from src to dst, connecting to
// each as its client identity (its TLS and SASL, if any).
func testConfig(t *testing.T, src, dst *kafkatest.Cluster, linkConfigs config.Properties, mirrors ...config.MirrorTopic) *config.Config {
	t.Helper()
	cfg := &config.Config{
		StateDir:    t.TempDir(),
		Destination: config.Destination{Bootstrap: dst.ListenAddrs()},
		Links: []config.Link{{
			Name:         "test-link",
			Source:       config.Source{Bootstrap: src.ListenAddrs()},
			Configs:      linkConfigs,
			MirrorTopics: mirrors,
		}},
	}
	cfg.Destination.TLS, cfg.Destination.SASL = dst.Klink(t)
	cfg.Links[0].Source.TLS, cfg.Links[0].Source.SASL = src.Klink(t)
	return cfg
}

// runReplicator runs the config's links in-process until the test ends
// (or the returned stop is called).
func runReplicator(t *testing.T, cfg *config.Config) (*Replicator, func()) {
	t.Helper()
	return runReplicatorLogged(t, cfg, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
}

// runReplicatorLogged is runReplicator with the given logger.
func runReplicatorLogged(t *testing.T, cfg *config.Config, log *zap.Logger) (*Replicator, func()) {
	t.Helper()
	store, err := linkstate.Open(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	r := New(cfg, store, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		r.Run(ctx)
		close(done)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
				// Every fetched buffer went back: nothing leaked a
				// reference, nothing was released twice.
				for _, l := range r.links {
					if l.fetchers != nil {
						if n := l.fetchers.pool.Outstanding(); n != 0 {
							t.Errorf("link %s: %d fetch buffers still referenced after stopping", l.Name(), n)
						}
					}
				}
			case <-time.After(30 * time.Second):
				t.Error("replicator did not stop within 30s")
			}
			store.Close()
		})
	}
	t.Cleanup(stop)
	return r, stop
}

func newClient(t *testing.T, c *kafkatest.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := mirrorcheck.NewClient(c.ListenAddrs(), opts...) // with the cluster's TLS or SASL, if registered
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func createTopic(t *testing.T, c *kafkatest.Cluster, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	adm := kadm.NewClient(newClient(t, c))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, partitions, -1, configs, topic); err != nil {
		t.Fatalf("create %s: %v", topic, err)
	}
}

func produceSync(t *testing.T, cl *kgo.Client, rs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// endOffsets returns each partition's end offset of a topic.
func endOffsets(t *testing.T, c *kafkatest.Cluster, topic string) map[int32]int64 {
	t.Helper()
	return listOffsets(t, c, topic, false)
}

func startOffsets(t *testing.T, c *kafkatest.Cluster, topic string) map[int32]int64 {
	t.Helper()
	return listOffsets(t, c, topic, true)
}

func listOffsets(t *testing.T, c *kafkatest.Cluster, topic string, start bool) map[int32]int64 {
	t.Helper()
	out, err := tryListOffsets(t, c, topic, start)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tryListOffsets is listOffsets returning the error (a wait loop retries
// a passing one: a dropped connection under load).
func tryListOffsets(t *testing.T, c *kafkatest.Cluster, topic string, start bool) (map[int32]int64, error) {
	t.Helper()
	adm := kadm.NewClient(newClient(t, c))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var l kadm.ListedOffsets
	var err error
	if start {
		l, err = adm.ListStartOffsets(ctx, topic)
	} else {
		l, err = adm.ListEndOffsets(ctx, topic)
	}
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	l.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			out[o.Partition] = o.Offset
		}
	})
	return out, nil
}

// waitCaughtUp waits until every partition of each (source, destination)
// topic pair has the same end offset on both sides.
func waitCaughtUp(t *testing.T, src, dst *kafkatest.Cluster, timeout time.Duration, pairs ...[2]string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		var last string
		for _, pr := range pairs {
			se, err1 := tryListOffsets(t, src, pr[0], false)
			de, err2 := tryListOffsets(t, dst, pr[1], false)
			if err := errors.Join(err1, err2); err != nil {
				ok, last = false, err.Error()
				continue
			}
			for p, o := range se {
				if de[p] != o {
					ok = false
					last = fmt.Sprintf("%s[%d]: source end %d, destination end %d", pr[1], p, o, de[p])
				}
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("destination did not catch up within %s: %s", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitCaughtUpShifted waits until every partition of a mirror of the test
// link ends where its source's end translates to through the gap map (the
// source's end itself when nothing is shifted). A FAILED mirror fails the
// test at once.
func waitCaughtUpShifted(t *testing.T, r *Replicator, src, dst *kafkatest.Cluster, mirror string, timeout time.Duration) {
	t.Helper()
	var last string
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		if m := mirrorStatus(t, r, mirror); m.State == "FAILED" {
			t.Fatalf("mirror %s FAILED: %s", mirror, m.Reason)
		}
		se, err1 := tryListOffsets(t, src, mirror, false)
		de, err2 := tryListOffsets(t, dst, mirror, false)
		if err := errors.Join(err1, err2); err != nil {
			ok, last = false, err.Error()
		}
		for p, o := range se {
			want, err := r.TranslateOffset("test-link", mirror, p, o)
			if err != nil || de[p] != want {
				ok = false
				last = fmt.Sprintf("%s[%d]: source end %d (destination %d through the gap map), destination end %d %v", mirror, p, o, want, de[p], err)
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("destination did not catch up within %s: %s", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readAll consumes every record of a topic from its start to its current
// end, read_uncommitted.
func readAll(t *testing.T, c *kafkatest.Cluster, topic string) mirrorcheck.Records {
	t.Helper()
	return readAllAs(t, c, topic, mirrorcheck.ReadUncommitted)
}

func readAllAs(t *testing.T, c *kafkatest.Cluster, topic string, iso mirrorcheck.Isolation) mirrorcheck.Records {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs, err := mirrorcheck.ReadAll(ctx, c.ListenAddrs(), topic, iso)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// requireSameRecords checks the destination against the source record by
// record: offset, key, value, headers and timestamp; destination records at
// offsets the source does not hold must be fillers.
func requireSameRecords(t *testing.T, src, dst mirrorcheck.Records) {
	t.Helper()
	if _, _, err := mirrorcheck.Compare(src, dst); err != nil {
		t.Fatal(err)
	}
}

// requireIdenticalBatches checks that every source data batch has a copy on
// the destination at the same offsets with a byte-identical records section.
func requireIdenticalBatches(t *testing.T, src, dst *kafkatest.Cluster, srcTopic, dstTopic string, p int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, _, err := mirrorcheck.ComparePartitionBatches(ctx, src.ListenAddrs(), dst.ListenAddrs(), srcTopic, dstTopic, p)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("%s[%d]: no batches compared", dstTopic, p)
	}
}

func sortedKeys[V any](m map[int32]V) []int32 {
	ks := make([]int32, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	return ks
}
