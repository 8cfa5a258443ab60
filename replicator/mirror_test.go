package replicator

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/config"
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
	src, dst := testClusters(t)
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
	if len(st.Links) != 1 || st.Links[0].SourceClusterID != "source-cluster" || st.Links[0].DestinationClusterID != "destination-cluster" {
		t.Fatalf("status links = %+v", st.Links)
	}
	for _, m := range st.Links[0].Mirrors {
		if m.State != "ACTIVE" || m.Lag != 0 || len(m.Partitions) != 3 {
			t.Fatalf("mirror status %+v", m)
		}
	}
}
