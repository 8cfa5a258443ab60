package kconn

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// EncodeProduce writes, for every version it supports, the bytes kmsg's
// own encoder writes.
func TestEncodeProduceMatchesKmsg(t *testing.T) {
	txn := "txn-1"
	for v := int16(3); v <= MaxProduceVersion; v++ {
		for _, txnID := range []*string{nil, &txn} {
			p := &Produce{Version: v, TransactionalID: txnID, Acks: -1, TimeoutMillis: 30000, Topics: []ProduceTopic{
				{Topic: "orders", Partitions: []ProducePartition{{Partition: 0, Records: bytes.Repeat([]byte{1}, 300)}, {Partition: 7, Records: []byte{2, 3}}}},
				{Topic: "payments", Partitions: []ProducePartition{{Partition: 2, Records: bytes.Repeat([]byte{9}, 200)}}},
			}}
			var got []byte
			for _, b := range EncodeProduce(p, "klink-x", 42) {
				got = append(got, b...)
			}

			req := kmsg.NewPtrProduceRequest()
			req.SetVersion(v)
			req.TransactionID = txnID
			req.Acks = -1
			req.TimeoutMillis = 30000
			for _, pt := range p.Topics {
				rt := kmsg.NewProduceRequestTopic()
				rt.Topic = pt.Topic
				for _, pp := range pt.Partitions {
					rp := kmsg.NewProduceRequestTopicPartition()
					rp.Partition = pp.Partition
					rp.Records = pp.Records
					rt.Partitions = append(rt.Partitions, rp)
				}
				req.Topics = append(req.Topics, rt)
			}
			want := kmsg.NewRequestFormatter(kmsg.FormatterClientID("klink-x")).AppendRequest(nil, req, 42)
			if !bytes.Equal(got, want) {
				t.Fatalf("v%d txn=%v: encoding differs\n got %x\nwant %x", v, txnID != nil, got, want)
			}
		}
	}
}
