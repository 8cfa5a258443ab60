package replicator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kconn"
)

// partition mirrors one source partition into the destination partition of
// the same number. Its goroutine owns the append order: it turns fetched
// batches into appends (rewritten batches and fillers), queues them on the
// destination leader's sink, and checks every answer against the source
// offset the append must land on.
type partition struct {
	// uncleanStop: run returned with appends unanswered (set by run,
	// read after it returned).
	uncleanStop bool
	// foreignSince: recovery first saw an open transaction no coordinator
	// lists as klink's (see recoverTxns).
	foreignSince time.Time
	// unresumedSince: a transaction of klink's holding the partition
	// was first found open but not resumed (requireNotOpenHere).
	unresumedSince time.Time
	m              *mirror
	id             int32
	log            *zap.Logger
	cur            *cursor
	sp             *sinkPart

	// Owned by the goroutine.
	idem         *slot           // the idempotent producer, for data outside source transactions
	slots        []*slot         // transactional producers (see txn.go)
	bySrc        map[int64]*slot // source producer id -> slot replaying its open transaction
	ourPIDs      map[int64]bool  // destination producer ids of klink's transactional ids for this partition
	next         int64           // destination offset the next append lands on
	acked        int64           // everything below is confirmed in the destination
	delta        int64           // destination minus source offset (see gapmap.go); 0 on an exact partition
	shifts       []linkstate.OffsetShift
	pending      []*appendReq // queued or in flight, in order
	held         int64        // fetched bytes held by pending appends and not yet released
	logStartDue  int64        // DeleteRecords target once acked reaches it; -1 none
	startOffset  int64
	retry        *backoff // between restarts; reset once appends succeed again
	lastFetchErr string   // the last fetch error logged, so repeats are not

	// Read by status.
	destStart     atomic.Int64
	destEnd       atomic.Int64
	records       atomic.Int64
	bytes         atomic.Int64
	filledRanges  atomic.Int64
	filledOffsets atomic.Int64
	rebuilt       atomic.Int64 // source batches decompressed and rebuilt
	rebuiltBytes  atomic.Int64
	lastTs        atomic.Int64                            // max timestamp of the last source batch acknowledged
	shiftsSeen    atomic.Pointer[[]linkstate.OffsetShift] // a copy of shifts for status
	errMu         sync.Mutex
	lastErr       string
}

// fatalError stops the mirror: continuing could corrupt it.
type fatalError struct{ reason string }

func (e fatalError) Error() string { return e.reason }

func fatalf(format string, args ...any) error {
	return fatalError{fmt.Sprintf(format, args...)}
}

// srcNext is the source offset the next append replays.
func (p *partition) srcNext() int64 { return p.next - p.delta }

// maxSequence: idempotent sequences wrap from MaxInt32 to 0.
func nextSequence(seq int32, n int64) int32 {
	return int32((int64(seq) + n) % (math.MaxInt32 + 1))
}

func (p *partition) setErr(err error) {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if err == nil {
		p.lastErr = ""
	} else {
		p.lastErr = err.Error()
	}
}

func (p *partition) lastError() string {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if p.lastErr != "" {
		return p.lastErr
	}
	p.cur.mu.Lock()
	defer p.cur.mu.Unlock()
	if p.cur.lastErr != nil {
		return "fetch: " + p.cur.lastErr.Error()
	}
	return ""
}

// run mirrors the partition until ctx ends or the mirror fails. Any append
// error leads back to start, which re-reads where the destination really is:
// the destination log end is the resume point.
func (p *partition) run(ctx context.Context, started func()) {
	defer p.m.link.fetchers.remove(p.cur)
	defer p.sp.detach()
	defer func() {
		if len(p.pending) > 0 {
			// Stopped with appends unanswered (fillers of a start
			// cut short, say): not a clean stop.
			p.uncleanStop = true
			p.m.unclean.Store(true)
		}
	}()
	p.retry = newBackoff(200*time.Millisecond, 30*time.Second)
	first := true
	for ctx.Err() == nil {
		err := p.startBounded(ctx)
		if err == nil {
			if first {
				first = false
				started()
			}
			p.m.link.partsRunning.Add(1)
			err = p.loop(ctx)
			p.m.link.partsRunning.Add(-1)
		}
		var fatal fatalError
		switch {
		case ctx.Err() != nil:
			return
		case errors.As(err, &fatal):
			if p.m.isHost {
				p.m.failPartition(p.id, fatal.reason)
			} else {
				p.m.fail(fatal.reason)
			}
			return
		case err != nil:
			p.setErr(err)
			countError(p.m.link.cfg.Name, "partition_restart")
			d := p.retry.next()
			p.log.Info("partition restarting", zap.Error(err), zap.Duration("backoff", d))
			if !sleepCtx(ctx, d) {
				return
			}
		}
	}
}

// start finds where the destination partition is, checks that its tail
// agrees with the source, prepares the producer, and aligns a new partition
// with its start offset.
func (p *partition) start(ctx context.Context) error {
	// The source must still be the topic the mirror was set up from:
	// comparing against a recreated one would blame the destination.
	if err := p.m.checkSourceIdentity(ctx); err != nil {
		return err
	}
	if err := p.m.checkDestinationIdentity(ctx); err != nil {
		return err
	}
	dst := p.m.link.dst
	topic := p.m.name
	leader, err := dst.leader(ctx, topic, p.id)
	if err != nil {
		return err
	}
	p.sp.detach()
	p.m.link.sinks.get(leader).attach(p.sp)

	if err := p.loadShifts(); err != nil {
		return err
	}
	// Transactions klink left open go on where they were (and ones it was
	// ending are waited for, before the log end is read).
	if err := p.recoverTxns(ctx); err != nil {
		return err
	}
	end, err := dst.listOffset(ctx, topic, p.id, offsetLatest)
	if err != nil {
		return err
	}
	logStart, err := dst.listOffset(ctx, topic, p.id, offsetEarliest)
	if err != nil {
		return err
	}
	// Everything klink itself wrote below the start offset is filler; above
	// it, the destination's tail must equal the source at the same offsets.
	from := end - 1
	if p.idem != nil && p.acked < end {
		from = p.acked // a restart after errors: check all that landed unanswered
	}
	// Taken first, whatever the end: a flag left behind (an adopted
	// partition that was empty) would skip the check at a later start.
	adopted := p.m.takeAdopted(p.id)
	if end > 0 && end > p.startOffset && !adopted {
		if err := p.checkTail(ctx, max(from, p.startOffset), end); err != nil {
			return err
		}
	}
	if err := p.bindRecovered(ctx); err != nil {
		return err
	}
	if err := p.newProducerEpoch(ctx); err != nil {
		return err
	}
	p.next, p.acked = end, end
	p.destEnd.Store(end)
	if err := p.finishCopies(ctx); err != nil {
		return err
	}
	p.destStart.Store(logStart)
	p.logStartDue = -1
	if logStart < p.startOffset {
		p.logStartDue = p.startOffset
	}
	fetchFrom := max(p.srcNext(), p.startOffset)
	if p.srcNext() < p.startOffset {
		// Bring the destination up to the start offset with fillers, so
		// that the first mirrored record lands on its source offset.
		target, err := p.batchStart(ctx, p.startOffset)
		if err != nil {
			return err
		}
		if err := p.fill(ctx, target, "start alignment"); err != nil {
			return err
		}
	}
	p.m.link.fetchers.reset(p.cur, fetchFrom, true, 0)
	p.m.link.fetchers.add(p.cur)
	if p.logStartDue >= 0 && p.acked >= p.logStartDue {
		p.moveLogStart(ctx)
	}
	p.setErr(nil)
	return nil
}

// batchStart is where fillers must stop to bring the destination up to
// offset: offset itself, or the base of the source batch that holds it (a
// log start set by DeleteRecords can fall inside a batch, and batches are
// copied whole), but never below where the destination is.
func (p *partition) batchStart(ctx context.Context, offset int64) (int64, error) {
	f, err := p.m.link.src.fetchOnce(ctx, p.m.sourceTopic, p.id, offset, 1, 0)
	if errors.Is(err, kerr.OffsetOutOfRange) {
		return offset, nil // retention passed it; the gap is filled when fetching
	}
	if err != nil {
		return 0, err
	}
	if len(f.batches) > 0 && f.batches[0].BaseOffset() < offset {
		return max(f.batches[0].BaseOffset(), p.srcNext()), nil
	}
	return offset, nil
}

// newProducerEpoch gives the idempotent producer a fresh epoch, so that any
// append of an earlier epoch still on its way is refused by the broker.
func (p *partition) newProducerEpoch(ctx context.Context) error {
	if p.m.link.group != nil {
		return p.newFencingEpoch(ctx)
	}
	if p.idem != nil && p.idem.producer.Epoch < math.MaxInt16 {
		p.idem.producer.Epoch++
		p.idem.producer.Sequence = 0
		return nil
	}
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionTimeoutMillis = 60000
	resp, err := req.RequestWith(ctx, p.m.link.dst.cl)
	if err != nil {
		return fmt.Errorf("destination InitProducerId: %w", err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return fmt.Errorf("destination InitProducerId: %w", err)
	}
	p.idem = &slot{producer: batch.Producer{ID: resp.ProducerID, Epoch: resp.ProducerEpoch}, ready: true}
	return nil
}

// maxConcurrentStarts is how many partitions of a link run their start
// at once.
const maxConcurrentStarts = 256

// startBounded is start, once one of the link's start slots is free.
func (p *partition) startBounded(ctx context.Context) error {
	p.m.link.partsStarting.Add(1)
	defer p.m.link.partsStarting.Add(-1)
	if slots := p.m.link.starts; slots != nil {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.start(ctx)
}

// loop moves fetched batches to the destination until an error.
func (p *partition) loop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			p.drain(shutdownGrace)
			return nil
		case <-p.cur.notify:
			res := p.m.link.fetchers.take(p.cur)
			if res == nil {
				continue
			}
			if err := p.handleFetch(ctx, res); err != nil {
				p.drain(p.drainLimit())
				return err
			}
		case r := <-p.sp.results:
			p.sp.taken()
			if err := p.handleResult(ctx, r); err != nil {
				p.drain(p.drainLimit())
				return err
			}
		}
	}
}

// shutdownGrace bounds how long appends in flight may take to finish when
// klink stops; drainLimit, how long a partition waits for them after an
// error (longer than a produce request may take, so it never gives up on an
// append that can still land).
const shutdownGrace = 10 * time.Second

func (p *partition) drainLimit() time.Duration { return p.m.link.sinks.requestTimeout + 5*time.Second }

// handleFetch turns fetched batches into appends.
func (p *partition) handleFetch(ctx context.Context, res *fetchResult) error {
	if res.err != nil {
		return p.handleFetchError(ctx, res)
	}
	if next := p.srcNext(); res.fetchOffset != next && len(res.batches) > 0 && res.batches[0].BaseOffset() > next {
		// Only a fetch from the next source offset shows that the
		// offsets before its first batch are empty at the source;
		// anything else is stale.
		p.log.Warn("dropping a fetch result that does not start at the destination end", zap.Int64("fetchOffset", res.fetchOffset), zap.Int64("next", next))
		p.release(res.bytes)
		res.releaseFrom(0)
		p.m.link.fetchers.reset(p.cur, p.srcNext(), true, 0)
		return nil
	}
	steps, err := p.plan(res)
	if err != nil {
		return err
	}
	return p.replay(ctx, steps)
}

func sumBytes(bs []batch.Batch) int64 {
	var n int64
	for _, b := range bs {
		n += int64(len(b))
	}
	return n
}

func releaseBuf(b *kconn.Buffer) {
	if b != nil {
		b.Release()
	}
}

// settle accounts for an append that is answered or dropped: its fetched
// bytes no longer count against the fetch limits, and its buffer reference
// is released.
func (p *partition) settle(a *appendReq) {
	p.held -= a.srcBytes
	p.release(a.srcBytes)
	releaseBuf(a.buf)
	a.buf = nil
}

func (p *partition) submit(as []*appendReq) {
	if len(as) == 0 {
		return
	}
	for _, a := range as {
		p.held += a.srcBytes
	}
	p.pending = append(p.pending, as...)
	p.sp.enqueue(as...)
}

func (p *partition) release(n int64) {
	p.m.link.fetchers.release(p.cur, n)
}

// handleResult checks one append's answer.
func (p *partition) handleResult(ctx context.Context, r appendResult) error {
	if !p.takePending(r.a) {
		return fmt.Errorf("internal: produce answer for an append not pending on %s[%d]", p.m.name, p.id)
	}
	if r.err != nil {
		return p.appendError(r)
	}
	if first := len(p.pending) > 0 && p.pending[0].base < r.a.base; first {
		// Errors can overtake the answers of earlier appends (a dead
		// connection fails them in whichever order); a success never
		// overtakes anything.
		return fmt.Errorf("internal: produce answer out of order on %s[%d]", p.m.name, p.id)
	}
	if r.base > r.a.base && p.ownMarkerIn(ctx, r.a.base, r.a.base+1) {
		return errShiftedAppend // start checks the tail from p.acked and absorbs the marker
	}
	if r.base != r.a.base {
		return fatalf("destination %s[%d] put the batch for source offset %d at offset %d: something else writes into the mirror topic, or the destination lost data; klink stopped writing", p.m.name, p.id, r.a.base, r.base)
	}
	p.ack(r.a)
	p.retry.reset()
	if p.logStartDue >= 0 && p.acked >= p.logStartDue {
		p.moveLogStart(ctx)
	}
	return nil
}

// takePending removes an answered append from pending (usually its head)
// and settles it; false if it is not pending.
func (p *partition) takePending(a *appendReq) bool {
	for i, x := range p.pending {
		if x == a {
			p.pending = append(p.pending[:i], p.pending[i+1:]...)
			p.settle(a)
			return true
		}
	}
	return false
}

// ack records an append the destination confirmed at its source offset.
func (p *partition) ack(a *appendReq) {
	p.acked = a.next
	p.destEnd.Store(p.acked)
	if !a.filler {
		p.records.Add(a.records)
		p.bytes.Add(int64(len(a.b)))
		p.lastTs.Store(a.maxTs)
	}
}

// appendError decides what a refused or failed append means.
func (p *partition) appendError(r appendResult) error {
	a := r.a
	what := fmt.Sprintf("append of source offsets %d..%d to %s[%d]", a.base, a.next-1, p.m.name, p.id)
	switch {
	case errors.Is(r.err, kerr.CorruptMessage), errors.Is(r.err, kerr.InvalidRecord):
		return fatalf("%s refused: %v", what, r.err)
	case errors.Is(r.err, kerr.MessageTooLarge), errors.Is(r.err, kerr.RecordListTooLarge):
		return fmt.Errorf("%s refused (%d bytes): %w; raise max.message.bytes on the destination topic", what, len(a.b), r.err)
	}
	return fmt.Errorf("%s: %w", what, r.err)
}

// drain stops sending and waits (bounded) for the answers of appends in
// flight, so that the next start sees a quiet destination partition. Good
// answers still count, in order; after the first failure nothing later is
// counted as acknowledged (the next start re-reads the destination).
func (p *partition) drain(limit time.Duration) {
	for _, a := range p.sp.stop() {
		p.pending = p.pending[:len(p.pending)-1]
		p.settle(a)
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	failed := false
	for len(p.pending) > 0 {
		select {
		case r := <-p.sp.results:
			p.sp.taken()
			inOrder := p.pending[0] == r.a
			if !p.takePending(r.a) {
				continue
			}
			if r.err != nil || r.base != r.a.base || !inOrder {
				failed = true
			}
			if !failed {
				p.ack(r.a)
			}
		case <-deadline.C:
			// Their buffers stay referenced: the sink may still be
			// writing them.
			p.log.Warn("appends still unanswered after drain limit", zap.Int("appends", len(p.pending)))
			p.uncleanStop = true
			p.m.unclean.Store(true)
			p.pending = nil
		}
	}
	// Anything fetched but never appended is fetched again from acked.
	p.release(p.held)
	p.held = 0
	p.m.link.fetchers.reset(p.cur, p.acked-p.delta, false, 0)
}

// moveLogStart makes the destination's log start the source's start offset
// once the destination holds it, so that both logs begin at the same offset.
func (p *partition) moveLogStart(ctx context.Context) {
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: p.m.name, Partition: p.id, At: p.logStartDue, LeaderEpoch: -1})
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resps, err := p.m.link.dst.adm.DeleteRecords(rctx, os)
	if err == nil {
		if r, ok := resps[p.m.name][p.id]; ok {
			err = r.Err
		}
	}
	if err != nil {
		p.log.Warn("moving destination log start failed; will retry", zap.Int64("logStart", p.logStartDue), zap.Error(err))
		return
	}
	p.log.Info("destination log start moved to the source start offset", zap.Int64("logStart", p.logStartDue))
	p.destStart.Store(p.logStartDue)
	p.logStartDue = -1
}

// handleFetchError acts on a partition-level fetch error.
func (p *partition) handleFetchError(ctx context.Context, res *fetchResult) error {
	switch {
	case errors.Is(res.err, batch.ErrOldFormat):
		return fatalf("source %s[%d]: %v; klink mirrors v2 record batches (Kafka 0.11+) only", p.m.sourceTopic, p.id, res.err)
	case errors.Is(res.err, kerr.UnknownTopicID), errors.Is(res.err, kerr.InconsistentTopicID):
		if err := p.m.checkSourceIdentity(ctx); err != nil {
			return err
		}
	case errors.Is(res.err, kerr.OffsetOutOfRange):
		return p.outOfRange(ctx, res.fetchOffset)
	}
	if msg := res.err.Error(); msg != p.lastFetchErr {
		p.lastFetchErr = msg // logged once, not on every retry
		p.log.Warn("fetch error; retrying", zap.Int64("offset", res.fetchOffset), zap.Error(res.err))
	}
	p.m.link.fetchers.reset(p.cur, p.srcNext(), true, time.Second)
	return nil
}

// outOfRange handles a fetch below the source log start (retention passed
// klink: fill the gap) or above its end (the source lost data: fail).
func (p *partition) outOfRange(ctx context.Context, offset int64) error {
	src := p.m.link.src
	start, err := src.listOffset(ctx, p.m.sourceTopic, p.id, offsetEarliest)
	if err != nil {
		return err
	}
	end, err := src.listOffset(ctx, p.m.sourceTopic, p.id, offsetLatest)
	if err != nil {
		return err
	}
	switch {
	case offset < start:
		// Retention removed records before klink copied them: they are
		// gone at the source too. Fill their offsets, up to the batch
		// that holds the new log start, and go on from there.
		target, err := p.batchStart(ctx, start)
		if err != nil {
			return err
		}
		if err := p.fill(ctx, target, "source retention passed klink"); err != nil {
			return err
		}
		p.m.link.fetchers.reset(p.cur, start, true, 0)
	case offset > end:
		return fatalf("destination %s[%d] has offsets up to %d but source %s[%d] ends at %d: the source partition was truncated or recreated", p.m.name, p.id, p.next-1, p.m.sourceTopic, p.id, end)
	default:
		p.m.link.fetchers.reset(p.cur, offset, true, 0)
	}
	return nil
}
