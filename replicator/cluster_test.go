package replicator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// runClusterMember runs cfg's links in-process as member of the klink
// cluster cfg.Cluster names, with a state dir of its own, until the test
// ends or stop is called.
func runClusterMember(t *testing.T, cfg *config.Config, member string) (*Replicator, func()) {
	t.Helper()
	c := *cfg
	cl := *cfg.Cluster
	cl.Member = member
	c.Cluster, c.StateDir = &cl, t.TempDir()
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).With(zap.String("member", member))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cm, err := JoinCluster(ctx, &c, log)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	r := New(&c, cm.Store, log)
	cm.Serve(r)
	rctx, stopRun := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(rctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			stopRun()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("member did not stop within 30s")
			}
			cm.Close()
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// Must-show 8 of "klink clusters", with the gap map: a member records a
// shift (the destination aborted one of klink's transactions) in the
// shared state; every member stops; another member, with a state dir of
// its own, starts and resumes from the shared state alone: the same gap
// map, and the source's later records at their translated offsets.
func TestClusterResumesGapMap(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		shortTxnTimeout(t)
		src, dst := testClusters(t, k, txnAbortOpts)
		createTopic(t, src, "gt", 1, nil)
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "gt"})
		cfg.Cluster = &config.Cluster{Group: "gap-test", SessionTimeout: "6s"}
		one, stopOne := runClusterMember(t, cfg, "one")
		q := abortScenario(t, src, dst, "gt", 5, nil, "p")
		if err := q.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
		shifts := waitShiftedCaughtUp(t, one, src, dst, "gt")
		stopOne()

		plain := newClient(t, src, kgo.DefaultProduceTopic("gt"))
		for i := range 5 {
			produceSync(t, plain, &kgo.Record{Key: fmt.Appendf(nil, "later-%d", i), Value: fmt.Appendf(nil, "later record %d", i), Headers: []kgo.RecordHeader{{Key: "from", Value: []byte("later")}}})
		}
		two, _ := runClusterMember(t, cfg, "two")
		again := waitShiftedCaughtUp(t, two, src, dst, "gt")
		if a, b := mustJSON(t, again), mustJSON(t, shifts); a != b {
			t.Fatalf("the member that took over reads the gap map\n%s\nthe first one wrote\n%s", a, b)
		}
		requireReadCommittedOnce(t, src, dst, "gt")
		dstRecs := map[int64]*kgo.Record{}
		for _, d := range readAllAs(t, dst, "gt", mirrorcheck.ReadUncommitted)[0] {
			dstRecs[d.Offset] = d
		}
		checked := 0
		for _, s := range readAllAs(t, src, "gt", mirrorcheck.ReadUncommitted)[0] {
			if s.Offset < shifts[0].SourceOffset {
				continue
			}
			at, err := two.TranslateOffset("test-link", "gt", 0, s.Offset)
			if err != nil {
				t.Fatal(err)
			}
			d, ok := dstRecs[at]
			if !ok {
				t.Fatalf("source offset %d translates to %d, which holds no record", s.Offset, at)
			}
			if err := mirrorcheck.SameRecord(s, d); err != nil {
				t.Fatalf("source offset %d, destination %d: %v", s.Offset, at, err)
			}
			checked++
		}
		if checked < 5 {
			t.Fatalf("only %d records past the shift checked", checked)
		}
		t.Logf("gap map resumed from the shared state: %+v; %d records past it at their translated offsets", again, checked)
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The risk the lease leaves (README, "One writer per partition"): a member
// that lost a partition, frozen between its lease check and its write,
// appends late. Once the new owner's first append has landed, the broker
// refuses the old epoch and nothing reaches the mirror. Before that, on
// Kafka, the late batch lands, and the new owner's next append does not
// land on its source offset: the mirror stops FAILED, naming the
// partition and offsets, and nothing more is written (kfake refuses the
// old epoch at once, so there the mirror stays exact).
func TestClusterLateAppendOfLostOwner(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		src, dst := testClusters(t, k)
		createTopic(t, src, "z", 1, nil)
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "z"})
		cfg.Cluster = &config.Cluster{Group: "zombie-test", SessionTimeout: "6s"}
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceRounds(t, cl, "z", 0, 20, 5, "1")
		one, stopOne := runClusterMember(t, cfg, "one")
		waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"z", "z"})
		linkID := one.Status().Links[0].LinkID
		stopOne()

		// The zombie: the partition's writer as the member that lost it
		// knew it.
		dcl := newClient(t, dst, kgo.MaxVersions(kversion.V3_8_0()))
		writer := fmt.Sprintf("klink-%s-z-0w", linkID)
		pid, epoch := initWriter(t, ctx, dcl, writer)
		zombie := batch.Producer{ID: pid, Epoch: epoch}

		// The new owner has appended: the late batch is refused.
		_, stopTwo := runClusterMember(t, cfg, "two")
		produceRounds(t, cl, "z", 0, 20, 5, "2")
		waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"z", "z"})
		before := endOffsets(t, dst, "z")[0]
		if err := producePlain(t, ctx, dcl, "z", 0, zombie); !errors.Is(err, kerr.InvalidProducerEpoch) {
			t.Fatalf("a late append under the lost owner's epoch after the new owner appended: %v, want INVALID_PRODUCER_EPOCH", err)
		}
		if after := endOffsets(t, dst, "z")[0]; after != before {
			t.Fatalf("the refused append moved the end offset %d -> %d", before, after)
		}
		produceRounds(t, cl, "z", 0, 10, 5, "3")
		waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"z", "z"})
		requireSameRecords(t, readAll(t, src, "z"), readAll(t, dst, "z"))
		stopTwo()

		// A new owner that has not appended yet: the late batch lands on
		// Kafka, and the new owner's next append is caught.
		pid, epoch = initWriter(t, ctx, dcl, writer)
		zombie = batch.Producer{ID: pid, Epoch: epoch}
		three, _ := runClusterMember(t, cfg, "three")
		waitFor(t, 60*time.Second, "member three to run the partition", func() bool {
			ms := three.Status().Links[0].Mirrors
			return len(ms) == 1 && len(ms[0].Partitions) == 1 && ms[0].State == "ACTIVE"
		})
		time.Sleep(time.Second) // its start (InitProducerId) is done
		landed := producePlain(t, ctx, dcl, "z", 0, zombie) == nil
		produceRounds(t, cl, "z", 0, 10, 5, "4")
		if !landed {
			if k == kafkatest.Kafka {
				t.Fatal("Kafka refused the old epoch before the new owner appended: the README's account of the window is wrong")
			}
			waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"z", "z"})
			requireSameRecords(t, readAll(t, src, "z"), readAll(t, dst, "z"))
			return
		}
		var reason string
		waitFor(t, 60*time.Second, "the mirror to fail", func() bool {
			m := three.Status().Links[0].Mirrors[0]
			reason = m.Reason
			return m.State == "FAILED"
		})
		if !strings.Contains(reason, "z[0]") {
			t.Fatalf("the reason does not name the partition: %q", reason)
		}
		before = endOffsets(t, dst, "z")[0]
		produceRounds(t, cl, "z", 0, 10, 5, "5")
		time.Sleep(2 * time.Second)
		if after := endOffsets(t, dst, "z")[0]; after != before {
			t.Fatalf("klink kept writing into the FAILED mirror: %d -> %d", before, after)
		}
		t.Logf("late append before the new owner's first: mirror FAILED: %s", reason)
	})
}
