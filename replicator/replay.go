package replicator

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kconn"
)

// A fetch result is replayed in two steps. plan reads the batches into a
// list of steps in offset order: data to append, holes to fill, markers to
// reproduce. replay carries the steps out, each at its source offset.

type stepKind int

const (
	stepData   stepKind = iota // append a batch
	stepHole                   // fill offsets [from, to)
	stepMarker                 // reproduce a transaction marker at from
)

type step struct {
	kind stepKind
	b    batch.Batch // stepData: the batch as the source stored it (or rebuilt)
	crc  uint32      // stepData: CRC of b's records section
	buf  *kconn.Buffer
	txn  bool  // stepData: part of a source transaction
	pid  int64 // stepData (txn), stepMarker: the source producer id
	from int64 // stepHole, stepMarker
	to   int64 // stepHole
	// commit: stepMarker's outcome.
	commit bool
	// why a hole exists, for the log.
	why string
	// ts is the timestamp given to fillers.
	ts int64
	// srcBytes are fetched bytes given back when the step is done.
	srcBytes int64
	records  int64
}

// plan turns fetched batches into steps, starting at p.srcNext(). Steps
// are in source offsets. Batches
// already in the destination are dropped. A batch that cannot be mirrored
// as it is (a transaction marker, an empty batch, a batch with holes, a
// LogAppendTime batch) becomes the steps that reproduce it. On error, the
// references and bytes of batches not yet turned into steps are given back.
func (p *partition) plan(res *fetchResult) ([]step, error) {
	var steps []step
	next := p.srcNext()
	for i, b := range res.batches {
		size := int64(len(b))
		if b.NextOffset() <= next {
			p.release(size)
			releaseBuf(res.buf)
			continue // already in the destination
		}
		fail := func(err error) ([]step, error) {
			for _, s := range steps {
				p.release(s.srcBytes)
				releaseBuf(s.buf)
			}
			p.release(sumBytes(res.batches[i:]))
			res.releaseFrom(i)
			return nil, err
		}
		if b.BaseOffset() < next {
			return fail(fatalf("source batch at offsets %d..%d of %s[%d] straddles the destination end offset %d: the source log no longer matches what was mirrored", b.BaseOffset(), b.LastOffset(), p.m.sourceTopic, p.id, next))
		}
		var crc uint32
		var err error
		if i < len(res.sums) {
			crc, err = b.VerifySum(res.sums[i])
		} else {
			crc, err = b.Verify()
		}
		if err != nil {
			return fail(fatalf("source %s[%d]: %v", p.m.sourceTopic, p.id, err))
		}
		if b.BaseOffset() > next {
			steps = append(steps, step{kind: stepHole, from: next, to: b.BaseOffset(), why: "source offsets skipped", ts: b.MaxTimestamp()})
		}
		// Every case but plain data copies what it needs out of b, so the
		// fetch buffer's reference is given back after the switch; b must
		// not be read after that.
		keep := false
		switch {
		case b.NumRecords() == 0:
			// The log cleaner leaves these where all of a producer's
			// records were superseded (a transaction marker too, once
			// its transaction is gone); Kafka refuses to take them.
			steps = append(steps, step{kind: stepHole, from: b.BaseOffset(), to: b.NextOffset(), why: "empty batch left by the log cleaner", ts: b.MaxTimestamp(), srcBytes: size})
		case b.IsControl():
			typ, err := b.ControlType()
			if err != nil {
				return fail(fatalf("source %s[%d]: %v", p.m.sourceTopic, p.id, err))
			}
			if b.OffsetSpan() != 1 {
				// A marker is one record at one offset; it is reproduced
				// as one.
				return fail(fatalf("source %s[%d]: transaction marker batch at offsets %d..%d spans %d offsets", p.m.sourceTopic, p.id, b.BaseOffset(), b.LastOffset(), b.OffsetSpan()))
			}
			steps = append(steps, step{kind: stepMarker, from: b.BaseOffset(), pid: b.ProducerID(), commit: typ == batch.ControlCommit, srcBytes: size})
		case b.HasHoles():
			// The log cleaner removed records from inside the batch;
			// Kafka refuses such a batch from a producer. Its runs of
			// consecutive records are rebuilt as batches of their own
			// (copies: the fetched bytes are given back at once).
			runs, err := b.SplitRuns()
			if err != nil {
				return fail(fatalf("source %s[%d]: %v", p.m.sourceTopic, p.id, err))
			}
			p.rebuilt.Add(1)
			p.rebuiltBytes.Add(size)
			at := b.BaseOffset()
			for _, r := range runs {
				if r.BaseOffset() > at {
					steps = append(steps, step{kind: stepHole, from: at, to: r.BaseOffset(), why: "records removed by the log cleaner", ts: b.MaxTimestamp()})
				}
				steps = append(steps, step{kind: stepData, b: r, crc: r.RecordsCRC(), txn: b.IsTransactional(), pid: b.ProducerID(), records: int64(r.NumRecords())})
				at = r.NextOffset()
			}
			if at < b.NextOffset() {
				steps = append(steps, step{kind: stepHole, from: at, to: b.NextOffset(), why: "records removed by the log cleaner", ts: b.MaxTimestamp()})
			}
			p.release(size)
		case b.IsLogAppendTime():
			nb, err := b.ClearLogAppendTime()
			if err != nil {
				return fail(fatalf("source %s[%d]: %v", p.m.sourceTopic, p.id, err))
			}
			p.rebuilt.Add(1)
			p.rebuiltBytes.Add(size)
			steps = append(steps, step{kind: stepData, b: nb, crc: nb.RecordsCRC(), txn: b.IsTransactional(), pid: b.ProducerID(), srcBytes: size, records: int64(b.NumRecords())})
		default:
			keep = true // the step appends b from the fetch buffer
			steps = append(steps, step{kind: stepData, b: b, crc: crc, buf: res.buf, txn: b.IsTransactional(), pid: b.ProducerID(), srcBytes: size, records: int64(b.NumRecords())})
		}
		next = b.NextOffset()
		if !keep {
			releaseBuf(res.buf)
		}
	}
	return steps, nil
}

// replay carries out the steps at their source offsets. Holes are filled
// inside the filler transaction, which is aborted at the last hole of the
// steps (its abort marker takes that hole's last offset), so one
// transaction fills all the holes of a fetch.
func (p *partition) replay(ctx context.Context, steps []step) error {
	last := -1
	for i, s := range steps {
		if s.kind == stepHole {
			last = i
		}
	}
	for i, s := range steps {
		var err error
		switch s.kind {
		case stepData:
			err = p.appendData(ctx, s)
		case stepHole:
			err = p.fillHole(ctx, s.from, s.to, i == last, s.why, s.ts)
			p.release(s.srcBytes)
		case stepMarker:
			err = p.reproduceMarker(ctx, s.from, s.pid, s.commit)
			p.release(s.srcBytes)
		}
		if err != nil {
			// The steps not carried out give their fetched bytes and
			// buffers back.
			for _, r := range steps[i+1:] {
				p.release(r.srcBytes)
				releaseBuf(r.buf)
			}
			return err
		}
	}
	return nil
}

// appendData appends a source batch with the producer that replays it: the
// idempotent producer, or the slot replaying its source transaction.
func (p *partition) appendData(ctx context.Context, s step) error {
	sl := p.idem
	clear := int16(batch.AttrTransactional | batch.AttrDeleteHorizon)
	if s.txn {
		var err error
		if sl, err = p.slotFor(ctx, s.pid); err != nil {
			releaseBuf(s.buf)
			p.release(s.srcBytes)
			return err
		}
		clear = batch.AttrDeleteHorizon
	}
	if err := p.useProducer(ctx, sl); err != nil {
		releaseBuf(s.buf)
		p.release(s.srcBytes)
		return err
	}
	b := s.b
	base, next := b.BaseOffset()+p.delta, b.NextOffset()+p.delta
	b.Rewrite(sl.take(int64(b.NumRecords())), clear, s.crc)
	p.submit([]*appendReq{{b: b, base: base, next: next, txnID: sl.txnID, srcBytes: s.srcBytes, records: s.records, buf: s.buf, maxTs: b.MaxTimestamp()}})
	p.next = next
	return nil
}

// fillHole fills offsets [from, to) with filler records in the filler
// transaction. At the last hole of a fetch (or of a fill outside one),
// close is set: the hole's last offset is left for the transaction's abort
// marker.
func (p *partition) fillHole(ctx context.Context, from, to int64, close bool, why string, ts int64) error {
	if from != p.srcNext() {
		return fmt.Errorf("internal: hole at source offset %d but the destination end is at source offset %d on %s[%d]", from, p.srcNext(), p.m.name, p.id)
	}
	f, err := p.slotFor(ctx, fillerPID)
	if err != nil {
		return err
	}
	if err := p.useProducer(ctx, f); err != nil {
		return err
	}
	end := to
	if close {
		end = to - 1
	}
	if end > from {
		bs, err := batch.Fillers(end-from, ts, p.m.maxMessageBytes)
		if err != nil {
			return fmt.Errorf("building fillers for %s[%d] %d..%d: %w", p.m.name, p.id, from, end-1, err)
		}
		as := make([]*appendReq, 0, len(bs))
		for _, b := range bs {
			n := b.OffsetSpan()
			b.SetAttributes(b.Attributes() | batch.AttrTransactional)
			b.Rewrite(f.take(n), 0, b.RecordsCRC())
			as = append(as, &appendReq{b: b, base: p.next, next: p.next + n, txnID: f.txnID, filler: true})
			p.next += n
		}
		p.submit(as)
	}
	p.filledRanges.Add(1)
	p.filledOffsets.Add(to - from)
	p.m.noteFill(p.id, to-from)
	fields := []zap.Field{zap.Int64("from", from), zap.Int64("to", to-1), zap.Int64("offsets", to-from), zap.String("reason", why)}
	if why == "records removed by the log cleaner" || why == "empty batch left by the log cleaner" {
		p.log.Debug("filled offsets", fields...) // compacted topics have many
	} else {
		p.log.Info("filled offsets", fields...)
	}
	if !close {
		return nil
	}
	if err := p.flush(ctx); err != nil {
		return err
	}
	return p.endTxn(ctx, f, false, to-1+p.delta)
}

// fill fills up to target outside any fetch (start alignment, retention):
// one closed hole.
func (p *partition) fill(ctx context.Context, target int64, why string) error {
	if target <= p.srcNext() {
		return nil
	}
	return p.fillHole(ctx, p.srcNext(), target, true, why, time.Now().UnixMilli())
}

// reproduceMarker writes the source's transaction marker at offset m: the
// end of the slot replaying that source transaction, or, if klink saw none
// of its data (the cleaner removed it, or the mirror started after it), of
// a transaction opened for the marker alone.
func (p *partition) reproduceMarker(ctx context.Context, m, srcPID int64, commit bool) error {
	if err := p.flush(ctx); err != nil {
		return err
	}
	if m != p.srcNext() {
		return fmt.Errorf("internal: marker at source offset %d but the destination end is at source offset %d on %s[%d]", m, p.srcNext(), p.m.name, p.id)
	}
	s, err := p.slotFor(ctx, srcPID)
	if err != nil {
		return err
	}
	return p.endTxn(ctx, s, commit, m+p.delta)
}

// useProducer waits until the appends of other producers are answered
// before sl's are queued. Appends of one producer are safe to pipeline: if
// one fails, the broker refuses the later ones (their sequence no longer
// follows). Another producer's append would not be refused: it would land
// at the failed one's offset.
func (p *partition) useProducer(ctx context.Context, sl *slot) error {
	if len(p.pending) == 0 || p.pending[len(p.pending)-1].txnID == sl.txnID {
		return nil
	}
	return p.flush(ctx)
}

// flush waits until every append queued so far is answered.
func (p *partition) flush(ctx context.Context) error {
	for len(p.pending) > 0 {
		select {
		case r := <-p.sp.results:
			p.sp.taken()
			if err := p.handleResult(ctx, r); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
