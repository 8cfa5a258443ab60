package bench

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/klink-io/klink/replicator/batch"
)

// testBatch is a zstd batch of about 1 MiB of JSON-like records, the shape
// the end-to-end benchmark uses.
func testBatch(b *testing.B) batch.Batch {
	b.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	var raw []byte
	n := 3300
	for i := 0; i < n; i++ {
		v := fmt.Appendf(nil, `{"id":%d,"text":"`, r.Int64())
		for len(v) < 900 {
			v = fmt.Appendf(v, "order %d customer %d ", r.IntN(100000), r.IntN(1000))
		}
		raw = batch.AppendRecord(raw, batch.Record{OffsetDelta: int32(i), Key: fmt.Appendf(nil, "k%d", i%100), Value: v})
	}
	bt, err := batch.Build(batch.CodecZstd, 0, int32(n-1), 1, 1, int32(n), raw)
	if err != nil {
		b.Fatal(err)
	}
	bt.Rewrite(batch.Producer{ID: 1}, 0, bt.RecordsCRC())
	return bt
}

// What klink does to each batch: check the source CRC, rewrite the header
// for its own producer, recompute the CRC. Bytes/s are batch bytes.
func BenchmarkKlinkPerBatch(b *testing.B) {
	bt := testBatch(b)
	b.SetBytes(int64(len(bt)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		crc, err := bt.Verify()
		if err != nil {
			b.Fatal(err)
		}
		bt.Rewrite(batch.Producer{ID: 5, Epoch: 1, Sequence: int32(i)}, batch.AttrTransactional, crc)
	}
}

// What a consume/re-produce replicator does to each batch at the least:
// decompress it, walk its records, re-encode and recompress them.
func BenchmarkRecompressPerBatch(b *testing.B) {
	bt := testBatch(b)
	b.SetBytes(int64(len(bt)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		recs, err := bt.Decode()
		if err != nil {
			b.Fatal(err)
		}
		var raw []byte
		for _, r := range recs {
			raw = batch.AppendRecord(raw, r)
		}
		if _, err := batch.Build(batch.CodecZstd, 0, bt.LastOffsetDelta(), bt.BaseTimestamp(), bt.MaxTimestamp(), bt.NumRecords(), raw); err != nil {
			b.Fatal(err)
		}
	}
}

// Filling a gap of 1M offsets (source log start 1M, or a long run of
// transaction markers), in batches of 100k zstd filler records.
func BenchmarkFillers1M(b *testing.B) {
	for i := 0; i < b.N; i++ {
		bs, err := batch.Fillers(1_000_000, 1, 1_048_588)
		if err != nil {
			b.Fatal(err)
		}
		for j, f := range bs {
			f.Rewrite(batch.Producer{ID: 1, Sequence: int32(j * batch.MaxFillerRecords)}, 0, f.RecordsCRC())
		}
	}
}
