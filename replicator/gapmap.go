package replicator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"go.uber.org/zap"

	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/batch"
)

// The exact gap map.
//
// klink keeps every source offset at the same destination offset, with one
// exception it cannot prevent: the destination ending one of klink's
// transactions on its own. A transaction that stays open longer than its
// timeout (klink stopped for longer than transaction.max.timeout.ms, or a
// long source transaction holding back the marker klink waits for) is
// aborted by the destination's coordinator, and its abort marker takes the
// destination's next offset, where klink meant to put something else.
//
// The destination can also write one of klink's markers twice: its
// transaction coordinator, restarted after its markers were written but
// before it recorded the transaction complete, completes it again, and the
// second marker takes the next offset (seen on Kafka 3.8 with the broker
// SIGKILLed under transactional load; klink cannot prevent it, since the
// marker is written whatever klink does). It is absorbed the same way:
// recorded as a shift of one offset, nothing to copy.
//
// From that offset on the partition is mirrored one offset further on, and
// the shift is recorded in the state file (linkstate.OffsetShift), so that
// offsets translate exactly (linkstate.Partition.Translate). If the source
// committed the aborted records, klink appends them again in a transaction
// of their own and commits it, so read_committed consumers still see them:
// the shift grows by their offsets and their commit marker. Their originals
// stay in the log, aborted.

// copiesPID marks the slot appending the copies of an aborted transaction.
const copiesPID = -4

// loadShifts reads the partition's gap map from the state file.
func (p *partition) loadShifts() error {
	rec, err := p.m.link.store.GetMirror(p.m.link.cfg.Name, p.m.name)
	if err != nil {
		return fmt.Errorf("reading mirror %s from the state file: %w", p.m.name, err)
	}
	pr := rec.Partitions[p.id]
	if pr == nil {
		p.shifts, p.delta = nil, 0
		return nil
	}
	p.shifts = slices.Clone(pr.Shifts)
	p.delta = pr.Delta()
	p.publishShifts()
	return nil
}

// saveShifts writes the partition's gap map to the state file.
func (p *partition) saveShifts() error {
	_, err := p.m.link.store.UpdateMirror(p.m.link.cfg.Name, p.m.name, func(r *linkstate.Mirror) error {
		pr := r.Partitions[p.id]
		if pr == nil {
			return fmt.Errorf("mirror %s has no partition %d in the state file", p.m.name, p.id)
		}
		pr.Shifts = slices.Clone(p.shifts)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording the gap map of %s[%d]: %w", p.m.name, p.id, err)
	}
	p.publishShifts()
	return nil
}

// publishShifts gives status a copy of the gap map (Copies deep-copied:
// the partition goroutine changes them).
func (p *partition) publishShifts() {
	cp := slices.Clone(p.shifts)
	for i := range cp {
		if c := cp[i].Copies; c != nil {
			cc := *c
			cp[i].Copies = &cc
		}
	}
	p.shiftsSeen.Store(&cp)
}

// shiftedUpTo is the destination offset from which offsets translate by
// p.delta: below it lie shifted ranges, markers and copies that cannot be
// compared with the source offset for offset.
func (p *partition) shiftedUpTo() int64 {
	var at int64
	for _, sh := range p.shifts {
		at = max(at, sh.DestOffset)
		if sh.Copies != nil {
			at = max(at, sh.Copies.To, sh.Copies.From)
		}
	}
	return at
}

// sourceOffsetOf is the source offset a destination offset stands for
// (outside markers and copies the gap map added).
func (p *partition) sourceOffsetOf(dest int64) int64 {
	for i := len(p.shifts) - 1; i >= 0; i-- {
		if sh := p.shifts[i]; sh.DestOffset <= dest {
			return dest - (sh.DestOffset - sh.SourceOffset)
		}
	}
	return dest
}

// absorbAbort looks at an abort marker of klink's (see verifyTail). It is
// planned when it ends a filler transaction (no data, where the source has
// nothing), or reproduces the source's abort marker at that offset for the
// source producer whose data the transaction holds (or no data: a marker
// klink reproduced alone). Otherwise the destination aborted the
// transaction on its own: absorbAbort records the shift (unless the marker
// took an offset the source has nothing at) and, if the source committed
// the transaction's records, schedules their copies (finishCopies).
func (p *partition) absorbAbort(ctx context.Context, d batch.Batch) error {
	if dup, err := p.duplicateMarker(ctx, d); err != nil || dup {
		if err != nil {
			return err
		}
		return p.absorbDuplicate(ctx, d)
	}
	x := d.BaseOffset()
	srcX := x - p.delta
	originals, err := p.txnData(ctx, d.ProducerID(), 0, x)
	if err != nil {
		return err
	}
	srcMarker, sourceHas, err := p.sourceAt(ctx, srcX)
	if err != nil {
		return err
	}
	if len(originals) == 0 && !sourceHas {
		return nil // a filler transaction's end, or an empty one in a hole
	}
	if srcMarker != nil {
		if typ, err := srcMarker.ControlType(); err == nil && typ == batch.ControlAbort {
			if len(originals) == 0 {
				return nil // the source's marker, reproduced alone
			}
			pid, err := p.replayedProducer(ctx, originals[0].BaseOffset())
			if err != nil {
				return err
			}
			if pid == srcMarker.ProducerID() {
				return nil // the source's abort, reproduced
			}
		}
	}
	sh := linkstate.OffsetShift{SourceOffset: srcX, DestOffset: x, AffectedFrom: srcX, At: time.Now().UTC(),
		Reason: fmt.Sprintf("the destination aborted klink's transaction (producer id %d) on its own at offset %d: transaction timeout", d.ProducerID(), x)}
	if sourceHas {
		sh.DestOffset = x + 1 // the marker took srcX's place
	}
	var commit bool
	if len(originals) > 0 {
		first := originals[0].BaseOffset()
		sh.AffectedFrom = first - p.delta
		last := originals[len(originals)-1].LastOffset() - p.delta
		srcPID, err := p.replayedProducer(ctx, first)
		if err != nil {
			return err
		}
		if commit, err = p.sourceOutcome(ctx, srcPID, srcX); err != nil {
			return err
		}
		if commit {
			sh.Copies = &linkstate.CopyRange{Pending: true, Producer: d.ProducerID(), OriginalsFrom: first, OriginalsTo: x}
			sh.Reason += fmt.Sprintf("; its records (source producer %d, source offsets %d..%d, committed on the source) are appended again", srcPID, sh.AffectedFrom, last)
		} else {
			sh.Reason += fmt.Sprintf("; its records (source producer %d, source offsets %d..%d) are aborted on the source too", srcPID, sh.AffectedFrom, last)
		}
	}
	return p.addShift(sh)
}

// errDuplicateMarker: compareWithSource found a marker of klink's that
// repeats the one before it (see duplicateMarker).
var errDuplicateMarker = errors.New("a marker of klink's transaction written twice by the destination")

// duplicateMarker reports whether marker d of one of klink's producers
// repeats that producer's previous batch: a marker of the same epoch and
// outcome with nothing of the producer between them. klink never ends a
// transaction twice; the destination's coordinator does when it completes
// a transaction again after a restart.
func (p *partition) duplicateMarker(ctx context.Context, d batch.Batch) (bool, error) {
	typ, err := d.ControlType()
	if !d.IsControl() || err != nil || !p.ourPIDs[d.ProducerID()] {
		return false, nil
	}
	prev, err := p.lastOfProducer(ctx, d.ProducerID(), d.BaseOffset())
	if err != nil || prev == nil || !prev.IsControl() || prev.ProducerEpoch() != d.ProducerEpoch() {
		return false, err
	}
	prevTyp, err := prev.ControlType()
	return err == nil && prevTyp == typ, nil
}

// absorbDuplicate records the shift a duplicate marker at x makes: the
// source offset klink meant to put at x goes to x+1 (unless the source has
// nothing there, where a filler would have stood).
func (p *partition) absorbDuplicate(ctx context.Context, d batch.Batch) error {
	x := d.BaseOffset()
	srcX := x - p.delta
	_, sourceHas, err := p.sourceAt(ctx, srcX)
	if err != nil || !sourceHas {
		return err
	}
	sh := linkstate.OffsetShift{SourceOffset: srcX, DestOffset: x + 1, AffectedFrom: srcX, At: time.Now().UTC(),
		Reason: fmt.Sprintf("the destination wrote the marker of klink's transaction (producer id %d) again at offset %d: its transaction coordinator completed the transaction a second time after a restart", d.ProducerID(), x)}
	return p.addShift(sh)
}

// lastOfProducer is producer pid's last destination batch before offset x
// (nil if it has none), read back from x in growing windows.
func (p *partition) lastOfProducer(ctx context.Context, pid, x int64) (batch.Batch, error) {
	dst := p.m.link.dst
	logStart, err := dst.listOffset(ctx, p.m.name, p.id, offsetEarliest)
	if err != nil {
		return nil, err
	}
	for window := int64(64); ; window *= 4 {
		from := max(logStart, x-window)
		var last batch.Batch
		err := dst.scan(ctx, p.m.name, p.id, from, x, func(b batch.Batch) (bool, error) {
			if b.ProducerID() == pid {
				last = b
			}
			return false, nil
		})
		if err != nil && !errors.Is(err, errScanEnd) {
			return nil, err
		}
		if last != nil || from == logStart {
			return last, nil
		}
	}
}

// addShift records a shift in the gap map (the state file first): from
// sh.SourceOffset on, source offsets are at sh.DestOffset on.
func (p *partition) addShift(sh linkstate.OffsetShift) error {
	p.shifts = append(p.shifts, sh)
	if err := p.saveShifts(); err != nil {
		p.shifts = p.shifts[:len(p.shifts)-1]
		return err
	}
	p.delta = sh.DestOffset - sh.SourceOffset
	p.log.Warn("source offsets no longer at the same destination offsets", zap.Int64("sourceOffset", sh.SourceOffset),
		zap.Int64("destinationOffset", sh.DestOffset), zap.String("reason", sh.Reason))
	return nil
}

// txnData returns the data batches (not fillers, not copies) of the
// transaction of destination producer pid that the marker at offset x
// ended: its batches after the producer's previous marker. It reads back
// from x in growing windows, never below lo or the log start.
func (p *partition) txnData(ctx context.Context, pid, lo, x int64) ([]batch.Batch, error) {
	dst := p.m.link.dst
	logStart, err := dst.listOffset(ctx, p.m.name, p.id, offsetEarliest)
	if err != nil {
		return nil, err
	}
	lo = max(logStart, lo)
	for window := int64(1024); ; window *= 4 {
		from := max(lo, x-window)
		var data []batch.Batch
		ended := false // a marker of pid was seen: the transaction starts after it
		err := dst.scan(ctx, p.m.name, p.id, from, x, func(b batch.Batch) (bool, error) {
			switch filler, ferr := b.IsFillerBatch(); {
			case b.ProducerID() != pid:
			case b.IsControl():
				data, ended = data[:0], true
			case ferr != nil || filler || p.inCopies(b.BaseOffset()):
			default:
				data = append(data, b)
			}
			return false, nil
		})
		if err != nil {
			return nil, err
		}
		if ended || from == lo {
			return data, nil
		}
	}
}

// sourceAt reports whether the source has a record or a marker at offset
// (not a hole left by the cleaner), and the marker if it is one. An offset
// beyond the source's end counts as taken: the source will write there.
func (p *partition) sourceAt(ctx context.Context, offset int64) (marker batch.Batch, has bool, err error) {
	f, err := p.m.link.src.fetchOnce(ctx, p.m.sourceTopic, p.id, offset, 1, 0)
	if errors.Is(err, kerr.OffsetOutOfRange) {
		end, lerr := p.m.link.src.listOffset(ctx, p.m.sourceTopic, p.id, offsetLatest)
		if lerr != nil {
			return nil, false, lerr
		}
		return nil, offset >= end, nil
	}
	if err != nil {
		return nil, false, err
	}
	for _, b := range f.batches {
		if b.NextOffset() > offset {
			if b.BaseOffset() > offset || !sourceHasData(b, offset, offset) {
				return nil, false, nil
			}
			if b.IsControl() {
				return b, true, nil
			}
			return nil, true, nil
		}
	}
	return nil, true, nil // beyond the end
}

// inCopies reports whether a destination offset lies in copies klink
// appended (see finishCopies).
func (p *partition) inCopies(offset int64) bool {
	for _, sh := range p.shifts {
		if c := sh.Copies; c != nil && c.From > 0 && offset >= c.From && (c.Pending || offset < c.To) {
			return true
		}
	}
	return false
}

// copying reports whether copies are pending (begun or not).
func (p *partition) copying() bool {
	for _, sh := range p.shifts {
		if c := sh.Copies; c != nil && c.Pending {
			return true
		}
	}
	return false
}

// sourceOutcome finds whether source producer pid's transaction, open at
// offset from, committed: its marker is at or after from.
func (p *partition) sourceOutcome(ctx context.Context, pid, from int64) (bool, error) {
	var commit bool
	err := p.m.link.src.scan(ctx, p.m.sourceTopic, p.id, from, -1, func(b batch.Batch) (bool, error) {
		if !b.IsControl() || b.ProducerID() != pid {
			return false, nil
		}
		typ, err := b.ControlType()
		if err != nil {
			return true, fatalf("source %s[%d] marker at offset %d is unreadable: %v", p.m.sourceTopic, p.id, b.BaseOffset(), err)
		}
		commit = typ == batch.ControlCommit
		return true, nil
	})
	if errors.Is(err, errScanEnd) {
		return false, fmt.Errorf("source %s[%d]: no marker for producer %d after offset %d yet", p.m.sourceTopic, p.id, pid, from)
	}
	return commit, err // with no bound, the scan ends only at the marker or errScanEnd
}

// finishCopies appends again, in a transaction of their own that it
// commits, the records of every aborted transaction the source committed
// (see absorbAbort). A crash in the middle is picked up on the next start:
// copies already committed are recognised by their marker; a partial copy
// is aborted and made again.
func (p *partition) finishCopies(ctx context.Context) error {
	for i := range p.shifts {
		c := p.shifts[i].Copies
		if c == nil || !c.Pending {
			continue
		}
		if c.From > 0 {
			done, err := p.copiesCommitted(ctx, c)
			if err != nil {
				return err
			}
			if done {
				if err := p.copiesDone(i); err != nil {
					return err
				}
				continue
			}
			if err := p.abortCopies(ctx); err != nil {
				return err
			}
		}
		if c.From == 0 {
			c.SourceAt = p.srcNext()
		}
		c.From = p.next
		if err := p.saveShifts(); err != nil {
			return err
		}
		if err := p.appendCopies(ctx, c); err != nil {
			return err
		}
		if err := p.copiesDone(i); err != nil {
			return err
		}
	}
	return nil
}

// copiesCommitted reports whether the copies begun at c.From were
// committed: nothing but them and their commit marker follows c.From.
func (p *partition) copiesCommitted(ctx context.Context, c *linkstate.CopyRange) (bool, error) {
	if p.next <= c.From {
		return false, nil
	}
	f, err := p.m.link.dst.fetchOnce(ctx, p.m.name, p.id, p.next-1, 1, 0)
	if err != nil {
		return false, err
	}
	if len(f.batches) == 0 {
		return false, nil
	}
	b := f.batches[0]
	return b.BaseOffset() == p.next-1 && p.ownMarker(b, batch.ControlCommit), nil
}

// abortCopies aborts a copies transaction left open by a crash: its marker
// is planned (the copies start again after it).
func (p *partition) abortCopies(ctx context.Context) error {
	for _, s := range p.slots {
		if s.inTxn && s.srcPID == copiesPID {
			if err := p.endTxn(ctx, s, false, p.next); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendCopies appends the originals' data batches again at p.next, in a
// new transaction, and commits it.
func (p *partition) appendCopies(ctx context.Context, c *linkstate.CopyRange) error {
	s, err := p.slotFor(ctx, copiesPID)
	if err != nil {
		return err
	}
	if err := p.useProducer(ctx, s); err != nil {
		return err
	}
	originals, err := p.txnData(ctx, c.Producer, c.OriginalsFrom, c.OriginalsTo)
	if err != nil {
		return err
	}
	for _, o := range originals {
		if o.BaseOffset() < c.OriginalsFrom {
			continue
		}
		b := batch.Batch(slices.Clone(o))
		n := b.OffsetSpan()
		b.Rewrite(s.take(int64(b.NumRecords())), batch.AttrDeleteHorizon, b.RecordsCRC())
		p.submit([]*appendReq{{b: b, base: p.next, next: p.next + n, txnID: s.txnID, records: int64(b.NumRecords())}})
		p.next += n
	}
	if err := p.flush(ctx); err != nil {
		return err
	}
	if testHookBeforeCopiesCommit != nil {
		if err := testHookBeforeCopiesCommit(); err != nil {
			return err
		}
	}
	return p.endTxn(ctx, s, true, p.next)
}

// testHookBeforeCopiesCommit lets a test fail the copies before their
// commit (a crash in the middle).
var testHookBeforeCopiesCommit func() error

// copiesDone records copies committed up to p.next: the shift grows by
// their offsets from the source offset they were appended at.
func (p *partition) copiesDone(i int) error {
	c := p.shifts[i].Copies
	c.To, c.Pending = p.next, false
	srcAt := c.SourceAt
	p.shifts = append(p.shifts, linkstate.OffsetShift{SourceOffset: srcAt, DestOffset: p.next, AffectedFrom: srcAt, At: time.Now().UTC(),
		Reason: fmt.Sprintf("copies of aborted records at destination offsets %d..%d", c.From, c.To-1)})
	if err := p.saveShifts(); err != nil {
		return err
	}
	p.delta = p.next - srcAt
	p.log.Warn("records aborted by the destination appended again", zap.Int64("from", c.From), zap.Int64("to", c.To-1))
	return nil
}

// errShiftedAppend: an append landed after an offset the destination
// took for one of klink's markers.
var errShiftedAppend = errors.New("the destination took an offset for a marker of klink's transaction (transaction timeout, or a transaction completed again); reconciling")

// ownAbortIn reports whether the destination range [from, to) holds an
// abort marker of klink's: the destination aborted one of klink's
// transactions there (or it is klink's own marker, when to is its end).
func (p *partition) ownAbortIn(ctx context.Context, from, to int64) bool {
	_, found, err := p.findOwnAbort(ctx, from, to)
	return err == nil && found
}

// ownMarkerIn reports whether the destination range [from, to) holds a
// marker of klink's of either outcome (one the destination wrote again).
func (p *partition) ownMarkerIn(ctx context.Context, from, to int64) bool {
	found := false
	err := p.m.link.dst.scan(ctx, p.m.name, p.id, from, to, func(b batch.Batch) (bool, error) {
		found = b.IsControl() && p.ourPIDs[b.ProducerID()]
		return found, nil
	})
	return (err == nil || errors.Is(err, errScanEnd)) && found
}

// ownMarker reports whether b is a marker of klink's of the given type.
func (p *partition) ownMarker(b batch.Batch, typ int16) bool {
	t, err := b.ControlType()
	return b.IsControl() && err == nil && t == typ && p.ourPIDs[b.ProducerID()]
}
