package replicator

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/klink-io/klink/config"
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
