package bench

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/klink-io/klink/replicator/batch"
)

// compactedLog builds a compacted changelog partition the way Kafka's log
// cleaner leaves it: a cleaned section (every key's latest record only, so
// its batches have holes, or no records at all) followed by a dirty head of
// the same size that the cleaner has not reached (min.cleanable.dirty.ratio
// 0.5). Batches are zstd, 250 records of ~200-byte values over 20,000 keys.
func compactedLog(b *testing.B) []batch.Batch {
	b.Helper()
	const (
		batches = 400
		perB    = 250
		keys    = 20000
	)
	r := rand.New(rand.NewPCG(3, 4))
	type rec struct {
		key   int
		value []byte
	}
	log := make([][]rec, batches)
	latest := map[int]int{} // key -> offset of its latest record
	for i := range log {
		for j := 0; j < perB; j++ {
			k := r.IntN(keys)
			v := fmt.Appendf(nil, `{"key":%d,"version":%d,"payload":"`, k, i*perB+j)
			for len(v) < 200 {
				v = fmt.Appendf(v, "state %d ", r.IntN(1_000_000))
			}
			log[i] = append(log[i], rec{k, v})
			if i < batches/2 {
				latest[k] = i*perB + j
			}
		}
	}
	var out []batch.Batch
	for i, recs := range log {
		var raw []byte
		n := int32(0)
		for j, rc := range recs {
			off := i*perB + j
			if i < batches/2 && latest[rc.key] != off {
				continue // the cleaner removed it
			}
			raw = batch.AppendRecord(raw, batch.Record{OffsetDelta: int32(j), TimestampDelta: int64(j), Key: fmt.Appendf(nil, "key-%d", rc.key), Value: rc.value})
			n++
		}
		bt, err := batch.Build(batch.CodecZstd, 0, perB-1, 1_700_000_000_000, 1_700_000_000_000+perB-1, n, raw)
		if err != nil {
			b.Fatal(err)
		}
		bt.SetBaseOffset(int64(i * perB))
		bt.Rewrite(batch.Producer{ID: 1}, 0, bt.RecordsCRC())
		out = append(out, bt)
	}
	return out
}

// mirrorBatch is what klink's data path does to one fetched batch on its
// way to the destination (see replicator/replay.go plan and appendData):
// verify, then rewrite the header in place, or, for a batch with holes,
// decompress, split into runs, recompress each run, and rewrite those.
// Empty batches become fillers (not counted here: no bytes of data).
func mirrorBatch(b *testing.B, bt batch.Batch, seq int32) {
	crc, err := bt.Verify()
	if err != nil {
		b.Fatal(err)
	}
	switch {
	case bt.NumRecords() == 0:
	case bt.HasHoles():
		runs, err := bt.SplitRuns()
		if err != nil {
			b.Fatal(err)
		}
		for _, run := range runs {
			run.Rewrite(batch.Producer{ID: 5, Sequence: seq}, batch.AttrDeleteHorizon, run.RecordsCRC())
		}
	default:
		bt.Rewrite(batch.Producer{ID: 5, Sequence: seq}, batch.AttrDeleteHorizon, crc)
	}
}

// Test 5 of the Exact-offsets issue: on a compacted changelog, the share of
// bytes that take the slow path (rebuilt batches) and what they cost next
// to zero-copy batches. Compare the MB/s of the zero-copy and rebuilt
// sub-benchmarks; "all" reports the slow-path share as slow-bytes-%.
//
//	go test -run '^$' -bench CompactedLog -benchtime 2s ./bench/
func BenchmarkCompactedLog(b *testing.B) {
	log := compactedLog(b)
	var zeroCopy, rebuilt []batch.Batch
	var zcBytes, rbBytes int64
	for _, bt := range log {
		switch {
		case bt.HasHoles():
			rebuilt = append(rebuilt, bt)
			rbBytes += int64(len(bt))
		case bt.NumRecords() > 0:
			zeroCopy = append(zeroCopy, bt)
			zcBytes += int64(len(bt))
		}
	}
	run := func(name string, bs []batch.Batch, bytes int64) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(bytes)
			for i := 0; i < b.N; i++ {
				for j, bt := range bs {
					mirrorBatch(b, bt, int32(j))
				}
			}
			if name == "all" {
				b.ReportMetric(100*float64(rbBytes)/float64(rbBytes+zcBytes), "slow-bytes-%")
			}
		})
	}
	run("zero-copy", zeroCopy, zcBytes)
	run("rebuilt", rebuilt, rbBytes)
	run("all", append(append([]batch.Batch(nil), zeroCopy...), rebuilt...), zcBytes+rbBytes)
}
