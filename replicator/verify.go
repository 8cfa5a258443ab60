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
func (p *partition) verifyTail(ctx context.Context, from, end int64) error {
	dst := p.m.link.dst
	for off := from; off < end; {
		f, err := dst.fetchOnce(ctx, p.m.name, p.id, off, maxPartitionBuffered, 0)
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
			if err := p.compareWithSource(ctx, d); err != nil {
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

// compareWithSource checks one destination batch against the source.
func (p *partition) compareWithSource(ctx context.Context, d batch.Batch) error {
	src := p.m.link.src
	f, err := src.fetchOnce(ctx, p.m.sourceTopic, p.id, d.BaseOffset(), 1, 0)
	if errors.Is(err, kerr.OffsetOutOfRange) {
		end, lerr := src.listOffset(ctx, p.m.sourceTopic, p.id, offsetLatest)
		if lerr != nil {
			return lerr
		}
		if d.BaseOffset() >= end {
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
		if b.NextOffset() > d.BaseOffset() {
			s = b
			break
		}
	}
	if s != nil && s.HasHoles() && !d.IsControl() {
		// klink rebuilt the runs of this batch: compare with the run.
		runs, err := s.SplitRuns()
		if err != nil {
			return fatalf("source %s[%d] batch at offset %d is unreadable: %v", p.m.sourceTopic, p.id, s.BaseOffset(), err)
		}
		for _, r := range runs {
			if r.BaseOffset() == d.BaseOffset() && sameBatch(r, d) {
				return nil
			}
		}
	} else if s != nil && sameBatch(s, d) {
		return nil
	}
	if d.IsControl() {
		typ, err := d.ControlType()
		if err != nil {
			return fatalf("destination %s[%d] marker at offset %d is unreadable: %v", p.m.name, p.id, d.BaseOffset(), err)
		}
		if s != nil && s.IsControl() && s.BaseOffset() == d.BaseOffset() {
			if st, err := s.ControlType(); err == nil && st == typ {
				return nil // the source's marker, reproduced
			}
		}
		if typ == batch.ControlAbort && !sourceHasData(s, d.BaseOffset(), d.LastOffset()) {
			return nil // the end of a filler transaction
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
		if !sourceHasData(s, d.BaseOffset(), d.LastOffset()) {
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

// sameBatch reports whether d is klink's copy of source batch s.
func sameBatch(s, d batch.Batch) bool {
	if s.BaseOffset() != d.BaseOffset() || s.LastOffsetDelta() != d.LastOffsetDelta() || s.NumRecords() != d.NumRecords() {
		return false
	}
	if s.IsLogAppendTime() {
		// Rebuilt with the append time in every record (see
		// ClearLogAppendTime); the records section differs by design.
		return d.MaxTimestamp() == s.MaxTimestamp() && d.BaseTimestamp() == s.MaxTimestamp()
	}
	return s.RecordsCRC() == d.RecordsCRC()
}
