package batch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Filler records fill source offsets that hold no record klink can copy
// (log start > 0, retention, transaction markers), so that every record
// after them keeps its source offset. They are recognisable: key FillerKey,
// null value, one header FillerHeader.
const (
	FillerKey    = "__klink_gap"
	FillerHeader = "klink.gap"
)

// MaxFillerRecords is the most filler records put in one batch: as zstd, a
// 100k-record batch is ~83 KB, far below the default max.message.bytes, and
// real Kafka takes them at millions of offsets per second.
const MaxFillerRecords = 100_000

// smallFillerRecords and below are sent uncompressed (~31 bytes a record).
const smallFillerRecords = 256

var codecs = struct {
	once  sync.Once
	comp  map[int]kgo.Compressor
	decmp kgo.Decompressor
}{}

func initCodecs() {
	codecs.once.Do(func() {
		codecs.comp = map[int]kgo.Compressor{}
		for codec, c := range map[int]kgo.CompressionCodec{
			CodecGzip:   kgo.GzipCompression(),
			CodecSnappy: kgo.SnappyCompression(),
			CodecLz4:    kgo.Lz4Compression(),
			CodecZstd:   kgo.ZstdCompression(),
		} {
			comp, err := kgo.DefaultCompressor(c)
			if err != nil {
				panic(err) // static codec list
			}
			codecs.comp[codec] = comp
		}
		codecs.decmp = kgo.DefaultDecompressor()
	})
}

// compress compresses a records section with the given codec.
func compress(codec int, raw []byte) ([]byte, error) {
	if codec == CodecNone {
		return raw, nil
	}
	initCodecs()
	comp, ok := codecs.comp[codec]
	if !ok {
		return nil, fmt.Errorf("unknown compression codec %d", codec)
	}
	var buf bytes.Buffer
	out, used := comp.Compress(&buf, raw)
	if int(used) != codec {
		return nil, fmt.Errorf("compressing with codec %d failed", codec)
	}
	return append([]byte(nil), out...), nil
}

// Decompress returns the batch's records section uncompressed.
func (b Batch) Decompress() ([]byte, error) {
	if b.Codec() == CodecNone {
		return b.Records(), nil
	}
	initCodecs()
	out, err := codecs.decmp.Decompress(b.Records(), kgo.CompressionCodecType(b.Codec()))
	if err != nil {
		return nil, fmt.Errorf("batch at offset %d: decompressing codec %d: %w", b.BaseOffset(), b.Codec(), err)
	}
	return out, nil
}

var (
	fillerKey     = []byte(FillerKey)
	fillerHeaders = []RecordHeader{{Key: FillerHeader}} // null value
)

// appendFillerRecord appends one filler record at offsetDelta.
func appendFillerRecord(dst []byte, offsetDelta int32) []byte {
	return AppendRecord(dst, Record{OffsetDelta: offsetDelta, Key: fillerKey, Headers: fillerHeaders})
}

// fillerRecords caches compressed filler records sections by record count:
// every full chunk of a long gap is the same bytes.
var fillerRecords sync.Map // fillerCacheKey -> []byte (records section)

type fillerCacheKey struct {
	n     int32
	codec int
}

func fillerSection(n int32) (codec int, section []byte, err error) {
	codec = CodecNone
	if n > smallFillerRecords {
		codec = CodecZstd
	}
	key := fillerCacheKey{n, codec}
	if v, ok := fillerRecords.Load(key); ok {
		return codec, v.([]byte), nil
	}
	raw := make([]byte, 0, int(n)*32)
	for i := int32(0); i < n; i++ {
		raw = appendFillerRecord(raw, i)
	}
	section, err = compress(codec, raw)
	if err != nil {
		return 0, nil, err
	}
	// Only full chunks recur; caching every size would grow without bound.
	if n == MaxFillerRecords {
		fillerRecords.Store(key, section)
	}
	return codec, section, nil
}

// Fillers returns batches of filler records covering count offsets, each at
// most maxBytes long (the destination topic's max.message.bytes). ts is the
// timestamp given to every filler record. Batches are ready for Rewrite.
func Fillers(count int64, ts int64, maxBytes int) ([]Batch, error) {
	var out []Batch
	per := int32(MaxFillerRecords)
	for count > 0 {
		n := per
		if int64(n) > count {
			n = int32(count)
		}
		codec, section, err := fillerSection(n)
		if err != nil {
			return nil, err
		}
		if HeaderSize+len(section) > maxBytes && n > 1 {
			per = n / 2 // too big for the topic: try smaller batches
			continue
		}
		buf := make([]byte, HeaderSize+len(section))
		copy(buf[HeaderSize:], section)
		out = append(out, writeHeader(buf, int16(codec), n-1, ts, ts, n))
		count -= int64(n)
	}
	return out, nil
}

// IsFiller reports whether a record key marks a filler record.
func IsFiller(key []byte) bool { return string(key) == FillerKey }

// ClearLogAppendTime rebuilds a LogAppendTime batch so that a producer may
// send it and consumers still see the source's timestamps. Kafka refuses
// produced batches with the LogAppendTime flag, and with the flag cleared
// each record's timestamp would be baseTimestamp+delta, not the append time
// the source's consumers see. So every record's timestamp delta becomes 0
// and baseTimestamp = maxTimestamp = the source's append time. This is the
// one data path that decompresses and recompresses (same codec); the
// records' keys, values and headers are copied unchanged.
func (b Batch) ClearLogAppendTime() (Batch, error) {
	raw, err := b.Decompress()
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(raw))
	for rest := raw; len(rest) > 0; {
		length, n := binary.Varint(rest)
		if n <= 0 || length < 0 || int(length) > len(rest)-n {
			return nil, fmt.Errorf("batch at offset %d: malformed record", b.BaseOffset())
		}
		body := rest[n : n+int(length)]
		rest = rest[n+int(length):]
		if len(body) < 1 {
			return nil, fmt.Errorf("batch at offset %d: empty record", b.BaseOffset())
		}
		_, tn := binary.Varint(body[1:]) // timestampDelta
		if tn <= 0 {
			return nil, fmt.Errorf("batch at offset %d: malformed record timestamp", b.BaseOffset())
		}
		after := body[1+tn:]
		newLen := 1 + 1 + len(after) // attributes, varint(0), rest
		out = binary.AppendVarint(out, int64(newLen))
		out = append(out, body[0])
		out = binary.AppendVarint(out, 0)
		out = append(out, after...)
	}
	nb, err := Build(b.Codec(), b.Attributes()&^AttrLogAppendTime, b.LastOffsetDelta(), b.MaxTimestamp(), b.MaxTimestamp(), b.NumRecords(), out)
	if err != nil {
		return nil, fmt.Errorf("batch at offset %d: %w", b.BaseOffset(), err)
	}
	nb.SetBaseOffset(b.BaseOffset())
	// Keep the source producer fields until Rewrite replaces them.
	copy(nb[offProducerID:offRecordCount], b[offProducerID:offRecordCount])
	binary.BigEndian.PutUint32(nb[offCRC:], nb.ComputeCRC())
	return nb, nil
}

// Build encodes a batch around an uncompressed records section (records as
// EncodeRecord writes them), compressing it with codec. attrs must not hold
// codec bits; the producer fields are "none" until Rewrite.
func Build(codec int, attrs int16, lastOffsetDelta int32, baseTs, maxTs int64, numRecords int32, records []byte) (Batch, error) {
	section, err := compress(codec, records)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, HeaderSize+len(section))
	copy(buf[HeaderSize:], section)
	return writeHeader(buf, attrs&^AttrCodecMask|int16(codec), lastOffsetDelta, baseTs, maxTs, numRecords), nil
}

// AppendRecord appends one encoded record (length prefix included).
func AppendRecord(dst []byte, r Record) []byte {
	var body []byte
	body = append(body, byte(r.Attributes))
	body = binary.AppendVarint(body, r.TimestampDelta)
	body = binary.AppendVarint(body, int64(r.OffsetDelta))
	body = appendVarBytes(body, r.Key)
	body = appendVarBytes(body, r.Value)
	body = binary.AppendVarint(body, int64(len(r.Headers)))
	for _, h := range r.Headers {
		body = appendVarBytes(body, []byte(h.Key))
		body = appendVarBytes(body, h.Value)
	}
	dst = binary.AppendVarint(dst, int64(len(body)))
	return append(dst, body...)
}

// appendVarBytes writes a varint length (-1 for nil) and the bytes.
func appendVarBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}
