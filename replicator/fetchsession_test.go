package replicator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator/kafkatest"
)

// named lists the partitions a Fetch request names, and those it forgets,
// as "topic/p" (sorted).
func named(req *kmsg.FetchRequest) (names, forgotten []string) {
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			names = append(names, fmt.Sprintf("%s/%d@%d", t.Topic, p.Partition, p.FetchOffset))
		}
	}
	for _, t := range req.ForgottenTopics {
		for _, p := range t.Partitions {
			forgotten = append(forgotten, fmt.Sprintf("%s/%d", t.Topic, p))
		}
	}
	sort.Strings(names)
	sort.Strings(forgotten)
	return names, forgotten
}

func TestFetchSessionRequests(t *testing.T) {
	id := [16]byte{1}
	a0, a1, b0 := newCursor("a", id, 0), newCursor("a", id, 1), newCursor("b", [16]byte{2}, 0)
	same := func(i int) int { return i }
	var s fetchSession
	partMax := partitionFetchBytesFor(minFetchBytes)
	build := func(version int16, parts ...fetchPart) *kmsg.FetchRequest {
		req := newFetchRequest(1, time.Second, minFetchBytes)
		req.SetVersion(version)
		s.build(req, parts, same, partMax, false)
		return req
	}
	answer := func(req *kmsg.FetchRequest, session int32, code int16) (bool, error) {
		resp := kmsg.NewPtrFetchResponse()
		resp.SetVersion(req.GetVersion())
		resp.SessionID, resp.ErrorCode = session, code
		return s.answered(resp)
	}
	expect := func(req *kmsg.FetchRequest, epoch int32, wantNamed, wantForgotten string) {
		t.Helper()
		n, f := named(req)
		if req.SessionEpoch != epoch || fmt.Sprint(n) != wantNamed || fmt.Sprint(f) != wantForgotten {
			t.Fatalf("request: epoch %d, named %v, forgotten %v; want epoch %d, named %s, forgotten %s", req.SessionEpoch, n, f, epoch, wantNamed, wantForgotten)
		}
	}
	all := []fetchPart{{c: a0, offset: 10}, {c: a1, offset: 20}, {c: b0, offset: 30}}

	// The first request is a full one that asks for a session.
	req := build(13, all...)
	expect(req, 0, "[a/0@10 a/1@20 b/0@30]", "[]")
	if ok, err := answer(req, 7, 0); !ok || err != nil {
		t.Fatal(ok, err)
	}
	// Nothing moved: the next names nothing, in session 7, epoch 1.
	req = build(13, all...)
	expect(req, 1, "[]", "[]")
	if req.SessionID != 7 {
		t.Fatalf("session id %d, want 7", req.SessionID)
	}
	answer(req, 7, 0)
	// a/1 moved, b/0 is not wanted now: one named, one forgotten.
	req = build(13, fetchPart{c: a0, offset: 10}, fetchPart{c: a1, offset: 25})
	expect(req, 2, "[a/1@25]", "[b/0]")
	if req.ForgottenTopics[0].TopicID != ([16]byte{2}) {
		t.Fatalf("forgotten topic named by ID %v, want b's", req.ForgottenTopics[0].TopicID)
	}
	answer(req, 7, 0)
	// b/0 back: named again.
	req = build(13, fetchPart{c: a0, offset: 10}, fetchPart{c: a1, offset: 25}, fetchPart{c: b0, offset: 30})
	expect(req, 3, "[b/0@30]", "[]")
	answer(req, 7, 0)
	// The fetch size followed the round trip: the broker holds each
	// partition's size as it was named, so a new session names all
	// with the new one.
	partMax *= 2
	req = build(13, fetchPart{c: a0, offset: 10}, fetchPart{c: a1, offset: 25}, fetchPart{c: b0, offset: 30})
	expect(req, 0, "[a/0@10 a/1@25 b/0@30]", "[]")
	for _, ft := range req.Topics {
		for _, p := range ft.Partitions {
			if p.PartitionMaxBytes != partMax {
				t.Fatalf("%s/%d named with %d bytes, want %d", ft.Topic, p.Partition, p.PartitionMaxBytes, partMax)
			}
		}
	}
	// A request that failed (connection lost) leaves the broker's
	// state unknown: the caller resets, and the next is full.
	s.reset()
	req = build(13, all...)
	expect(req, 0, "[a/0@10 a/1@20 b/0@30]", "[]")
	if req.SessionID != 7 {
		t.Fatalf("the full fetch after a reset names session %d; want 7, which the broker then drops", req.SessionID)
	}
	answer(req, 8, 0)
	// Evicted: FETCH_SESSION_ID_NOT_FOUND says to send a full one again.
	req = build(13, all...)
	expect(req, 1, "[]", "[]")
	if ok, err := answer(req, 0, kerr.FetchSessionIDNotFound.Code); ok || err != nil {
		t.Fatalf("an evicted session: usable %v, err %v; want a new session and no error", ok, err)
	}
	req = build(13, all...)
	expect(req, 0, "[a/0@10 a/1@20 b/0@30]", "[]")
	if req.SessionID != 0 {
		t.Fatalf("the full fetch after FETCH_SESSION_ID_NOT_FOUND names session %d; want 0", req.SessionID)
	}
	answer(req, 9, 0)
	req = build(13, all...)
	if ok, err := answer(req, 0, kerr.InvalidFetchSessionEpoch.Code); ok || err != nil {
		t.Fatalf("an epoch out of step: usable %v, err %v", ok, err)
	}
	// Another error is the caller's, and ends the session too.
	req = build(13, all...)
	answer(req, 10, 0)
	req = build(13, all...)
	if ok, err := answer(req, 0, kerr.UnknownServerError.Code); ok || err == nil {
		t.Fatalf("an error answer: usable %v, err %v", ok, err)
	}
	expect(build(13, all...), 0, "[a/0@10 a/1@20 b/0@30]", "[]")
	// A broker that keeps no session (id 0) gets full fetches.
	s.reset()
	answer(build(13, all...), 0, 0)
	expect(build(13, all...), 0, "[a/0@10 a/1@20 b/0@30]", "[]")
	// An answer for another session is not taken.
	s.reset()
	answer(build(13, all...), 11, 0)
	if ok, err := answer(build(13, all...), 12, 0); ok || err == nil {
		t.Fatalf("an answer for another session: usable %v, err %v", ok, err)
	}
	// A topic recreated (same name, another ID) starts a new session.
	s.reset()
	answer(build(13, all...), 13, 0)
	recreated := newCursor("b", [16]byte{3}, 0)
	expect(build(13, fetchPart{c: a0, offset: 10}, fetchPart{c: a1, offset: 20}, fetchPart{c: recreated, offset: 0}), 0, "[a/0@10 a/1@20 b/0@0]", "[]")
	// A version that names topics the other way (a topic without an ID
	// joined) starts a new session.
	s.reset()
	answer(build(13, all...), 14, 0)
	expect(build(12, all...), 0, "[a/0@10 a/1@20 b/0@30]", "[]")
	// The epoch wraps to 1, never 0 (which would ask for a new session).
	s.reset()
	answer(build(13, all...), 15, 0)
	s.epoch = math.MaxInt32
	answer(build(13, all...), 15, 0)
	if s.epoch != 1 {
		t.Fatalf("epoch after MaxInt32: %d, want 1", s.epoch)
	}
	// Another cursor for a partition at the same position (a mirror
	// restarted): forgotten, then named, so that the broker sends its
	// figures again.
	s.reset()
	answer(build(13, all...), 16, 0)
	again := newCursor("a", id, 0)
	req = build(13, fetchPart{c: again, offset: 10}, fetchPart{c: a1, offset: 20}, fetchPart{c: b0, offset: 30})
	expect(req, 1, "[]", "[a/0]")
	answer(req, 16, 0)
	expect(build(13, fetchPart{c: again, offset: 10}, fetchPart{c: a1, offset: 20}, fetchPart{c: b0, offset: 30}), 2, "[a/0@10]", "[]")
	// Two topics of one name (recreated, two mirrors): never merged
	// under one ID.
	s = fetchSession{off: true}
	other := newCursor("a", [16]byte{9}, 1)
	req = build(13, fetchPart{c: a0, offset: 10}, fetchPart{c: other, offset: 5})
	if len(req.Topics) != 2 || req.Topics[0].TopicID == req.Topics[1].TopicID {
		t.Fatalf("two topics named a with other IDs: %d topic entries", len(req.Topics))
	}
	// Off, or a broker older than Fetch v7: every request names all.
	s = fetchSession{off: true}
	expect(build(13, all...), -1, "[a/0@10 a/1@20 b/0@30]", "[]")
	s = fetchSession{}
	expect(build(6, all...), -1, "[a/0@10 a/1@20 b/0@30]", "[]")
}

// fetchLog records what the test link's fetches named.
type fetchLog struct {
	mu   sync.Mutex
	reqs []*kmsg.FetchRequest
	errs []error // each answer's top-level error
}

func (l *fetchLog) since(i int) []*kmsg.FetchRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*kmsg.FetchRequest(nil), l.reqs[min(i, len(l.reqs)):]...)
}

func (l *fetchLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.reqs)
}

func watchFetches(t *testing.T) *fetchLog {
	l := &fetchLog{}
	hook := func(link string, req *kmsg.FetchRequest, resp *kmsg.FetchResponse) {
		l.mu.Lock()
		l.reqs = append(l.reqs, req)
		l.errs = append(l.errs, kerr.ErrorForCode(resp.ErrorCode))
		l.mu.Unlock()
	}
	testHookFetchAnswered.Store(&hook)
	t.Cleanup(func() { testHookFetchAnswered.Store(nil) })
	return l
}

// TestFetchSessions mirrors with incremental fetch sessions on both kinds
// of broker: idle fetches name no partition; a session the broker evicts
// (its cache holds one session, and another client takes the slot) is
// answered with FETCH_SESSION_ID_NOT_FOUND, and klink starts a new one with
// a full fetch; the mirror stays exact record by record throughout.
func TestFetchSessions(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		fetches := watchFetches(t) // before the replicator starts: its cleanup runs after the replicator's
		src, dst := testClusters(t, k, kafkatest.Brokers(1))
		const parts = 8
		createTopic(t, src, "fs", parts, nil)
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		round := func(r int) {
			var rs []*kgo.Record
			for p := range int32(parts) {
				for i := range 3 {
					rs = append(rs, &kgo.Record{Topic: "fs", Partition: p, Key: fmt.Appendf(nil, "k%d", i),
						Value: fmt.Appendf(nil, "round %d partition %d record %d", r, p, i), Headers: []kgo.RecordHeader{{Key: "r", Value: fmt.Appendf(nil, "%d", r)}}})
				}
			}
			produceSync(t, cl, rs...)
		}
		round(0)
		cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "fs"})
		r, stop := runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"fs", "fs"})
		if m := mirrorStatus(t, r, "fs"); m.State != "ACTIVE" {
			t.Fatalf("mirror fs %s: %s", m.State, m.Reason)
		}

		// Idle (once the fetches that brought the last records and named
		// the new positions are answered): every fetch is an incremental
		// one that names nothing.
		time.Sleep(time.Second)
		mark := fetches.len()
		time.Sleep(5 * time.Second)
		idle := fetches.since(mark)
		if len(idle) < 2 {
			t.Fatalf("%d fetches in 5 s of idling; want a long poll after another", len(idle))
		}
		for _, req := range idle {
			if n, f := named(req); req.SessionEpoch <= 0 || len(n) > 0 || len(f) > 0 {
				t.Fatalf("an idle fetch: session %d epoch %d, named %v, forgotten %v; want an incremental fetch naming nothing", req.SessionID, req.SessionEpoch, n, f)
			}
		}
		session := idle[len(idle)-1].SessionID

		// Records for one partition: the next fetch names only that one,
		// at its new position.
		produceSync(t, cl, &kgo.Record{Topic: "fs", Partition: 5, Value: []byte("one more")})
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"fs", "fs"})
		deadline := time.Now().Add(10 * time.Second)
		for sawMoved := false; !sawMoved; {
			for _, req := range fetches.since(mark) {
				n, _ := named(req)
				if req.SessionEpoch > 0 && len(n) == 1 && n[0] == "fs/5@4" {
					sawMoved = true
				}
				if req.SessionEpoch > 0 && len(n) > 1 {
					t.Fatalf("an incremental fetch named %v after one partition moved", n)
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("no incremental fetch named fs/5 at its new position 4")
			}
			time.Sleep(50 * time.Millisecond)
		}

		// The broker ends klink's session, twice: another client's
		// request with klink's session id and the next epoch puts klink's
		// next request out of step (INVALID_FETCH_SESSION_EPOCH); then one
		// with epoch -1 closes the session (FETCH_SESSION_ID_NOT_FOUND),
		// as an eviction or a broker restart would. Either way klink
		// starts a new session with a full fetch.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, close := range []bool{false, true} {
			resets := testutil.ToFloat64(fetchSessionResets.WithLabelValues("test-link"))
			for tries := 0; testutil.ToFloat64(fetchSessionResets.WithLabelValues("test-link")) == resets; tries++ {
				if ctx.Err() != nil {
					t.Fatalf("klink's fetch session was not ended (close %v) after %d tries", close, tries)
				}
				all := fetches.since(0)
				last := all[len(all)-1]
				// The hook sees a request once answered; klink's next
				// one is likely in flight (a long poll) already, its
				// epoch taken: try the one after, and the next.
				epoch := last.SessionEpoch + 2 - int32(tries%2)
				if close {
					epoch = -1
				}
				if last.SessionEpoch > 0 {
					interfere(ctx, cl, last.SessionID, epoch) // refused when klink's request came first: try again
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		for r := 1; r <= 3; r++ {
			round(r)
		}
		waitCaughtUp(t, src, dst, 60*time.Second, [2]string{"fs", "fs"})
		// Each session the broker ended was followed by a full fetch
		// that started a new one; then a new session is in incremental
		// use.
		fetches.mu.Lock()
		ended := 0
		for i, err := range fetches.errs {
			if isSessionError(err) {
				ended++
				if i+1 < len(fetches.reqs) && fetches.reqs[i+1].SessionEpoch != 0 {
					t.Errorf("after %v, the next fetch was in session %d epoch %d, not a full one", err, fetches.reqs[i+1].SessionID, fetches.reqs[i+1].SessionEpoch)
				}
			}
		}
		fetches.mu.Unlock()
		if ended < 2 {
			t.Fatalf("%d fetches were answered with a session error; want 2", ended)
		}
		time.Sleep(time.Second)
		last := fetches.since(0)
		if s := last[len(last)-1]; s.SessionID == session || s.SessionEpoch <= 0 {
			t.Fatalf("after the session ended: session %d epoch %d; want a new session (not %d) in incremental use", s.SessionID, s.SessionEpoch, session)
		}
		requireSameRecords(t, readAll(t, src, "fs"), readAll(t, dst, "fs"))
		for p := range int32(parts) {
			requireIdenticalBatches(t, src, dst, "fs", "fs", p)
		}

		// klink stops: its last fetch closes its session (epoch -1), and
		// the broker has forgotten it (a real broker says so).
		open := last[len(last)-1].SessionID
		stop()
		final := fetches.since(0)
		if c := final[len(final)-1]; c.SessionID != open || c.SessionEpoch != -1 || len(c.Topics) > 0 {
			t.Fatalf("klink's last fetch: session %d epoch %d naming %d topics; want session %d closed (epoch -1), naming none", c.SessionID, c.SessionEpoch, len(c.Topics), open)
		}
		if k == kafkatest.Kafka {
			if err := interfere(ctx, cl, open, 1); !errors.Is(err, kerr.FetchSessionIDNotFound) {
				t.Fatalf("session %d after klink stopped: %v; want FETCH_SESSION_ID_NOT_FOUND", open, err)
			}
		}
		t.Logf("%d fetches; idle ones named nothing; two sessions ended by the broker, each followed by a full fetch; %d partitions exact; the session closed at shutdown", fetches.len(), parts)
	})
}

// interfere sends a fetch in klink's session (another client may: Kafka
// does not tie sessions to connections), naming nothing: with epoch -1 it
// closes the session.
func interfere(ctx context.Context, cl *kgo.Client, session, epoch int32) error {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID, req.MaxWaitMillis, req.MaxBytes, req.SessionID, req.SessionEpoch = -1, 0, 1<<20, session, epoch
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	return kerr.ErrorForCode(resp.ErrorCode)
}
