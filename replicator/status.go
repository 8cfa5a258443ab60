package replicator

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/klink-io/klink/linkstate"
)

// LinkStatus is what GET /status shows for a link.
type LinkStatus struct {
	Name                 string `json:"name"`
	LinkID               string `json:"linkID,omitempty"`
	SourceClusterID      string `json:"sourceClusterID,omitempty"`
	DestinationClusterID string `json:"destinationClusterID,omitempty"`
	State                string `json:"state"`
	Error                string `json:"error,omitempty"`
	// The last round of consumer-offset and topic-config sync.
	OffsetSync *SyncStatus    `json:"offsetSync,omitempty"`
	ConfigSync *SyncStatus    `json:"configSync,omitempty"`
	ACLSync    *SyncStatus    `json:"aclSync,omitempty"`
	Mirrors    []MirrorStatus `json:"mirrors"`
	// PartitionsStarting are partitions in their start (destination tail
	// check, transactions, producer id, fillers) or waiting for one of the
	// link's start slots; PartitionsRunning are past it, mirroring. After
	// a restart the first falls to 0 and the second rises to the number of
	// partitions.
	PartitionsStarting int64 `json:"partitionsStarting"`
	PartitionsRunning  int64 `json:"partitionsRunning"`
}

// MirrorStatus is one mirror topic.
type MirrorStatus struct {
	Name        string    `json:"name"`
	SourceTopic string    `json:"sourceTopic"`
	State       string    `json:"state"`
	Reason      string    `json:"reason,omitempty"`
	StateSince  time.Time `json:"stateSince"`
	// Desired is what the config asks (mirrorTopics[].state), or REMOVED.
	Desired string `json:"desired"`
	// Refused says why the desired state cannot be reached, if it cannot.
	Refused string `json:"refused,omitempty"`
	// Stop records when and where a STOPPED mirror stopped (kept forever).
	Stop *linkstate.StopRecord `json:"stop,omitempty"`
	// Owner is the klink cluster member that runs the mirror (in a
	// cluster; its partitions show only in that member's status).
	Owner      string            `json:"owner,omitempty"`
	Partitions []PartitionStatus `json:"partitions"`
	// Lag sums the partitions' lag; LagMillis is the largest.
	Lag       int64 `json:"lag"`
	LagMillis int64 `json:"lagMillis"`
}

// PartitionStatus is one mirrored partition.
type PartitionStatus struct {
	Partition         int32 `json:"partition"`
	SourceStartOffset int64 `json:"sourceStartOffset"`
	SourceEndOffset   int64 `json:"sourceEndOffset"`
	DestStartOffset   int64 `json:"destinationStartOffset"`
	DestEndOffset     int64 `json:"destinationEndOffset"`
	Lag               int64 `json:"lag"`
	// LastSourceOffset is the source offset mirrored up to: the
	// destination holds every source offset below it.
	LastSourceOffset int64 `json:"lastSourceOffset"`
	// LagMillis is, while behind, how long ago the last record mirrored
	// was written (the records still to mirror are younger); 0 when
	// caught up.
	LagMillis int64 `json:"lagMillis"`
	// Counters since klink started.
	RecordsMirrored int64 `json:"recordsMirrored"`
	BytesMirrored   int64 `json:"bytesMirrored"`
	FilledRanges    int64 `json:"filledRanges"`
	FilledOffsets   int64 `json:"filledOffsets"`
	// RebuiltBatches are source batches klink had to decompress and
	// rebuild (the log cleaner left holes in them, or LogAppendTime);
	// every other batch is copied as it is.
	RebuiltBatches int64 `json:"rebuiltBatches"`
	RebuiltBytes   int64 `json:"rebuiltBytes"`
	// OffsetShifts is the exact gap map: source ranges the destination
	// could not keep at their offsets. Empty on an exact partition.
	OffsetShifts []linkstate.OffsetShift `json:"offsetShifts,omitempty"`
	Error        string                  `json:"error,omitempty"`
}

// Status reports the link, its mirrors and their partitions.
func (l *Link) Status() LinkStatus {
	l.mu.Lock()
	s := LinkStatus{
		Name:                 l.cfg.Name,
		LinkID:               l.identity.ID,
		SourceClusterID:      l.identity.SourceClusterID,
		DestinationClusterID: l.identity.DestinationClusterID,
		State:                l.state,
		Error:                l.err,
		OffsetSync:           l.offsetSync,
		ConfigSync:           l.configSync,
		ACLSync:              l.aclSync,
		PartitionsStarting:   l.partsStarting.Load(),
		PartitionsRunning:    l.partsRunning.Load(),
	}
	mirrors := slices.Clone(l.mirrors)
	hosts := maps.Clone(l.hosts)
	l.mu.Unlock()
	s.Mirrors = []MirrorStatus{}
	for _, m := range mirrors {
		ms := m.status()
		if l.group != nil {
			// The partitions that run here.
			ms.Owner = l.group.Owner(mirrorUnit(l.cfg.Name, m.name))
			ms.Partitions, ms.Lag, ms.LagMillis = []PartitionStatus{}, 0, 0
			if h := hosts[m.name]; h != nil {
				hs := h.status()
				ms.Partitions, ms.Lag, ms.LagMillis = hs.Partitions, hs.Lag, hs.LagMillis
			}
		}
		s.Mirrors = append(s.Mirrors, ms)
	}
	return s
}

func (m *mirror) status() MirrorStatus {
	m.mu.Lock()
	ms := MirrorStatus{Name: m.name, SourceTopic: m.sourceTopic, State: string(m.state), Reason: m.reason, StateSince: m.since,
		Desired: string(m.desired), Refused: m.refusal, Stop: m.stop, Partitions: []PartitionStatus{}}
	parts := append([]*partition(nil), m.parts...)
	m.mu.Unlock()
	for _, p := range parts {
		ps := p.status()
		ms.Lag += ps.Lag
		ms.LagMillis = max(ms.LagMillis, ps.LagMillis)
		ms.Partitions = append(ms.Partitions, ps)
	}
	sort.Slice(ms.Partitions, func(i, j int) bool { return ms.Partitions[i].Partition < ms.Partitions[j].Partition })
	return ms
}

func (p *partition) status() PartitionStatus {
	ps := PartitionStatus{
		Partition:         p.id,
		SourceStartOffset: p.cur.logStart.Load(),
		SourceEndOffset:   p.cur.highWatermark.Load(),
		DestStartOffset:   p.destStart.Load(),
		DestEndOffset:     p.destEnd.Load(),
		RecordsMirrored:   p.records.Load(),
		BytesMirrored:     p.bytes.Load(),
		FilledRanges:      p.filledRanges.Load(),
		FilledOffsets:     p.filledOffsets.Load(),
		RebuiltBatches:    p.rebuilt.Load(),
		RebuiltBytes:      p.rebuiltBytes.Load(),
		Error:             p.lastError(),
	}
	var delta int64
	if sh := p.shiftsSeen.Load(); sh != nil {
		ps.OffsetShifts = *sh
		delta = (&linkstate.Partition{Shifts: *sh}).Delta()
	}
	ps.LastSourceOffset = ps.DestEndOffset - delta
	if lag := ps.SourceEndOffset - ps.LastSourceOffset; lag > 0 {
		ps.Lag = lag
		if ts := p.lastTs.Load(); ts > 0 {
			ps.LagMillis = max(time.Now().UnixMilli()-ts, 0)
		}
	}
	return ps
}

// TranslateOffset maps a source offset of a mirror topic's partition to the
// destination offset at the same place in the log, using the partition's
// exact gap map: the offset itself unless the destination had to shift the
// partition (see gapmap.go). It is what consumer-offset sync uses.
func (r *Replicator) TranslateOffset(link, mirror string, partition int32, sourceOffset int64) (int64, error) {
	m, err := r.store.GetMirror(link, mirror)
	if err != nil {
		return 0, fmt.Errorf("mirror %s of link %s: %w", mirror, link, err)
	}
	pr, ok := m.Partitions[partition]
	if !ok {
		return 0, fmt.Errorf("mirror %s of link %s has no partition %d", mirror, link, partition)
	}
	return pr.Translate(sourceOffset), nil
}
