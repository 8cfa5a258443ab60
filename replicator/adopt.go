package replicator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/klink-io/klink/replicator/batch"
)

// Adoption (mirrorTopics[].adopt): klink mirrors into a destination topic it
// did not create only if that topic is provably a prefix of the source
// topic. That is what the old primary's topic is after a clean promote of
// its mirror (klink keeps offsets equal), so the way back copies only what
// was written since.
//
// The proof, per partition, with the destination holding [dStart, dEnd):
// the destination does not end beyond the source; its first batch (when the
// source still holds that offset) and its last batches are the source's at
// the same offsets (records-section CRC, record count and offset span, as
// the restart tail check compares: klink rewrites only headers); markers
// are markers of the same kind. Anything else is refused before a single
// append, and where the two logs part is found by bisection, so that the
// refusal says which offsets the destination holds that were never mirrored.

// adoptTailOffsets is how far back from its end the destination is compared
// batch by batch (at least its last batch is).
const adoptTailOffsets = 1000

// adoptedPartition is where an adopted partition stands.
type adoptedPartition struct {
	logStart, end int64 // the destination's; mirroring goes on from end
}

// adoptedEnds names each adopted partition's end offset, "partition:end",
// in partition order: where mirroring goes on.
func adoptedEnds(adopted map[int32]adoptedPartition) []string {
	ends := make([]string, 0, len(adopted))
	for p := range len(adopted) {
		ends = append(ends, fmt.Sprintf("%d:%d", p, adopted[int32(p)].end))
	}
	return ends
}

// adoptCheck proves that destination topic dstTopic is a prefix of source
// topic srcTopic and returns each partition's place, or an error naming the
// partition and the first offset that differs.
func adoptCheck(ctx context.Context, src, dst *cluster, srcTopic, dstTopic string) (map[int32]adoptedPartition, error) {
	sm, err := src.topic(ctx, srcTopic)
	if err != nil {
		return nil, fmt.Errorf("source topic %s: %w", srcTopic, err)
	}
	dm, err := dst.topic(ctx, dstTopic)
	if err != nil {
		return nil, fmt.Errorf("destination topic %s: %w", dstTopic, err)
	}
	if len(dm.partitions) != len(sm.partitions) {
		return nil, fatalf("cannot adopt destination topic %s: it has %d partitions, source topic %s has %d", dstTopic, len(dm.partitions), srcTopic, len(sm.partitions))
	}
	compacted := false
	for _, side := range []struct {
		c     *cluster
		topic string
	}{{src, srcTopic}, {dst, dstTopic}} {
		policy, err := topicConfig(ctx, side.c, side.topic, "cleanup.policy")
		if err != nil {
			return nil, err
		}
		compacted = compacted || strings.Contains(policy, "compact")
	}
	out := map[int32]adoptedPartition{}
	var refusals []string
	for id := range dm.partitions {
		p := int32(id)
		a, refusal, err := adoptPartition(ctx, src, dst, srcTopic, dstTopic, p, compacted)
		if err != nil {
			return nil, err
		}
		if refusal != "" {
			refusals = append(refusals, refusal)
			continue
		}
		out[p] = a
	}
	if len(refusals) > 0 {
		return nil, fatalf("cannot adopt destination topic %s: it is not a prefix of source topic %s: %s", dstTopic, srcTopic, strings.Join(refusals, "; "))
	}
	return out, nil
}

// adoptPartition checks one partition: a refusal (why it is not a prefix)
// or an error (a cluster could not be asked).
func adoptPartition(ctx context.Context, src, dst *cluster, srcTopic, dstTopic string, p int32, compacted bool) (adoptedPartition, string, error) {
	var a adoptedPartition
	var sStart, sEnd int64
	var err error
	for _, q := range []struct {
		c     *cluster
		topic string
		which int64
		into  *int64
	}{
		{dst, dstTopic, offsetEarliest, &a.logStart}, {dst, dstTopic, offsetLatest, &a.end},
		{src, srcTopic, offsetEarliest, &sStart}, {src, srcTopic, offsetLatest, &sEnd},
	} {
		if *q.into, err = q.c.listOffset(ctx, q.topic, p, q.which); err != nil {
			return a, "", fmt.Errorf("%s[%d]: %w", q.topic, p, err)
		}
	}
	c := adoptComparer{ctx: ctx, src: src, dst: dst, srcTopic: srcTopic, dstTopic: dstTopic, p: p}
	if a.end > a.logStart {
		// What the destination holds must overlap what the source still
		// holds, or nothing proves it a prefix (the source's retention
		// may have removed both the copy and what was never mirrored).
		// Not so on a compacted topic: there the source's cleaner may
		// rightly have removed all of it (every key written again since),
		// and the proof is what compaction keeps.
		if !compacted && max(a.logStart, sStart) >= min(a.end, sEnd) && a.end <= sEnd {
			return a, fmt.Sprintf("partition %d: cannot be proven a prefix: the destination holds offsets %s..%s and the source no longer holds any of them (its log starts at %s)", p, thousands(a.logStart), thousands(a.end-1), thousands(sStart)), nil
		}
		// A transaction open on the destination (a producer of the old
		// primary that never ended it) would be found by klink's own
		// transaction recovery and fail the mirror: wait for it to end.
		f, err := dst.fetchOnce(ctx, dstTopic, p, a.end-1, 1, 1)
		if err != nil && !errors.Is(err, kerr.OffsetOutOfRange) {
			return a, "", fmt.Errorf("%s[%d]: %w", dstTopic, p, err)
		}
		if err == nil && f.lastStable >= 0 && f.lastStable < f.highWatermark {
			return a, fmt.Sprintf("partition %d: a transaction is open on the destination at offset %s (its producer must commit or abort it, or its timeout end it)", p, thousands(f.lastStable)), nil
		}
	}
	if compacted {
		diverge, err := c.compactedDivergence(a, sStart, sEnd)
		if err != nil || diverge < 0 {
			return a, "", err
		}
		return a, neverMirrored(p, a, diverge, sEnd), nil
	}
	common := min(a.end, sEnd) // offsets both may hold
	// bad: the lowest offset found where the two differ (or where the
	// destination runs past the source); -1 while none.
	bad := int64(-1)
	if a.end > sEnd {
		bad = sEnd
	}
	// The destination's first batch, where the source still has it.
	if a.logStart < common && a.logStart >= sStart {
		ok, err := c.matchAt(a.logStart)
		if err != nil {
			return a, "", err
		}
		if !ok {
			return a, fmt.Sprintf("partition %d: not a copy of the source: the destination's first batch, at offset %s, differs from the source's there", p, thousands(a.logStart)), nil
		}
	}
	// The last batches before the destination's end (or the source's).
	if bad < 0 || bad > a.logStart {
		from := max(a.logStart, sStart, common-adoptTailOffsets)
		at, err := c.firstMismatch(from, common)
		if err != nil {
			return a, "", err
		}
		if at >= 0 {
			bad = at
		}
	}
	if bad < 0 {
		return a, "", nil
	}
	// Where the logs part: the first differing batch at or above the
	// highest offset known to agree, found by bisection between the
	// destination's (checked) first offset and bad.
	lo, hi := max(a.logStart, sStart), bad
	for lo < hi {
		mid := lo + (hi-lo)/2
		ok, next, err := c.matchBatchAt(mid)
		if err != nil {
			return a, "", err
		}
		if ok {
			lo = max(next, mid+1)
		} else {
			hi = mid
		}
	}
	// hi is an offset inside the first differing batch; the destination
	// differs from that batch's base on.
	diverge := hi
	if hi < bad {
		if base, err := c.dstBatchBase(hi); err != nil {
			return a, "", err
		} else if base >= 0 {
			diverge = max(base, a.logStart)
		}
	}
	return a, neverMirrored(p, a, diverge, sEnd), nil
}

// neverMirrored is the refusal for a destination that holds [diverge, end)
// beyond what the source holds at the same offsets.
func neverMirrored(p int32, a adoptedPartition, diverge, sEnd int64) string {
	if diverge < a.logStart || a.end == a.logStart {
		return fmt.Sprintf("partition %d: the destination's offsets run to %s, beyond the source's end %s", p, thousands(a.end), thousands(sEnd))
	}
	return fmt.Sprintf("partition %d: %s records at offsets %s..%s were never mirrored (the source holds other data there, or ends at %s); adopting would need them removed", p, thousands(a.end-diverge), thousands(diverge), thousands(a.end-1), thousands(sEnd))
}

// compactedDivergence is the proof for compacted topics, where each
// cluster's log cleaner runs on its own schedule and older batches of the
// two copies legitimately differ: what compaction keeps must agree. Records
// both sides hold at one offset are identical (key, value, headers,
// timestamp); and for every key whose latest source record lies below the
// destination's end, the destination's latest record of it is that record,
// at that offset (or one side no longer holds the key and the other's
// latest is a tombstone: the cleaner removes tombstones on its own
// schedule too). It returns the lowest destination offset where this
// fails (-1: none). Both partitions are read whole: it costs a key hash and
// an offset per distinct key, and a digest per destination record.
func (c adoptComparer) compactedDivergence(a adoptedPartition, sStart, sEnd int64) (int64, error) {
	seed := maphash.MakeSeed()
	dstAt := map[int64]uint64{} // offset -> record digest
	dstLatest := map[uint64]keyLatest{}
	err := c.records(c.dst, c.dstTopic, a.logStart, a.end, seed, func(off int64, key uint64, digest uint64, tombstone bool) {
		dstAt[off] = digest
		dstLatest[key] = keyLatest{off, tombstone}
	})
	if err != nil {
		return 0, err
	}
	diverge := int64(-1)
	differs := func(off int64) {
		if diverge < 0 || off < diverge {
			diverge = off
		}
	}
	if a.end > sEnd {
		differs(sEnd)
	}
	srcLatest := map[uint64]keyLatest{}
	err = c.records(c.src, c.srcTopic, max(sStart, a.logStart), sEnd, seed, func(off int64, key uint64, digest uint64, tombstone bool) {
		if d, ok := dstAt[off]; ok && d != digest {
			differs(off)
		}
		srcLatest[key] = keyLatest{off, tombstone}
	})
	if err != nil {
		return 0, err
	}
	for key, s := range srcLatest {
		if s.offset >= a.end {
			continue // superseded on the destination once mirrored
		}
		d, ok := dstLatest[key]
		switch {
		case ok && d.offset == s.offset:
		case !ok && s.tombstone:
		case ok && s.offset < d.offset:
			differs(d.offset) // a later record the source does not have
		case ok:
			differs(s.offset) // the destination's own latest is older: the source's never arrived
		default:
			differs(s.offset)
		}
	}
	for key, d := range dstLatest {
		if _, ok := srcLatest[key]; !ok && !d.tombstone && d.offset >= max(sStart, a.logStart) {
			differs(d.offset) // a key the source never had
		}
	}
	if diverge >= 0 {
		diverge = max(min(diverge, a.end), a.logStart)
	}
	return diverge, nil
}

// keyLatest is where a key's latest record is, and whether it deletes it.
type keyLatest struct {
	offset    int64
	tombstone bool
}

// records calls fn for each record (not markers, not klink's fillers) of
// topic's partition in [from, to), with hashes of its key and of the whole
// record (key, value, headers, timestamp; null and empty told apart).
func (c adoptComparer) records(cl *cluster, topic string, from, to int64, seed maphash.Seed, fn func(off int64, key, digest uint64, tombstone bool)) error {
	if from >= to {
		return nil
	}
	var h maphash.Hash
	h.SetSeed(seed)
	field := func(b []byte) {
		if b == nil {
			h.WriteByte(0)
			return
		}
		h.WriteByte(1)
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	err := cl.scan(c.ctx, topic, c.p, from, to, func(b batch.Batch) (bool, error) {
		if b.IsControl() {
			return false, nil
		}
		if filler, err := b.IsFillerBatch(); err == nil && filler {
			return false, nil
		}
		recs, err := b.Decode()
		if err != nil {
			return false, fatalf("%s[%d] batch at offset %d is unreadable: %v", topic, c.p, b.BaseOffset(), err)
		}
		for _, r := range recs {
			off := b.BaseOffset() + int64(r.OffsetDelta)
			if off < from || off >= to {
				continue
			}
			ts := b.BaseTimestamp() + r.TimestampDelta
			if b.IsLogAppendTime() {
				ts = b.MaxTimestamp()
			}
			h.Reset()
			field(r.Key)
			key := h.Sum64()
			field(r.Value)
			for _, hd := range r.Headers {
				field([]byte(hd.Key))
				field(hd.Value)
			}
			var t [8]byte
			binary.BigEndian.PutUint64(t[:], uint64(ts))
			h.Write(t[:])
			fn(off, key, h.Sum64(), r.Value == nil)
		}
		return false, nil
	})
	if errors.Is(err, errScanEnd) {
		err = nil // the range ends in offsets the log no longer holds
	}
	return err
}

// adoptComparer compares the destination and source batches of one
// partition at the same offsets.
type adoptComparer struct {
	ctx                context.Context
	src, dst           *cluster
	srcTopic, dstTopic string
	p                  int32
}

// batchAt is the first batch of topic's partition ending above offset
// (nil: none, or the offset is gone).
func (c adoptComparer) batchAt(cl *cluster, topic string, offset int64) (batch.Batch, error) {
	f, err := cl.fetchOnce(c.ctx, topic, c.p, offset, 1, 0)
	if errors.Is(err, kerr.OffsetOutOfRange) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s[%d] at offset %d: %w", topic, c.p, offset, err)
	}
	for _, b := range f.batches {
		if b.NextOffset() > offset {
			return b, nil
		}
	}
	return nil, nil
}

// matchBatchAt compares the batches holding offset on both sides; next is
// where the destination's batch ends (to skip it when it matches).
func (c adoptComparer) matchBatchAt(offset int64) (ok bool, next int64, err error) {
	d, err := c.batchAt(c.dst, c.dstTopic, offset)
	if err != nil || d == nil {
		return false, offset, err
	}
	s, err := c.batchAt(c.src, c.srcTopic, offset)
	if err != nil {
		return false, offset, err
	}
	return adoptMatch(s, d), d.NextOffset(), nil
}

func (c adoptComparer) matchAt(offset int64) (bool, error) {
	ok, _, err := c.matchBatchAt(offset)
	return ok, err
}

// firstMismatch walks the destination's batches in [from, to) and returns
// the base of the first that differs from the source (-1: none).
func (c adoptComparer) firstMismatch(from, to int64) (int64, error) {
	for off := from; off < to; {
		ok, next, err := c.matchBatchAt(off)
		if err != nil {
			return 0, err
		}
		if !ok {
			return off, nil
		}
		off = next
	}
	return -1, nil
}

// dstBatchBase is the base offset of the destination batch holding offset.
func (c adoptComparer) dstBatchBase(offset int64) (int64, error) {
	d, err := c.batchAt(c.dst, c.dstTopic, offset)
	if err != nil || d == nil {
		return -1, err
	}
	return d.BaseOffset(), nil
}

// adoptMatch reports whether destination batch d stands where source batch
// s does for the same data: klink's copy of it either way round (the
// destination is the old primary, holding the originals, and the source
// the klink mirror of them, or the other way), the same marker, or neither
// holding a record there (klink's fillers stand where the other side had
// none). A batch the log cleaner emptied of some records compares by its
// runs, as klink rebuilds them.
func adoptMatch(s, d batch.Batch) bool {
	if s == nil || d == nil {
		return false
	}
	if sameBatch(s, d, 0) || sameBatch(d, s, 0) {
		return true
	}
	if s.IsControl() || d.IsControl() {
		if !s.IsControl() || !d.IsControl() || s.BaseOffset() != d.BaseOffset() {
			return false
		}
		st, serr := s.ControlType()
		dt, derr := d.ControlType()
		return serr == nil && derr == nil && st == dt
	}
	if !holdsRecords(s, d.BaseOffset(), d.LastOffset()) && !holdsRecords(d, d.BaseOffset(), d.LastOffset()) {
		return true
	}
	for _, pair := range [][2]batch.Batch{{s, d}, {d, s}} {
		holey, copy := pair[0], pair[1]
		if !holey.HasHoles() {
			continue
		}
		runs, err := holey.SplitRuns()
		if err != nil {
			return false
		}
		for _, r := range runs {
			if r.BaseOffset() == copy.BaseOffset() && sameBatch(r, copy, 0) {
				return true
			}
		}
	}
	return false
}

// holdsRecords reports whether b holds a record in [from, to] that is not
// one of klink's fillers.
func holdsRecords(b batch.Batch, from, to int64) bool {
	if filler, err := b.IsFillerBatch(); err == nil && filler {
		return false
	}
	return sourceHasData(b, from, to)
}

// thousands writes n with comma separators, as the refusal quotes offsets.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
