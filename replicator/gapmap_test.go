package replicator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// The one pattern klink cannot mirror at the same offsets: the destination
// aborts klink's transaction on its own (its timeout passes while a long
// source transaction holds back the marker klink waits for, or while klink
// is stopped). The coordinator's abort marker takes an offset; klink
// records the shift in the gap map, appends the aborted records again
// (the source committed them), and goes on one shift further: nothing is
// lost or seen twice by a read_committed reader, and every source offset
// translates exactly to the destination offset of the same record.
func TestDestinationAbortsKlinkTransaction(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart bool // klink is stopped while the destination aborts
	}{{"while running", false}, {"while stopped", true}} {
		t.Run(tc.name, func(t *testing.T) {
			kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
				shortTxnTimeout(t)
				src, dst := testClusters(t, k, txnAbortOpts)
				createTopic(t, src, "gt", 1, nil)
				cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "gt"})
				r, stop := runReplicator(t, cfg)
				if !tc.restart {
					stop = nil
				}
				// Source: P's records at 0..4, Q's first record at 5, P's
				// commit at 6, held back from read_committed readers (and
				// so from klink, which replays P's records in a destination
				// transaction and waits for the marker) by Q's open
				// transaction, until the destination aborts klink's.
				q := abortScenario(t, src, dst, "gt", 5, stop, "p")
				plain := newClient(t, src, kgo.DefaultProduceTopic("gt"))
				for i := 0; i < 3; i++ {
					produceSync(t, plain, &kgo.Record{Key: fmt.Appendf(nil, "plain-%d", i), Value: fmt.Appendf(nil, "plain record %d", i), Headers: []kgo.RecordHeader{{Key: "from", Value: []byte("plain")}}})
				}
				if err := q.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
					t.Fatal(err)
				}
				if tc.restart {
					r, _ = runReplicator(t, cfg)
				}
				shifts := waitShiftedCaughtUp(t, r, src, dst, "gt")
				if m := r.Status().Links[0].Mirrors[0]; m.State != "ACTIVE" {
					t.Fatalf("mirror %s: %s", m.State, m.Reason)
				}
				t.Logf("gap map: %+v", shifts)

				// Every source record past the aborted range is at its
				// translated offset, and P's records, committed on the
				// source, are seen once by a read_committed reader.
				srcRecs := readAllAs(t, src, "gt", mirrorcheck.ReadCommitted)[0]
				dstRecs := readAllAs(t, dst, "gt", mirrorcheck.ReadCommitted)[0]
				byOffset := map[int64]*kgo.Record{}
				for _, d := range dstRecs {
					if mirrorcheck.IsFiller(d) {
						t.Fatalf("read_committed reader sees a filler at %d", d.Offset)
					}
					byOffset[d.Offset] = d
				}
				if len(dstRecs) != len(srcRecs) {
					t.Fatalf("read_committed: source has %d records, destination %d", len(srcRecs), len(dstRecs))
				}
				affected := shifts[0].AffectedFrom
				for _, s := range srcRecs {
					if s.Offset < shifts[0].SourceOffset && s.Offset >= affected {
						found := 0
						for _, d := range dstRecs {
							if bytes.Equal(d.Key, s.Key) {
								found++
								if err := mirrorcheck.SameRecord(s, d); err != nil {
									t.Fatalf("copy of source offset %d at %d: %v", s.Offset, d.Offset, err)
								}
							}
						}
						if found != 1 {
							t.Fatalf("record of source offset %d (%s) seen %d times by a read_committed reader", s.Offset, s.Key, found)
						}
						continue
					}
					at, err := r.TranslateOffset(cfg.Links[0].Name, "gt", 0, s.Offset)
					if err != nil {
						t.Fatal(err)
					}
					d, ok := byOffset[at]
					if !ok {
						t.Fatalf("source offset %d translates to %d, which holds no record", s.Offset, at)
					}
					if err := mirrorcheck.SameRecord(s, d); err != nil {
						t.Fatalf("source offset %d, destination %d: %v", s.Offset, at, err)
					}
				}
				if shifts[0].Copies == nil || shifts[0].Copies.Pending {
					t.Fatalf("the aborted records were not copied: %+v", shifts[0])
				}
			})
		})
	}
}

// abortScenario writes, on the source, transactions of the given producers
// (n records each, keys <who>-<i>) that commit while klink's replay of them
// is held open by producer q's open transaction; then stops klink (if
// stop is given) and waits until the destination has aborted klink's
// transactions. It returns q so the caller can end it.
func abortScenario(t *testing.T, src, dst *kafkatest.Cluster, topic string, n int, stop func(), who ...string) *kgo.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var cls []*kgo.Client
	for _, w := range who {
		cl := newClient(t, src, kgo.TransactionalID("app-"+w), kgo.DefaultProduceTopic(topic))
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		cls = append(cls, cl)
	}
	for i, cl := range cls {
		for j := 0; j < n; j++ {
			produceSync(t, cl, &kgo.Record{Key: fmt.Appendf(nil, "%s-%d", who[i], j), Value: fmt.Appendf(nil, "%s record %d", who[i], j), Headers: []kgo.RecordHeader{{Key: "from", Value: []byte(who[i])}}})
		}
	}
	q := newClient(t, src, kgo.TransactionalID("app-q"), kgo.DefaultProduceTopic(topic))
	if err := q.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceSync(t, q, &kgo.Record{Key: []byte("q"), Value: []byte("q record")})
	for _, cl := range cls {
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 15*time.Second, "the transactions' records on the destination", func() bool {
		return endOffsets(t, dst, topic)[0] >= int64(n*len(who))
	})
	if stop != nil {
		stop()
	}
	time.Sleep(txnTimeout + 2*time.Second)
	return q
}

// requireReadCommittedOnce checks a read_committed reader of the
// destination sees every source record (by key and value) exactly once.
func requireReadCommittedOnce(t *testing.T, src, dst *kafkatest.Cluster, topic string) {
	t.Helper()
	seen := map[string]int{}
	for _, d := range readAllAs(t, dst, topic, mirrorcheck.ReadCommitted)[0] {
		if mirrorcheck.IsFiller(d) {
			t.Fatalf("read_committed reader sees a filler at %d", d.Offset)
		}
		seen[string(d.Key)+"/"+string(d.Value)]++
	}
	srcRecs := readAllAs(t, src, topic, mirrorcheck.ReadCommitted)[0]
	for _, s := range srcRecs {
		if n := seen[string(s.Key)+"/"+string(s.Value)]; n != 1 {
			t.Errorf("source record at %d (%s) seen %d times by a read_committed reader of the destination", s.Offset, s.Key, n)
		}
	}
	if len(srcRecs) == 0 {
		t.Fatal("no source records")
	}
}

// waitShiftedCaughtUp waits until the destination holds the whole source,
// shifted as the gap map says, with no copies pending.
func waitShiftedCaughtUp(t *testing.T, r *Replicator, src, dst *kafkatest.Cluster, topic string) []linkstate.OffsetShift {
	t.Helper()
	var shifts []linkstate.OffsetShift
	waitFor(t, 30*time.Second, "the destination to catch up with the shift", func() bool {
		ms := r.Status().Links[0].Mirrors
		if len(ms) == 0 || len(ms[0].Partitions) == 0 {
			return false
		}
		if ms[0].State == "FAILED" {
			t.Fatalf("mirror FAILED: %s", ms[0].Reason)
		}
		shifts = ms[0].Partitions[0].OffsetShifts
		if len(shifts) == 0 || slices.ContainsFunc(shifts, func(sh linkstate.OffsetShift) bool { return sh.Copies != nil && sh.Copies.Pending }) {
			return false
		}
		want, err := r.TranslateOffset("test-link", topic, 0, endOffsets(t, src, topic)[0])
		return err == nil && endOffsets(t, dst, topic)[0] == want
	})
	return shifts
}

// Two of klink's transactions are open when the destination aborts both:
// both are copied (found in review: the second one's records were lost).
func TestDestinationAbortsTwoTransactions(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		shortTxnTimeout(t)
		src, dst := testClusters(t, k, txnAbortOpts)
		createTopic(t, src, "gt", 1, nil)
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "gt"})
		_, stop := runReplicator(t, cfg)
		q := abortScenario(t, src, dst, "gt", 2, stop, "p", "r")
		if err := q.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
		produceSync(t, newClient(t, src, kgo.DefaultProduceTopic("gt")), &kgo.Record{Key: []byte("z"), Value: []byte("z")})
		r, _ := runReplicator(t, cfg)
		shifts := waitShiftedCaughtUp(t, r, src, dst, "gt")
		requireReadCommittedOnce(t, src, dst, "gt")
		t.Logf("gap map: %+v", shifts)
	})
}

// The destination's abort marker lands on a source offset the cleaner
// later empties (found in review: taken for a planned filler end, nothing
// was copied).
func TestDestinationAbortInSourceHole(t *testing.T) {
	shortTxnTimeout(t)
	src, dst := testClusters(t, kafkatest.KFake)
	createTopic(t, src, "gt", 1, map[string]*string{"cleanup.policy": kmsgStr("compact")})
	cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "gt"})
	_, stop := runReplicator(t, cfg)
	q := abortScenario(t, src, dst, "gt", 5, stop, "p")
	if err := q.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	plain := newClient(t, src, kgo.DefaultProduceTopic("gt"))
	for i := 0; i < 3; i++ {
		produceSync(t, plain, &kgo.Record{Key: []byte("q"), Value: fmt.Appendf(nil, "q overwritten %d", i)})
	}
	src.Fake().Compact()
	r, _ := runReplicator(t, cfg)
	waitShiftedCaughtUp(t, r, src, dst, "gt")
	requireReadCommittedOnce(t, src, dst, "gt")
}

// klink fails between appending the copies and committing them (found in
// review: the next start failed the mirror); the copies are made again.
func TestDestinationAbortCopiesInterrupted(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		shortTxnTimeout(t)
		var once atomic.Bool
		testHookBeforeCopiesCommit = func() error {
			if once.CompareAndSwap(false, true) {
				return errors.New("injected failure before the copies commit")
			}
			return nil
		}
		t.Cleanup(func() { testHookBeforeCopiesCommit = nil })
		src, dst := testClusters(t, k, txnAbortOpts)
		createTopic(t, src, "gt", 1, nil)
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "gt"})
		_, stop := runReplicator(t, cfg)
		q := abortScenario(t, src, dst, "gt", 5, stop, "p")
		if err := q.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
		r, _ := runReplicator(t, cfg)
		waitShiftedCaughtUp(t, r, src, dst, "gt")
		if !once.Load() {
			t.Fatal("the copies were never interrupted")
		}
		requireReadCommittedOnce(t, src, dst, "gt")
	})
}

// txnAbortOpts make a real broker look for timed-out transactions to abort
// every 500 ms (not 10 s).
var txnAbortOpts = kafkatest.BrokerConfig("transaction.abort.timed.out.transaction.cleanup.interval.ms=500")

// shortTxnTimeout makes the destination abort klink's transactions after
// 2 s, for the test.
func shortTxnTimeout(t *testing.T) {
	old := txnTimeout
	txnTimeout = 2 * time.Second
	t.Cleanup(func() { txnTimeout = old })
}

// The destination writes one of klink's markers twice: its transaction
// coordinator, restarted after it wrote a transaction's markers and before
// it recorded the transaction complete, completes the transaction again
// (found on Kafka 3.8 with the broker SIGKILLed under transactional load;
// here the second marker is written with WriteTxnMarkers, the request the
// coordinator sends). klink absorbs it into the gap map whether it was
// stopped (the restart's tail check) or running (its next append lands one
// offset late): the source goes on one offset further on, exactly, nothing
// lost or duplicated.
func TestDestinationWritesMarkerTwice(t *testing.T) {
	for _, tc := range []struct {
		name    string
		commit  bool
		stopped bool
	}{{"commit while stopped", true, true}, {"abort while running", false, false}} {
		t.Run(tc.name, func(t *testing.T) {
			kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
				src, dst := testClusters(t, k)
				createTopic(t, src, "dm", 1, nil)
				txn := newClient(t, src, kgo.TransactionalID("dm-app"), kgo.DefaultProduceTopic("dm"))
				plain := newClient(t, src, kgo.DefaultProduceTopic("dm"))
				transaction := func(tag string, commit bool) {
					t.Helper()
					if err := txn.BeginTransaction(); err != nil {
						t.Fatal(err)
					}
					for i := 0; i < 3; i++ {
						produceSync(t, txn, &kgo.Record{Key: fmt.Appendf(nil, "%s-%d", tag, i), Value: fmt.Appendf(nil, "%s transactional record %d", tag, i)})
					}
					if err := txn.EndTransaction(context.Background(), kgo.TransactionEndTry(commit)); err != nil {
						t.Fatal(err)
					}
					produceSync(t, plain, &kgo.Record{Key: fmt.Appendf(nil, "%s-plain", tag), Value: []byte("plain record")})
				}
				transaction("before", tc.commit)
				cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "dm"})
				r, stop := runReplicator(t, cfg)
				waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"dm", "dm"})
				if tc.stopped {
					stop()
				}

				// The marker klink wrote for the source's transaction,
				// written again by the "coordinator".
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				bs, err := mirrorcheck.ReadBatches(ctx, dst.ListenAddrs(), "dm", 0)
				if err != nil {
					t.Fatal(err)
				}
				var marker batch.Batch
				for _, b := range bs {
					if b.IsControl() {
						marker = b
					}
				}
				if marker == nil {
					t.Fatal("no marker on the destination")
				}
				before := endOffsets(t, dst, "dm")[0]
				writeMarkerAgain(t, dst, "dm", marker, tc.commit)
				if end := endOffsets(t, dst, "dm")[0]; end != before+1 {
					t.Fatalf("the second marker did not land: end %d -> %d", before, end)
				}

				transaction("after", true)
				if tc.stopped {
					r, _ = runReplicator(t, cfg)
				}
				waitCaughtUpShifted(t, r, src, dst, "dm", 30*time.Second)
				shifts := mirrorStatus(t, r, "dm").Partitions[0].OffsetShifts
				if len(shifts) != 1 || shifts[0].DestOffset-shifts[0].SourceOffset != 1 || shifts[0].SourceOffset != before || !strings.Contains(shifts[0].Reason, "again") {
					t.Fatalf("gap map %+v, want one shift of 1 at source offset %d", shifts, before)
				}
				e, err := mirrorcheck.CompareExactTranslated(ctx, src.ListenAddrs(), dst.ListenAddrs(), "dm", "dm", 1, translator(t, r, "dm"))
				if err != nil {
					t.Fatal(err)
				}
				if want := 5; !tc.commit && e.Committed != want || tc.commit && e.Committed != want+3 {
					t.Fatalf("%+v", e)
				}
				if m := mirrorStatus(t, r, "dm"); m.State != "ACTIVE" {
					t.Fatalf("mirror %s: %s", m.State, m.Reason)
				}
				t.Logf("gap map: %s; %+v", shifts[0].Reason, e)
			})
		})
	}
}

// writeMarkerAgain writes marker again into partition 0 of a destination
// topic, as the transaction coordinator does (WriteTxnMarkers, to the
// partition's leader, with the coordinator epoch marker carries: a higher
// one would fence the real coordinator's later markers on Kafka).
func writeMarkerAgain(t *testing.T, c *kafkatest.Cluster, topic string, marker batch.Batch, commit bool) {
	t.Helper()
	recs, err := marker.Decode()
	if err != nil || len(recs) != 1 || len(recs[0].Value) < 6 {
		t.Fatalf("marker at %d: %d records, %v", marker.BaseOffset(), len(recs), err)
	}
	coordinatorEpoch := int32(binary.BigEndian.Uint32(recs[0].Value[2:])) // value: version int16, coordinator epoch int32
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := c.AdminClient(t)
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	m := kmsg.NewWriteTxnMarkersRequestMarker()
	m.ProducerID, m.ProducerEpoch, m.Committed, m.CoordinatorEpoch = marker.ProducerID(), marker.ProducerEpoch(), commit, coordinatorEpoch
	mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
	mt.Topic, mt.Partitions = topic, []int32{0}
	m.Topics = append(m.Topics, mt)
	req.Markers = append(req.Markers, m)
	kresp, err := cl.Broker(int(md.Topics[topic].Partitions[0].Leader)).Request(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, rm := range kresp.(*kmsg.WriteTxnMarkersResponse).Markers {
		for _, rt := range rm.Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					t.Fatalf("WriteTxnMarkers: %v", err)
				}
			}
		}
	}
}
