// Package batch reads and rewrites Kafka v2 record batches in place, without
// decompressing them: the header fields klink changes all sit before or at
// the start of the CRC-covered part, and the records section is left as the
// source stored it.
//
// Layout of a v2 batch (big endian):
//
//	 0 baseOffset int64        | not covered by the CRC
//	 8 batchLength int32       |
//	12 partitionLeaderEpoch    |
//	16 magic int8              |
//	17 crc uint32 (CRC32C of attributes..end)
//	21 attributes int16
//	23 lastOffsetDelta int32
//	27 baseTimestamp int64
//	35 maxTimestamp int64
//	43 producerId int64
//	51 producerEpoch int16
//	53 baseSequence int32
//	57 recordCount int32
//	61 records...
package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// HeaderSize is the size of a v2 batch header; records start here.
const HeaderSize = 61

const (
	offBaseOffset      = 0
	offLength          = 8
	offLeaderEpoch     = 12
	offMagic           = 16
	offCRC             = 17
	offAttributes      = 21
	offLastOffsetDelta = 23
	offBaseTimestamp   = 27
	offMaxTimestamp    = 35
	offProducerID      = 43
	offProducerEpoch   = 51
	offBaseSequence    = 53
	offRecordCount     = 57
)

// Attribute bits.
const (
	AttrCodecMask      = 0x07
	AttrLogAppendTime  = 0x08
	AttrTransactional  = 0x10
	AttrControl        = 0x20
	AttrDeleteHorizon  = 0x40
	crcCoveredFrom     = offAttributes
	minBatchLengthWord = HeaderSize - offLeaderEpoch // batchLength of a batch with no records
)

// Codecs (attributes & AttrCodecMask).
const (
	CodecNone   = 0
	CodecGzip   = 1
	CodecSnappy = 2
	CodecLz4    = 3
	CodecZstd   = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Batch is one v2 record batch, as raw bytes. Methods read and write the
// bytes in place.
type Batch []byte

// ErrOldFormat is returned for message sets older than v2 (magic 0 or 1).
var ErrOldFormat = errors.New("message format older than v2")

// Split cuts a Fetch response's record set into whole batches. A batch cut
// short at the end (the broker stops at the partition's byte limit) is left
// out; it is fetched again next time. The batches alias buf.
func Split(buf []byte) ([]Batch, error) {
	var out []Batch
	for len(buf) >= offMagic+1 {
		length := int32(binary.BigEndian.Uint32(buf[offLength:]))
		magic := int8(buf[offMagic])
		if magic != 2 {
			return out, fmt.Errorf("batch at offset %d: %w (magic %d)", int64(binary.BigEndian.Uint64(buf)), ErrOldFormat, magic)
		}
		if length < minBatchLengthWord {
			return out, fmt.Errorf("batch at offset %d: length %d is shorter than a v2 header", int64(binary.BigEndian.Uint64(buf)), length)
		}
		size := 12 + int(length)
		if size > len(buf) {
			break // partial batch at the end
		}
		out = append(out, Batch(buf[:size:size]))
		buf = buf[size:]
	}
	return out, nil
}

// BaseOffset is the offset of the batch's first record slot.
func (b Batch) BaseOffset() int64 { return int64(binary.BigEndian.Uint64(b[offBaseOffset:])) }

// LastOffsetDelta is lastOffset - baseOffset.
func (b Batch) LastOffsetDelta() int32 {
	return int32(binary.BigEndian.Uint32(b[offLastOffsetDelta:]))
}

// LastOffset is the offset of the batch's last record slot.
func (b Batch) LastOffset() int64 { return b.BaseOffset() + int64(b.LastOffsetDelta()) }

// NextOffset is LastOffset + 1: where the following batch starts.
func (b Batch) NextOffset() int64 { return b.LastOffset() + 1 }

// Attributes is the batch's attribute word.
func (b Batch) Attributes() int16 { return int16(binary.BigEndian.Uint16(b[offAttributes:])) }

// Codec is the compression codec of the records section.
func (b Batch) Codec() int { return int(b.Attributes() & AttrCodecMask) }

// IsControl reports a transaction marker batch.
func (b Batch) IsControl() bool { return b.Attributes()&AttrControl != 0 }

// IsTransactional reports a batch written inside a transaction.
func (b Batch) IsTransactional() bool { return b.Attributes()&AttrTransactional != 0 }

// IsLogAppendTime reports a batch whose timestamps were set by the broker.
func (b Batch) IsLogAppendTime() bool { return b.Attributes()&AttrLogAppendTime != 0 }

// NumRecords is the record count in the header.
func (b Batch) NumRecords() int32 { return int32(binary.BigEndian.Uint32(b[offRecordCount:])) }

// BaseTimestamp is the first timestamp (or the delete horizon, see
// AttrDeleteHorizon).
func (b Batch) BaseTimestamp() int64 { return int64(binary.BigEndian.Uint64(b[offBaseTimestamp:])) }

// MaxTimestamp is the largest record timestamp (or the log append time).
func (b Batch) MaxTimestamp() int64 { return int64(binary.BigEndian.Uint64(b[offMaxTimestamp:])) }

// ProducerID is the producer id in the header (-1 for none).
func (b Batch) ProducerID() int64 { return int64(binary.BigEndian.Uint64(b[offProducerID:])) }

// ProducerEpoch is the producer epoch in the header.
func (b Batch) ProducerEpoch() int16 { return int16(binary.BigEndian.Uint16(b[offProducerEpoch:])) }

// BaseSequence is the idempotent sequence of the first record.
func (b Batch) BaseSequence() int32 { return int32(binary.BigEndian.Uint32(b[offBaseSequence:])) }

// CRC is the stored checksum.
func (b Batch) CRC() uint32 { return binary.BigEndian.Uint32(b[offCRC:]) }

// Records is the (possibly compressed) records section.
func (b Batch) Records() []byte { return b[HeaderSize:] }

// ComputeCRC is CRC32C over attributes..end, what the CRC field must hold.
func (b Batch) ComputeCRC() uint32 { return crc32.Checksum(b[crcCoveredFrom:], castagnoli) }

// RecordsCRC is a CRC32C of the records section alone: equal for a source
// batch and its mirrored copy, whatever klink did to the header.
func (b Batch) RecordsCRC() uint32 { return crc32.Checksum(b[HeaderSize:], castagnoli) }

// RecordsCRCs appends to dst the RecordsCRC of each whole v2 batch at the
// start of set, in order, and stops at the first that is not one (a partial
// batch at the end, an old format, a bad length): Split then returns the same
// batches, so the i-th sum is the i-th batch's. A reader calls it right after
// reading set, while the bytes are in the CPU's cache: checksumming them
// later, once they have gone to memory, cost four times as much.
func RecordsCRCs(dst []uint32, set []byte) []uint32 {
	for len(set) >= HeaderSize && int8(set[offMagic]) == 2 {
		length := int32(binary.BigEndian.Uint32(set[offLength:]))
		size := 12 + int(length)
		if length < minBatchLengthWord || size > len(set) {
			break
		}
		dst = append(dst, crc32.Checksum(set[HeaderSize:size], castagnoli))
		set = set[size:]
	}
	return dst
}

// Verify checks the batch's own consistency (its stored CRC, a sane
// header) and returns the CRC of its records section, for Rewrite: the
// records are read once for both.
func (b Batch) Verify() (recordsCRC uint32, err error) {
	if len(b) < HeaderSize {
		return 0, fmt.Errorf("batch is %d bytes, shorter than a v2 header", len(b))
	}
	return b.VerifySum(b.RecordsCRC())
}

// VerifySum is Verify given the records section's CRC, computed earlier
// (RecordsCRCs); a sum of other bytes fails the check like corrupt data.
func (b Batch) VerifySum(recordsCRC uint32) (uint32, error) {
	if len(b) < HeaderSize {
		return 0, fmt.Errorf("batch is %d bytes, shorter than a v2 header", len(b))
	}
	if got, want := b.crcWith(recordsCRC), b.CRC(); got != want {
		return 0, fmt.Errorf("batch at offset %d: CRC mismatch (stored %08x, computed %08x)", b.BaseOffset(), want, got)
	}
	if b.LastOffsetDelta() < 0 {
		return 0, fmt.Errorf("batch at offset %d: negative lastOffsetDelta %d", b.BaseOffset(), b.LastOffsetDelta())
	}
	if b.NumRecords() < 0 {
		return 0, fmt.Errorf("batch at offset %d: negative record count %d", b.BaseOffset(), b.NumRecords())
	}
	return recordsCRC, nil
}

// crcWith is ComputeCRC given the records section's CRC.
func (b Batch) crcWith(recordsCRC uint32) uint32 {
	h := crc32.Checksum(b[crcCoveredFrom:HeaderSize], castagnoli)
	return crcCombine(h, recordsCRC, int64(len(b)-HeaderSize))
}

// Producer is an idempotent producer identity and the sequence of a batch.
type Producer struct {
	ID       int64
	Epoch    int16
	Sequence int32
}

// Rewrite prepares the batch, in place, to be produced by klink's own
// producer: baseOffset 0 (a producer sends 0; the broker assigns offsets),
// the leader epoch cleared (the broker overwrites it), the producer id,
// epoch and base sequence set, the given attribute bits cleared, and the CRC
// recomputed from the header and recordsCRC (the records section's CRC, as
// Verify or RecordsCRC return it). The records section is not touched.
func (b Batch) Rewrite(p Producer, clearAttrs int16, recordsCRC uint32) {
	binary.BigEndian.PutUint64(b[offBaseOffset:], 0)
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], 0xffffffff)
	if clearAttrs != 0 {
		binary.BigEndian.PutUint16(b[offAttributes:], uint16(b.Attributes()&^clearAttrs))
	}
	binary.BigEndian.PutUint64(b[offProducerID:], uint64(p.ID))
	binary.BigEndian.PutUint16(b[offProducerEpoch:], uint16(p.Epoch))
	binary.BigEndian.PutUint32(b[offBaseSequence:], uint32(p.Sequence))
	binary.BigEndian.PutUint32(b[offCRC:], b.crcWith(recordsCRC))
}

// SetBaseOffset writes the base offset (not CRC-covered).
func (b Batch) SetBaseOffset(o int64) { binary.BigEndian.PutUint64(b[offBaseOffset:], uint64(o)) }

// RecordCount returns how many offsets the batch spans.
func (b Batch) OffsetSpan() int64 { return int64(b.LastOffsetDelta()) + 1 }

// header writes a complete v2 header in front of records (which must start
// at HeaderSize in dst) and computes the CRC.
func writeHeader(dst []byte, attrs int16, lastOffsetDelta int32, baseTs, maxTs int64, numRecords int32) Batch {
	b := Batch(dst)
	binary.BigEndian.PutUint64(b[offBaseOffset:], 0)
	binary.BigEndian.PutUint32(b[offLength:], uint32(len(dst)-12))
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], 0xffffffff)
	b[offMagic] = 2
	binary.BigEndian.PutUint16(b[offAttributes:], uint16(attrs))
	binary.BigEndian.PutUint32(b[offLastOffsetDelta:], uint32(lastOffsetDelta))
	binary.BigEndian.PutUint64(b[offBaseTimestamp:], uint64(baseTs))
	binary.BigEndian.PutUint64(b[offMaxTimestamp:], uint64(maxTs))
	binary.BigEndian.PutUint64(b[offProducerID:], 0xffffffffffffffff)
	binary.BigEndian.PutUint16(b[offProducerEpoch:], 0xffff)
	binary.BigEndian.PutUint32(b[offBaseSequence:], 0xffffffff)
	binary.BigEndian.PutUint32(b[offRecordCount:], uint32(numRecords))
	binary.BigEndian.PutUint32(b[offCRC:], b.ComputeCRC())
	return b
}
