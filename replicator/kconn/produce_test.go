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
			if got, want := encodeBoth(p, "klink-x", 42); !bytes.Equal(got, want) {
				t.Fatalf("v%d txn=%v: encoding differs\n got %x\nwant %x", v, txnID != nil, got, want)
			}
		}
	}
}

// encodeBoth encodes p with EncodeProduce, and the same request with
// kmsg's own encoder.
func encodeBoth(p *Produce, clientID string, corr int32) (got, want []byte) {
	for _, b := range EncodeProduce(p, clientID, corr) {
		got = append(got, b...)
	}
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(p.Version)
	req.TransactionID = p.TransactionalID
	req.Acks = p.Acks
	req.TimeoutMillis = p.TimeoutMillis
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
	return got, kmsg.NewRequestFormatter(kmsg.FormatterClientID(clientID)).AppendRequest(nil, req, corr)
}
