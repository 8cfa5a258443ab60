// Package mirrorcheck compares a mirror topic with its source record by
// record, the way an ordinary consumer sees them: offset, key, value,
// headers and timestamp. Destination records at offsets the source does not
// hold must be klink filler records. Tests, the demo and the benchmark all
// use it, so that "mirrored correctly" means one thing.
package mirrorcheck

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/replicator/batch"
)

// Records are a topic's records by partition, in offset order.
type Records map[int32][]*kgo.Record

// Count is the number of records across partitions.
func (rs Records) Count() int {
	n := 0
	for _, r := range rs {
		n += len(r)
	}
	return n
}

// Isolation is the consumer isolation level a topic is read with.
type Isolation int8

const (
	ReadUncommitted Isolation = 0
	ReadCommitted   Isolation = 1
)

var clientOpts = struct {
	sync.Mutex
	bySeed map[string][]kgo.Opt
}{bySeed: map[string][]kgo.Opt{}}

// ClientOpts registers extra client options (TLS, SASL) for the clients
// mirrorcheck opens to the cluster with these seed addresses.
func ClientOpts(seeds []string, opts ...kgo.Opt) {
	clientOpts.Lock()
	defer clientOpts.Unlock()
	for _, s := range seeds {
		clientOpts.bySeed[s] = opts
	}
}

// NewClient opens a client to seeds with their registered options.
func NewClient(seeds []string, opts ...kgo.Opt) (*kgo.Client, error) {
	clientOpts.Lock()
	var extra []kgo.Opt
	if len(seeds) > 0 {
		extra = clientOpts.bySeed[seeds[0]]
	}
	clientOpts.Unlock()
	all := append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, extra...)
	return kgo.NewClient(append(all, opts...)...)
}

// ReadAll consumes every partition of a topic, from its log start to its
// end (the high watermark, or the last stable offset for ReadCommitted), as
// an ordinary kgo consumer with that isolation level sees it.
func ReadAll(ctx context.Context, seeds []string, topic string, iso Isolation) (Records, error) {
	cl, err := NewClient(seeds)
	if err != nil {
		return nil, err
	}
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	cl.Close()
	if err != nil {
		return nil, err
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return nil, fmt.Errorf("topic %s: %v", topic, td.Err)
	}
	out := Records{}
	for p := range td.Partitions {
		rs, err := ReadPartition(ctx, seeds, topic, p, iso)
		if err != nil {
			return nil, err
		}
		if len(rs) > 0 {
			out[p] = rs
		}
	}
	return out, nil
}

// ReadPartition consumes one partition (see ReadAll). The read ends at the
// partition's last record visible to the reader, found beforehand from the
// raw log, so that a tail of transaction markers or aborted data neither
// stops it early nor keeps it waiting.
func ReadPartition(ctx context.Context, seeds []string, topic string, p int32, iso Isolation) ([]*kgo.Record, error) {
	start, end, err := bounds(ctx, seeds, topic, p, iso)
	if err != nil {
		return nil, err
	}
	bs, err := readBatches(ctx, seeds, topic, p, start, end)
	if err != nil {
		return nil, err
	}
	last, err := lastVisible(bs, iso)
	if err != nil || last < 0 {
		return nil, err
	}
	level := kgo.ReadUncommitted()
	if iso == ReadCommitted {
		level = kgo.ReadCommitted()
	}
	cl, err := NewClient(seeds,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().At(start)}}),
		kgo.FetchIsolationLevel(level),
		kgo.FetchMaxBytes(64<<20),
		kgo.FetchMaxPartitionBytes(32<<20),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []*kgo.Record
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading %s[%d]: stopped at %d records before reaching offset %d: %w", topic, p, len(out), last, err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			ferr = errors.Join(ferr, fmt.Errorf("reading %s[%d]: %w", t, p, err))
		})
		if ferr != nil {
			return nil, ferr
		}
		reached := false
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < end {
				out = append(out, r)
			}
			if r.Offset >= last {
				reached = true
			}
		})
		if reached {
			return out, nil
		}
	}
}

// bounds returns a partition's log start and its end for the reader.
func bounds(ctx context.Context, seeds []string, topic string, p int32, iso Isolation) (start, end int64, err error) {
	cl, err := NewClient(seeds)
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, 0, err
	}
	var ends kadm.ListedOffsets
	if iso == ReadCommitted {
		ends, err = adm.ListCommittedOffsets(ctx, topic)
	} else {
		ends, err = adm.ListEndOffsets(ctx, topic)
	}
	if err != nil {
		return 0, 0, err
	}
	s, ok1 := starts.Lookup(topic, p)
	e, ok2 := ends.Lookup(topic, p)
	if !ok1 || !ok2 || s.Err != nil || e.Err != nil {
		return 0, 0, fmt.Errorf("listing offsets of %s[%d]: %v %v", topic, p, s.Err, e.Err)
	}
	return s.Offset, e.Offset, nil
}

// lastVisible is the offset of the last record a reader with the given
// isolation sees in the batches (-1 if none): the last record of the last
// data batch, skipping aborted transactional batches for ReadCommitted.
func lastVisible(bs []batch.Batch, iso Isolation) (int64, error) {
	aborted := map[int]bool{}
	if iso == ReadCommitted {
		var err error
		if aborted, err = abortedBatches(bs); err != nil {
			return 0, err
		}
	}
	for i := len(bs) - 1; i >= 0; i-- {
		b := bs[i]
		if b.IsControl() || b.NumRecords() == 0 || aborted[i] {
			continue
		}
		// Compaction can remove a batch's last record and keep its
		// lastOffsetDelta: read the records.
		rs, err := b.Decode()
		if err != nil {
			return 0, err
		}
		return b.BaseOffset() + int64(rs[len(rs)-1].OffsetDelta), nil
	}
	return -1, nil
}

// abortedBatches finds the transactional batches whose transaction ended
// with an abort marker, by index.
func abortedBatches(bs []batch.Batch) (map[int]bool, error) {
	aborted := map[int]bool{}
	open := map[int64][]int{} // producer id -> its undecided batches
	for i, b := range bs {
		switch {
		case b.IsControl():
			rs, err := b.Decode()
			if err != nil || len(rs) == 0 || len(rs[0].Key) < 4 {
				return nil, fmt.Errorf("control batch at %d is unreadable: %v", b.BaseOffset(), err)
			}
			if binary.BigEndian.Uint16(rs[0].Key[2:]) == 0 { // type 0: abort
				for _, j := range open[b.ProducerID()] {
					aborted[j] = true
				}
			}
			delete(open, b.ProducerID())
		case b.IsTransactional():
			open[b.ProducerID()] = append(open[b.ProducerID()], i)
		}
	}
	return aborted, nil
}

// Translate maps a source offset of partition p to the destination offset
// that holds it: the identity, except after the shifts klink's gap map
// records (see replicator's gapmap.go). Nil is the identity.
type Translate func(p int32, sourceOffset int64) int64

func (tr Translate) at(p int32, off int64) int64 {
	if tr == nil {
		return off
	}
	return tr(p, off)
}

// Compare checks dst against src record by record. It returns the number
// of source records matched and the number of filler records seen.
func Compare(src, dst Records) (matched, fillers int, err error) {
	return CompareTranslated(src, dst, nil)
}

// CompareTranslated is Compare with every source record expected at its
// translated destination offset.
func CompareTranslated(src, dst Records, tr Translate) (matched, fillers int, err error) {
	for _, p := range partitions(src, dst) {
		srs, drs := src[p], dst[p]
		i := 0
		for _, d := range drs {
			if i < len(srs) && tr.at(p, srs[i].Offset) == d.Offset {
				if err := SameRecord(srs[i], d); err != nil {
					return matched, fillers, fmt.Errorf("partition %d offset %d (source offset %d): %w", p, d.Offset, srs[i].Offset, err)
				}
				matched++
				i++
				continue
			}
			if i < len(srs) && tr.at(p, srs[i].Offset) < d.Offset {
				return matched, fillers, fmt.Errorf("partition %d: source offset %d (key %q) is missing on the destination", p, srs[i].Offset, srs[i].Key)
			}
			if !IsFiller(d) {
				return matched, fillers, fmt.Errorf("partition %d: destination offset %d holds a record the source does not have (key %q)", p, d.Offset, d.Key)
			}
			fillers++
		}
		if i < len(srs) {
			return matched, fillers, fmt.Errorf("partition %d: source offset %d (key %q) is missing on the destination", p, srs[i].Offset, srs[i].Key)
		}
	}
	return matched, fillers, nil
}

// IsFiller reports a klink filler record.
func IsFiller(r *kgo.Record) bool {
	return batch.IsFiller(r.Key) && r.Value == nil && len(r.Headers) == 1 && r.Headers[0].Key == batch.FillerHeader
}

// Same compares two records as consumers see them.
func Same(s, d *kgo.Record) error {
	if s.Offset != d.Offset {
		return fmt.Errorf("offset %d vs %d", s.Offset, d.Offset)
	}
	return SameRecord(s, d)
}

// SameRecord is Same but for the offsets.
func SameRecord(s, d *kgo.Record) error {
	switch {
	case !bytes.Equal(s.Key, d.Key) || (s.Key == nil) != (d.Key == nil):
		return fmt.Errorf("key %q vs %q", s.Key, d.Key)
	case !bytes.Equal(s.Value, d.Value) || (s.Value == nil) != (d.Value == nil):
		return fmt.Errorf("value %q vs %q", s.Value, d.Value)
	case !s.Timestamp.Equal(d.Timestamp):
		return fmt.Errorf("timestamp %v vs %v", s.Timestamp, d.Timestamp)
	case len(s.Headers) != len(d.Headers):
		return fmt.Errorf("%d headers vs %d", len(s.Headers), len(d.Headers))
	}
	for i := range s.Headers {
		sh, dh := s.Headers[i], d.Headers[i]
		if sh.Key != dh.Key || !bytes.Equal(sh.Value, dh.Value) || (sh.Value == nil) != (dh.Value == nil) {
			return fmt.Errorf("header %d: %q=%q vs %q=%q", i, s.Headers[i].Key, s.Headers[i].Value, d.Headers[i].Key, d.Headers[i].Value)
		}
	}
	return nil
}

func partitions(a, b Records) []int32 {
	seen := map[int32]bool{}
	var ps []int32
	for _, m := range []Records{a, b} {
		for p := range m {
			if !seen[p] {
				seen[p] = true
				ps = append(ps, p)
			}
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

// ReadBatches fetches every batch of a partition, from its log start to its
// end offset, as raw bytes.
func ReadBatches(ctx context.Context, seeds []string, topic string, p int32) ([]batch.Batch, error) {
	start, end, err := bounds(ctx, seeds, topic, p, ReadUncommitted)
	if err != nil {
		return nil, err
	}
	return readBatches(ctx, seeds, topic, p, start, end)
}

// readBatches fetches the batches holding offsets start..end-1.
func readBatches(ctx context.Context, seeds []string, topic string, p int32, start, end int64) ([]batch.Batch, error) {
	cl, err := NewClient(seeds)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return nil, err
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return nil, fmt.Errorf("topic %s: %v", topic, td.Err)
	}
	pd, ok := td.Partitions[p]
	if !ok {
		return nil, fmt.Errorf("topic %s has no partition %d", topic, p)
	}
	var out []batch.Batch
	for off := start; off < end; {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxBytes = 8 << 20
		req.SessionEpoch = -1
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = topic
		ft.TopicID = td.ID
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.Partition = p
		fp.FetchOffset = off
		fp.PartitionMaxBytes = 8 << 20
		fp.CurrentLeaderEpoch = -1
		ft.Partitions = append(ft.Partitions, fp)
		req.Topics = append(req.Topics, ft)
		kresp, err := cl.Broker(int(pd.Leader)).Request(ctx, req)
		if err != nil {
			return nil, err
		}
		resp := kresp.(*kmsg.FetchResponse)
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return nil, fmt.Errorf("fetch %s[%d]@%d: unexpected response shape", topic, p, off)
		}
		rp := resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
			return nil, fmt.Errorf("fetch %s[%d]@%d: %w", topic, p, off, err)
		}
		bs, err := batch.Split(rp.RecordBatches)
		if err != nil {
			return nil, err
		}
		progressed := false
		for _, b := range bs {
			if b.NextOffset() > off && b.BaseOffset() < end {
				out = append(out, b)
				off = b.NextOffset()
				progressed = true
			}
		}
		if !progressed {
			return nil, fmt.Errorf("fetch %s[%d]@%d returned no batch before the end offset %d", topic, p, off, end)
		}
	}
	return out, nil
}

// CompareBatches checks, batch by batch, that the destination holds what
// the source holds at the same offsets:
//   - a data batch has a copy whose records section is byte-identical
//     (nothing was decompressed or recompressed), with the transactional
//     flag kept and klink's producer id instead of the source's (told
//     apart where ids are random: kfake's);
//   - a transaction marker has a marker with the same outcome;
//   - a batch with holes left by the log cleaner has, for each run of
//     consecutive records, a batch holding exactly those records.
//
// LogAppendTime batches and batches with holes are rebuilt by design; they
// are counted in rebuilt, the others in identical.
func CompareBatches(src, dst []batch.Batch) (identical, rebuilt int, err error) {
	return compareBatches(src, dst, func(off int64) int64 { return off })
}

// compareBatches is CompareBatches with source offsets translated by at.
func compareBatches(src, dst []batch.Batch, at func(int64) int64) (identical, rebuilt int, err error) {
	byBase := make(map[int64]batch.Batch, len(dst))
	for _, d := range dst {
		byBase[d.BaseOffset()] = d
	}
	for _, s := range src {
		if s.NumRecords() == 0 {
			continue
		}
		if s.HasHoles() {
			if err := compareRuns(s, byBase, at); err != nil {
				return identical, rebuilt, err
			}
			rebuilt++
			continue
		}
		d, ok := byBase[at(s.BaseOffset())]
		if !ok {
			return identical, rebuilt, fmt.Errorf("no destination batch at source batch offset %d (destination offset %d)", s.BaseOffset(), at(s.BaseOffset()))
		}
		if s.IsControl() {
			st, err1 := s.ControlType()
			dt, err2 := d.ControlType()
			if err := errors.Join(err1, err2); err != nil || st != dt {
				return identical, rebuilt, fmt.Errorf("marker at offset %d: source type %d, destination type %d (%v)", s.BaseOffset(), st, dt, err)
			}
			identical++
			continue
		}
		if s.IsTransactional() != d.IsTransactional() {
			return identical, rebuilt, fmt.Errorf("batch at offset %d: transactional %v on the source, %v on the destination", s.BaseOffset(), s.IsTransactional(), d.IsTransactional())
		}
		// kfake hands out random 63-bit producer ids, so a destination
		// batch with its source's id was forwarded, not rewritten. Kafka
		// numbers producers from 0 on every cluster: there equal small
		// ids are a coincidence, and the broker itself refuses batches
		// of producers it does not know at the wrong sequence.
		if s.ProducerID() > math.MaxInt32 && d.ProducerID() == s.ProducerID() {
			return identical, rebuilt, fmt.Errorf("batch at offset %d carries the source producer id %d", s.BaseOffset(), s.ProducerID())
		}
		if d.LastOffsetDelta() != s.LastOffsetDelta() || d.NumRecords() != s.NumRecords() || d.Codec() != s.Codec() {
			return identical, rebuilt, fmt.Errorf("batch at offset %d: shape differs (records %d/%d, span %d/%d, codec %d/%d)", s.BaseOffset(), s.NumRecords(), d.NumRecords(), s.OffsetSpan(), d.OffsetSpan(), s.Codec(), d.Codec())
		}
		if s.IsLogAppendTime() {
			rebuilt++
			continue
		}
		if !bytes.Equal(d.Records(), s.Records()) {
			return identical, rebuilt, fmt.Errorf("batch at offset %d: records section differs (recompressed?)", s.BaseOffset())
		}
		identical++
	}
	return identical, rebuilt, nil
}

// compareRuns checks the destination batches standing for a source batch
// with holes: one per run of consecutive records, holding the same records.
func compareRuns(s batch.Batch, byBase map[int64]batch.Batch, to func(int64) int64) error {
	srcRecs, err := s.Decode()
	if err != nil {
		return err
	}
	i := 0
	for i < len(srcRecs) {
		at := to(s.BaseOffset() + int64(srcRecs[i].OffsetDelta))
		d, ok := byBase[at]
		if !ok {
			return fmt.Errorf("batch at offset %d (with holes): no destination batch at its record offset %d", s.BaseOffset(), at)
		}
		if d.Codec() != s.Codec() || d.IsTransactional() != s.IsTransactional() {
			return fmt.Errorf("batch at offset %d: run at %d has codec %d and transactional %v, the source %d and %v", s.BaseOffset(), at, d.Codec(), d.IsTransactional(), s.Codec(), s.IsTransactional())
		}
		dstRecs, err := d.Decode()
		if err != nil {
			return err
		}
		for j, dr := range dstRecs {
			if i >= len(srcRecs) {
				return fmt.Errorf("batch at offset %d: the destination batch at %d holds more records than the source", s.BaseOffset(), at)
			}
			sr := srcRecs[i]
			off := to(s.BaseOffset() + int64(sr.OffsetDelta))
			ts := s.BaseTimestamp() + sr.TimestampDelta
			if s.IsLogAppendTime() {
				ts = s.MaxTimestamp() // what consumers see: the append time
			}
			if d.BaseOffset()+int64(dr.OffsetDelta) != off || d.BaseTimestamp()+dr.TimestampDelta != ts ||
				!bytes.Equal(dr.Key, sr.Key) || (dr.Key == nil) != (sr.Key == nil) || !bytes.Equal(dr.Value, sr.Value) || (dr.Value == nil) != (sr.Value == nil) || len(dr.Headers) != len(sr.Headers) {
				return fmt.Errorf("batch at offset %d: record at offset %d differs on the destination (run at %d, record %d)", s.BaseOffset(), off, at, j)
			}
			i++
		}
	}
	return nil
}

// ComparePartitionBatches reads one partition's batches on both sides and
// compares them (see CompareBatches).
func ComparePartitionBatches(ctx context.Context, srcSeeds, dstSeeds []string, srcTopic, dstTopic string, p int32) (identical, rebuilt int, err error) {
	return comparePartitionBatches(ctx, srcSeeds, dstSeeds, srcTopic, dstTopic, p, nil)
}

func comparePartitionBatches(ctx context.Context, srcSeeds, dstSeeds []string, srcTopic, dstTopic string, p int32, tr Translate) (identical, rebuilt int, err error) {
	sb, err := ReadBatches(ctx, srcSeeds, srcTopic, p)
	if err != nil {
		return 0, 0, err
	}
	db, err := ReadBatches(ctx, dstSeeds, dstTopic, p)
	if err != nil {
		return 0, 0, err
	}
	identical, rebuilt, err = compareBatches(sb, db, func(off int64) int64 { return tr.at(p, off) })
	if err != nil {
		return identical, rebuilt, fmt.Errorf("%s[%d]: %w", dstTopic, p, err)
	}
	return identical, rebuilt, nil
}

// Exactness is what CompareExact found.
type Exactness struct {
	Committed   int // records a read_committed reader sees, identical on both sides
	Uncommitted int // records a read_uncommitted reader sees on the source, identical on the destination
	Fillers     int // filler records a read_uncommitted reader sees on the destination
	Batches     int // source batches and markers found at their offsets on the destination
}

// CompareExact checks a mirror topic against its source the way klink
// promises it: a read_committed reader sees exactly the same records (no
// fillers), a read_uncommitted reader the same plus at most fillers, and
// every batch and marker is at its source offset (see CompareBatches).
func CompareExact(ctx context.Context, srcSeeds, dstSeeds []string, srcTopic, dstTopic string, partitions int32) (Exactness, error) {
	return CompareExactTranslated(ctx, srcSeeds, dstSeeds, srcTopic, dstTopic, partitions, nil)
}

// CompareExactTranslated is CompareExact with every source record, batch
// and marker expected at its translated destination offset.
func CompareExactTranslated(ctx context.Context, srcSeeds, dstSeeds []string, srcTopic, dstTopic string, partitions int32, tr Translate) (Exactness, error) {
	var e Exactness
	sc, err := ReadAll(ctx, srcSeeds, srcTopic, ReadCommitted)
	if err != nil {
		return e, err
	}
	dc, err := ReadAll(ctx, dstSeeds, dstTopic, ReadCommitted)
	if err != nil {
		return e, err
	}
	var f int
	if e.Committed, f, err = CompareTranslated(sc, dc, tr); err != nil {
		return e, fmt.Errorf("read_committed: %w", err)
	}
	if f != 0 {
		return e, fmt.Errorf("read_committed: a reader sees %d filler records", f)
	}
	su, err := ReadAll(ctx, srcSeeds, srcTopic, ReadUncommitted)
	if err != nil {
		return e, err
	}
	du, err := ReadAll(ctx, dstSeeds, dstTopic, ReadUncommitted)
	if err != nil {
		return e, err
	}
	if e.Uncommitted, e.Fillers, err = CompareTranslated(su, du, tr); err != nil {
		return e, fmt.Errorf("read_uncommitted: %w", err)
	}
	for p := int32(0); p < partitions; p++ {
		identical, rebuilt, err := comparePartitionBatches(ctx, srcSeeds, dstSeeds, srcTopic, dstTopic, p, tr)
		if err != nil {
			return e, err
		}
		e.Batches += identical + rebuilt
	}
	return e, nil
}
