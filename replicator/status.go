package replicator

import (
	"sort"
	"time"
)

// LinkStatus is what GET /status shows for a link.
type LinkStatus struct {
	Name                 string         `json:"name"`
	LinkID               string         `json:"linkID,omitempty"`
	SourceClusterID      string         `json:"sourceClusterID,omitempty"`
	DestinationClusterID string         `json:"destinationClusterID,omitempty"`
	State                string         `json:"state"`
	Error                string         `json:"error,omitempty"`
	Mirrors              []MirrorStatus `json:"mirrors"`
}

// MirrorStatus is one mirror topic.
type MirrorStatus struct {
	Name        string            `json:"name"`
	SourceTopic string            `json:"sourceTopic"`
	State       string            `json:"state"`
	Reason      string            `json:"reason,omitempty"`
	StateSince  time.Time         `json:"stateSince"`
	Partitions  []PartitionStatus `json:"partitions"`
	// Lag sums the partitions' lag.
	Lag int64 `json:"lag"`
}

// PartitionStatus is one mirrored partition.
type PartitionStatus struct {
	Partition         int32 `json:"partition"`
	SourceStartOffset int64 `json:"sourceStartOffset"`
	SourceEndOffset   int64 `json:"sourceEndOffset"`
	DestStartOffset   int64 `json:"destinationStartOffset"`
	DestEndOffset     int64 `json:"destinationEndOffset"`
	Lag               int64 `json:"lag"`
	// Counters since klink started.
	RecordsMirrored int64  `json:"recordsMirrored"`
	BytesMirrored   int64  `json:"bytesMirrored"`
	FilledRanges    int64  `json:"filledRanges"`
	FilledOffsets   int64  `json:"filledOffsets"`
	Error           string `json:"error,omitempty"`
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
	}
	mirrors := l.mirrors
	l.mu.Unlock()
	for _, m := range mirrors {
		s.Mirrors = append(s.Mirrors, m.status())
	}
	return s
}

func (m *mirror) status() MirrorStatus {
	m.mu.Lock()
	ms := MirrorStatus{Name: m.name, SourceTopic: m.sourceTopic, State: string(m.state), Reason: m.reason, StateSince: m.since}
	parts := append([]*partition(nil), m.parts...)
	m.mu.Unlock()
	for _, p := range parts {
		ps := p.status()
		ms.Lag += ps.Lag
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
		Error:             p.lastError(),
	}
	if lag := ps.SourceEndOffset - ps.DestEndOffset; lag > 0 {
		ps.Lag = lag
	}
	return ps
}
