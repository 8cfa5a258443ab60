package batch

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Record is one record of a batch, its fields aliasing the decompressed
// records section.
type Record struct {
	Attributes     int8
	TimestampDelta int64
	OffsetDelta    int32
	Key            []byte // nil for a null key
	Value          []byte // nil for a null value (a tombstone)
	Headers        []RecordHeader
	// Raw is the whole encoded record, length prefix included.
	Raw []byte
}

// RecordHeader is one record header.
type RecordHeader struct {
	Key   string
	Value []byte
}

// Decode decodes every record of the batch (decompressing it).
func (b Batch) Decode() ([]Record, error) {
	raw, err := b.Decompress()
	if err != nil {
		return nil, err
	}
	return ParseRecords(raw)
}

// ParseRecords decodes an uncompressed records section.
func ParseRecords(raw []byte) ([]Record, error) {
	var out []Record
	for len(raw) > 0 {
		r, n, err := parseRecord(raw)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", len(out), err)
		}
		out = append(out, r)
		raw = raw[n:]
	}
	return out, nil
}

func parseRecord(src []byte) (Record, int, error) {
	length, n := binary.Varint(src)
	if n <= 0 || length < 0 || int64(len(src)-n) < length {
		return Record{}, 0, fmt.Errorf("bad record length")
	}
	total := n + int(length)
	r := Record{Raw: src[:total]}
	p := src[n:total]
	if len(p) < 1 {
		return Record{}, 0, fmt.Errorf("empty record")
	}
	r.Attributes = int8(p[0])
	p = p[1:]
	var ok bool
	var v int64
	if v, p, ok = varint(p); !ok {
		return Record{}, 0, fmt.Errorf("bad timestamp delta")
	}
	r.TimestampDelta = v
	if v, p, ok = varint(p); !ok || v < math.MinInt32 || v > math.MaxInt32 {
		return Record{}, 0, fmt.Errorf("bad offset delta")
	}
	r.OffsetDelta = int32(v)
	if r.Key, p, ok = varBytes(p); !ok {
		return Record{}, 0, fmt.Errorf("bad key")
	}
	if r.Value, p, ok = varBytes(p); !ok {
		return Record{}, 0, fmt.Errorf("bad value")
	}
	var nh int64
	if nh, p, ok = varint(p); !ok || nh < 0 || nh > int64(len(p)) {
		return Record{}, 0, fmt.Errorf("bad header count")
	}
	for i := int64(0); i < nh; i++ {
		var k, hv []byte
		if k, p, ok = varBytes(p); !ok || k == nil {
			return Record{}, 0, fmt.Errorf("bad header key")
		}
		if hv, p, ok = varBytes(p); !ok {
			return Record{}, 0, fmt.Errorf("bad header value")
		}
		r.Headers = append(r.Headers, RecordHeader{Key: string(k), Value: hv})
	}
	return r, total, nil
}

func varint(p []byte) (int64, []byte, bool) {
	v, n := binary.Varint(p)
	if n <= 0 {
		return 0, p, false
	}
	return v, p[n:], true
}

// varBytes reads a varint-length byte string; length -1 is nil.
func varBytes(p []byte) ([]byte, []byte, bool) {
	l, p, ok := varint(p)
	if !ok || l < -1 || l > int64(len(p)) {
		return nil, p, false
	}
	if l == -1 {
		return nil, p, true
	}
	return p[:l:l], p[l:], true
}

// IsFillerBatch reports whether the batch holds klink filler records.
func (b Batch) IsFillerBatch() (bool, error) {
	if b.NumRecords() == 0 || b.IsControl() {
		return false, nil
	}
	raw, err := b.Decompress()
	if err != nil {
		return false, err
	}
	r, _, err := parseRecord(raw)
	if err != nil {
		return false, err
	}
	return IsFiller(r.Key), nil
}
