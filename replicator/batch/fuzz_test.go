package batch

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

var allCodecs = []int{CodecNone, CodecGzip, CodecSnappy, CodecLz4, CodecZstd}

// buildRecords encodes records at the given offset deltas (nil deltas:
// 0, 1, 2, ...) with AppendRecord, for Build.
func buildRecords(rs []rec, deltas []int32) []byte {
	var raw []byte
	for i, r := range rs {
		d := int32(i)
		if deltas != nil {
			d = deltas[i]
		}
		var hs []RecordHeader
		for _, h := range r.headers {
			hs = append(hs, RecordHeader{Key: h.Key, Value: h.Value})
		}
		raw = AppendRecord(raw, Record{TimestampDelta: r.tsDelta, OffsetDelta: d, Key: r.key, Value: r.value, Headers: hs})
	}
	return raw
}

// fuzzSeedBatches are real batches of every codec and kind klink meets: plain
// data (encoded by kmsg), transactional, control markers, LogAppendTime,
// empty batches and batches with holes left by the log cleaner, fillers.
func fuzzSeedBatches(f *testing.F) []Batch {
	var out []Batch
	build := func(codec int, attrs int16, lastDelta int32, baseTs, maxTs int64, n int32, raw []byte) Batch {
		b, err := Build(codec, attrs, lastDelta, baseTs, maxTs, n, raw)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	for _, codec := range allCodecs {
		plain := makeBatch(f, codec, 0, 1_700_000_000_000, sampleRecords(7))
		plain.SetBaseOffset(1000)
		txn := makeBatch(f, codec, AttrTransactional, 1_700_000_000_000, sampleRecords(3))
		txn.SetBaseOffset(42)
		lat := makeBatch(f, codec, AttrLogAppendTime, 1_700_000_000_000, sampleRecords(4))
		binary.BigEndian.PutUint64(lat[offMaxTimestamp:], 1_700_000_999_000)
		binary.BigEndian.PutUint32(lat[offCRC:], lat.ComputeCRC())
		one := makeBatch(f, codec, 0, 5, []rec{{key: nil, value: nil}}) // a tombstone with a null key
		// The log cleaner leaves empty batches (all records gone, the
		// offset range kept) and batches with holes.
		empty := build(codec, AttrTransactional, 4, 9000, 9000, 0, nil)
		empty.SetBaseOffset(200)
		holey := build(codec, AttrTransactional|AttrDeleteHorizon, 11, 9000, 9999, 6, buildRecords(sampleRecords(6), []int32{0, 1, 4, 5, 6, 9}))
		holey.SetBaseOffset(100)
		copy(holey[offProducerID:], []byte{0, 0, 0, 0, 0, 0, 0, 42})
		binary.BigEndian.PutUint32(holey[offCRC:], holey.ComputeCRC())
		holeyLAT := build(codec, AttrLogAppendTime, 3, 10, 20, 2, buildRecords(sampleRecords(2), []int32{1, 3}))
		out = append(out, plain, txn, lat, one, empty, holey, holeyLAT)
	}
	for _, typ := range []int16{ControlAbort, ControlCommit} {
		marker := build(CodecNone, AttrTransactional|AttrControl, 0, 1, 1, 1, AppendRecord(nil, Record{Key: []byte{0, 0, 0, byte(typ)}, Value: []byte{0, 0, 0, 0, 0, 0}}))
		marker.SetBaseOffset(77)
		out = append(out, marker)
	}
	fillers, err := Fillers(300, 123, 1<<20) // one zstd batch
	if err != nil {
		f.Fatal(err)
	}
	small, err := Fillers(3, 123, 1<<20)
	if err != nil {
		f.Fatal(err)
	}
	return append(append(out, fillers...), small...)
}

// FuzzBatch feeds arbitrary bytes to Split, as a Fetch response's record
// set, and every batch it returns to everything klink does with a source
// batch: Verify, the accessors, Decode, the header rewrite, the rebuild of
// batches with holes (SplitRuns) and of LogAppendTime batches. fixCRC sets
// each batch's CRC right first, so that mutated contents get past Verify.
func FuzzBatch(f *testing.F) {
	seeds := fuzzSeedBatches(f)
	var all []byte
	for _, b := range seeds {
		f.Add([]byte(b), false)
		all = append(all, b...)
	}
	f.Add(all, false)
	f.Add(append(append([]byte(nil), all...), seeds[0][:40]...), false) // cut short at the end
	old := make([]byte, 40)
	binary.BigEndian.PutUint32(old[8:], 28)
	old[16] = 1
	f.Add(append(append([]byte(nil), seeds[0]...), old...), false)
	f.Add([]byte(seeds[5]), true)

	f.Fuzz(func(t *testing.T, data []byte, fixCRC bool) {
		orig := bytes.Clone(data)
		bs, err := Split(data)
		checkSplit(t, orig, bs, err)
		if !bytes.Equal(data, orig) {
			t.Fatal("Split changed its input")
		}
		checkSums(t, data, bs)
		for _, b := range bs {
			if !smallWhenDecompressed(b) {
				continue
			}
			b = Batch(bytes.Clone(b))
			if fixCRC {
				binary.BigEndian.PutUint32(b[offCRC:], b.ComputeCRC())
			}
			checkBatch(t, b)
		}
	})
}

// checkSums checks RecordsCRCs against the batches Split found in set: a
// sum for each of the first batches, each the batch's own RecordsCRC (a
// shifted sum would make a good batch fail, or a corrupt one pass, in
// VerifySum), and none beyond the batches.
func checkSums(t *testing.T, set []byte, bs []Batch) {
	t.Helper()
	sums := RecordsCRCs(nil, set)
	if len(sums) > len(bs) {
		t.Fatalf("%d sums for %d batches", len(sums), len(bs))
	}
	for i, s := range sums {
		if want := bs[i].RecordsCRC(); s != want {
			t.Fatalf("sum %d is %08x, the batch's records CRC is %08x", i, s, want)
		}
	}
}

// fuzzMaxDecompressed bounds what a fuzzed batch may claim to decompress
// to. kgo's DefaultDecompressor allows 2 GiB and allocates snappy's and
// zstd's declared sizes up front: a ten byte section would cost the fuzzer
// gigabytes.
const fuzzMaxDecompressed = 16 << 20

// smallWhenDecompressed reports whether the batch's records section
// declares (snappy, zstd) or can reach (gzip, lz4, by their maximum ratios)
// at most fuzzMaxDecompressed bytes.
func smallWhenDecompressed(b Batch) bool {
	src := b.Records()
	switch b.Codec() {
	case CodecGzip:
		return len(src)*1100 <= fuzzMaxDecompressed
	case CodecLz4:
		return len(src)*260 <= fuzzMaxDecompressed
	case CodecSnappy:
		if len(src) > 16 && bytes.HasPrefix(src, []byte{130, 83, 78, 65, 80, 80, 89, 0}) { // xerial framing
			var total uint64
			for rem := src[16:]; len(rem) >= 4; {
				size := uint64(binary.BigEndian.Uint32(rem))
				rem = rem[4:]
				if size > uint64(len(rem)) {
					break
				}
				l, _ := binary.Uvarint(rem[:size])
				if total += l; total > fuzzMaxDecompressed {
					return false
				}
				rem = rem[size:]
			}
			return true
		}
		l, _ := binary.Uvarint(src)
		return l <= fuzzMaxDecompressed
	case CodecZstd:
		return zstdBound(src) <= fuzzMaxDecompressed
	}
	return true
}

// zstdBound is the most the zstd frames in src declare or can hold: each
// frame's content size, or the sum of its blocks' sizes (a compressed block
// regenerates at most 128 KiB), whichever is larger.
func zstdBound(src []byte) uint64 {
	var total uint64
	for len(src) >= 4 {
		magic := binary.LittleEndian.Uint32(src)
		src = src[4:]
		if magic&0xfffffff0 == 0x184d2a50 { // skippable frame
			if len(src) < 4 {
				break
			}
			n := uint64(binary.LittleEndian.Uint32(src))
			if n > uint64(len(src)-4) {
				break
			}
			src = src[4+n:]
			continue
		}
		if magic != 0xfd2fb528 || len(src) < 1 {
			break
		}
		fhd := src[0]
		src = src[1:]
		single := fhd>>5&1 == 1
		skip := []int{0, 1, 2, 4}[fhd&3]
		if !single {
			skip++
		}
		fcsSize := []int{0, 2, 4, 8}[fhd>>6]
		if fhd>>6 == 0 && single {
			fcsSize = 1
		}
		if len(src) < skip+fcsSize {
			break
		}
		var fcs uint64
		for i := fcsSize - 1; i >= 0; i-- {
			fcs = fcs<<8 | uint64(src[skip+i])
		}
		if fcsSize == 2 {
			fcs += 256
		}
		src = src[skip+fcsSize:]
		var blocks uint64
		for len(src) >= 3 {
			h := uint32(src[0]) | uint32(src[1])<<8 | uint32(src[2])<<16
			src = src[3:]
			size := int(h >> 3)
			switch h >> 1 & 3 {
			case 0: // raw
				blocks += uint64(size)
			case 1: // RLE
				blocks += uint64(size)
				size = 1
			default:
				blocks += 128 << 10
			}
			if size > len(src) {
				src = nil
				break
			}
			src = src[size:]
			if h&1 == 1 {
				break
			}
		}
		if fhd>>2&1 == 1 && len(src) >= 4 {
			src = src[4:]
		}
		total += max(fcs, blocks)
	}
	return total
}

// checkSplit: the batches are the input's leading whole batches, in order,
// each as long as its length field says; what is left is an error's cause
// or a batch cut short.
func checkSplit(t *testing.T, data []byte, bs []Batch, err error) {
	t.Helper()
	at := 0
	for i, b := range bs {
		if len(b) < HeaderSize {
			t.Fatalf("batch %d is %d bytes, shorter than a header", i, len(b))
		}
		if !bytes.Equal(b, data[at:at+len(b)]) {
			t.Fatalf("batch %d is not the input's bytes at %d", i, at)
		}
		if got := 12 + int(int32(binary.BigEndian.Uint32(b[offLength:]))); got != len(b) || b[offMagic] != 2 {
			t.Fatalf("batch %d: %d bytes, length field says %d, magic %d", i, len(b), got, b[offMagic])
		}
		at += len(b)
	}
	rest := data[at:]
	if err == nil && len(rest) >= offMagic+1 {
		if size := 12 + int(int32(binary.BigEndian.Uint32(rest[offLength:]))); rest[offMagic] != 2 || size >= HeaderSize && size <= len(rest) || size < HeaderSize {
			t.Fatalf("Split stopped at %d without an error before a whole batch (%d bytes left, length %d, magic %d)", at, len(rest), size, rest[offMagic])
		}
	}
	if err != nil && len(rest) < offMagic+1 {
		t.Fatalf("Split failed with nothing left to read: %v", err)
	}
}

func checkBatch(t *testing.T, b Batch) {
	t.Helper()
	// Accessors agree with the bytes.
	if b.NextOffset() != b.LastOffset()+1 || b.LastOffset() != b.BaseOffset()+int64(b.LastOffsetDelta()) || b.OffsetSpan() != int64(b.LastOffsetDelta())+1 {
		t.Fatal("offset accessors disagree")
	}
	if b.Codec() != int(b.Attributes()&AttrCodecMask) || b.IsControl() != (b.Attributes()&AttrControl != 0) ||
		b.IsTransactional() != (b.Attributes()&AttrTransactional != 0) || b.IsLogAppendTime() != (b.Attributes()&AttrLogAppendTime != 0) {
		t.Fatal("attribute accessors disagree")
	}
	_, _, _, _, _, _ = b.BaseTimestamp(), b.MaxTimestamp(), b.ProducerID(), b.ProducerEpoch(), b.BaseSequence(), b.HasHoles()
	// The combined CRC (header, then records read once) is the CRC of
	// the whole covered part.
	if got, want := b.crcWith(b.RecordsCRC()), b.ComputeCRC(); got != want {
		t.Fatalf("crcWith = %08x, ComputeCRC = %08x", got, want)
	}

	crc, verr := b.Verify()
	switch {
	case verr == nil && (b.CRC() != b.ComputeCRC() || crc != b.RecordsCRC() || b.LastOffsetDelta() < 0 || b.NumRecords() < 0):
		t.Fatalf("Verify passed a bad batch: stored %08x computed %08x, lastOffsetDelta %d, %d records", b.CRC(), b.ComputeCRC(), b.LastOffsetDelta(), b.NumRecords())
	case verr != nil && b.CRC() == b.ComputeCRC() && b.LastOffsetDelta() >= 0 && b.NumRecords() >= 0:
		t.Fatalf("Verify refused a consistent batch: %v", verr)
	}

	recs, derr := b.Decode()
	if derr == nil {
		checkRecords(t, recs)
	}
	if typ, err := b.ControlType(); err == nil && (!b.IsControl() || typ != ControlAbort && typ != ControlCommit) {
		t.Fatalf("ControlType = %d on attributes %x", typ, b.Attributes())
	}
	// IsFillerBatch reads the first record only.
	if filler, err := b.IsFillerBatch(); err == nil && filler && derr == nil && (len(recs) == 0 || !IsFiller(recs[0].Key)) {
		t.Fatal("IsFillerBatch disagrees with Decode")
	}

	if verr == nil {
		checkRewrite(t, b, crc)
	}
	checkClearLogAppendTime(t, b, recs, derr)
	checkSplitRuns(t, b, recs, derr)
}

// checkRecords: every decoded record reads the same with kmsg (a consumer's
// decoder) when kmsg can read it, survives AppendRecord and ParseRecords
// unchanged, and the records tile the section.
func checkRecords(t *testing.T, recs []Record) {
	t.Helper()
	for i, r := range recs {
		var kr kmsg.Record
		if err := kr.ReadFrom(r.Raw); err == nil {
			if kr.Attributes != r.Attributes || kr.TimestampDelta64 != r.TimestampDelta || kr.OffsetDelta != r.OffsetDelta ||
				!sameBytes(kr.Key, r.Key) || !sameBytes(kr.Value, r.Value) || len(kr.Headers) != len(r.Headers) {
				t.Fatalf("record %d decodes differently with kmsg:\n ours %+v\n kmsg %+v", i, r, kr)
			}
			for j, h := range kr.Headers {
				if h.Key != r.Headers[j].Key || !sameBytes(h.Value, r.Headers[j].Value) {
					t.Fatalf("record %d header %d decodes differently with kmsg", i, j)
				}
			}
		}
		// The offset delta is what the record says, not a truncation.
		p := r.Raw[:]
		_, n := binary.Varint(p)
		p = p[n+1:]
		_, n = binary.Varint(p)
		if od, _ := binary.Varint(p[n:]); od != int64(r.OffsetDelta) {
			t.Fatalf("record %d: offset delta %d read as %d", i, od, r.OffsetDelta)
		}
		again, err := ParseRecords(AppendRecord(nil, r))
		if err != nil || len(again) != 1 || !sameRecord(again[0], r) {
			t.Fatalf("record %d does not survive re-encoding: %+v -> %+v, %v", i, r, again, err)
		}
	}
}

func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) && (a == nil) == (b == nil) }

func sameRecord(a, b Record) bool {
	if a.Attributes != b.Attributes || a.TimestampDelta != b.TimestampDelta || a.OffsetDelta != b.OffsetDelta ||
		!sameBytes(a.Key, b.Key) || !sameBytes(a.Value, b.Value) || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !sameBytes(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

// checkRewrite: after Rewrite with the CRC Verify returned, the batch
// verifies again, its records section is byte-identical, and only the
// fields Rewrite sets changed.
func checkRewrite(t *testing.T, b Batch, crc uint32) {
	t.Helper()
	before := Batch(bytes.Clone(b))
	p := Producer{ID: int64(b.CRC()) ^ 0x5a5a, Epoch: int16(b.BaseSequence()), Sequence: int32(b.RecordsCRC() >> 1)}
	clear := int16(AttrTransactional | AttrDeleteHorizon)
	if b.IsTransactional() {
		clear = AttrDeleteHorizon
	}
	b.Rewrite(p, clear, crc)
	if _, err := b.Verify(); err != nil {
		t.Fatalf("rewritten batch does not verify: %v", err)
	}
	if !bytes.Equal(b.Records(), before.Records()) {
		t.Fatal("Rewrite changed the records section")
	}
	if b.BaseOffset() != 0 || int32(binary.BigEndian.Uint32(b[offLeaderEpoch:])) != -1 ||
		b.ProducerID() != p.ID || b.ProducerEpoch() != p.Epoch || b.BaseSequence() != p.Sequence || b.Attributes() != before.Attributes()&^clear {
		t.Fatal("Rewrite did not set the header")
	}
	if !bytes.Equal(b[offLength:offLeaderEpoch], before[offLength:offLeaderEpoch]) || b[offMagic] != before[offMagic] ||
		!bytes.Equal(b[offLastOffsetDelta:offProducerID], before[offLastOffsetDelta:offProducerID]) ||
		!bytes.Equal(b[offRecordCount:HeaderSize], before[offRecordCount:HeaderSize]) {
		t.Fatal("Rewrite changed fields it must keep")
	}
}

// checkClearLogAppendTime: the rebuilt batch verifies, keeps the codec,
// offsets, count and producer fields, carries the append time as every
// record's timestamp, and holds the same records.
func checkClearLogAppendTime(t *testing.T, b Batch, recs []Record, derr error) {
	t.Helper()
	nb, err := b.ClearLogAppendTime()
	if err != nil {
		return
	}
	// klink rebuilds only batches that Verify passed: a negative
	// lastOffsetDelta or record count stays negative.
	if _, err := nb.Verify(); err != nil && b.LastOffsetDelta() >= 0 && b.NumRecords() >= 0 {
		t.Fatalf("ClearLogAppendTime: %v", err)
	}
	if nb.IsLogAppendTime() || nb.Codec() != b.Codec() || nb.Attributes() != b.Attributes()&^AttrLogAppendTime ||
		nb.BaseOffset() != b.BaseOffset() || nb.LastOffsetDelta() != b.LastOffsetDelta() || nb.NumRecords() != b.NumRecords() ||
		nb.BaseTimestamp() != b.MaxTimestamp() || nb.MaxTimestamp() != b.MaxTimestamp() ||
		nb.ProducerID() != b.ProducerID() || nb.ProducerEpoch() != b.ProducerEpoch() || nb.BaseSequence() != b.BaseSequence() {
		t.Fatal("ClearLogAppendTime: header")
	}
	got, err := nb.Decode()
	if derr != nil {
		return // b's records do not parse; ClearLogAppendTime reads only their timestamps
	}
	if err != nil || len(got) != len(recs) {
		t.Fatalf("ClearLogAppendTime: %d records of %d: %v", len(got), len(recs), err)
	}
	for i, r := range recs {
		r.TimestampDelta = 0
		if !sameRecord(got[i], r) {
			t.Fatalf("ClearLogAppendTime: record %d = %+v, want %+v", i, got[i], r)
		}
	}
}

// checkSplitRuns: the rebuilt batches verify, have no holes, keep the
// source's codec, attributes and producer fields, lie in order inside the
// source batch's offset range, and decode to the source's records at the
// same offsets with the same timestamps.
func checkSplitRuns(t *testing.T, b Batch, recs []Record, derr error) {
	t.Helper()
	runs, err := b.SplitRuns()
	if err != nil {
		return
	}
	if derr != nil {
		t.Fatalf("SplitRuns rebuilt a batch Decode refuses: %v", derr)
	}
	// A LogAppendTime batch's runs carry the append time in every record.
	attrs, baseTs := b.Attributes()&^AttrDeleteHorizon, b.BaseTimestamp()
	if b.IsLogAppendTime() {
		attrs, baseTs = attrs&^AttrLogAppendTime, b.MaxTimestamp()
	}
	i := 0
	at := b.BaseOffset()
	for ri, r := range runs {
		if _, err := r.Verify(); err != nil {
			t.Fatalf("run %d: %v", ri, err)
		}
		if r.HasHoles() || r.NumRecords() == 0 || r.Codec() != b.Codec() || r.Attributes() != attrs ||
			r.ProducerID() != b.ProducerID() || r.ProducerEpoch() != b.ProducerEpoch() || r.BaseSequence() != b.BaseSequence() ||
			r.BaseTimestamp() != baseTs {
			t.Fatalf("run %d: header (attrs %x of %x, %d records, span %d)", ri, r.Attributes(), b.Attributes(), r.NumRecords(), r.OffsetSpan())
		}
		if r.BaseOffset() < at || r.LastOffset() > b.LastOffset() {
			t.Fatalf("run %d at %d..%d: outside or out of order in %d..%d (after %d)", ri, r.BaseOffset(), r.LastOffset(), b.BaseOffset(), b.LastOffset(), at)
		}
		at = r.NextOffset()
		got, err := r.Decode()
		if err != nil || int32(len(got)) != r.NumRecords() {
			t.Fatalf("run %d: %d records, header says %d: %v", ri, len(got), r.NumRecords(), err)
		}
		var maxTs int64
		for j, rr := range got {
			if i >= len(recs) {
				t.Fatalf("runs hold more records than the source")
			}
			src := recs[i]
			if r.BaseOffset()+int64(rr.OffsetDelta) != b.BaseOffset()+int64(src.OffsetDelta) || rr.OffsetDelta != int32(j) {
				t.Fatalf("run %d record %d moved: at %d, source at %d", ri, j, r.BaseOffset()+int64(rr.OffsetDelta), b.BaseOffset()+int64(src.OffsetDelta))
			}
			if b.IsLogAppendTime() {
				src.TimestampDelta = 0
			}
			if r.BaseTimestamp()+rr.TimestampDelta != baseTs+src.TimestampDelta {
				t.Fatalf("run %d record %d: timestamp changed", ri, j)
			}
			if ts := r.BaseTimestamp() + rr.TimestampDelta; j == 0 || ts > maxTs {
				maxTs = ts
			}
			rr.OffsetDelta, src.OffsetDelta = 0, 0
			if !sameRecord(rr, src) {
				t.Fatalf("run %d record %d = %+v, source %+v", ri, j, rr, src)
			}
			i++
		}
		if len(got) > 0 && r.MaxTimestamp() != maxTs {
			t.Fatalf("run %d: maxTimestamp %d, records' max %d", ri, r.MaxTimestamp(), maxTs)
		}
	}
	if i != len(recs) {
		t.Fatalf("runs hold %d of %d records", i, len(recs))
	}
}
