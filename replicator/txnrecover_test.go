package replicator

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kafkatest"
)

// klink stopped between AddPartitionsToTxn and its first append (on Kafka
// 3.8 its append was refused while the destination's transaction
// coordinator moved), and the listing of transactions its partition reads
// when it starts again leaves that open transaction out, as one sent while
// the transaction log moves between brokers can. Taking the id over with InitProducerId would
// abort the transaction, and its abort marker would take the offset of
// klink's next append: every later record one offset off. klink asks the
// id's coordinator before it takes the id over, waits for a listing that
// shows the transaction, and resumes it: same offsets, no shift.
func TestOpenTransactionLeftOutOfListing(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "ot", 1, nil)
		plain := newClient(t, src, kgo.DefaultProduceTopic("ot"))
		for i := range 2 {
			produceSync(t, plain, &kgo.Record{Key: fmt.Appendf(nil, "plain-%d", i), Value: fmt.Appendf(nil, "plain record %d", i)})
		}
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "ot"})
		r, stop := runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"ot", "ot"})
		linkID := r.Status().Links[0].LinkID
		stop()

		// What klink leaves when it stops right after adding the
		// partition to its transaction: the transaction open on the
		// destination, holding the partition, no data in it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		id := fmt.Sprintf("klink-%s-ot-0-0", linkID)
		dcl := newClient(t, dst)
		init := kmsg.NewPtrInitProducerIDRequest()
		init.TransactionalID = &id
		init.TransactionTimeoutMillis = int32(txnTimeout / time.Millisecond)
		var pid int64
		var epoch int16
		if err := retryTxn(ctx, func() (int16, error) {
			resp, err := init.RequestWith(ctx, dcl)
			if err != nil {
				return 0, err
			}
			pid, epoch = resp.ProducerID, resp.ProducerEpoch
			return resp.ErrorCode, nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := addPartitionToTxn(ctx, dcl, id, batch.Producer{ID: pid, Epoch: epoch}, "ot", 0); err != nil {
			t.Fatal(err)
		}

		// The source transaction whose replay opened it.
		txn := newClient(t, src, kgo.TransactionalID("app-ot"), kgo.DefaultProduceTopic("ot"))
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			produceSync(t, txn, &kgo.Record{Key: fmt.Appendf(nil, "txn-%d", i), Value: fmt.Appendf(nil, "txn record %d", i),
				Headers: []kgo.RecordHeader{{Key: "from", Value: []byte("app-ot")}}})
		}
		if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}

		// The first two listings leave it out.
		var listings atomic.Int32
		var hook listTransactionsFunc = func(ctx context.Context, adm *kadm.Client) (kadm.ListedTransactions, error) {
			if listings.Add(1) <= 2 {
				return kadm.ListedTransactions{}, nil
			}
			return adm.ListTransactions(ctx, nil, nil)
		}
		listTransactionsHook.Store(&hook)
		t.Cleanup(func() { listTransactionsHook.Store(nil) })

		r, _ = runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"ot", "ot"})
		m := mirrorStatus(t, r, "ot")
		if m.State != "ACTIVE" {
			t.Fatalf("mirror %s: %s", m.State, m.Reason)
		}
		if sh := m.Partitions[0].OffsetShifts; len(sh) != 0 {
			t.Fatalf("the partition shifted: %+v", sh)
		}
		requireSameRecords(t, readAll(t, src, "ot"), readAll(t, dst, "ot"))
		requireIdenticalBatches(t, src, dst, "ot", "ot", 0)
		requireReadCommittedOnce(t, src, dst, "ot")
		if n := listings.Load(); n < 3 {
			t.Fatalf("%d listings: the left-out one was never read again", n)
		}
	})
}
