package replicator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// Broker faults on real Apache Kafka brokers, each under load: a plain
// topic written by two producers (zstd and lz4) and a transactional topic
// written by a producer that commits and aborts. After the fault nobody
// touches klink; it must end with both mirrors ACTIVE and exact: every
// record at its source offset (key, value, headers, timestamp), nothing
// lost or duplicated, every batch and marker where the source has it.

const (
	faultPlain = "plain"
	faultTxn   = "txn"
	faultParts = 3
)

// load writes to the source until stopped.
type load struct {
	t        *testing.T
	src      *kafkatest.Cluster
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	acked    atomic.Int64 // plain records the source acknowledged
	commits  atomic.Int64
	aborts   atomic.Int64
	failures atomic.Int64 // produce or transaction errors (the fault's)
}

func startLoad(t *testing.T, src *kafkatest.Cluster) *load {
	t.Helper()
	createTopic(t, src, faultPlain, faultParts, nil)
	createTopic(t, src, faultTxn, faultParts, nil)
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{t: t, src: src, cancel: cancel}
	for i, codec := range []kgo.CompressionCodec{kgo.ZstdCompression(), kgo.Lz4Compression()} {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.plain(ctx, i, codec)
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.transactions(ctx)
	}()
	return l
}

func (l *load) plain(ctx context.Context, id int, codec kgo.CompressionCodec) {
	cl, err := mirrorcheck.NewClient(l.src.ListenAddrs(), kgo.ProducerBatchCompression(codec), kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordDeliveryTimeout(20*time.Second))
	if err != nil {
		l.t.Error(err)
		return
	}
	defer cl.Close()
	for n := 0; ctx.Err() == nil; n++ {
		var rs []*kgo.Record
		for j := 0; j < 10; j++ {
			rs = append(rs, &kgo.Record{Topic: faultPlain, Partition: -1,
				Key:     fmt.Appendf(nil, "p%d-k%d", id, (n*10+j)%97),
				Value:   fmt.Appendf(nil, "producer %d round %d record %d", id, n, j),
				Headers: []kgo.RecordHeader{{Key: "producer", Value: []byte{byte('0' + id)}}}})
		}
		res := cl.ProduceSync(ctx, rs...)
		for _, r := range res {
			if r.Err == nil {
				l.acked.Add(1)
			} else if ctx.Err() == nil {
				l.failures.Add(1)
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// transactions commits four of five transactions and aborts the rest. A
// failed transaction (the fault) is given up with its client: a new one
// takes the same transactional id and fences it.
func (l *load) transactions(ctx context.Context) {
	r := rand.New(rand.NewPCG(7, 7))
	for ctx.Err() == nil {
		cl, err := mirrorcheck.NewClient(l.src.ListenAddrs(), kgo.TransactionalID("fault-load"), kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.TransactionTimeout(20*time.Second), kgo.RecordDeliveryTimeout(20*time.Second))
		if err != nil {
			l.t.Error(err)
			return
		}
		for i := 0; ctx.Err() == nil; i++ {
			if err := l.transaction(ctx, cl, r, i); err != nil {
				if ctx.Err() == nil {
					l.failures.Add(1)
					time.Sleep(500 * time.Millisecond)
				}
				break
			}
			time.Sleep(15 * time.Millisecond)
		}
		cl.Close()
	}
}

func (l *load) transaction(ctx context.Context, cl *kgo.Client, r *rand.Rand, i int) error {
	if err := cl.BeginTransaction(); err != nil {
		return err
	}
	for j, n := 0, 1+r.IntN(4); j < n; j++ {
		rec := &kgo.Record{Topic: faultTxn, Partition: r.Int32N(faultParts), Key: fmt.Appendf(nil, "t-k%d", r.IntN(50)),
			Value: fmt.Appendf(nil, "txn %d record %d", i, j), Headers: []kgo.RecordHeader{{Key: "txn", Value: fmt.Append(nil, i)}}}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			return err
		}
	}
	commit := r.IntN(5) != 0
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		return err
	}
	if commit {
		l.commits.Add(1)
	} else {
		l.aborts.Add(1)
	}
	return nil
}

// stop ends the load and waits for its producers.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// mirroringUnderLoad starts the load on src and klink mirroring both load
// topics into dst, and returns once both mirrors copy.
func mirroringUnderLoad(t *testing.T, src, dst *kafkatest.Cluster, linkConfigs config.Properties) (*Replicator, *load) {
	t.Helper()
	l := startLoad(t, src)
	t.Cleanup(l.stop)
	dumpOnFailure(t, src, dst, faultTxn)
	r, _ := runReplicator(t, testConfig(t, src, dst, linkConfigs, config.MirrorTopic{Name: faultPlain}, config.MirrorTopic{Name: faultTxn}))
	waitMirroring(t, r, dst)
	return r, l
}

// requireLoadMirrored stops the load, waits for klink to catch up with no
// help, and checks both mirrors record by record and batch by batch.
func requireLoadMirrored(t *testing.T, r *Replicator, l *load, src, dst *kafkatest.Cluster) {
	t.Helper()
	time.Sleep(2 * time.Second) // load after the fault, too
	l.stop()
	for _, name := range []string{faultPlain, faultTxn} {
		waitCaughtUpShifted(t, r, src, dst, name, 120*time.Second)
		waitState(t, r, name, linkstate.Active, 30*time.Second)
	}
	plain := requireExactShifted(t, r, src, dst, faultPlain, faultParts)
	if int64(plain.Uncommitted) < l.acked.Load() {
		t.Fatalf("plain: %d records on both sides, %d acknowledged to the producers", plain.Uncommitted, l.acked.Load())
	}
	txn := requireExactShifted(t, r, src, dst, faultTxn, faultParts)
	if l.commits.Load() == 0 || l.aborts.Load() == 0 || txn.Committed == 0 {
		t.Fatalf("the load made %d commits and %d aborts (%d committed records): not the pattern under test", l.commits.Load(), l.aborts.Load(), txn.Committed)
	}
	t.Logf("plain: %d records identical; txn: %d commits, %d aborts, %d committed and %d uncommitted records identical, %d fillers; %d producer errors during the fault",
		plain.Uncommitted, l.commits.Load(), l.aborts.Load(), txn.Committed, txn.Uncommitted, txn.Fillers, l.failures.Load())
}

// requireExactShifted checks a mirror as requireExact does, with every
// source record, batch and marker at the destination offset klink's gap
// map translates it to. The only shifts a broker fault may cause are
// markers the destination wrote twice (see gapmap.go); each is logged.
func requireExactShifted(t *testing.T, r *Replicator, src, dst *kafkatest.Cluster, topic string, partitions int32) mirrorcheck.Exactness {
	t.Helper()
	for _, p := range mirrorStatus(t, r, topic).Partitions {
		for _, sh := range p.OffsetShifts {
			if !strings.Contains(sh.Reason, "again") {
				t.Fatalf("%s[%d]: a shift a broker fault must not cause: %+v", topic, p.Partition, sh)
			}
			t.Logf("%s[%d]: source offsets from %d are at +%d: %s", topic, p.Partition, sh.SourceOffset, sh.DestOffset-sh.SourceOffset, sh.Reason)
		}
	}
	// Reading every record four times and every batch twice takes a
	// while under the race detector.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e, err := mirrorcheck.CompareExactTranslated(ctx, src.ListenAddrs(), dst.ListenAddrs(), topic, topic, partitions, translator(t, r, topic))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// translator translates source offsets of a mirror of the test link
// through its gap map.
func translator(t *testing.T, r *Replicator, mirror string) mirrorcheck.Translate {
	return func(p int32, off int64) int64 {
		at, err := r.TranslateOffset("test-link", mirror, p, off)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
}

// waitMirroring waits until both mirrors are ACTIVE and have copied
// something.
func waitMirroring(t *testing.T, r *Replicator, dst *kafkatest.Cluster) {
	t.Helper()
	for _, name := range []string{faultPlain, faultTxn} {
		waitState(t, r, name, linkstate.Active, 60*time.Second)
	}
	waitFor(t, 60*time.Second, "records on the destination", func() bool {
		n := int64(0)
		for _, o := range endOffsets(t, dst, faultTxn) {
			n += o
		}
		return n > 50
	})
}

// leaderIndex is the index of the node leading topic[p] (node ids are
// index+1 on clusters the harness starts).
func leaderIndex(t *testing.T, c *kafkatest.Cluster, topic string, p int32) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	md, err := c.Admin(t).Metadata(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return int(md.Topics[topic].Partitions[p].Leader) - 1
}

// isrSizes are the in-sync replica counts of a topic's partitions.
func isrSizes(t *testing.T, c *kafkatest.Cluster, topics ...string) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	md, err := c.Admin(t).Metadata(ctx, topics...)
	if err != nil {
		return nil
	}
	var out []int
	for _, topic := range topics {
		for _, pd := range md.Topics[topic].Partitions.Sorted() {
			out = append(out, len(pd.ISR))
		}
	}
	return out
}

// A destination node that leads mirror partitions (plain and
// transactional) SIGKILLed under load, then started again: leadership
// moves, the ISR shrinks and grows back, and klink follows by itself.
func TestFaultDestinationLeaderKilled(t *testing.T) {
	kafkatest.RequireManaged(t)
	src := kafkatest.Start(t, kafkatest.Kafka, "source")
	dst := kafkatest.Start(t, kafkatest.Kafka, "destination", kafkatest.Brokers(3))
	r, l := mirroringUnderLoad(t, src, dst, nil)

	victim := leaderIndex(t, dst, faultTxn, 0)
	led := 0
	for _, topic := range []string{faultPlain, faultTxn} {
		for p := int32(0); p < faultParts; p++ {
			if leaderIndex(t, dst, topic, p) == victim {
				led++
			}
		}
	}
	t.Logf("killing destination node %d, leader of %d of the %d mirror partitions", dst.NodeID(t, victim), led, 2*faultParts)
	dst.KillNode(t, victim)
	waitFor(t, 30*time.Second, "leadership to move and the ISR to shrink", func() bool {
		for _, n := range isrSizes(t, dst, faultPlain, faultTxn) {
			if n == 3 {
				return false
			}
		}
		return leaderIndex(t, dst, faultTxn, 0) != victim
	})
	time.Sleep(3 * time.Second) // mirroring onto the new leaders
	dst.StartNode(t, victim)
	waitFor(t, 90*time.Second, "the ISR to grow back", func() bool {
		sizes := isrSizes(t, dst, faultPlain, faultTxn)
		for _, n := range sizes {
			if n != 3 {
				return false
			}
		}
		return len(sizes) == 2*faultParts
	})
	requireLoadMirrored(t, r, l, src, dst)
}

// The source broker SIGKILLed mid-stream, or the destination broker with
// klink's appends (plain and transactional) in flight, and started again
// on its data.
func TestFaultBrokerKilled(t *testing.T) {
	kafkatest.RequireManaged(t)
	for _, side := range []string{"source", "destination"} {
		t.Run(side, func(t *testing.T) {
			src, dst := testClusters(t, kafkatest.Kafka)
			r, l := mirroringUnderLoad(t, src, dst, nil)
			victim := map[string]*kafkatest.Cluster{"source": src, "destination": dst}[side]
			victim.Kill(t)
			time.Sleep(2 * time.Second)
			victim.Restart(t)
			requireLoadMirrored(t, r, l, src, dst)
		})
	}
}

// The destination broker frozen (SIGSTOP) for longer than klink's produce
// request timeout, then thawed: requests klink gave up on may still be
// read from their sockets and applied after it reconnected.
func TestFaultDestinationFrozen(t *testing.T) {
	kafkatest.RequireManaged(t)
	src, dst := testClusters(t, kafkatest.Kafka)
	r, l := mirroringUnderLoad(t, src, dst, nil)
	dst.PauseNode(t, 0)
	time.Sleep(produceRequestTimeout + 5*time.Second)
	dst.ResumeNode(t, 0)
	requireLoadMirrored(t, r, l, src, dst)
}

// The source down for longer than cluster.link.retry.timeout.ms: the
// mirrors show LINK_FAILED, and are ACTIVE again by themselves once it is
// back.
func TestFaultSourceDownLinkFailed(t *testing.T) {
	kafkatest.RequireManaged(t)
	src, dst := testClusters(t, kafkatest.Kafka)
	r, l := mirroringUnderLoad(t, src, dst, config.Properties{"cluster.link.retry.timeout.ms": "2000"})
	src.Kill(t)
	for _, name := range []string{faultPlain, faultTxn} {
		m := waitState(t, r, name, linkstate.LinkFailed, 30*time.Second)
		if !strings.Contains(m.Reason, "cluster.link.retry.timeout.ms 2000") {
			t.Fatalf("%s: reason %q", name, m.Reason)
		}
	}
	src.Restart(t)
	requireLoadMirrored(t, r, l, src, dst)
}

// Someone deletes a mirror's destination topic while klink mirrors into
// it: that mirror FAILED with a reason naming the topic; the other goes
// on, exact.
func TestFaultDestinationTopicDeleted(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		r, l := mirroringUnderLoad(t, src, dst, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := kadm.NewClient(newClient(t, dst)).DeleteTopics(ctx, faultPlain)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
		m := waitState(t, r, faultPlain, linkstate.Failed, 60*time.Second)
		if !strings.Contains(m.Reason, faultPlain) {
			t.Fatalf("reason %q does not name the topic", m.Reason)
		}
		t.Logf("reason: %s", m.Reason)
		time.Sleep(2 * time.Second)
		l.stop()
		waitCaughtUp(t, src, dst, 60*time.Second, [2]string{faultTxn, faultTxn})
		requireExact(t, src, dst, faultTxn, faultTxn, faultParts)
		if m := mirrorStatus(t, r, faultTxn); m.State != string(linkstate.Active) {
			t.Fatalf("the other mirror is %s: %s", m.State, m.Reason)
		}
		// klink did not bring the deleted topic back by writing to it.
		if md, err := kadm.NewClient(newClient(t, dst)).ListTopics(ctx, faultPlain); err == nil && md.Has(faultPlain) {
			if td := md[faultPlain]; td.Err == nil {
				t.Fatalf("the deleted topic %s exists again on the destination", faultPlain)
			}
		}
	})
}

// dumpOnFailure logs, if the test fails, every batch of the topics'
// partitions on both sides (offset range, producer, flags): what a
// mismatch needs to be understood.
func dumpOnFailure(t *testing.T, src, dst *kafkatest.Cluster, topics ...string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, topic := range topics {
			for p := int32(0); p < faultParts; p++ {
				for _, c := range []*kafkatest.Cluster{src, dst} {
					bs, err := mirrorcheck.ReadBatches(ctx, c.ListenAddrs(), topic, p)
					if err != nil {
						t.Logf("%s %s[%d]: %v", c.Name(), topic, p, err)
						continue
					}
					var b strings.Builder
					for _, x := range bs {
						fmt.Fprintf(&b, "\n  %d..%d pid %d epoch %d seq %d n %d", x.BaseOffset(), x.LastOffset(), x.ProducerID(), x.ProducerEpoch(), x.BaseSequence(), x.NumRecords())
						if x.IsTransactional() {
							b.WriteString(" txn")
						}
						if x.IsControl() {
							typ, _ := x.ControlType()
							fmt.Fprintf(&b, " control %d", typ)
						}
					}
					t.Logf("%s %s[%d] batches:%s", c.Name(), topic, p, b.String())
				}
			}
		}
	})
}
