package kconn

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/replicator/batch"
)

// The requests whose responses klink reads: Fetch v4..18 (the fetchers),
// Produce v3..11 (the sinks, through SendProduce) and ApiVersions v3 and v0
// (Dial).
const (
	fuzzFetch = iota
	fuzzProduce
	fuzzApiVersions
	fuzzKinds
)

func fuzzVersion(kind, v uint8) int16 {
	switch kind {
	case fuzzFetch:
		return 4 + int16(v%15)
	case fuzzProduce:
		return 3 + int16(v%(MaxProduceVersion-2))
	}
	return []int16{3, 0}[v%2]
}

// seedResponse is a real response body (what follows the correlation id,
// the header's tag section included) for kind at version v.
func seedResponse(t testing.TB, kind uint8, v int16) []byte {
	t.Helper()
	var resp kmsg.Response
	switch kind {
	case fuzzFetch:
		r := kmsg.NewPtrFetchResponse()
		bs, err := batch.Fillers(3, 1_700_000_000_000, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for ti, name := range []string{"orders", "payments"} {
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic = name
			rt.TopicID = [16]byte{byte(ti + 1), 2, 3}
			for p := int32(0); p < 2; p++ {
				rp := kmsg.NewFetchResponseTopicPartition()
				rp.Partition = p
				rp.HighWatermark = 100
				rp.LastStableOffset = 90
				rp.LogStartOffset = 3
				if p == 1 {
					rp.ErrorCode = 6 // NOT_LEADER_FOR_PARTITION
				} else {
					rp.RecordBatches = append(append([]byte(nil), bs[0]...), bs[0][:30]...) // a batch, then one cut short
					at := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
					at.ProducerID, at.FirstOffset = 7, 40
					rp.AbortedTransactions = append(rp.AbortedTransactions, at)
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			r.Topics = append(r.Topics, rt)
		}
		resp = r
	case fuzzProduce:
		r := kmsg.NewPtrProduceResponse()
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = "orders"
		for p := int32(0); p < 3; p++ {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition = p
			rp.BaseOffset = 1000 * int64(p)
			rp.LogStartOffset = 0
			if p == 2 {
				rp.ErrorCode = 47 // INVALID_PRODUCER_EPOCH
				msg := "fenced"
				rp.ErrorMessage = &msg
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		r.Topics = append(r.Topics, rt)
		resp = r
	default:
		r := kmsg.NewPtrApiVersionsResponse()
		for _, k := range []int16{0, 1, 3, 18} {
			ak := kmsg.NewApiVersionsResponseApiKey()
			ak.ApiKey, ak.MinVersion, ak.MaxVersion = k, 0, 12
			r.ApiKeys = append(r.ApiKeys, ak)
		}
		resp = r
	}
	resp.SetVersion(v)
	var out []byte
	if resp.IsFlexible() && resp.Key() != int16(kmsg.ApiVersions) {
		out = append(out, 0) // the response header's empty tag section
	}
	return resp.AppendTo(out)
}

// fuzzRequest sends the request of kind at version v on c and returns a
// channel with its outcome.
type fuzzOutcome struct {
	resp kmsg.Response
	buf  *Buffer
	err  error
}

func fuzzRequest(c *Conn, kind uint8, v int16, pool *BufferPool) <-chan fuzzOutcome {
	out := make(chan fuzzOutcome, 2) // 2: an answer given twice is caught, not blocked
	switch kind {
	case fuzzFetch:
		req := kmsg.NewPtrFetchRequest()
		req.SetVersion(v)
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "orders"
		rt.Partitions = append(rt.Partitions, kmsg.NewFetchRequestTopicPartition())
		req.Topics = append(req.Topics, rt)
		if pool != nil {
			c.SendPooled(req, 0, pool, func(r kmsg.Response, b *Buffer, err error) { out <- fuzzOutcome{r, b, err} })
		} else {
			c.Send(req, 0, func(r kmsg.Response, err error) { out <- fuzzOutcome{resp: r, err: err} })
		}
	case fuzzProduce:
		p := &Produce{Version: v, Acks: -1, TimeoutMillis: 1000, Topics: []ProduceTopic{{Topic: "orders", Partitions: []ProducePartition{{Partition: 0, Records: []byte("batch")}}}}}
		c.SendProduce(p, 0, func(r *kmsg.ProduceResponse, err error) {
			o := fuzzOutcome{err: err}
			if r != nil {
				o.resp = r
			}
			out <- o
		})
	default:
		req := kmsg.NewPtrApiVersionsRequest()
		req.SetVersion(v)
		c.Send(req, 0, func(r kmsg.Response, err error) { out <- fuzzOutcome{resp: r, err: err} })
	}
	return out
}

// fuzzConn is a Conn on one end of a pipe, as Dial makes it (without the
// ApiVersions exchange); the other end is the broker.
func fuzzConn(nc net.Conn) *Conn {
	c := newConn("broker:9092", nc, Options{ClientID: "klink-fuzz", Timeout: 5 * time.Second})
	go c.readLoop()
	return c
}

// fuzzBroker reads one request from nc and answers with respond(request).
func fuzzBroker(nc net.Conn, respond func(req []byte) []byte) {
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(nc, size[:]); err != nil {
		return
	}
	req := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(nc, req); err != nil {
		return
	}
	// Keep reading: net.Pipe blocks even an empty write (EncodeProduce
	// may end with one) until it is read.
	go io.Copy(io.Discard, nc)
	nc.Write(respond(req))
	nc.Close() // the rest of a short response never comes
}

// FuzzResponse runs a Conn against a broker that answers one request with
// fuzzed bytes. With frame set, the broker frames data as a response to
// the request (size and correlation id right), so that decoding is reached;
// otherwise data is all the broker sends. The Conn must answer the call
// exactly once, with a response of the request's kind or an error, and
// give every pooled buffer back.
func FuzzResponse(f *testing.F) {
	for kind := uint8(0); kind < fuzzKinds; kind++ {
		for v := uint8(0); v < 15; v++ {
			version := fuzzVersion(kind, v)
			if kind != fuzzFetch && v >= 9 || kind == fuzzApiVersions && v >= 2 {
				continue
			}
			body := seedResponse(f, kind, version)
			f.Add(kind, v, true, v%2 == 0, body)
			frame := binary.BigEndian.AppendUint32(nil, uint32(4+len(body)))
			frame = binary.BigEndian.AppendUint32(frame, 1) // the first correlation id
			f.Add(kind, v, false, v%2 == 1, append(frame, body...))
		}
	}
	// ApiVersions' answer to a version it does not know: v0 form.
	f.Add(uint8(fuzzApiVersions), uint8(0), true, false, []byte{0, 35, 0, 0, 0, 0})
	f.Add(uint8(fuzzFetch), uint8(0), false, true, []byte{0x7f, 0xff, 0xff, 0xff}) // a huge size, then nothing

	f.Fuzz(func(t *testing.T, kind, v uint8, frame, pooled bool, data []byte) {
		kind %= fuzzKinds
		version := fuzzVersion(kind, v)
		if !frame && len(data) >= 4 && binary.BigEndian.Uint32(data) > 1<<20 {
			// A size klink accepts (up to 1 GiB) is allocated before it is
			// read: not what this target is about.
			data = bytes.Clone(data)
			binary.BigEndian.PutUint32(data, 1<<20)
		}
		client, server := net.Pipe()
		c := fuzzConn(client)
		defer c.Close()
		var pool *BufferPool
		if pooled && kind == fuzzFetch {
			pool = NewBufferPool(1 << 20)
		}
		go fuzzBroker(server, func(req []byte) []byte {
			if !frame {
				return data
			}
			out := binary.BigEndian.AppendUint32(nil, uint32(4+len(data)))
			out = append(out, req[4:8]...) // the request's correlation id
			return append(out, data...)
		})
		var o fuzzOutcome
		select {
		case o = <-fuzzRequest(c, kind, version, pool):
		case <-time.After(20 * time.Second):
			t.Fatal("no answer")
		}
		switch {
		case o.err != nil && (o.resp != nil || o.buf != nil):
			t.Fatalf("an error with a response: %v", o.err)
		case o.err == nil && o.resp == nil:
			t.Fatal("neither a response nor an error")
		case o.err == nil && (o.resp.Key() != []int16{int16(kmsg.Fetch), int16(kmsg.Produce), int16(kmsg.ApiVersions)}[kind]):
			t.Fatalf("a %s response to a %d request", kmsg.NameForKey(o.resp.Key()), kind)
		case o.err == nil && pool != nil && o.buf == nil:
			t.Fatal("a pooled response without its buffer")
		case o.err != nil && c.Err() == nil:
			t.Fatalf("the connection lives on after %v", o.err)
		}
		if o.err == nil && kind != fuzzApiVersions && o.resp.GetVersion() != version {
			t.Fatalf("v%d response to a v%d request", o.resp.GetVersion(), version)
		}
		if o.buf != nil {
			o.buf.Release()
		}
		c.Close()
		// A call after the connection died is answered at once, with the
		// error.
		select {
		case o2 := <-fuzzRequest(c, kind, version, pool):
			if o2.err == nil {
				t.Fatal("a call on a closed connection succeeded")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a call on a closed connection hangs")
		}
		if pool != nil && pool.Outstanding() != 0 {
			t.Fatalf("%d pooled buffers not given back", pool.Outstanding())
		}
	})
}

// FuzzSkipTags: skipTags returns a suffix of its input, and skips exactly
// a well-formed tag section built from the fuzzed values.
func FuzzSkipTags(f *testing.F) {
	f.Add([]byte{0}, []byte("body"))
	f.Add([]byte{2, 0, 1, 7, 5, 3, 1, 2, 3}, []byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, []byte{1})
	f.Fuzz(func(t *testing.T, raw, tail []byte) {
		if rest, err := skipTags(raw); err == nil && !bytes.HasSuffix(raw, rest) {
			t.Fatal("skipTags returned bytes that are not the input's rest")
		}
		// raw as tags: each byte a tag id, then that many bytes (mod 8)
		// of value.
		var section []byte
		n := 0
		for rest := raw; len(rest) > 0; n++ {
			id, l := uint64(rest[0]), min(int(rest[0]%8), len(rest)-1)
			section = binary.AppendUvarint(section, id<<20)
			section = binary.AppendUvarint(section, uint64(l))
			section = append(section, rest[1:1+l]...)
			rest = rest[1+l:]
		}
		whole := append(binary.AppendUvarint(nil, uint64(n)), section...)
		rest, err := skipTags(append(whole, tail...))
		if err != nil || !bytes.Equal(rest, tail) {
			t.Fatalf("skipTags on %d tags: %x, %v; want %x", n, rest, err, tail)
		}
	})
}

// FuzzEncodeProduce: EncodeProduce writes what kmsg's encoder writes for
// the same request, whatever the names, ids and record bytes.
func FuzzEncodeProduce(f *testing.F) {
	f.Add(uint8(8), true, "txn-1", int16(-1), int32(30000), "klink-x", int32(42), []byte("orders\x00\x02payments"), bytes.Repeat([]byte{1}, 300))
	f.Add(uint8(0), false, "", int16(1), int32(0), "", int32(0), []byte{}, []byte{})
	f.Add(uint8(6), true, "", int16(0), int32(-5), "c", int32(-1), []byte("a\x00b\x00c"), []byte{0})
	f.Fuzz(func(t *testing.T, v uint8, hasTxn bool, txn string, acks int16, timeout int32, clientID string, corr int32, topics, records []byte) {
		if len(txn) > 1000 || len(clientID) > 1000 || len(topics) > 1000 {
			return // int16 string lengths
		}
		version := 3 + int16(v%(MaxProduceVersion-2))
		p := &Produce{Version: version, Acks: acks, TimeoutMillis: timeout}
		if hasTxn {
			p.TransactionalID = &txn
		}
		if records == nil {
			records = []byte{} // klink never sends null records; kmsg would write them as null
		}
		// topics: names separated by 0; the byte after each 0 (or the
		// first) numbers its partitions; records are shared out.
		for i, name := range bytes.Split(topics, []byte{0}) {
			pt := ProduceTopic{Topic: string(name)}
			np := 1
			if len(name) > 0 {
				np = int(name[0] % 4)
			}
			for j := 0; j < np; j++ {
				cut := min(len(records), (i+j)*7%(len(records)+1))
				pt.Partitions = append(pt.Partitions, ProducePartition{Partition: int32(j*i - 1), Records: records[:cut]})
			}
			p.Topics = append(p.Topics, pt)
		}
		got, want := encodeBoth(p, clientID, corr)
		if !bytes.Equal(got, want) {
			t.Fatalf("v%d: encoding differs\n got %x\nwant %x", version, got, want)
		}
	})
}
