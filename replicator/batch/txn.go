package batch

import (
	"encoding/binary"
	"fmt"
)

// Control record types (the key's second int16).
const (
	ControlAbort  = 0
	ControlCommit = 1
)

// ControlType reads a transaction marker's type: ControlCommit or
// ControlAbort.
func (b Batch) ControlType() (int16, error) {
	if !b.IsControl() {
		return 0, fmt.Errorf("batch at offset %d is not a control batch", b.BaseOffset())
	}
	rs, err := b.Decode()
	if err != nil {
		return 0, err
	}
	if len(rs) == 0 || len(rs[0].Key) < 4 {
		return 0, fmt.Errorf("control batch at offset %d has no readable key", b.BaseOffset())
	}
	t := int16(binary.BigEndian.Uint16(rs[0].Key[2:]))
	if t != ControlAbort && t != ControlCommit {
		return 0, fmt.Errorf("control batch at offset %d has unknown type %d", b.BaseOffset(), t)
	}
	return t, nil
}

// SetAttributes overwrites the attribute word (Rewrite then fixes the CRC).
func (b Batch) SetAttributes(a int16) { binary.BigEndian.PutUint16(b[offAttributes:], uint16(a)) }

// HasHoles reports a batch whose offset range is wider than its record
// count: the log cleaner removed records from inside it. Kafka refuses to
// take such a batch from a producer.
func (b Batch) HasHoles() bool { return b.NumRecords() > 0 && int64(b.NumRecords()) != b.OffsetSpan() }

// SplitRuns rebuilds a batch with holes into batches of consecutive
// offsets, each compressed with the source batch's codec and keeping its
// attributes, base timestamp and producer fields (Rewrite replaces those).
// Keys, values, headers and timestamps are unchanged; only offset deltas
// are renumbered from each run's start. A LogAppendTime batch's runs are
// rebuilt as ClearLogAppendTime rebuilds the batch: the flag cleared and
// the append time in every record. This is the one case besides
// LogAppendTime where klink decompresses.
func (b Batch) SplitRuns() ([]Batch, error) {
	recs, err := b.Decode()
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, nil
	}
	// The runs are appended at their records' offsets, in order: records
	// out of order, or outside the batch's offset range, cannot be.
	prev := int32(-1)
	for i, r := range recs {
		if r.OffsetDelta <= prev || r.OffsetDelta > b.LastOffsetDelta() {
			return nil, fmt.Errorf("batch at offset %d: record %d has offset delta %d (after %d, last offset delta %d): records out of order or outside the batch", b.BaseOffset(), i, r.OffsetDelta, prev, b.LastOffsetDelta())
		}
		prev = r.OffsetDelta
	}
	// Kafka refuses the LogAppendTime flag from a producer (see
	// ClearLogAppendTime).
	attrs, baseTs := b.Attributes()&^AttrDeleteHorizon, b.BaseTimestamp()
	lat := b.IsLogAppendTime()
	if lat {
		attrs, baseTs = attrs&^AttrLogAppendTime, b.MaxTimestamp()
	}
	var out []Batch
	flush := func(run []Record) error {
		first := run[0].OffsetDelta
		var raw []byte
		maxTs := baseTs
		for i, r := range run {
			if lat {
				r.TimestampDelta = 0
			}
			ts := baseTs + r.TimestampDelta
			if i == 0 || ts > maxTs {
				maxTs = ts
			}
			r.OffsetDelta -= first
			raw = AppendRecord(raw, r)
		}
		nb, err := Build(b.Codec(), attrs, int32(len(run)-1), baseTs, maxTs, int32(len(run)), raw)
		if err != nil {
			return fmt.Errorf("batch at offset %d: rebuilding records %d..%d: %w", b.BaseOffset(), b.BaseOffset()+int64(first), b.BaseOffset()+int64(run[len(run)-1].OffsetDelta), err)
		}
		nb.SetBaseOffset(b.BaseOffset() + int64(first))
		// Keep the source producer fields until Rewrite replaces them.
		copy(nb[offProducerID:offRecordCount], b[offProducerID:offRecordCount])
		binary.BigEndian.PutUint32(nb[offCRC:], nb.ComputeCRC())
		out = append(out, nb)
		return nil
	}
	start := 0
	for i := 1; i <= len(recs); i++ {
		if i == len(recs) || recs[i].OffsetDelta != recs[i-1].OffsetDelta+1 {
			if err := flush(recs[start:i]); err != nil {
				return nil, err
			}
			start = i
		}
	}
	return out, nil
}
