package replicator

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/batch"
)

// testClusters starts a source and a destination kfake cluster.
func testClusters(t *testing.T, srcOpts ...kfake.Opt) (src, dst *kfake.Cluster) {
	t.Helper()
	var err error
	src, err = kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3), kfake.ClusterID("source-cluster")}, srcOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	dst, err = kfake.NewCluster(kfake.NumBrokers(3), kfake.ClusterID("destination-cluster"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	return src, dst
}

func testConfig(t *testing.T, src, dst *kfake.Cluster, linkConfigs config.Properties, mirrors ...config.MirrorTopic) *config.Config {
	t.Helper()
	return &config.Config{
		StateDir:    t.TempDir(),
		Destination: config.Destination{Bootstrap: dst.ListenAddrs()},
		Links: []config.Link{{
			Name:         "test-link",
			Source:       config.Source{Bootstrap: src.ListenAddrs()},
			Configs:      linkConfigs,
			MirrorTopics: mirrors,
		}},
	}
}

// runReplicator runs the config's links in-process until the test ends
// (or the returned stop is called).
func runReplicator(t *testing.T, cfg *config.Config) (*Replicator, func()) {
	t.Helper()
	store, err := linkstate.Open(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
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
			case <-time.After(30 * time.Second):
				t.Error("replicator did not stop within 30s")
			}
			store.Close()
		})
	}
	t.Cleanup(stop)
	return r, stop
}

func newClient(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func createTopic(t *testing.T, c *kfake.Cluster, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	adm := kadm.NewClient(newClient(t, c))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, partitions, 1, configs, topic); err != nil {
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
func endOffsets(t *testing.T, c *kfake.Cluster, topic string) map[int32]int64 {
	t.Helper()
	return listOffsets(t, c, topic, false)
}

func startOffsets(t *testing.T, c *kfake.Cluster, topic string) map[int32]int64 {
	t.Helper()
	return listOffsets(t, c, topic, true)
}

func listOffsets(t *testing.T, c *kfake.Cluster, topic string, start bool) map[int32]int64 {
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
		t.Fatal(err)
	}
	out := map[int32]int64{}
	l.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			out[o.Partition] = o.Offset
		}
	})
	return out
}

// waitCaughtUp waits until every partition of each (source, destination)
// topic pair has the same end offset on both sides.
func waitCaughtUp(t *testing.T, src, dst *kfake.Cluster, timeout time.Duration, pairs ...[2]string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		var last string
		for _, pr := range pairs {
			se, de := endOffsets(t, src, pr[0]), endOffsets(t, dst, pr[1])
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

// readAll consumes every record of a topic (read_uncommitted) from its start
// to its current end.
func readAll(t *testing.T, c *kfake.Cluster, topic string, opts ...kgo.Opt) map[int32][]*kgo.Record {
	t.Helper()
	ends := endOffsets(t, c, topic)
	starts := startOffsets(t, c, topic)
	parts := map[int32]kgo.Offset{}
	want := 0
	for p, e := range ends {
		if e > starts[p] {
			parts[p] = kgo.NewOffset().AtStart()
			want++
		}
	}
	out := map[int32][]*kgo.Record{}
	if want == 0 {
		return out
	}
	cl := newClient(t, c, append([]kgo.Opt{kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts})}, opts...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := map[int32]bool{}
	for len(done) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: timed out with %d of %d partitions read", topic, len(done), want)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("reading %s[%d]: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			out[r.Partition] = append(out[r.Partition], r)
			if r.Offset >= ends[r.Partition]-1 {
				done[r.Partition] = true
			}
		})
		// A partition whose tail is a marker or a filler ends before
		// its end offset for read_committed readers.
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if p.HighWatermark >= ends[p.Partition] && p.LastStableOffset >= ends[p.Partition] && len(p.Records) == 0 {
				done[p.Partition] = true
			}
		})
	}
	return out
}

// requireSameRecords checks the destination against the source record by
// record: offset, key, value, headers and timestamp. Destination records at
// offsets the source does not hold must be klink fillers.
func requireSameRecords(t *testing.T, src, dst map[int32][]*kgo.Record) {
	t.Helper()
	for p, srs := range src {
		drs := dst[p]
		byOffset := make(map[int64]*kgo.Record, len(drs))
		for _, r := range drs {
			byOffset[r.Offset] = r
		}
		for _, s := range srs {
			d, ok := byOffset[s.Offset]
			if !ok {
				t.Fatalf("partition %d: source offset %d (key %q) missing on the destination", p, s.Offset, s.Key)
			}
			if err := sameRecord(s, d); err != nil {
				t.Fatalf("partition %d offset %d: %v", p, s.Offset, err)
			}
			delete(byOffset, s.Offset)
		}
		for o, d := range byOffset {
			if !batch.IsFiller(d.Key) || d.Value != nil || len(d.Headers) != 1 || d.Headers[0].Key != batch.FillerHeader {
				t.Fatalf("partition %d: destination offset %d holds a record the source does not have (key %q)", p, o, d.Key)
			}
		}
	}
	for p, drs := range dst {
		if _, ok := src[p]; !ok {
			for _, d := range drs {
				if !batch.IsFiller(d.Key) {
					t.Fatalf("partition %d: destination holds record at offset %d but the source partition is empty", p, d.Offset)
				}
			}
		}
	}
}

func sameRecord(s, d *kgo.Record) error {
	switch {
	case s.Offset != d.Offset:
		return fmt.Errorf("offset %d vs %d", s.Offset, d.Offset)
	case !bytes.Equal(s.Key, d.Key) || (s.Key == nil) != (d.Key == nil):
		return fmt.Errorf("key %q vs %q", s.Key, d.Key)
	case !bytes.Equal(s.Value, d.Value) || (s.Value == nil) != (d.Value == nil):
		return fmt.Errorf("value %q vs %q", s.Value, d.Value)
	case !s.Timestamp.Equal(d.Timestamp):
		return fmt.Errorf("timestamp %v vs %v", s.Timestamp, d.Timestamp)
	case len(s.Headers) != len(d.Headers):
		return fmt.Errorf("%d headers vs %d", len(s.Headers), len(d.Headers))
	}
	for i := range s.Headers {
		if s.Headers[i].Key != d.Headers[i].Key || !bytes.Equal(s.Headers[i].Value, d.Headers[i].Value) {
			return fmt.Errorf("header %d: %q=%q vs %q=%q", i, s.Headers[i].Key, s.Headers[i].Value, d.Headers[i].Key, d.Headers[i].Value)
		}
	}
	return nil
}

// countRecords counts records across partitions.
func countRecords(rs map[int32][]*kgo.Record) int {
	n := 0
	for _, r := range rs {
		n += len(r)
	}
	return n
}

// rawBatches fetches every batch of a partition as raw bytes.
func rawBatches(t *testing.T, c *kfake.Cluster, topic string, p int32) []batch.Batch {
	t.Helper()
	cl := newClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	td := md.Topics[topic]
	end := endOffsets(t, c, topic)[p]
	off := startOffsets(t, c, topic)[p]
	var out []batch.Batch
	for off < end {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxBytes = 1 << 20
		req.SessionEpoch = -1
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = topic
		ft.TopicID = td.ID
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.Partition = p
		fp.FetchOffset = off
		fp.PartitionMaxBytes = 1 << 20
		fp.CurrentLeaderEpoch = -1
		ft.Partitions = append(ft.Partitions, fp)
		req.Topics = append(req.Topics, ft)
		resp, err := cl.Broker(int(td.Partitions[p].Leader)).Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		rp := resp.(*kmsg.FetchResponse).Topics[0].Partitions[0]
		if rp.ErrorCode != 0 {
			t.Fatalf("fetch %s[%d]@%d: error %d", topic, p, off, rp.ErrorCode)
		}
		bs, err := batch.Split(rp.RecordBatches)
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) == 0 {
			t.Fatalf("fetch %s[%d]@%d returned no batch", topic, p, off)
		}
		for _, b := range bs {
			if b.NextOffset() > off {
				out = append(out, b)
				off = b.NextOffset()
			}
		}
	}
	return out
}

// requireIdenticalBatches checks that every source data batch has a copy on
// the destination at the same offsets whose records section is
// byte-identical (no recompression), and that klink rewrote the producer.
func requireIdenticalBatches(t *testing.T, src, dst *kfake.Cluster, srcTopic, dstTopic string, p int32) {
	t.Helper()
	dstByBase := map[int64]batch.Batch{}
	for _, b := range rawBatches(t, dst, dstTopic, p) {
		dstByBase[b.BaseOffset()] = b
	}
	n := 0
	for _, s := range rawBatches(t, src, srcTopic, p) {
		if s.IsControl() {
			continue
		}
		d, ok := dstByBase[s.BaseOffset()]
		if !ok {
			t.Fatalf("%s[%d]: no destination batch at source batch base %d", dstTopic, p, s.BaseOffset())
		}
		if d.LastOffsetDelta() != s.LastOffsetDelta() || d.NumRecords() != s.NumRecords() || d.Codec() != s.Codec() {
			t.Fatalf("%s[%d]@%d: batch shape differs", dstTopic, p, s.BaseOffset())
		}
		if !bytes.Equal(d.Records(), s.Records()) {
			t.Fatalf("%s[%d]@%d: records section differs (recompressed?)", dstTopic, p, s.BaseOffset())
		}
		if s.ProducerID() >= 0 && d.ProducerID() == s.ProducerID() {
			t.Fatalf("%s[%d]@%d: destination batch carries the source producer id %d", dstTopic, p, s.BaseOffset(), s.ProducerID())
		}
		n++
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
