package replicator

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// requireExact checks a mirror the way the Exact-offsets issue states it
// (see mirrorcheck.CompareExact).
func requireExact(t *testing.T, src, dst *kafkatest.Cluster, srcTopic, dstTopic string, partitions int32) (committed, uncommitted, fillers int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, err := mirrorcheck.CompareExact(ctx, src.ListenAddrs(), dst.ListenAddrs(), srcTopic, dstTopic, partitions)
	if err != nil {
		t.Fatal(err)
	}
	return e.Committed, e.Uncommitted, e.Fillers
}

// txnProducer writes transactions that commit or abort at random until ctx
// ends; it returns how many of each.
func txnProducer(ctx context.Context, t *testing.T, c *kafkatest.Cluster, id, topic string, partitions int32, seed uint64) (commits, aborts int) {
	cl, err := mirrorcheck.NewClient(c.ListenAddrs(), kgo.TransactionalID(id),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.ZstdCompression(), kgo.NoCompression()))
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	r := rand.New(rand.NewPCG(seed, seed))
	for i := 0; ctx.Err() == nil; i++ {
		if err := cl.BeginTransaction(); err != nil {
			t.Error(err)
			return
		}
		n := 1 + r.IntN(6)
		for j := 0; j < n; j++ {
			rec := &kgo.Record{
				Topic:     topic,
				Partition: r.Int32N(partitions),
				Key:       []byte(fmt.Sprintf("%s-k%d", id, r.IntN(20))),
				Value:     []byte(fmt.Sprintf("%s txn %d record %d", id, i, j)),
				Headers:   []kgo.RecordHeader{{Key: "txn", Value: []byte(id)}},
			}
			if err := cl.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond) // let the other producers interleave
		}
		commit := r.IntN(3) != 0
		if err := cl.EndTransaction(context.Background(), kgo.TransactionEndTry(commit)); err != nil {
			t.Error(err)
			return
		}
		if commit {
			commits++
		} else {
			aborts++
		}
	}
	return commits, aborts
}

// Test 1 of the Exact-offsets issue: two transactional producers committing
// and aborting at random, interleaved with each other and with a plain
// producer on the same partitions, while klink mirrors. read_committed and
// read_uncommitted readers on both sides agree offset for offset, and every
// marker is at its source offset.
func TestMirrorInterleavedTransactions(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "tx", 3, nil)
		r, _ := runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: "tx"}))

		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		var mu sync.Mutex
		commits, aborts := 0, 0
		for i, id := range []string{"app-a", "app-b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, a := txnProducer(ctx, t, src, id, "tx", 3, uint64(i+1))
				mu.Lock()
				commits += c
				aborts += a
				mu.Unlock()
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			plain := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
			for i := 0; ctx.Err() == nil; i++ {
				rec := &kgo.Record{Topic: "tx", Partition: int32(i % 3), Key: []byte(fmt.Sprint("plain-", i%7)), Value: []byte(fmt.Sprint("plain ", i))}
				if err := plain.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
		wg.Wait()
		if commits == 0 || aborts == 0 {
			t.Fatalf("%d commits and %d aborts: the test needs both", commits, aborts)
		}
		waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"tx", "tx"})
		committed, uncommitted, fillers := requireExact(t, src, dst, "tx", "tx", 3)
		if committed == 0 || uncommitted <= committed {
			t.Fatalf("committed %d, uncommitted %d records: aborted data missing from the test", committed, uncommitted)
		}
		t.Logf("%d commits, %d aborts: %d committed and %d uncommitted records identical, %d fillers", commits, aborts, committed, uncommitted, fillers)
		if m := r.Status().Links[0].Mirrors[0]; m.State != "ACTIVE" {
			t.Fatalf("mirror %s: %s", m.State, m.Reason)
		}
	})
}

// produceChangelog writes keyed records (overwrites and tombstones), in
// small batches with mixed codecs, plus a transactional producer's commits
// and aborts: a compacted changelog topic's traffic.
func produceChangelog(t *testing.T, c *kafkatest.Cluster, topic string, round int) {
	t.Helper()
	produceChangelogAt(t, c, topic, round, time.Time{})
}

// produceChangelogAt is produceChangelog with the records' create time at
// ts (zero: now).
func produceChangelogAt(t *testing.T, c *kafkatest.Cluster, topic string, round int, ts time.Time) {
	t.Helper()
	for i, codec := range []kgo.CompressionCodec{kgo.NoCompression(), kgo.Lz4Compression(), kgo.ZstdCompression()} {
		cl := newClient(t, c, kgo.ProducerBatchCompression(codec), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		var rs []*kgo.Record
		for j := 0; j < 40; j++ {
			r := &kgo.Record{Topic: topic, Partition: int32(j % 2), Key: []byte(fmt.Sprintf("key-%d", (j*7+round)%13)), Value: []byte(fmt.Sprintf("round %d codec %d record %d", round, i, j)), Timestamp: ts}
			if j%9 == 4 {
				r.Value = nil // tombstone
			}
			rs = append(rs, r)
		}
		for k := 0; k < len(rs); k += 8 {
			produceSync(t, cl, rs[k:k+8]...)
		}
	}
	txp := newClient(t, c, kgo.TransactionalID(fmt.Sprint("changelog-", round)), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 4; i++ {
		if err := txp.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 6; j++ {
			r := &kgo.Record{Topic: topic, Partition: int32(j % 2), Key: []byte(fmt.Sprintf("key-%d", (i+j)%13)), Value: []byte(fmt.Sprintf("round %d txn %d record %d", round, i, j)), Timestamp: ts}
			if err := txp.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txp.EndTransaction(ctx, kgo.TransactionEndTry(i != 2)); err != nil {
			t.Fatal(err)
		}
	}
}

func countHoleyBatches(t *testing.T, c *kafkatest.Cluster, topic string, partitions int32) int {
	t.Helper()
	n := 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for p := int32(0); p < partitions; p++ {
		bs, err := mirrorcheck.ReadBatches(ctx, c.ListenAddrs(), topic, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			if b.HasHoles() {
				n++
			}
		}
	}
	return n
}

// compactedTopicConfigs make a real broker's log cleaner compact a topic
// within a second of a segment roll (kfake ignores them and compacts on
// demand). The destination gets them too, as the mirror's configs, so its
// own cleaner compacts the mirror on its own schedule.
var compactedTopicConfigs = map[string]*string{
	"cleanup.policy":            kmsgStr("compact"),
	"segment.ms":                kmsgStr("100"),
	"min.cleanable.dirty.ratio": kmsgStr("0.001"),
	"min.compaction.lag.ms":     kmsgStr("0"),
}

// cleanerOpts make real brokers' log cleaners look for work every 100 ms.
var cleanerOpts = kafkatest.BrokerConfig("log.cleaner.backoff.ms=100")

// compact has the source's log cleaner compact topic: kfake at once; a
// real broker's cleaner once the active segment rolled (a record per
// partition after segment.ms), waiting until its checkpoint shows it
// cleaned everything before the roll.
func compact(t *testing.T, c *kafkatest.Cluster, topic string, partitions int32) {
	t.Helper()
	if c.IsFake() {
		c.Fake().Compact()
		return
	}
	time.Sleep(300 * time.Millisecond) // segment.ms
	ends := endOffsets(t, c, topic)
	cl := newClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := int32(0); p < partitions; p++ {
		produceSync(t, cl, &kgo.Record{Topic: topic, Partition: p, Key: []byte("roll"), Value: []byte("rolls the segment")})
	}
	waitFor(t, 60*time.Second, "the source's log cleaner", func() bool {
		for p := int32(0); p < partitions; p++ {
			if c.CleanedTo(t, topic, p) < ends[p] {
				return false
			}
		}
		return true
	})
}

// requireCompactionKept checks a compacted mirror the way two log
// cleaners, each on its own schedule, leave a topic and its mirror: every
// record both sides still hold at one offset is identical, and for every
// key the latest record (tombstones included) is the same record at the
// same offset on both. Read read_committed: cleaners drop aborted data,
// and fillers with it. It returns how many records both sides hold.
func requireCompactionKept(t *testing.T, src, dst *kafkatest.Cluster, topic string) (common int) {
	t.Helper()
	s, d := readAllAs(t, src, topic, mirrorcheck.ReadCommitted), readAllAs(t, dst, topic, mirrorcheck.ReadCommitted)
	for p := range s {
		dstAt := map[int64]*kgo.Record{}
		dstLatest := map[string]*kgo.Record{}
		for _, r := range d[p] {
			if mirrorcheck.IsFiller(r) {
				t.Fatalf("partition %d: a read_committed reader sees a filler at %d", p, r.Offset)
			}
			dstAt[r.Offset] = r
			dstLatest[string(r.Key)] = r
		}
		srcLatest := map[string]*kgo.Record{}
		for _, r := range s[p] {
			srcLatest[string(r.Key)] = r
			if dr, ok := dstAt[r.Offset]; ok {
				if err := mirrorcheck.Same(r, dr); err != nil {
					t.Fatalf("partition %d offset %d: %v", p, r.Offset, err)
				}
				common++
			}
		}
		if len(srcLatest) != len(dstLatest) {
			t.Fatalf("partition %d: %d keys on the source, %d on the destination", p, len(srcLatest), len(dstLatest))
		}
		for k, sr := range srcLatest {
			dr, ok := dstLatest[k]
			if !ok {
				t.Fatalf("partition %d: key %q missing on the destination", p, k)
			}
			if err := mirrorcheck.Same(sr, dr); err != nil {
				t.Fatalf("partition %d: latest record of key %q: %v", p, k, err)
			}
		}
	}
	for p := range d {
		if _, ok := s[p]; !ok && len(d[p]) > 0 {
			t.Fatalf("partition %d: the destination holds records the source does not", p)
		}
	}
	return common
}

// Test 3: a compacted topic compacted on the source before klink starts and
// again while it runs, with klink restarted in between: every surviving
// source record is at its offset on the destination, tombstones included;
// batches with holes are rebuilt run by run, holes become invisible
// fillers. On real brokers the destination's own cleaner compacts the
// mirror too, so there the check is what compaction keeps.
func TestMirrorCompactedTopic(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k, cleanerOpts)
		createTopic(t, src, "ct", 2, compactedTopicConfigs)
		for round := 0; round < 3; round++ {
			produceChangelog(t, src, "ct", round)
		}
		compact(t, src, "ct", 2)
		holey := countHoleyBatches(t, src, "ct", 2)
		if holey == 0 {
			t.Fatal("compaction left no batch with holes: the test would not exercise rebuilding")
		}
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "ct"})
		r, stop := runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"ct", "ct"})
		var rebuilt int64
		for _, p := range r.Status().Links[0].Mirrors[0].Partitions {
			rebuilt += p.RebuiltBatches
		}
		if k == kafkatest.KFake {
			// requireExact checks every other batch arrived byte for byte
			// (zero copy); only the batches with holes went the slow path.
			_, uncommitted, fillers := requireExact(t, src, dst, "ct", "ct", 2)
			if rebuilt != int64(holey) {
				t.Fatalf("klink rebuilt %d batches; the source has %d batches with holes (and only those may be rebuilt)", rebuilt, holey)
			}
			if fillers == 0 {
				t.Fatal("no fillers: compaction left no holes")
			}
			t.Logf("first pass: %d records, %d fillers", uncommitted, fillers)
		} else {
			// The source's cleaner may have cleaned more since it was
			// counted: at least those batches were rebuilt.
			if rebuilt < int64(holey) {
				t.Fatalf("klink rebuilt %d batches; the source had %d batches with holes", rebuilt, holey)
			}
			t.Logf("first pass: %d records held on both sides, %d batches rebuilt", requireCompactionKept(t, src, dst, "ct"), rebuilt)
		}
		tombstones := 0
		for _, recs := range readAll(t, dst, "ct") {
			for _, rec := range recs {
				if rec.Value == nil && !mirrorcheck.IsFiller(rec) {
					tombstones++
				}
			}
		}
		if tombstones == 0 {
			t.Fatal("no tombstone reached the destination")
		}

		// klink restarted; more traffic, and a compaction while klink
		// mirrors it.
		stop()
		r, _ = runReplicator(t, cfg)
		produceChangelog(t, src, "ct", 3)
		before := readAll(t, src, "ct")
		compact(t, src, "ct", 2)
		produceChangelog(t, src, "ct", 4)
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"ct", "ct"})
		if k == kafkatest.Kafka {
			t.Logf("second pass: %d records held on both sides", requireCompactionKept(t, src, dst, "ct"))
		} else {
			// kfake does not compact the destination: it keeps what it
			// copied, and holds every record the source still has.
			now := readAll(t, src, "ct")
			dstRecs := readAll(t, dst, "ct")
			for p, recs := range dstRecs {
				known := map[int64]*kgo.Record{}
				for _, set := range []mirrorcheck.Records{before, now} {
					for _, rec := range set[p] {
						known[rec.Offset] = rec
					}
				}
				for _, d := range recs {
					if mirrorcheck.IsFiller(d) {
						continue
					}
					s, ok := known[d.Offset]
					if !ok {
						t.Fatalf("partition %d: destination offset %d holds a record the source never had", p, d.Offset)
					}
					if err := mirrorcheck.Same(s, d); err != nil {
						t.Fatalf("partition %d offset %d: %v", p, d.Offset, err)
					}
				}
			}
			for p, recs := range now {
				byOff := map[int64]*kgo.Record{}
				for _, d := range dstRecs[p] {
					byOff[d.Offset] = d
				}
				for _, s := range recs {
					d, ok := byOff[s.Offset]
					if !ok {
						t.Fatalf("partition %d: surviving source record at offset %d missing on the destination", p, s.Offset)
					}
					if err := mirrorcheck.Same(s, d); err != nil {
						t.Fatalf("partition %d offset %d: %v", p, s.Offset, err)
					}
				}
			}
		}
		for _, p := range r.Status().Links[0].Mirrors[0].Partitions {
			if p.Error != "" {
				t.Fatalf("partition %d: %s", p.Partition, p.Error)
			}
		}
		if m := r.Status().Links[0].Mirrors[0]; m.State != "ACTIVE" {
			t.Fatalf("mirror %s: %s", m.State, m.Reason)
		}
	})
}

func kmsgStr(s string) *string { return &s }

// A compacted topic with message.timestamp.type=LogAppendTime, cleaned by
// Kafka's log cleaner: its batches with holes carry the LogAppendTime
// flag, and klink rebuilds their runs as CreateTime batches holding the
// append time, which consumers see on both sides. (Seen on Kafka 3.8: the
// cleaner writes the append time into every record it keeps, and the
// broker took a flagged run and rewrote the flag to its topic's
// CreateTime; klink relies on neither.) Real brokers only: kfake ignores
// both topic configs.
func TestMirrorCompactedLogAppendTime(t *testing.T) {
	kafkatest.RequireManaged(t)
	src, dst := testClusters(t, kafkatest.Kafka, cleanerOpts)
	configs := maps.Clone(compactedTopicConfigs)
	configs["message.timestamp.type"] = kmsgStr("LogAppendTime")
	createTopic(t, src, "clat", 2, configs)
	// Create times of 2001: a consumer sees the append times instead.
	for round := 0; round < 3; round++ {
		produceChangelogAt(t, src, "clat", round, time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC))
	}
	compact(t, src, "clat", 2)
	if countHoleyBatches(t, src, "clat", 2) == 0 {
		t.Fatal("compaction left no batch with holes: the test would not exercise rebuilding")
	}
	// The mirror's segments never roll: its own cleaner leaves it as klink
	// wrote it, to be compared exactly.
	r, _ := runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: "clat", Configs: config.Properties{"segment.ms": "604800000"}}))
	waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"clat", "clat"})
	committed, uncommitted, fillers := requireExact(t, src, dst, "clat", "clat", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for p := int32(0); p < 2; p++ {
		sb, err := mirrorcheck.ReadBatches(ctx, src.ListenAddrs(), "clat", p)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range sb {
			if !b.IsControl() && !b.IsLogAppendTime() {
				t.Fatalf("source batch at %d has no LogAppendTime flag", b.BaseOffset())
			}
		}
		db, err := mirrorcheck.ReadBatches(ctx, dst.ListenAddrs(), "clat", p)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range db {
			if b.IsLogAppendTime() {
				t.Fatalf("destination batch at %d has the LogAppendTime flag", b.BaseOffset())
			}
		}
	}
	if m := mirrorStatus(t, r, "clat"); m.State != "ACTIVE" {
		t.Fatalf("mirror %s: %s", m.State, m.Reason)
	}
	t.Logf("%d committed and %d uncommitted records identical, %d fillers", committed, uncommitted, fillers)
}
