package kconn

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// randomFetchResponse is a response of the given version with random
// topics, partitions, aborted transactions, record sets (some empty, some
// null) and unknown tags.
func randomFetchResponse(r *rand.Rand, version int16) *kmsg.FetchResponse {
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(version)
	resp.ThrottleMillis = r.Int32()
	resp.ErrorCode = int16(r.IntN(3))
	resp.SessionID = r.Int32()
	for ti := range r.IntN(4) {
		t := kmsg.NewFetchResponseTopic()
		t.Topic = string(rune('a'+ti)) + "-topic"
		fill(r, t.TopicID[:])
		for pi := range r.IntN(5) {
			p := kmsg.NewFetchResponseTopicPartition()
			p.Partition = int32(pi)
			p.ErrorCode = int16(r.IntN(2))
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = r.Int64(), r.Int64(), r.Int64()
			for range r.IntN(3) {
				a := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
				a.ProducerID, a.FirstOffset = r.Int64(), r.Int64()
				if version >= 12 && r.IntN(3) == 0 {
					a.UnknownTags.Set(7, []byte("x"))
				}
				p.AbortedTransactions = append(p.AbortedTransactions, a)
			}
			p.PreferredReadReplica = r.Int32()
			switch r.IntN(4) {
			case 0: // null
			case 1:
				p.RecordBatches = []byte{}
			default:
				p.RecordBatches = make([]byte, 1+r.IntN(200<<10))
				fill(r, p.RecordBatches)
			}
			if version >= 12 && r.IntN(3) == 0 {
				p.DivergingEpoch.Epoch, p.DivergingEpoch.EndOffset = 3, 9
				p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch = 1, 2
				p.UnknownTags.Set(9, []byte("tag"))
			}
			t.Partitions = append(t.Partitions, p)
		}
		if version >= 12 && r.IntN(3) == 0 {
			t.UnknownTags.Set(5, []byte("topic tag"))
		}
		resp.Topics = append(resp.Topics, t)
	}
	if version >= 16 && r.IntN(2) == 0 {
		b := kmsg.NewFetchResponseBroker()
		b.NodeID, b.Host, b.Port = 1, "broker-1", 9092
		resp.Brokers = append(resp.Brokers, b)
	}
	return resp
}

func fill(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// body is a response as it follows the correlation id on the wire.
func body(resp *kmsg.FetchResponse) []byte {
	var b []byte
	if resp.IsFlexible() {
		b = append(b, 0) // response header v1: no tags
	}
	return resp.AppendTo(b)
}

// sameAsKmsg checks the streamed response against kmsg's decoding of the
// same bytes: every field equal, each record set byte for byte.
func sameAsKmsg(t *testing.T, raw []byte, version int16, s *StreamedFetch) {
	t.Helper()
	want := kmsg.NewPtrFetchResponse()
	want.SetVersion(version)
	src := raw
	if want.IsFlexible() {
		var err error
		if src, err = skipTags(src); err != nil {
			t.Fatalf("kmsg cannot read the header the stream read: %v", err)
		}
	}
	if err := want.ReadFrom(src); err != nil {
		t.Fatalf("the stream decoded what kmsg refuses (%v)", err)
	}
	got := *s.Resp
	if len(got.Topics) != len(want.Topics) {
		t.Fatalf("%d topics, kmsg %d", len(got.Topics), len(want.Topics))
	}
	// Compare the record sets, then everything else without them.
	got.Topics = append([]kmsg.FetchResponseTopic(nil), got.Topics...)
	for i := range got.Topics {
		gt, wt := &got.Topics[i], &want.Topics[i]
		gt.Partitions = append([]kmsg.FetchResponseTopicPartition(nil), gt.Partitions...)
		if len(gt.Partitions) != len(wt.Partitions) {
			t.Fatalf("topic %d: %d partitions, kmsg %d", i, len(gt.Partitions), len(wt.Partitions))
		}
		for j := range gt.Partitions {
			if !bytes.Equal(gt.Partitions[j].RecordBatches, wt.Partitions[j].RecordBatches) {
				t.Fatalf("topic %d partition %d: record set differs", i, j)
			}
			if b := s.Records[i][j]; (b != nil) != (len(wt.Partitions[j].RecordBatches) > 0) {
				t.Fatalf("topic %d partition %d: buffer %v for %d record bytes", i, j, b != nil, len(wt.Partitions[j].RecordBatches))
			}
			gt.Partitions[j].RecordBatches, wt.Partitions[j].RecordBatches = nil, nil
		}
	}
	if !reflect.DeepEqual(&got, want) {
		t.Fatalf("streamed response differs from kmsg's:\n got %+v\nwant %+v", got, *want)
	}
}

func TestReadFetchResponseMatchesKmsg(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pool := NewBufferPool(64 << 20)
	for version := int16(4); version <= 18; version++ {
		for range 30 {
			resp := randomFetchResponse(r, version)
			raw := body(resp)
			// A small reader buffer, so that fields straddle refills.
			s, err := ReadFetchResponse(bufio.NewReaderSize(bytes.NewReader(raw), 16), len(raw), version, pool)
			if err != nil {
				t.Fatalf("v%d: %v", version, err)
			}
			sameAsKmsg(t, raw, version, s)
			s.Release()
		}
	}
	if n := pool.Outstanding(); n != 0 {
		t.Fatalf("%d buffers not released", n)
	}
}

// A response cut short anywhere is an error, with every buffer back.
func TestReadFetchResponseTruncated(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	pool := NewBufferPool(64 << 20)
	for version := int16(4); version <= 18; version += 2 {
		resp := randomFetchResponse(r, version)
		for len(resp.Topics) == 0 {
			resp = randomFetchResponse(r, version)
		}
		raw := body(resp)
		for _, cut := range []int{1, 5, len(raw) / 3, len(raw) / 2, len(raw) - 1} {
			if cut <= 0 || cut >= len(raw) {
				continue
			}
			if s, err := ReadFetchResponse(bufio.NewReader(bytes.NewReader(raw[:cut])), cut, version, pool); err == nil {
				// Only a cut exactly after the last field of a
				// complete response could pass; kmsg must agree.
				sameAsKmsg(t, raw[:cut], version, s)
				s.Release()
			}
		}
	}
	if n := pool.Outstanding(); n != 0 {
		t.Fatalf("%d buffers not released", n)
	}
}

// FuzzReadFetchResponse: any bytes either fail to read, with every buffer
// released, or read into exactly what kmsg decodes from them.
func FuzzReadFetchResponse(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, v := range []int16{4, 7, 11, 12, 13, 16} {
		resp := randomFetchResponse(r, v)
		for _, t := range resp.Topics {
			for i := range t.Partitions {
				if len(t.Partitions[i].RecordBatches) > 64 {
					t.Partitions[i].RecordBatches = t.Partitions[i].RecordBatches[:64]
				}
			}
		}
		f.Add(body(resp), uint8(v))
	}
	f.Fuzz(func(t *testing.T, raw []byte, v uint8) {
		version := int16(4 + v%15)
		pool := NewBufferPool(1 << 20)
		s, err := ReadFetchResponse(bufio.NewReaderSize(bytes.NewReader(raw), 16), len(raw), version, pool)
		if err == nil {
			sameAsKmsg(t, raw, version, s)
			s.Release()
		}
		if n := pool.Outstanding(); n != 0 {
			t.Fatalf("%d buffers not released (err %v)", n, err)
		}
	})
}
