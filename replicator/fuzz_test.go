package replicator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kconn"
)

// The fuzz targets here drive the data path's two hand-offs without
// clusters: a Fetch response handed to the partitions (fetchers.handleFetch,
// takeRecords, deliver) and read into steps (partition.plan), and a Produce
// response matched to the appends of its request (sink.answer).

var fuzzTopicID = [16]byte{0xab, 1, 2, 3}

// fuzzSourceBatches are source batches at consecutive offsets from 100:
// plain, transactional, a commit marker, an empty batch and a batch with
// holes left by the log cleaner, a LogAppendTime batch; uncompressed, gzip
// and lz4 (FuzzBatch covers every codec: snappy and zstd allocate what a
// fuzzed batch declares, up to 2 GiB).
func fuzzSourceBatches(f testing.TB, codec int) []byte {
	rec := func(delta int32, v string) []byte {
		return batch.AppendRecord(nil, batch.Record{OffsetDelta: delta, TimestampDelta: int64(delta), Key: []byte("k"), Value: []byte(v)})
	}
	var out []byte
	at := int64(100)
	add := func(attrs int16, lastDelta int32, n int32, raw []byte) {
		b, err := batch.Build(codec, attrs, lastDelta, 1_700_000_000_000, 1_700_000_000_009, n, raw)
		if err != nil {
			f.Fatal(err)
		}
		b.SetBaseOffset(at)
		copy(b[43:], []byte{0, 0, 0, 0, 0, 0, 0, 9}) // producer id 9
		binary.BigEndian.PutUint32(b[17:], b.ComputeCRC())
		at = b.NextOffset()
		out = append(out, b...)
	}
	add(0, 2, 3, append(append(rec(0, "a"), rec(1, "b")...), rec(2, "c")...))
	add(batch.AttrTransactional, 1, 2, append(rec(0, "t"), rec(1, "u")...))
	add(batch.AttrTransactional|batch.AttrControl, 0, 1, batch.AppendRecord(nil, batch.Record{Key: []byte{0, 0, 0, 1}, Value: []byte{0, 0, 0, 0, 0, 0}}))
	add(0, 3, 0, nil)
	add(0, 5, 2, append(rec(1, "h"), rec(4, "i")...))
	add(batch.AttrLogAppendTime, 1, 2, append(rec(0, "l"), rec(1, "m")...))
	// A LogAppendTime batch with holes (a compacted LogAppendTime topic),
	// and a marker emptied by the cleaner, kept as its producer's last
	// batch.
	add(batch.AttrLogAppendTime, 4, 2, append(rec(0, "n"), rec(3, "o")...))
	add(batch.AttrTransactional|batch.AttrControl, 0, 0, nil)
	return out
}

// fuzzPart is one source partition the fetch asked for.
type fuzzPart struct {
	topic string
	id    [16]byte
	p     int32
}

var fuzzParts = []fuzzPart{{"orders", fuzzTopicID, 0}, {"orders", fuzzTopicID, 1}, {"payments", [16]byte{}, 0}}

// fuzzFetchResponse builds a Fetch response: layout holds 5 bytes per
// partition answer (topic, partition, error, and how many bytes of records
// it takes); the answers may name partitions not asked for, twice, or by
// topic ID only.
func fuzzFetchResponse(layout, records []byte, hwm int64, fixCRC bool) *kmsg.FetchResponse {
	resp := kmsg.NewPtrFetchResponse()
	codes := []int16{0, 0, 0, 1 /* OFFSET_OUT_OF_RANGE */, 6 /* NOT_LEADER */, 3 /* UNKNOWN_TOPIC_OR_PARTITION */, 100 /* UNKNOWN_TOPIC_ID */, 74 /* FENCED_LEADER_EPOCH */, -1}
	for ; len(layout) >= 5; layout = layout[5:] {
		t := kmsg.NewFetchResponseTopic()
		switch layout[0] % 5 {
		case 0:
			t.Topic = "orders"
		case 1:
			t.Topic = "payments"
		case 2:
			t.TopicID = fuzzTopicID // named by ID only (Fetch v13+)
		case 3:
			t.Topic = "unknown"
		case 4: // neither: the ID of topics fetched without one
		}
		p := kmsg.NewFetchResponseTopicPartition()
		p.Partition = int32(int8(layout[1])) % 3
		if c := layout[2]; int(c) < len(codes) {
			p.ErrorCode = codes[c]
		} else {
			p.ErrorCode = int16(c)
		}
		p.HighWatermark, p.LastStableOffset, p.LogStartOffset = hwm, hwm-1, hwm/2
		n := min(int(binary.BigEndian.Uint16(layout[3:])), len(records))
		p.RecordBatches, records = records[:n], records[n:]
		if fixCRC {
			// Fuzzed headers get past Verify.
			p.RecordBatches = bytes.Clone(p.RecordBatches)
			bs, _ := batch.Split(p.RecordBatches)
			for _, b := range bs {
				binary.BigEndian.PutUint32(b[17:], b.ComputeCRC())
			}
		}
		t.Partitions = append(t.Partitions, p)
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

// streamed is resp as the fetch stream delivers it (kconn.DoFetch): each
// partition's record set in a pooled buffer of its own. resp itself is
// left as it is (the copy's partitions alias the buffers), so that a test
// can compare with it after the buffers are released.
func streamed(pool *kconn.BufferPool, resp *kmsg.FetchResponse) *kconn.StreamedFetch {
	cp := *resp
	cp.Topics = slices.Clone(resp.Topics)
	sf := &kconn.StreamedFetch{Resp: &cp}
	for ti := range cp.Topics {
		t := &cp.Topics[ti]
		t.Partitions = slices.Clone(t.Partitions)
		bufs := make([]*kconn.Buffer, len(t.Partitions))
		for pi := range t.Partitions {
			if rb := t.Partitions[pi].RecordBatches; len(rb) > 0 {
				b := pool.Get(len(rb))
				copy(b.Bytes(), rb)
				bufs[pi], t.Partitions[pi].RecordBatches = b, b.Bytes()
			}
		}
		sf.Records = append(sf.Records, bufs)
	}
	return sf
}

// newFuzzFetchers is a link's fetchers with what handleFetch and plan use.
func newFuzzFetchers() *fetchers {
	return &fetchers{
		log:       zap.NewNop(),
		pool:      kconn.NewBufferPool(1 << 20),
		byBroker:  map[int32]map[*cursor]struct{}{1: {}},
		loops:     map[int32]*brokerFetcher{},
		cursors:   map[*cursor]struct{}{},
		refreshCh: make(chan struct{}, 1),
	}
}

// Every kind of batch a source log holds is planned, from the log start
// and from each batch's start (where a destination can end): each becomes
// steps Kafka takes.
func TestPlanSourceBatches(t *testing.T) {
	for _, codec := range []int{batch.CodecNone, batch.CodecGzip, batch.CodecLz4, batch.CodecSnappy, batch.CodecZstd} {
		records := fuzzSourceBatches(t, codec)
		bs, err := batch.Split(records)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			next := b.BaseOffset()
			fs := newFuzzFetchers()
			c := newCursor("orders", fuzzTopicID, 0)
			c.active, c.offset, c.gen, c.leader = true, next, 1, 1
			resp := fuzzFetchResponse([]byte{0, 0, 0, byte(len(records) >> 8), byte(len(records))}, records, 1000, false)
			sf := streamed(fs.pool, resp)
			fs.handleFetch([]fetchPart{{c: c, offset: next, gen: 1}}, sf)
			sf.Release()
			res := fs.take(c)
			p := &partition{m: &mirror{link: &Link{fetchers: fs}, name: "orders", sourceTopic: "orders"}, id: 0, cur: c, log: zap.NewNop(), next: next}
			end := planEnd(next, res)
			steps, err := p.plan(res)
			if err != nil {
				t.Fatalf("codec %d, from %d: %v", codec, next, err)
			}
			checkSteps(t, next, end, steps)
			for _, s := range steps {
				p.release(s.srcBytes)
				releaseBuf(s.buf)
			}
			if c.buffered != 0 || fs.pool.Outstanding() != 0 {
				t.Fatalf("codec %d, from %d: %d bytes, %d buffers not released", codec, next, c.buffered, fs.pool.Outstanding())
			}
		}
	}
}

// FuzzFetchToPartitions hands a fuzzed Fetch response to three cursors
// (one of them reset since the fetch was built, if stale), then has each
// delivered result planned as its partition would, from the offset the
// fetch asked for. Nothing panics; a result goes only to a cursor that
// asked and is current, carries the batches of its partition's record set
// and counts their bytes; the plan's steps cover the offsets from the
// destination end in order; and once the steps are done every fetched byte
// is released and every pooled buffer given back.
func FuzzFetchToPartitions(f *testing.F) {
	for _, codec := range []int{batch.CodecNone, batch.CodecGzip, batch.CodecLz4} {
		recs := fuzzSourceBatches(f, codec)
		n := uint16(len(recs))
		l := []byte{0, 0, 0, byte(n >> 8), byte(n)}
		f.Add(l, recs, int64(100), int64(1000), false, false)
		f.Add(l, recs, int64(104), int64(1000), false, false) // a fetch from inside the data: batches before it are dropped
		f.Add(l, recs, int64(99), int64(1000), true, false)
		// Every partition, a cut-short batch, a duplicate, a leader
		// error, an unknown partition and a topic by ID.
		l = append(l, 1, 0, 0, 0, 40 /* part of a batch */, 2, 1, 0, byte(n>>8), byte(n), 0, 0, 0, 0, 10, 0, 1, 4, 0, 0, 3, 0, 0, 0, 0, 0, 2, 3, 0, 0)
		f.Add(l, append(append([]byte(nil), recs...), recs...), int64(100), int64(1000), false, false)
	}
	f.Fuzz(func(t *testing.T, layout, records []byte, offset, hwm int64, stale, fixCRC bool) {
		if len(records) > 16<<10 {
			return
		}
		for at := records; len(at) > 0; at = at[1:] {
			// snappy and zstd sections declare their decompressed size,
			// allocated up front (see fuzzSourceBatches): left out.
			if bs, _ := batch.Split(at); len(bs) > 0 && (bs[0].Codec() == batch.CodecSnappy || bs[0].Codec() == batch.CodecZstd) {
				return
			}
		}
		fs := newFuzzFetchers()
		var parts []fetchPart
		for i, fp := range fuzzParts {
			c := newCursor(fp.topic, fp.id, fp.p)
			c.active, c.offset, c.gen, c.leader = true, offset, 1, 1
			fs.cursors[c] = struct{}{}
			fs.byBroker[1][c] = struct{}{}
			part := fetchPart{c: c, offset: offset, gen: 1}
			if stale && i == 1 {
				c.gen = 2 // reset since the fetch was built
			}
			parts = append(parts, part)
		}
		resp := fuzzFetchResponse(layout, records, hwm, fixCRC)
		sf := streamed(fs.pool, resp)
		fs.handleFetch(parts, sf)
		sf.Release()

		var total int64
		for i, fp := range parts {
			c := fp.c
			res := c.inbox
			if res == nil {
				if c.buffered != 0 {
					t.Fatalf("cursor %d: %d bytes buffered, nothing delivered", i, c.buffered)
				}
				continue
			}
			if stale && i == 1 {
				t.Fatal("a result delivered to a cursor reset since the fetch")
			}
			// The first answer for the cursor's partition is the one
			// delivered.
			var want *kmsg.FetchResponseTopicPartition
			for ti := range resp.Topics {
				rt := &resp.Topics[ti]
				name := rt.Topic
				if name == "" {
					name = map[[16]byte]string{fuzzTopicID: "orders", {}: "payments"}[rt.TopicID]
				}
				for pi := range rt.Partitions {
					rp := &rt.Partitions[pi]
					if want != nil || name != c.topic || rp.Partition != c.partition || isLeaderError(kerr.ErrorForCode(rp.ErrorCode)) {
						continue
					}
					if bs, err := batch.Split(rp.RecordBatches); rp.ErrorCode == 0 && err == nil && len(bs) == 0 {
						continue // nothing new: only the figures are taken
					}
					want = rp
				}
			}
			if want == nil {
				t.Fatalf("cursor %d got a result for a partition the response does not answer", i)
			}
			if res.gen != fp.gen || res.fetchOffset != fp.offset {
				t.Fatalf("cursor %d: result of gen %d offset %d", i, res.gen, res.fetchOffset)
			}
			if res.err != nil {
				if len(res.batches) != 0 || res.buf != nil || c.buffered != 0 {
					t.Fatalf("cursor %d: an error with batches or bytes", i)
				}
				continue
			}
			split, _ := batch.Split(want.RecordBatches)
			if len(res.batches) == 0 || len(res.batches) != len(split) || res.buf == nil {
				t.Fatalf("cursor %d: %d batches of %d, buffer %v", i, len(res.batches), len(split), res.buf != nil)
			}
			var n int64
			for j, b := range res.batches {
				if !bytes.Equal(b, split[j]) {
					t.Fatalf("cursor %d: batch %d is not the record set's", i, j)
				}
				n += int64(len(b))
			}
			last := res.batches[len(res.batches)-1]
			if res.bytes != n || c.buffered != n || c.offset != last.NextOffset() || res.highWatermark != want.HighWatermark {
				t.Fatalf("cursor %d: %d bytes of %d, %d buffered, offset %d (next %d)", i, res.bytes, n, c.buffered, c.offset, last.NextOffset())
			}
			total += n
		}
		if fs.buffered.Load() != total {
			t.Fatalf("link buffers %d bytes, the cursors %d", fs.buffered.Load(), total)
		}

		// Each partition plans its result from the offset it fetched.
		l := &Link{fetchers: fs}
		for _, fp := range parts {
			res := fs.take(fp.c)
			if res == nil {
				continue
			}
			if res.err != nil {
				fs.release(fp.c, res.bytes)
				res.releaseFrom(0)
				continue
			}
			p := &partition{m: &mirror{link: l, name: fp.c.topic, sourceTopic: fp.c.topic}, id: fp.c.partition, cur: fp.c, log: zap.NewNop(), next: fp.offset}
			end := planEnd(fp.offset, res)
			steps, err := p.plan(res)
			if err != nil {
				var fe fatalError
				if !errors.As(err, &fe) {
					t.Fatalf("plan: %v (not fatal)", err)
				}
				continue
			}
			checkSteps(t, fp.offset, end, steps)
			// What replay does with each step, once it is done.
			for _, s := range steps {
				p.release(s.srcBytes)
				releaseBuf(s.buf)
			}
		}
		for i, fp := range parts {
			if fp.c.buffered != 0 {
				t.Fatalf("cursor %d: %d bytes never released", i, fp.c.buffered)
			}
		}
		if fs.buffered.Load() != 0 || fs.pool.Outstanding() != 0 {
			t.Fatalf("%d bytes and %d buffers never released", fs.buffered.Load(), fs.pool.Outstanding())
		}
	})
}

// planEnd is where the steps planned for res must end: the furthest batch
// end past next. Batches behind one that reached further are taken as
// mirrored already (a source's batches are in order; a fuzzed response's
// need not be). It is read before plan, which gives the buffer back.
func planEnd(next int64, res *fetchResult) int64 {
	end := next
	for _, b := range res.batches {
		end = max(end, b.NextOffset())
	}
	return end
}

// checkSteps: steps cover source offsets from next on, in order and
// without gaps or overlaps, up to end, and each data step is a batch Kafka
// takes from a producer.
func checkSteps(t *testing.T, next, end int64, steps []step) {
	t.Helper()
	at := next
	for i, s := range steps {
		switch s.kind {
		case stepHole:
			if s.from != at || s.to <= s.from {
				t.Fatalf("step %d: hole %d..%d at %d", i, s.from, s.to, at)
			}
			at = s.to
		case stepMarker:
			if s.from != at {
				t.Fatalf("step %d: marker at %d, expected %d", i, s.from, at)
			}
			at = s.from + 1
		case stepData:
			b := s.b
			if b.BaseOffset() != at {
				t.Fatalf("step %d: data at %d..%d, expected %d", i, b.BaseOffset(), b.LastOffset(), at)
			}
			if _, err := b.Verify(); err != nil || b.IsControl() || b.IsLogAppendTime() || b.NumRecords() <= 0 || b.HasHoles() || s.crc != b.RecordsCRC() {
				t.Fatalf("step %d: a batch Kafka refuses from a producer (%v, attrs %x, %d records over %d offsets)", i, err, b.Attributes(), b.NumRecords(), b.OffsetSpan())
			}
			at = b.NextOffset()
		}
	}
	if at != end {
		t.Fatalf("steps end at %d, the batches at %d", at, end)
	}
}

// FuzzProduceAnswer sends appends of four partitions through a sink's
// request building and answers each request with a fuzzed Produce
// response (or an error): every append gets exactly one answer, on its
// partition's channel and in the order sent, with the broker's base offset
// when its partition's answer has no error, an error otherwise.
func FuzzProduceAnswer(f *testing.F) {
	ok := func(topic string, ps ...int32) []byte {
		var out []byte
		for _, p := range ps {
			out = append(out, byte(len(topic)))
			out = append(out, topic...)
			out = append(out, byte(p), 0, 0)
		}
		return out
	}
	f.Add(append(ok("orders", 0, 1), ok("payments", 0, 1)...), uint8(3), false)
	f.Add(ok("orders", 0, 0, 7), uint8(1), false)
	f.Add([]byte{6, 'o', 'r', 'd', 'e', 'r', 's', 1, 0, 47}, uint8(2), false)
	f.Add([]byte{}, uint8(5), true)
	f.Fuzz(func(t *testing.T, answers []byte, requests uint8, failAll bool) {
		k := &sink{s: &sinks{log: zap.NewNop()}, id: 1, wake: make(chan struct{}, 1), parts: map[*sinkPart]struct{}{}}
		var sps []*sinkPart
		for _, tp := range []tp{{"orders", 0}, {"orders", 1}, {"payments", 0}, {"payments", 1}} {
			sp := newSinkPart(tp.topic, tp.p)
			k.attach(sp)
			var as []*appendReq
			for i := int64(0); i < 7; i++ {
				as = append(as, &appendReq{b: batch.Batch(fmt.Sprintf("%s-%d-%d", tp.topic, tp.p, i)), base: 10 * i, next: 10*i + 10})
			}
			sp.enqueue(as...)
			sps = append(sps, sp)
		}
		sent := map[*sinkPart][]*appendReq{}
		for r := 0; r < int(requests%6)+1; r++ {
			req, s := k.build(kconn.MaxProduceVersion)
			if req == nil {
				break
			}
			// The response: entries of (topic name, partition, error),
			// with a base offset of 100*partition + error.
			resp := kmsg.NewPtrProduceResponse()
			for a := answers; len(a) > 0; {
				n := min(int(a[0]), len(a)-1)
				topic := string(a[1 : 1+n])
				a = a[1+n:]
				if len(a) < 3 {
					break
				}
				rt := kmsg.NewProduceResponseTopic()
				rt.Topic = topic
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = int32(int8(a[0]))
				rp.ErrorCode = int16(binary.BigEndian.Uint16(a[1:]))
				rp.BaseOffset = 100*int64(rp.Partition) + int64(rp.ErrorCode)
				if rp.ErrorCode != 0 && a[1]&1 == 0 {
					msg := string(a[:3])
					rp.ErrorMessage = &msg
				}
				rt.Partitions = append(rt.Partitions, rp)
				resp.Topics = append(resp.Topics, rt)
				a = a[3:]
			}
			var err error
			if failAll && r%2 == 1 {
				resp, err = nil, errors.New("connection lost")
			}
			k.answer(s, resp, err)
			for _, x := range s {
				sent[x.sp] = append(sent[x.sp], x.a)
				got := <-x.sp.results
				x.sp.taken()
				if got.a != x.a {
					t.Fatalf("%s[%d]: the answer of another append", x.sp.topic, x.sp.partition)
				}
				// The last answer for the partition in the response.
				var want *kmsg.ProduceResponseTopicPartition
				if err == nil {
					for ti := range resp.Topics {
						for pi := range resp.Topics[ti].Partitions {
							if rp := &resp.Topics[ti].Partitions[pi]; resp.Topics[ti].Topic == x.sp.topic && rp.Partition == x.sp.partition {
								want = rp
							}
						}
					}
				}
				switch {
				case err != nil:
					if got.err == nil {
						t.Fatal("an append succeeded in a request that failed")
					}
				case want == nil:
					if got.err == nil {
						t.Fatalf("%s[%d]: success without an answer", x.sp.topic, x.sp.partition)
					}
				case want.ErrorCode != 0:
					if !errors.Is(got.err, kerr.ErrorForCode(want.ErrorCode)) || got.err.Error() == "" {
						t.Fatalf("%s[%d]: error %v for code %d", x.sp.topic, x.sp.partition, got.err, want.ErrorCode)
					}
				default:
					if got.err != nil || got.base != want.BaseOffset {
						t.Fatalf("%s[%d]: base %d, %v; want base %d", x.sp.topic, x.sp.partition, got.base, got.err, want.BaseOffset)
					}
				}
			}
			for _, sp := range sps {
				if len(sp.results) != 0 {
					t.Fatalf("%s[%d]: an answer too many", sp.topic, sp.partition)
				}
			}
		}
		if k.inflight != 0 {
			t.Fatalf("%d requests in flight after every answer", k.inflight)
		}
		// Appends were sent in order, each once.
		for _, sp := range sps {
			for i, a := range sent[sp] {
				if a.base != 10*int64(i) {
					t.Fatalf("%s[%d]: append %d sent as the %d-th", sp.topic, sp.partition, a.base/10, i)
				}
			}
			if len(sent[sp])+len(sp.queue) != 7 || sp.inflight.Load() != 0 {
				t.Fatalf("%s[%d]: %d sent, %d queued, %d in flight", sp.topic, sp.partition, len(sent[sp]), len(sp.queue), sp.inflight.Load())
			}
		}
	})
}
