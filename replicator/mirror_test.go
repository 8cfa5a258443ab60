package replicator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

var codecs = map[string]kgo.CompressionCodec{
	"none":   kgo.NoCompression(),
	"gzip":   kgo.GzipCompression(),
	"snappy": kgo.SnappyCompression(),
	"lz4":    kgo.Lz4Compression(),
	"zstd":   kgo.ZstdCompression(),
}

// testRecords builds records with null and non-null keys, headers, and
// timestamps from 2001 onwards.
func testRecords(topic string, n int, tag string) []*kgo.Record {
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	var rs []*kgo.Record
	for i := 0; i < n; i++ {
		r := &kgo.Record{
			Topic:     topic,
			Value:     []byte(fmt.Sprintf("%s-value-%d-%s", topic, i, tag)),
			Timestamp: old.Add(time.Duration(i) * time.Hour),
			Partition: int32(i % 3),
		}
		if i%4 != 0 {
			r.Key = []byte(fmt.Sprintf("key-%d", i%17))
		}
		if i%3 == 0 {
			r.Headers = []kgo.RecordHeader{{Key: "h1", Value: []byte(tag)}, {Key: "empty", Value: nil}}
		}
		if i%10 == 0 {
			r.Value = nil
		}
		rs = append(rs, r)
	}
	return rs
}

// Test 1: all five codecs, null and non-null keys, headers, old timestamps:
// the destination equals the source record by record, and every batch's
// records section is byte-identical.
func TestMirrorAllCodecs(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		var mirrors []config.MirrorTopic
		var pairs [][2]string
		for name, codec := range codecs {
			topic := "codec-" + name
			createTopic(t, src, topic, 3, nil)
			cl := newClient(t, src, kgo.ProducerBatchCompression(codec), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
			// Several rounds, so that each partition holds many batches.
			rs := testRecords(topic, 300, "before")
			for i := 0; i < len(rs); i += 30 {
				produceSync(t, cl, rs[i:i+30]...)
			}
			mirrors = append(mirrors, config.MirrorTopic{Name: topic})
			pairs = append(pairs, [2]string{topic, topic})
		}
		cfg := testConfig(t, src, dst, nil, mirrors...)
		r, _ := runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 30*time.Second, pairs...)

		// Records produced while the link runs are mirrored too.
		for name, codec := range codecs {
			topic := "codec-" + name
			cl := newClient(t, src, kgo.ProducerBatchCompression(codec), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			produceSync(t, cl, testRecords(topic, 100, "during")...)
		}
		waitCaughtUp(t, src, dst, 30*time.Second, pairs...)

		for name := range codecs {
			topic := "codec-" + name
			s, d := readAll(t, src, topic), readAll(t, dst, topic)
			if s.Count() != 400 {
				t.Fatalf("%s: source has %d records", topic, s.Count())
			}
			requireSameRecords(t, s, d)
			if d.Count() != 400 {
				t.Fatalf("%s: destination has %d records, source 400", topic, d.Count())
			}
			for p := int32(0); p < 3; p++ {
				requireIdenticalBatches(t, src, dst, topic, topic, p)
			}
		}
		st := r.Status()
		if len(st.Links) != 1 || st.Links[0].SourceClusterID != src.ID(t) || st.Links[0].DestinationClusterID != dst.ID(t) {
			t.Fatalf("status links = %+v", st.Links)
		}
		for _, m := range st.Links[0].Mirrors {
			if m.State != "ACTIVE" || m.Lag != 0 || len(m.Partitions) != 3 {
				t.Fatalf("mirror status %+v", m)
			}
		}
	})
}

// produceRounds writes n records of tag to one partition of topic, rounds
// records per produce call, so that the partition holds many batches.
func produceRounds(t *testing.T, cl *kgo.Client, topic string, p int32, n, round int, tag string) {
	t.Helper()
	rs := testRecords(topic, n, tag)
	for _, r := range rs {
		r.Partition = p
	}
	for i := 0; i < len(rs); i += round {
		produceSync(t, cl, rs[i:min(i+round, len(rs))]...)
	}
}

func deleteRecords(t *testing.T, c *kafkatest.Cluster, topic string, at map[int32]int64) {
	t.Helper()
	var os kadm.Offsets
	for p, o := range at {
		os.AddOffset(topic, p, o, -1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resps, err := kadm.NewClient(newClient(t, c)).DeleteRecords(ctx, os)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Test 2: a source whose log start is > 0 (DeleteRecords, here inside a
// batch) is mirrored at identical offsets, and the destination log starts
// where the source's does.
func TestMirrorSourceLogStartAboveZero(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "t", 2, nil)
		cl := newClient(t, src, kgo.ProducerBatchCompression(kgo.ZstdCompression()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceRounds(t, cl, "t", 0, 500, 10, "a")
		produceRounds(t, cl, "t", 1, 300, 7, "b")
		deleteRecords(t, src, "t", map[int32]int64{0: 137, 1: 300}) // 137: inside a batch; 300: the end

		runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: "t"}))
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"t", "t"})
		waitFor(t, 10*time.Second, "destination log start == source log start", func() bool {
			ss, ds := startOffsets(t, src, "t"), startOffsets(t, dst, "t")
			return ds[0] == ss[0] && ds[1] == ss[1]
		})
		if ds := startOffsets(t, dst, "t"); ds[0] != 137 || ds[1] != 300 {
			t.Fatalf("destination log start = %v", ds)
		}
		produceRounds(t, cl, "t", 1, 50, 5, "c")
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"t", "t"})
		s, d := readAll(t, src, "t"), readAll(t, dst, "t")
		requireSameRecords(t, s, d)
		if s.Count() != 363+50 || d.Count() != s.Count() {
			t.Fatalf("records: source %d, destination %d", s.Count(), d.Count())
		}
		if d[0][0].Offset != 137 || d[1][0].Offset != 300 {
			t.Fatalf("first destination offsets %d, %d", d[0][0].Offset, d[1][0].Offset)
		}
	})
}

// Test 3: mirror.start.offset.spec latest: only records produced after the
// mirror started are copied, at their source offsets.
func TestMirrorStartLatest(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "t", 2, nil)
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceRounds(t, cl, "t", 0, 200, 20, "old")
		produceRounds(t, cl, "t", 1, 70, 20, "old")

		r, _ := runReplicator(t, testConfig(t, src, dst, config.Properties{"mirror.start.offset.spec": "latest"}, config.MirrorTopic{Name: "t"}))
		waitFor(t, 20*time.Second, "mirror ACTIVE", func() bool {
			ms := r.Status().Links[0].Mirrors
			return len(ms) == 1 && ms[0].State == "ACTIVE"
		})
		waitFor(t, 10*time.Second, "destination aligned to the source end", func() bool {
			ds := startOffsets(t, dst, "t")
			return ds[0] == 200 && ds[1] == 70
		})
		produceRounds(t, cl, "t", 0, 100, 10, "new")
		produceRounds(t, cl, "t", 1, 30, 10, "new")
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"t", "t"})

		s, d := readAll(t, src, "t"), readAll(t, dst, "t")
		for p, start := range map[int32]int64{0: 200, 1: 70} {
			var kept []*kgo.Record
			for _, r := range s[p] {
				if r.Offset >= start {
					kept = append(kept, r)
				}
			}
			s[p] = kept
		}
		requireSameRecords(t, s, d)
		if d.Count() != 130 {
			t.Fatalf("destination has %d records, want the 130 produced after the start", d.Count())
		}
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Test 5: partition leaders move on both clusters while records flow:
// nothing is lost or duplicated.
func TestMirrorLeaderMoves(t *testing.T) {
	src, dst := testClusters(t, kafkatest.KFake)
	createTopic(t, src, "t", 4, nil)
	runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: "t"}))

	cl := newClient(t, src, kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.ProducerLinger(2*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	produced := make(chan int)
	go func() {
		n := 0
		for i := 0; ctx.Err() == nil; i++ {
			rs := testRecords("t", 20, fmt.Sprint(i))
			for _, r := range rs {
				r.Partition = 0
			}
			if err := cl.ProduceSync(ctx, rs...).FirstErr(); err == nil {
				n += len(rs)
			}
		}
		produced <- n
	}()
	// Wait for the destination topic, then move leaders around on both
	// sides for a while.
	waitFor(t, 20*time.Second, "destination topic", func() bool { return len(endOffsets(t, dst, "t")) == 4 })
	for i := 0; i < 12; i++ {
		time.Sleep(150 * time.Millisecond)
		switch i % 3 {
		case 0:
			src.Fake().ShufflePartitionLeaders()
		case 1:
			dst.Fake().ShufflePartitionLeaders()
		case 2:
			for p := int32(0); p < 4; p++ {
				if err := src.Fake().MoveTopicPartition("t", p, int32((i+int(p))%3)); err != nil {
					t.Fatal(err)
				}
				if err := dst.Fake().MoveTopicPartition("t", p, int32((i+int(p)+1)%3)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	cancel()
	n := <-produced
	waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"t", "t"})
	s, d := readAll(t, src, "t"), readAll(t, dst, "t")
	requireSameRecords(t, s, d)
	if d.Count() != s.Count() || s.Count() < n {
		t.Fatalf("source %d records (%d acknowledged to the producer), destination %d", s.Count(), n, d.Count())
	}
}

// Test 6: something else writes into a mirror topic: that mirror goes
// FAILED with a reason naming topic, partition and offsets; the other
// mirror goes on.
func TestMirrorForeignWriterFails(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "a", 1, nil)
		createTopic(t, src, "b", 1, nil)
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceRounds(t, cl, "a", 0, 50, 10, "1")
		produceRounds(t, cl, "b", 0, 50, 10, "1")
		failedBefore := testutil.ToFloat64(errorsTotal.WithLabelValues("test-link", "mirror_failed"))
		r, _ := runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: "a"}, config.MirrorTopic{Name: "b"}))
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"a", "a"}, [2]string{"b", "b"})

		intruder := newClient(t, dst, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceSync(t, intruder, &kgo.Record{Topic: "a", Partition: 0, Value: []byte("not from the source")})
		produceRounds(t, cl, "a", 0, 30, 10, "2")
		produceRounds(t, cl, "b", 0, 30, 10, "2")

		var reason string
		waitFor(t, 20*time.Second, "mirror a FAILED", func() bool {
			for _, m := range r.Status().Links[0].Mirrors {
				if m.Name == "a" && m.State == "FAILED" {
					reason = m.Reason
					return true
				}
			}
			return false
		})
		for _, want := range []string{"a[0]", "50", "51"} {
			if !strings.Contains(reason, want) {
				t.Fatalf("reason %q does not name %q", reason, want)
			}
		}
		if n := testutil.ToFloat64(errorsTotal.WithLabelValues("test-link", "mirror_failed")) - failedBefore; n != 1 {
			t.Fatalf("klink_errors_total{kind=mirror_failed} grew by %v, want 1", n)
		}
		// b keeps mirroring and stays exact.
		produceRounds(t, cl, "b", 0, 30, 10, "3")
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"b", "b"})
		requireSameRecords(t, readAll(t, src, "b"), readAll(t, dst, "b"))
		// klink wrote nothing more into a after noticing: a's destination end
		// is the intruder's record plus at most the appends already in flight.
		before := endOffsets(t, dst, "a")[0]
		produceRounds(t, cl, "a", 0, 30, 10, "4")
		time.Sleep(time.Second)
		if after := endOffsets(t, dst, "a")[0]; after != before {
			t.Fatalf("klink kept writing into the FAILED mirror: end offset %d -> %d", before, after)
		}
		for _, m := range r.Status().Links[0].Mirrors {
			if m.Name == "b" && m.State != "ACTIVE" {
				t.Fatalf("mirror b is %s: %s", m.State, m.Reason)
			}
		}
	})
}

// A destination topic that exists before klink created it is never written
// into.
func TestMirrorRefusesForeignDestinationTopic(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "t", 1, nil)
		createTopic(t, dst, "t", 1, nil)
		produceRounds(t, newClient(t, src), "t", 0, 10, 10, "x")
		r, _ := runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: "t"}))
		waitFor(t, 20*time.Second, "mirror FAILED", func() bool {
			m := r.Status().Links[0].Mirrors[0]
			return m.State == "FAILED" && strings.Contains(m.Reason, "klink did not create")
		})
		if e := endOffsets(t, dst, "t")[0]; e != 0 {
			t.Fatalf("klink wrote %d offsets into a topic it did not create", e)
		}
	})
}

// Source topics with message.timestamp.type=LogAppendTime: Kafka refuses
// produced batches with that flag; the destination must still show the
// source's (broker-assigned) timestamps.
func TestMirrorLogAppendTime(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		topic := produceLogAppendTime(t, src, func(cl *kgo.Client, topic, tag string) {
			produceRounds(t, cl, topic, 0, 40, 10, tag)
			produceRounds(t, cl, topic, 1, 25, 5, tag)
		})
		runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: topic}))
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{topic, topic})
		s, d := readAll(t, src, topic), readAll(t, dst, topic)
		requireSameRecords(t, s, d)
		if d.Count() != 5*65 {
			t.Fatalf("destination has %d records", d.Count())
		}
		// The source records really carry append times (the same within a
		// batch), and the destination batches are CreateTime.
		if s[0][0].Timestamp.Year() < 2020 {
			t.Fatalf("source timestamps are not append times: %v", s[0][0].Timestamp)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for p := int32(0); p < 2; p++ {
			sb, err := mirrorcheck.ReadBatches(ctx, src.ListenAddrs(), topic, p)
			if err != nil {
				t.Fatal(err)
			}
			identical, rebuilt, err := mirrorcheck.ComparePartitionBatches(ctx, src.ListenAddrs(), dst.ListenAddrs(), topic, topic, p)
			if err != nil || rebuilt != len(sb) || identical != 0 {
				t.Fatalf("partition %d: %d of %d batches rebuilt, %d copied: %v", p, rebuilt, len(sb), identical, err)
			}
			db, err := mirrorcheck.ReadBatches(ctx, dst.ListenAddrs(), topic, p)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range db {
				if b.IsLogAppendTime() {
					t.Fatalf("destination batch at %d has the LogAppendTime flag", b.BaseOffset())
				}
			}
		}
		// The destination topic was created CreateTime.
		rcs, err := kadm.NewClient(newClient(t, dst)).DescribeTopicConfigs(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := rcs.On(topic, nil)
		for _, c := range rc.Configs {
			if c.Key == "message.timestamp.type" && (c.Value == nil || *c.Value != "CreateTime") {
				t.Fatalf("destination message.timestamp.type = %v", c.MaybeValue())
			}
		}
	})
}

// produceLogAppendTime makes the source hold LogAppendTime batches, as a
// broker does for a topic with message.timestamp.type=LogAppendTime: the
// flag set and the append time in the batch timestamps. A real broker does
// it by itself. kfake ignores the
// topic config, and when it sees the flag on a produced batch it sets the
// timestamps to its clock but keeps the CRC it was sent. So a produce hook
// sets the flag and the timestamps and computes the CRC at the start of a
// millisecond, and kfake, microseconds later, agrees on the millisecond;
// the stored batches are checked and the rare miss is produced again into a
// fresh topic. It returns the topic holding the batches.
func produceLogAppendTime(t *testing.T, src *kafkatest.Cluster, produce func(cl *kgo.Client, topic, tag string)) string {
	t.Helper()
	if !src.IsFake() {
		const topic = "lat"
		createTopic(t, src, topic, 2, map[string]*string{"message.timestamp.type": kmsg.StringPtr("LogAppendTime")})
		for name, codec := range codecs {
			produce(newClient(t, src, kgo.ProducerBatchCompression(codec), kgo.RecordPartitioner(kgo.ManualPartitioner())), topic, name)
			time.Sleep(2 * time.Millisecond) // distinct append times per codec
		}
		return topic
	}
	fake := src.Fake()
	var target atomic.Value // [16]byte topic id
	target.Store([16]byte{})
	fake.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		id := target.Load().([16]byte)
		for _, rt := range kreq.(*kmsg.ProduceRequest).Topics {
			if rt.TopicID != id {
				continue
			}
			for _, rp := range rt.Partitions {
				for time.Now().Nanosecond()%1e6 > 300e3 {
				}
				now := time.Now().UnixMilli()
				b := batch.Batch(rp.Records)
				binary.BigEndian.PutUint16(b[21:], uint16(b.Attributes()|batch.AttrLogAppendTime))
				binary.BigEndian.PutUint64(b[27:], uint64(now))
				binary.BigEndian.PutUint64(b[35:], uint64(now))
				binary.BigEndian.PutUint32(b[17:], b.ComputeCRC())
			}
		}
		return nil, nil, false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
attempts:
	for attempt := 0; attempt < 5; attempt++ {
		topic := fmt.Sprintf("lat-%d", attempt)
		createTopic(t, src, topic, 2, map[string]*string{"message.timestamp.type": kmsg.StringPtr("LogAppendTime")})
		md, err := kadm.NewClient(newClient(t, src)).Metadata(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		target.Store([16]byte(md.Topics[topic].ID))
		for name, codec := range codecs {
			produce(newClient(t, src, kgo.ProducerBatchCompression(codec), kgo.RecordPartitioner(kgo.ManualPartitioner())), topic, name)
			time.Sleep(2 * time.Millisecond) // distinct append times per codec
		}
		for p := int32(0); p < 2; p++ {
			bs, err := mirrorcheck.ReadBatches(ctx, src.ListenAddrs(), topic, p)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range bs {
				if !b.IsLogAppendTime() {
					t.Fatalf("source batch at %d has no LogAppendTime flag", b.BaseOffset())
				}
				if _, err := b.Verify(); err != nil {
					continue attempts
				}
			}
		}
		target.Store([16]byte{})
		return topic
	}
	t.Fatal("could not make kfake store LogAppendTime batches")
	return ""
}

// trimBelow drops records below each partition's given offset.
func trimBelow(rs mirrorcheck.Records, from map[int32]int64) mirrorcheck.Records {
	out := mirrorcheck.Records{}
	for p, recs := range rs {
		for _, r := range recs {
			if r.Offset >= from[p] {
				out[p] = append(out[p], r)
			}
		}
	}
	return out
}

// A restart resumes from the destination log end; offsets the source lost to
// retention while klink was down are filled; nothing is duplicated.
func TestMirrorRestartResumesAndFillsRetentionGap(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "t", 2, nil)
		cl := newClient(t, src, kgo.ProducerBatchCompression(kgo.SnappyCompression()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceRounds(t, cl, "t", 0, 100, 10, "1")
		produceRounds(t, cl, "t", 1, 100, 10, "1")
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "t"})
		_, stop := runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"t", "t"})
		stop()

		produceRounds(t, cl, "t", 0, 100, 10, "2")
		produceRounds(t, cl, "t", 1, 100, 10, "2")
		deleteRecords(t, src, "t", map[int32]int64{1: 150}) // retention passed the mirror's end (100)

		r, _ := runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"t", "t"})
		s := readAll(t, src, "t")
		d := trimBelow(readAll(t, dst, "t"), map[int32]int64{0: 0, 1: 150})
		requireSameRecords(t, s, d)
		if s.Count() != 250 || d.Count() != 250 {
			t.Fatalf("source %d records, destination %d", s.Count(), d.Count())
		}
		// Offsets 100..148 of partition 1 are fillers on the destination and
		// 149 the abort marker of the transaction that holds them, so that
		// read_committed readers see none of them.
		all := readAll(t, dst, "t")
		fillers := 0
		for _, rec := range all[1] {
			if mirrorcheck.IsFiller(rec) {
				if rec.Offset < 100 || rec.Offset >= 149 {
					t.Fatalf("filler at offset %d", rec.Offset)
				}
				fillers++
			}
		}
		if fillers != 49 {
			t.Fatalf("%d fillers, want 49", fillers)
		}
		for _, rec := range readAllAs(t, dst, "t", mirrorcheck.ReadCommitted)[1] {
			if mirrorcheck.IsFiller(rec) {
				t.Fatalf("read_committed reader sees a filler at offset %d", rec.Offset)
			}
		}
		for _, m := range r.Status().Links[0].Mirrors {
			for _, p := range m.Partitions {
				if p.Partition == 1 && (p.FilledOffsets != 50 || p.FilledRanges != 1) {
					t.Fatalf("partition 1 status: %+v", p)
				}
			}
		}
	})
}

// After a restart, a destination tail that differs from the source (here:
// written by someone else while klink was down) fails the mirror instead of
// being built upon.
func TestMirrorRestartCheckFindsForeignTail(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "t", 1, nil)
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceRounds(t, cl, "t", 0, 30, 10, "1")
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "t"})
		_, stop := runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"t", "t"})
		stop()

		produceRounds(t, cl, "t", 0, 30, 10, "2")
		produceSync(t, newClient(t, dst, kgo.RecordPartitioner(kgo.ManualPartitioner())), &kgo.Record{Topic: "t", Partition: 0, Value: []byte("intruder")})
		r, stop := runReplicator(t, cfg)
		waitFor(t, 20*time.Second, "mirror FAILED", func() bool {
			m := r.Status().Links[0].Mirrors[0]
			return m.State == "FAILED" && strings.Contains(m.Reason, "t[0]") && strings.Contains(m.Reason, "30")
		})
		if e := endOffsets(t, dst, "t")[0]; e != 31 {
			t.Fatalf("destination end %d: klink wrote after finding the foreign tail", e)
		}
		// FAILED survives a restart.
		stop()
		r2, _ := runReplicator(t, cfg)
		waitFor(t, 10*time.Second, "mirror still FAILED", func() bool {
			return r2.Status().Links[0].Mirrors[0].State == "FAILED"
		})
	})
}

// A link refuses a source that answers with another cluster ID than the one
// it was set up with.
func TestLinkRefusesOtherSourceCluster(t *testing.T) {
	src, dst := testClusters(t, kafkatest.KFake)
	createTopic(t, src, "t", 1, nil)
	cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "t"})
	r, stop := runReplicator(t, cfg)
	waitFor(t, 20*time.Second, "link running", func() bool { return r.Status().Links[0].State == LinkRunning })
	stop()

	other, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("another-cluster"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	cfg.Links[0].Source.Bootstrap = other.ListenAddrs()
	r, _ = runReplicator(t, cfg)
	waitFor(t, 20*time.Second, "link FAILED", func() bool {
		s := r.Status().Links[0]
		return s.State == LinkFailed && strings.Contains(s.Error, "source-cluster") && strings.Contains(s.Error, "another-cluster")
	})

	// And a config clusterID guards the very first start.
	cfg2 := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "t"})
	cfg2.Links[0].Source.ClusterID = "expected-cluster"
	r, _ = runReplicator(t, cfg2)
	waitFor(t, 20*time.Second, "link FAILED on clusterID", func() bool {
		s := r.Status().Links[0]
		return s.State == LinkFailed && strings.Contains(s.Error, "expected-cluster")
	})
}

// Appends that fail (refused, or applied but answered with an error) and
// connections that drop, on both sides, while records flow: the mirror
// recovers from the destination's log end each time and stays exact.
func TestMirrorSurvivesFaults(t *testing.T) {
	src, dst := testClusters(t, kafkatest.KFake)
	createTopic(t, src, "t", 3, nil)
	r, _ := runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: "t"}))
	cl := newClient(t, src, kgo.ProducerBatchCompression(kgo.GzipCompression()), kgo.ProducerLinger(time.Millisecond))
	waitFor(t, 20*time.Second, "destination topic", func() bool { return len(endOffsets(t, dst, "t")) == 3 })

	var drops atomic.Int32
	var dropping atomic.Bool
	dropping.Store(true)
	dropEvery := func(c *kfake.Cluster, key kmsg.Key) {
		c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			if dropping.Load() && drops.Add(1)%7 == 0 {
				return nil, errors.New("injected connection drop"), true
			}
			return nil, nil, false
		})
	}
	faults := []kfake.Fault{
		{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.RequestTimedOut, Count: 4},              // applied, then answered with an error
		{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.NotEnoughReplicasAfterAppend, Count: 2}, // applied too
		{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.NotLeaderForPartition, Count: 4},        // refused
		{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.OutOfOrderSequenceNumber, Count: 2},     // refused
	}
	for i := 0; i < 8; i++ {
		for _, rec := range testRecords("t", 60, fmt.Sprint("round-", i)) {
			rec.Partition = -1
			cl.Produce(context.Background(), rec, nil)
		}
		switch i {
		case 1:
			dst.Fake().Fault(faults...)
		case 3:
			src.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: "t", Err: kerr.NotLeaderForPartition, Count: 3})
			dropEvery(src.Fake(), kmsg.Fetch)
		case 5:
			dropEvery(dst.Fake(), kmsg.Produce)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := cl.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Let klink go through a few more drops, then stop them so that the
	// check below reads undisturbed.
	waitFor(t, 20*time.Second, "more dropped connections", func() bool { return drops.Load() >= 30 })
	dropping.Store(false)
	waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"t", "t"})
	s, d := readAll(t, src, "t"), readAll(t, dst, "t")
	requireSameRecords(t, s, d)
	if s.Count() != 480 || d.Count() != 480 {
		t.Fatalf("source %d records, destination %d", s.Count(), d.Count())
	}
	if m := r.Status().Links[0].Mirrors[0]; m.State != "ACTIVE" {
		t.Fatalf("mirror %s: %s", m.State, m.Reason)
	}
	// Caught up and idle: nothing fetched is still counted against the
	// fetch limits (dropped results and failed appends gave theirs back).
	f := r.links[0].fetchers
	waitFor(t, 5*time.Second, "fetch accounting back to zero", func() bool { return f.buffered.Load() == 0 })
}

// Two mirrors of one source topic in one link each get every record, at the
// source offsets, and no fillers.
func TestMirrorTwoMirrorsOfOneSourceTopic(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "t", 1, nil)
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceRounds(t, cl, "t", 0, 300, 10, "1")
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "a", SourceTopicName: "t"})
		_, stop := runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"t", "a"})
		stop()
		// The second mirror starts from 0 while the first one is at 300: the
		// two cursors on one source partition fetch different offsets.
		cfg.Links[0].MirrorTopics = append(cfg.Links[0].MirrorTopics, config.MirrorTopic{Name: "b", SourceTopicName: "t"})
		runReplicator(t, cfg)
		for i := 0; i < 10; i++ {
			produceRounds(t, cl, "t", 0, 30, 10, fmt.Sprint("2-", i))
			time.Sleep(50 * time.Millisecond)
		}
		waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"t", "a"}, [2]string{"t", "b"})
		s := readAll(t, src, "t")
		for _, name := range []string{"a", "b"} {
			matched, fillers, err := mirrorcheck.Compare(s, readAll(t, dst, name))
			if err != nil || fillers != 0 || matched != 600 {
				t.Fatalf("mirror %s: %d matched, %d fillers: %v", name, matched, fillers, err)
			}
		}
	})
}

// The source log start moves inside a batch beyond the mirror's end while
// klink is down (DeleteRecords, as Kafka Streams does on repartition
// topics): the offsets before the batch are filled and the batch is copied
// whole.
func TestMirrorSourceLogStartInsideBatchWhileBehind(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "t", 1, nil)
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceRounds(t, cl, "t", 0, 100, 10, "1")
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "t"})
		_, stop := runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"t", "t"})
		stop()
		produceRounds(t, cl, "t", 0, 100, 10, "2")
		deleteRecords(t, src, "t", map[int32]int64{0: 155}) // inside batch 150..159
		r, _ := runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"t", "t"})
		requireSameRecords(t, readAll(t, src, "t"), trimBelow(readAll(t, dst, "t"), map[int32]int64{0: 155}))
		if m := r.Status().Links[0].Mirrors[0]; m.State != "ACTIVE" || m.Partitions[0].FilledOffsets != 50 {
			t.Fatalf("mirror %s (%s), filled %d offsets (want 100..149)", m.State, m.Reason, m.Partitions[0].FilledOffsets)
		}
	})
}

// A source topic deleted and recreated under the same name has other
// offsets: the mirror fails instead of mixing them in.
func TestMirrorSourceTopicRecreatedFails(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "t", 1, nil)
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceRounds(t, cl, "t", 0, 100, 10, "1")
		r, _ := runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: "t"}))
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"t", "t"})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := kadm.NewClient(newClient(t, src)).DeleteTopics(ctx, "t"); err != nil {
			t.Fatal(err)
		}
		createTopic(t, src, "t", 1, nil)
		produceRounds(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "t", 0, 300, 10, "2")
		waitFor(t, 30*time.Second, "mirror FAILED", func() bool {
			m := r.Status().Links[0].Mirrors[0]
			return m.State == "FAILED" && strings.Contains(m.Reason, "recreated")
		})
		if e := endOffsets(t, dst, "t")[0]; e != 100 {
			t.Fatalf("destination end %d: records of the new topic were mixed in", e)
		}
	})
}
