package replicator

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"go.uber.org/zap"

	"github.com/klink-io/klink/replicator/batch"
)

// verifyTail checks that the destination batches covering [from, end) are
// what the source holds at the same offsets: klink's own copies (same
// records, byte for byte) or fillers where the source has no data. It runs
// when a partition starts (the last batch, after a restart or crash) and
// after append errors (every batch that landed without an answer).
//
// An abort marker of klink's own that the source does not have there is
// the destination ending one of klink's transactions on its own (the
// transaction timeout), and a marker of klink's repeating the one before
// it is the destination completing a transaction twice: either is absorbed
// into the gap map (see gapmap.go) and the batches after it are checked
// one offset further on.
func (p *partition) verifyTail(ctx context.Context, from, end int64) error {
	dst := p.m.link.dst
	from = max(from, p.shiftedUpTo())
	for off := from; off < end; {
		f, err := dst.fetchOnce(ctx, p.m.name, p.id, off, oneShotFetchBytes, 0)
		if errors.Is(err, kerr.OffsetOutOfRange) {
			start, lerr := dst.listOffset(ctx, p.m.name, p.id, offsetEarliest)
			if lerr != nil {
				return lerr
			}
			if start <= off {
				return err
			}
			off = start // DeleteRecords or retention moved the start: nothing to check below
			continue
		}
		if err != nil {
			return err
		}
		progressed := false
		for _, d := range f.batches {
			if d.NextOffset() <= off {
				continue
			}
			if d.BaseOffset() >= end {
				return nil
			}
			err := p.compareWithSource(ctx, d)
			switch {
			case errors.Is(err, errUnplannedAbort):
				err = p.absorbAbort(ctx, d)
			case errors.Is(err, errDuplicateMarker):
				err = p.absorbDuplicate(ctx, d)
			}
			if err != nil {
				return err
			}
			off = d.NextOffset()
			progressed = true
		}
		if !progressed {
			return fmt.Errorf("destination %s[%d]: fetch at offset %d returned no batch below the end offset %d", p.m.name, p.id, off, end)
		}
	}
	return nil
}

// errUnplannedAbort: compareWithSource found an abort marker of klink's
// own; absorbAbort decides whether klink planned it.
var errUnplannedAbort = errors.New("klink's transaction aborted by the destination")

// checkTail runs verifyTail on the destination tail [from, end). Trailing
// markers are checked with the batch before them (several of klink's
// transactions can have been aborted by the destination in a row). If the
// tail does not match the source, and an abort marker of klink's lies
// shortly before it (appends already in flight landed one offset further
// on), the check runs again from that marker.
func (p *partition) checkTail(ctx context.Context, from, end int64) error {
	if p.copying() {
		return nil // the tail holds copies being made: finishCopies checks them
	}
	dst := p.m.link.dst
	lo := p.shiftedUpTo()
	for from > lo {
		f, err := dst.fetchOnce(ctx, p.m.name, p.id, from-1, 1, 0)
		if err != nil {
			return err
		}
		if len(f.batches) == 0 || !f.batches[0].IsControl() || f.batches[0].BaseOffset() != from-1 {
			break
		}
		from--
	}
	err := p.verifyTail(ctx, from, end)
	var fatal fatalError
	if !errors.As(err, &fatal) || len(p.ourPIDs) == 0 {
		return err
	}
	at, ok, ferr := p.findOwnAbort(ctx, max(lo, end-maxShiftSearch), from)
	if ferr != nil || !ok {
		return err
	}
	p.log.Info("destination tail differs from the source after an abort marker of klink's; checking from the marker", zap.Int64("marker", at))
	return p.verifyTail(ctx, at, end)
}

// maxShiftSearch bounds how far back checkTail looks for an abort marker
// of klink's: further than the appends that can be in flight at once.
const maxShiftSearch = 1 << 20

// findOwnAbort returns the offset of the last abort marker of klink's in
// the destination range [from, to).
func (p *partition) findOwnAbort(ctx context.Context, from, to int64) (int64, bool, error) {
	found, at := false, int64(0)
	err := p.m.link.dst.scan(ctx, p.m.name, p.id, from, to, func(b batch.Batch) (bool, error) {
		if p.ownMarker(b, batch.ControlAbort) && b.BaseOffset() >= from {
			found, at = true, b.BaseOffset()
		}
		return false, nil
	})
	if errors.Is(err, errScanEnd) {
		err = nil // the range runs past the end: what was found stands
	}
	return at, found, err
}

// compareWithSource checks one destination batch against the source, at
// the source offset the batch stands for (its offset less p.delta).
func (p *partition) compareWithSource(ctx context.Context, d batch.Batch) error {
	src := p.m.link.src
	at := d.BaseOffset() - p.delta
	unplanned := func() bool { return p.ownMarker(d, batch.ControlAbort) }
	f, err := src.fetchOnce(ctx, p.m.sourceTopic, p.id, at, 1, 0)
	if errors.Is(err, kerr.OffsetOutOfRange) {
		end, lerr := src.listOffset(ctx, p.m.sourceTopic, p.id, offsetLatest)
		if lerr != nil {
			return lerr
		}
		if at >= end && unplanned() {
			return errUnplannedAbort
		}
		if at >= end {
			return fatalf("destination %s[%d] holds offsets %d..%d but source %s[%d] ends at %d: the source partition was truncated or recreated, or something else writes into the mirror topic", p.m.name, p.id, d.BaseOffset(), d.LastOffset(), p.m.sourceTopic, p.id, end)
		}
		p.log.Info("cannot verify destination batch: the source no longer has its offsets (retention)", zap.Int64("offset", d.BaseOffset()))
		return nil
	}
	if err != nil {
		return err
	}
	var s batch.Batch
	for _, b := range f.batches {
		if b.NextOffset() > at {
			s = b
			break
		}
	}
	if unplanned() {
		// One of klink's abort markers: planned (a filler transaction's
		// end, a source abort reproduced) or the destination's own;
		// absorbAbort tells which from the transaction it ended.
		return errUnplannedAbort
	}
	if s != nil && s.HasHoles() && !d.IsControl() {
		// klink rebuilt the runs of this batch: compare with the run.
		runs, err := s.SplitRuns()
		if err != nil {
			return fatalf("source %s[%d] batch at offset %d is unreadable: %v", p.m.sourceTopic, p.id, s.BaseOffset(), err)
		}
		for _, r := range runs {
			if r.BaseOffset() == at && sameBatch(r, d, p.delta) {
				return nil
			}
		}
	} else if s != nil && (sameBatch(s, d, p.delta) || d.IsLogAppendTime() && sameBatch(d, s, -p.delta)) {
		// (The second: an adopted topic's original LogAppendTime batch,
		// whose source is klink's rebuilt copy of it; see adopt.go.)
		return nil
	}
	if d.IsControl() {
		typ, err := d.ControlType()
		if err != nil {
			return fatalf("destination %s[%d] marker at offset %d is unreadable: %v", p.m.name, p.id, d.BaseOffset(), err)
		}
		if s != nil && s.IsControl() && s.BaseOffset() == at {
			if st, err := s.ControlType(); err == nil && st == typ {
				return nil // the source's marker, reproduced
			}
		}
		if typ == batch.ControlAbort && !sourceHasData(s, at, at) {
			return nil // the end of a filler transaction (of an earlier producer id)
		}
		if dup, err := p.duplicateMarker(ctx, d); err != nil || dup {
			if err != nil {
				return err
			}
			return errDuplicateMarker
		}
		return fatalf("destination %s[%d] has a transaction marker at offset %d that the source does not have there: something else writes into the mirror topic", p.m.name, p.id, d.BaseOffset())
	}
	filler, err := d.IsFillerBatch()
	if err != nil {
		return fatalf("destination %s[%d] batch at offset %d is unreadable: %v", p.m.name, p.id, d.BaseOffset(), err)
	}
	if filler {
		// Fillers stand where the source has no data: nothing, an
		// empty batch, or records the cleaner removed.
		if !sourceHasData(s, at, d.LastOffset()-p.delta) {
			return nil
		}
		return fatalf("destination %s[%d] has filler records at offsets %d..%d but the source has data or a marker there (batch at offset %d)", p.m.name, p.id, d.BaseOffset(), d.LastOffset(), s.BaseOffset())
	}
	if s == nil {
		return fatalf("destination %s[%d] batch at offsets %d..%d has no counterpart in the source: something else writes into the mirror topic", p.m.name, p.id, d.BaseOffset(), d.LastOffset())
	}
	return fatalf("destination %s[%d] batch at offsets %d..%d (%d records, records CRC %08x) does not match the source batch at offsets %d..%d (%d records, records CRC %08x): something else wrote into the mirror topic", p.m.name, p.id, d.BaseOffset(), d.LastOffset(), d.NumRecords(), d.RecordsCRC(), s.BaseOffset(), s.LastOffset(), s.NumRecords(), s.RecordsCRC())
}

// sourceHasData reports whether source batch s (the first one ending after
// from) holds a record or a marker in [from, to].
func sourceHasData(s batch.Batch, from, to int64) bool {
	switch {
	case s == nil || s.BaseOffset() > to || s.NumRecords() == 0:
		return false
	case s.HasHoles():
		runs, err := s.SplitRuns()
		if err != nil {
			return true
		}
		for _, r := range runs {
			if r.BaseOffset() <= to && r.LastOffset() >= from {
				return true
			}
		}
		return false
	}
	return true
}

// sameBatch reports whether d is klink's copy of source batch s, delta
// offsets further on.
func sameBatch(s, d batch.Batch, delta int64) bool {
	if s.BaseOffset()+delta != d.BaseOffset() || s.LastOffsetDelta() != d.LastOffsetDelta() || s.NumRecords() != d.NumRecords() {
		return false
	}
	if s.IsLogAppendTime() {
		// Rebuilt with the append time in every record (see
		// ClearLogAppendTime); the records section differs by design.
		return d.MaxTimestamp() == s.MaxTimestamp() && d.BaseTimestamp() == s.MaxTimestamp()
	}
	return s.RecordsCRC() == d.RecordsCRC()
}
