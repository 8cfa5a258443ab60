package replicator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kafkatest"
)

// What klink cluster members rely on when they take a partition over
// (newFencingEpoch): plain, non-transactional batches under the producer
// id of a stable transactional id are accepted, InitProducerId bumps its
// epoch, and once a batch under the new epoch has landed on the partition
// the broker refuses the old epoch and appends nothing. Before that, real
// Kafka still accepts the old epoch on the partition (it has not heard of
// the new one): the lease covers that window. kfake fences at once.
func TestFencingEpoch(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		c := kafkatest.Start(t, k, "fence", kafkatest.Brokers(1))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.Admin(t).CreateTopic(ctx, 1, -1, nil, "fenced"); err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(append(c.ClientOpts(), kgo.SeedBrokers(c.ListenAddrs()...), kgo.MaxVersions(kversion.V3_8_0()))...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		txnID := "klink-LINKID-fenced-0w" // the shape of writerTxnID
		initPID := func() (int64, int16) { return initWriter(t, ctx, cl, txnID) }
		end := func() int64 {
			o, err := c.Admin(t).ListEndOffsets(ctx, "fenced")
			if err != nil {
				t.Fatal(err)
			}
			l, _ := o.Lookup("fenced", 0)
			return l.Offset
		}
		produce := func(pid int64, epoch int16, seq int32) error {
			return producePlain(t, ctx, cl, "fenced", 0, batch.Producer{ID: pid, Epoch: epoch, Sequence: seq})
		}

		oldPID, oldEpoch := initPID()
		if err := produce(oldPID, oldEpoch, 0); err != nil {
			t.Fatalf("a plain batch under a transactional id's producer: %v", err)
		}
		newPID, newEpoch := initPID()
		if newPID != oldPID || newEpoch != oldEpoch+1 {
			t.Fatalf("InitProducerId again: producer %d epoch %d, was %d epoch %d", newPID, newEpoch, oldPID, oldEpoch)
		}
		err = produce(oldPID, oldEpoch, 1)
		switch {
		case k == kafkatest.Kafka && err != nil:
			t.Fatalf("Kafka refused the old epoch before the new one landed (%v): the window the lease covers is gone; say so in the README", err)
		case k == kafkatest.KFake && err == nil:
			t.Fatalf("kfake accepted the old epoch after InitProducerId")
		}
		if err := produce(newPID, newEpoch, 0); err != nil {
			t.Fatalf("the new owner's first batch: %v", err)
		}
		before := end()
		if err := produce(oldPID, oldEpoch, 2); !errors.Is(err, kerr.InvalidProducerEpoch) {
			t.Fatalf("the old epoch after the new one landed: %v, want INVALID_PRODUCER_EPOCH", err)
		}
		if after := end(); after != before {
			t.Fatalf("a refused append moved the end offset from %d to %d", before, after)
		}
	})
}

// initWriter sends InitProducerId for a transactional id, as a klink
// cluster member does for a destination partition's writer.
func initWriter(t *testing.T, ctx context.Context, cl *kgo.Client, txnID string) (int64, int16) {
	t.Helper()
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &txnID
	req.TransactionTimeoutMillis = 60000
	var resp *kmsg.InitProducerIDResponse
	if err := retryTxn(ctx, func() (int16, error) {
		r, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		resp = r
		return r.ErrorCode, nil
	}); err != nil {
		t.Fatal(err)
	}
	return resp.ProducerID, resp.ProducerEpoch
}

// producePlain appends one plain (non-transactional) batch of one record
// under the given producer, as a member that lost the partition would,
// and returns the partition's error.
func producePlain(t *testing.T, ctx context.Context, cl *kgo.Client, topic string, partition int32, pr batch.Producer) error {
	t.Helper()
	now := time.Now().UnixMilli()
	b, err := batch.Build(batch.CodecNone, 0, 0, now, now, 1, batch.AppendRecord(nil, batch.Record{Key: []byte("zombie"), Value: []byte("from a member that lost the partition")}))
	if err != nil {
		t.Fatal(err)
	}
	b.Rewrite(pr, 0, b.RecordsCRC())
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition = partition
	rp.Records = b
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	leader := md.Topics[topic].Partitions[partition].Leader
	kr, err := cl.Broker(int(leader)).Request(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return kerr.ErrorForCode(kr.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode)
}
