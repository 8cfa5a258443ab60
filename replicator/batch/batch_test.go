package batch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

type rec struct {
	key, value []byte
	tsDelta    int64
	headers    []kmsg.Header
}

// makeBatch encodes a v2 batch the way a producer would, independently of
// the code under test (kmsg's encoder).
func makeBatch(t testing.TB, codec int, attrs int16, baseTs int64, recs []rec) Batch {
	t.Helper()
	var raw []byte
	var maxTs int64 = baseTs
	for i, r := range recs {
		kr := kmsg.Record{TimestampDelta64: r.tsDelta, OffsetDelta: int32(i), Key: r.key, Value: r.value, Headers: r.headers}
		body := kr.AppendTo(nil)[1:] // length 0 is one byte; strip it
		kr.Length = int32(len(body))
		raw = kr.AppendTo(raw)
		if baseTs+r.tsDelta > maxTs {
			maxTs = baseTs + r.tsDelta
		}
	}
	section, err := compress(codec, raw)
	if err != nil {
		t.Fatal(err)
	}
	kb := kmsg.RecordBatch{
		FirstOffset: 0, PartitionLeaderEpoch: -1, Magic: 2,
		Attributes: attrs | int16(codec), LastOffsetDelta: int32(len(recs) - 1),
		FirstTimestamp: baseTs, MaxTimestamp: maxTs,
		ProducerID: 4242, ProducerEpoch: 3, FirstSequence: 17,
		NumRecords: int32(len(recs)), Records: section,
	}
	out := kb.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	b := Batch(out)
	binary.BigEndian.PutUint32(b[offCRC:], b.ComputeCRC())
	return b
}

// readRecords decodes a batch with kmsg, as a consumer would.
func readRecords(t testing.TB, b Batch) []kmsg.Record {
	t.Helper()
	raw, err := b.Decompress()
	if err != nil {
		t.Fatal(err)
	}
	var out []kmsg.Record
	for len(raw) > 0 {
		l, n := binary.Varint(raw)
		var r kmsg.Record
		if err := r.ReadFrom(raw[:n+int(l)]); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
		raw = raw[n+int(l):]
	}
	return out
}

func sampleRecords(n int) []rec {
	var rs []rec
	for i := 0; i < n; i++ {
		r := rec{value: []byte(fmt.Sprintf("value-%d", i)), tsDelta: int64(i * 3)}
		if i%2 == 0 {
			r.key = []byte(fmt.Sprintf("key-%d", i))
		}
		if i%3 == 0 {
			r.headers = []kmsg.Header{{Key: "h", Value: []byte{byte(i)}}}
		}
		rs = append(rs, r)
	}
	return rs
}

func TestSplitKeepsWholeBatchesOnly(t *testing.T) {
	a := makeBatch(t, CodecNone, 0, 1000, sampleRecords(3))
	a.SetBaseOffset(10)
	b := makeBatch(t, CodecZstd, 0, 1000, sampleRecords(5))
	b.SetBaseOffset(13)
	c := makeBatch(t, CodecGzip, 0, 1000, sampleRecords(2))
	buf := append(append(append([]byte{}, a...), b...), c[:len(c)-7]...) // c cut short
	got, err := Split(buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].BaseOffset() != 10 || got[1].BaseOffset() != 13 || got[1].NextOffset() != 18 {
		t.Fatalf("split = %d batches", len(got))
	}
	if !bytes.Equal(got[1], b) {
		t.Fatal("second batch differs")
	}
	for _, g := range got {
		if _, err := g.Verify(); err != nil {
			t.Fatal(err)
		}
	}
}

// The sums taken while a record set is hot pair with Split's batches, and a
// sum that is not the batch's own fails VerifySum as corruption would.
func TestRecordsCRCs(t *testing.T) {
	a := makeBatch(t, CodecNone, 0, 1000, sampleRecords(3))
	b := makeBatch(t, CodecZstd, 0, 1000, sampleRecords(5))
	c := makeBatch(t, CodecGzip, 0, 1000, sampleRecords(2))
	set := append(append(append([]byte{}, a...), b...), c[:len(c)-7]...) // c cut short
	sums := RecordsCRCs(nil, set)
	if len(sums) != 2 || sums[0] != a.RecordsCRC() || sums[1] != b.RecordsCRC() {
		t.Fatalf("sums %08x, want %08x %08x", sums, a.RecordsCRC(), b.RecordsCRC())
	}
	if crc, err := b.VerifySum(sums[1]); err != nil || crc != sums[1] {
		t.Fatalf("VerifySum of the batch's own sum: %08x, %v", crc, err)
	}
	if _, err := b.VerifySum(sums[0]); err == nil {
		t.Fatal("VerifySum took another batch's sum")
	}
	old := make([]byte, 40)
	binary.BigEndian.PutUint32(old[8:], 28)
	old[16] = 1
	if got := RecordsCRCs(nil, append(append([]byte{}, a...), old...)); len(got) != 1 {
		t.Fatalf("%d sums over a batch and an old-format one", len(got))
	}
}

func TestSplitRefusesOldFormat(t *testing.T) {
	old := make([]byte, 40)
	binary.BigEndian.PutUint64(old, 77)
	binary.BigEndian.PutUint32(old[8:], 28)
	old[16] = 1
	if _, err := Split(old); err == nil || !bytes.Contains([]byte(err.Error()), []byte("offset 77")) {
		t.Fatalf("old format: %v", err)
	}
}

func TestRewriteKeepsRecordsAndFixesCRC(t *testing.T) {
	for _, codec := range []int{CodecNone, CodecGzip, CodecSnappy, CodecLz4, CodecZstd} {
		b := makeBatch(t, codec, AttrTransactional, 5000, sampleRecords(20))
		b.SetBaseOffset(99)
		records := append([]byte(nil), b.Records()...)
		b.Rewrite(Producer{ID: 7, Epoch: 2, Sequence: 300}, AttrTransactional, b.RecordsCRC())
		if _, err := b.Verify(); err != nil {
			t.Fatalf("codec %d: %v", codec, err)
		}
		if b.BaseOffset() != 0 || b.ProducerID() != 7 || b.ProducerEpoch() != 2 || b.BaseSequence() != 300 || b.IsTransactional() || b.Codec() != codec {
			t.Fatalf("codec %d: header not rewritten: pid %d epoch %d seq %d attrs %x", codec, b.ProducerID(), b.ProducerEpoch(), b.BaseSequence(), b.Attributes())
		}
		if !bytes.Equal(b.Records(), records) {
			t.Fatalf("codec %d: records section changed", codec)
		}
		if len(readRecords(t, b)) != 20 {
			t.Fatalf("codec %d: records unreadable", codec)
		}
	}
}

func TestVerifyCatchesCorruption(t *testing.T) {
	b := makeBatch(t, CodecNone, 0, 5000, sampleRecords(4))
	b[len(b)-1] ^= 0xff
	if _, err := b.Verify(); err == nil {
		t.Fatal("corrupt batch verified")
	}
}

func TestFillers(t *testing.T) {
	for _, n := range []int64{1, 7, 256, 257, MaxFillerRecords, MaxFillerRecords + 3, 250_001} {
		bs, err := Fillers(n, 12345, 1_048_588)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, b := range bs {
			if _, err := b.Verify(); err != nil {
				t.Fatal(err)
			}
			if len(b) > 1_048_588 {
				t.Fatalf("filler batch of %d bytes", len(b))
			}
			rs := readRecords(t, b)
			if int32(len(rs)) != b.NumRecords() || int64(len(rs)) != b.OffsetSpan() {
				t.Fatalf("n=%d: %d records, header says %d, span %d", n, len(rs), b.NumRecords(), b.OffsetSpan())
			}
			for i, r := range rs {
				if int(r.OffsetDelta) != i || !IsFiller(r.Key) || r.Value != nil || len(r.Headers) != 1 || r.Headers[0].Key != FillerHeader || r.TimestampDelta64 != 0 {
					t.Fatalf("n=%d: filler record %d = %+v", n, i, r)
				}
			}
			if b.BaseTimestamp() != 12345 || b.MaxTimestamp() != 12345 {
				t.Fatal("filler timestamps")
			}
			total += b.OffsetSpan()
		}
		if total != n {
			t.Fatalf("fillers cover %d offsets, want %d", total, n)
		}
	}
}

func TestFillersRespectSmallMaxBytes(t *testing.T) {
	bs, err := Fillers(5000, 1, 4096)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, b := range bs {
		if len(b) > 4096 {
			t.Fatalf("batch of %d bytes over 4096", len(b))
		}
		total += b.OffsetSpan()
	}
	if total != 5000 {
		t.Fatalf("covered %d", total)
	}
}

func TestClearLogAppendTime(t *testing.T) {
	for _, codec := range []int{CodecNone, CodecGzip, CodecSnappy, CodecLz4, CodecZstd} {
		recs := sampleRecords(10)
		b := makeBatch(t, codec, AttrLogAppendTime, 1000, recs)
		// The broker's append time lives in maxTimestamp.
		binary.BigEndian.PutUint64(b[offMaxTimestamp:], 777_000)
		binary.BigEndian.PutUint32(b[offCRC:], b.ComputeCRC())
		b.SetBaseOffset(50)
		nb, err := b.ClearLogAppendTime()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nb.Verify(); err != nil {
			t.Fatal(err)
		}
		if nb.IsLogAppendTime() || nb.Codec() != codec || nb.BaseOffset() != 50 || nb.NumRecords() != 10 || nb.LastOffsetDelta() != 9 {
			t.Fatalf("codec %d: header %x", codec, nb.Attributes())
		}
		if nb.BaseTimestamp() != 777_000 || nb.MaxTimestamp() != 777_000 || nb.ProducerID() != 4242 {
			t.Fatalf("codec %d: timestamps %d %d", codec, nb.BaseTimestamp(), nb.MaxTimestamp())
		}
		for i, r := range readRecords(t, nb) {
			if r.TimestampDelta64 != 0 || !bytes.Equal(r.Value, recs[i].value) || !bytes.Equal(r.Key, recs[i].key) || len(r.Headers) != len(recs[i].headers) || int(r.OffsetDelta) != i {
				t.Fatalf("codec %d: record %d = %+v", codec, i, r)
			}
			if recs[i].key == nil && r.Key != nil {
				t.Fatalf("null key became non-null")
			}
		}
	}
}

// crcCombine agrees with computing the CRC over the joined bytes.
func TestCRCCombine(t *testing.T) {
	data := make([]byte, 1<<20+17)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	for _, cut := range []int{0, 1, 40, 4095, 4096, 1 << 19, len(data) - 1, len(data)} {
		a, b := data[:cut], data[cut:]
		whole := crc32.Checksum(data, castagnoli)
		got := crcCombine(crc32.Checksum(a, castagnoli), crc32.Checksum(b, castagnoli), int64(len(b)))
		if got != whole {
			t.Fatalf("cut %d: combined %08x, whole %08x", cut, got, whole)
		}
	}
}

// Verify catches a change anywhere in the CRC-covered part, header or records.
func TestVerifyCoversHeaderAndRecords(t *testing.T) {
	for _, at := range []int{offAttributes, offMaxTimestamp + 3, offProducerID, offRecordCount - 1, HeaderSize, HeaderSize + 20} {
		b := makeBatch(t, CodecNone, 0, 5000, sampleRecords(4))
		b[at] ^= 0x10
		if _, err := b.Verify(); err == nil {
			t.Fatalf("change at byte %d not detected", at)
		}
	}
}

// holey builds a batch whose records sit at the given offset deltas (what
// the log cleaner leaves), keeping the original lastOffsetDelta.
func holey(t *testing.T, codec int, deltas []int32, lastDelta int32) (Batch, []rec) {
	t.Helper()
	recs := sampleRecords(len(deltas))
	var raw []byte
	for i, r := range recs {
		var hs []RecordHeader
		for _, h := range r.headers {
			hs = append(hs, RecordHeader{Key: h.Key, Value: h.Value})
		}
		raw = AppendRecord(raw, Record{TimestampDelta: r.tsDelta, OffsetDelta: deltas[i], Key: r.key, Value: r.value, Headers: hs})
	}
	b, err := Build(codec, AttrTransactional, lastDelta, 9000, 9999, int32(len(deltas)), raw)
	if err != nil {
		t.Fatal(err)
	}
	b.SetBaseOffset(100)
	copy(b[offProducerID:], []byte{0, 0, 0, 0, 0, 0, 0, 42})
	return b, recs
}

func TestSplitRuns(t *testing.T) {
	for _, codec := range []int{CodecNone, CodecGzip, CodecSnappy, CodecLz4, CodecZstd} {
		deltas := []int32{0, 1, 4, 5, 6, 9}
		b, recs := holey(t, codec, deltas, 11)
		if !b.HasHoles() {
			t.Fatal("HasHoles = false")
		}
		runs, err := b.SplitRuns()
		if err != nil {
			t.Fatal(err)
		}
		want := [][2]int64{{100, 101}, {104, 106}, {109, 109}}
		if len(runs) != len(want) {
			t.Fatalf("codec %d: %d runs", codec, len(runs))
		}
		i := 0
		for ri, r := range runs {
			if r.BaseOffset() != want[ri][0] || r.LastOffset() != want[ri][1] || r.HasHoles() || r.Codec() != codec || !r.IsTransactional() || r.ProducerID() != 42 {
				t.Fatalf("codec %d run %d: %d..%d holes=%v codec=%d txn=%v", codec, ri, r.BaseOffset(), r.LastOffset(), r.HasHoles(), r.Codec(), r.IsTransactional())
			}
			if _, err := r.Verify(); err != nil {
				t.Fatal(err)
			}
			for j, rr := range readRecords(t, r) {
				src := recs[i]
				if int64(rr.OffsetDelta) != int64(j) || rr.TimestampDelta64 != src.tsDelta || !bytes.Equal(rr.Value, src.value) || !bytes.Equal(rr.Key, src.key) || (rr.Key == nil) != (src.key == nil) || len(rr.Headers) != len(src.headers) {
					t.Fatalf("codec %d run %d record %d = %+v", codec, ri, j, rr)
				}
				if r.BaseOffset()+int64(rr.OffsetDelta) != 100+int64(deltas[i]) {
					t.Fatalf("record %d moved", i)
				}
				i++
			}
			if r.BaseTimestamp() != 9000 {
				t.Fatalf("base timestamp %d", r.BaseTimestamp())
			}
		}
	}
}

func TestControlType(t *testing.T) {
	for _, typ := range []int16{ControlAbort, ControlCommit} {
		raw := AppendRecord(nil, Record{Key: []byte{0, 0, 0, byte(typ)}, Value: []byte{0, 0, 0, 0, 0, 0}})
		b, err := Build(CodecNone, AttrTransactional|AttrControl, 0, 1, 1, 1, raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.ControlType()
		if err != nil || got != typ {
			t.Fatalf("ControlType = %d, %v; want %d", got, err, typ)
		}
	}
	if _, err := makeBatch(t, CodecNone, 0, 1, sampleRecords(1)).ControlType(); err == nil {
		t.Fatal("data batch read as a marker")
	}
}
