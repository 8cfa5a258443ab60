package replicator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// requireExact checks a mirror the way the Exact-offsets issue states it:
// a read_committed reader sees on the destination exactly what it sees on
// the source (no fillers); a read_uncommitted reader sees the same plus at
// most fillers; every marker and every data batch is at its source offset.
func requireExact(t *testing.T, src, dst *kfake.Cluster, srcTopic, dstTopic string, partitions int32) (committed, uncommitted, fillers int) {
	t.Helper()
	sc, dc := readAllAs(t, src, srcTopic, mirrorcheck.ReadCommitted), readAllAs(t, dst, dstTopic, mirrorcheck.ReadCommitted)
	m, f, err := mirrorcheck.Compare(sc, dc)
	if err != nil {
		t.Fatalf("read_committed: %v", err)
	}
	if f != 0 {
		t.Fatalf("read_committed reader sees %d filler records", f)
	}
	committed = m
	su, du := readAllAs(t, src, srcTopic, mirrorcheck.ReadUncommitted), readAllAs(t, dst, dstTopic, mirrorcheck.ReadUncommitted)
	if uncommitted, fillers, err = mirrorcheck.Compare(su, du); err != nil {
		t.Fatalf("read_uncommitted: %v", err)
	}
	if uncommitted != su.Count() {
		t.Fatalf("read_uncommitted: %d of %d source records matched", uncommitted, su.Count())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for p := int32(0); p < partitions; p++ {
		if _, _, err := mirrorcheck.ComparePartitionBatches(ctx, src.ListenAddrs(), dst.ListenAddrs(), srcTopic, dstTopic, p); err != nil {
			t.Fatal(err)
		}
	}
	return committed, uncommitted, fillers
}

// txnProducer writes transactions that commit or abort at random until ctx
// ends; it returns how many of each.
func txnProducer(ctx context.Context, t *testing.T, c *kfake.Cluster, id, topic string, partitions int32, seed uint64) (commits, aborts int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID(id),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.ZstdCompression(), kgo.NoCompression()))
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	r := rand.New(rand.NewPCG(seed, seed))
	for i := 0; ctx.Err() == nil; i++ {
		if err := cl.BeginTransaction(); err != nil {
			t.Error(err)
			return
		}
		n := 1 + r.IntN(6)
		for j := 0; j < n; j++ {
			rec := &kgo.Record{
				Topic:     topic,
				Partition: r.Int32N(partitions),
				Key:       []byte(fmt.Sprintf("%s-k%d", id, r.IntN(20))),
				Value:     []byte(fmt.Sprintf("%s txn %d record %d", id, i, j)),
				Headers:   []kgo.RecordHeader{{Key: "txn", Value: []byte(id)}},
			}
			if err := cl.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond) // let the other producers interleave
		}
		commit := r.IntN(3) != 0
		if err := cl.EndTransaction(context.Background(), kgo.TransactionEndTry(commit)); err != nil {
			t.Error(err)
			return
		}
		if commit {
			commits++
		} else {
			aborts++
		}
	}
	return commits, aborts
}

// Test 1 of the Exact-offsets issue: two transactional producers committing
// and aborting at random, interleaved with each other and with a plain
// producer on the same partitions, while klink mirrors. read_committed and
// read_uncommitted readers on both sides agree offset for offset, and every
// marker is at its source offset.
func TestMirrorInterleavedTransactions(t *testing.T) {
	src, dst := testClusters(t)
	createTopic(t, src, "tx", 3, nil)
	r, _ := runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: "tx"}))

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	commits, aborts := 0, 0
	for i, id := range []string{"app-a", "app-b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, a := txnProducer(ctx, t, src, id, "tx", 3, uint64(i+1))
			mu.Lock()
			commits += c
			aborts += a
			mu.Unlock()
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		plain := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		for i := 0; ctx.Err() == nil; i++ {
			rec := &kgo.Record{Topic: "tx", Partition: int32(i % 3), Key: []byte(fmt.Sprint("plain-", i%7)), Value: []byte(fmt.Sprint("plain ", i))}
			if err := plain.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	wg.Wait()
	if commits == 0 || aborts == 0 {
		t.Fatalf("%d commits and %d aborts: the test needs both", commits, aborts)
	}
	waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"tx", "tx"})
	committed, uncommitted, fillers := requireExact(t, src, dst, "tx", "tx", 3)
	if committed == 0 || uncommitted <= committed {
		t.Fatalf("committed %d, uncommitted %d records: aborted data missing from the test", committed, uncommitted)
	}
	t.Logf("%d commits, %d aborts: %d committed and %d uncommitted records identical, %d fillers", commits, aborts, committed, uncommitted, fillers)
	if m := r.Status().Links[0].Mirrors[0]; m.State != "ACTIVE" {
		t.Fatalf("mirror %s: %s", m.State, m.Reason)
	}
}
