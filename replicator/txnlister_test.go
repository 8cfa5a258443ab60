package replicator

import (
	"context"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/replicator/kafkatest"
)

// Partitions starting together share ListTransactions listings, and none
// is served a listing sent before it asked (it would miss transactions
// opened, or see ones ended, before its call).
func TestTxnListerShares(t *testing.T) {
	c, _ := testClusters(t, kafkatest.KFake)
	createTopic(t, c, "t", 1, nil)
	adm := kadm.NewClient(newClient(t, c))
	txn := newClient(t, c, kgo.TransactionalID("lister-1"), kgo.DefaultProduceTopic("t"))
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceSync(t, txn, &kgo.Record{Value: []byte("open")})

	var tl txnLister
	const callers = 64
	var wg sync.WaitGroup
	errs := make(chan string, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			listed, err := tl.list(context.Background(), adm)
			if err != nil {
				errs <- err.Error()
				return
			}
			if lt, ok := listed["lister-1"]; !ok || lt.State != "Ongoing" {
				errs <- "the open transaction is not listed Ongoing"
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if n := tl.calls.Load(); n >= callers/2 {
		t.Fatalf("%d callers at once sent %d listings", callers, n)
	}
	t.Logf("%d callers at once: %d listings", callers, tl.calls.Load())

	if err := txn.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	listed, err := tl.list(context.Background(), adm)
	if err != nil {
		t.Fatal(err)
	}
	if lt := listed["lister-1"]; lt.State == "Ongoing" {
		t.Fatal("a listing from before the call: the committed transaction is still Ongoing")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tl.list(ctx, adm); err == nil {
		t.Fatal("a cancelled caller got a listing")
	}
}
