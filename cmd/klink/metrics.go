package main

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/klink-io/klink/netlink"
	"github.com/klink-io/klink/replicator"
)

// maxPartitionSeries bounds the per-partition series: past it (or with
// admin.partitionMetrics off) only per-mirror series are exported.
const maxPartitionSeries = 10000

// statusCollector exports klink's status as Prometheus metrics, read at
// each scrape: nothing is counted twice, and a mirror that goes away takes
// its series with it.
type statusCollector struct {
	status     func() replicator.Status
	partitions bool
}

var (
	linkState = prometheus.NewDesc("klink_link_state", "1 for the link's current state.", []string{"link", "state"}, nil)
	mirState  = prometheus.NewDesc("klink_mirror_state", "1 for the mirror topic's current state.", []string{"link", "topic", "state"}, nil)
	mirLag    = prometheus.NewDesc("klink_mirror_lag_records", "Records the destination still lacks, summed over partitions.", []string{"link", "topic"}, nil)
	mirLagS   = prometheus.NewDesc("klink_mirror_lag_seconds", "While behind: how long ago the last mirrored record was written (largest over partitions).", []string{"link", "topic"}, nil)
	mirRecs   = prometheus.NewDesc("klink_mirror_records_total", "Records mirrored since klink started.", []string{"link", "topic"}, nil)
	mirBytes  = prometheus.NewDesc("klink_mirror_bytes_total", "Batch bytes mirrored since klink started.", []string{"link", "topic"}, nil)
	mirFill   = prometheus.NewDesc("klink_mirror_filler_offsets_total", "Offsets filled with filler records since klink started.", []string{"link", "topic"}, nil)
	partLag   = prometheus.NewDesc("klink_partition_lag_records", "Records the destination partition still lacks.", []string{"link", "topic", "partition"}, nil)
	partLagS  = prometheus.NewDesc("klink_partition_lag_seconds", "While behind: how long ago the partition's last mirrored record was written.", []string{"link", "topic", "partition"}, nil)
	partRecs  = prometheus.NewDesc("klink_partition_records_total", "Records mirrored since klink started.", []string{"link", "topic", "partition"}, nil)
	syncLast  = prometheus.NewDesc("klink_sync_last_timestamp_seconds", "When the sync's last round ran.", []string{"link", "kind"}, nil)
	syncErr   = prometheus.NewDesc("klink_sync_error", "1 when the sync's last round failed.", []string{"link", "kind"}, nil)
	syncSkip  = prometheus.NewDesc("klink_sync_groups_skipped_active", "Groups left alone because they have members on the destination.", []string{"link"}, nil)
	reloadOK  = prometheus.NewDesc("klink_reload_success", "1 when the last reload was applied, 0 when it was refused.", nil, nil)
	nlState   = prometheus.NewDesc("klink_network_link_state", "1 for a network link endpoint's (or source-initiated link's) current state.", []string{"name", "state"}, nil)
	nlAssoc   = prometheus.NewDesc("klink_network_link_associations", "Endpoints connected to a network link service now.", []string{"service"}, nil)
)

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{linkState, mirState, mirLag, mirLagS, mirRecs, mirBytes, mirFill, partLag, partLagS, partRecs, syncLast, syncErr, syncSkip, reloadOK, nlState, nlAssoc} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	parts := 0
	for _, l := range st.Links {
		for _, m := range l.Mirrors {
			parts += len(m.Partitions)
		}
	}
	perPartition := c.partitions && parts <= maxPartitionSeries
	for _, l := range st.Links {
		gauge(linkState, 1, l.Name, l.State)
		for kind, s := range map[string]*replicator.SyncStatus{"offsets": l.OffsetSync, "configs": l.ConfigSync, "acls": l.ACLSync} {
			if s == nil {
				continue
			}
			gauge(syncLast, float64(s.LastSync.UnixMilli())/1000, l.Name, kind)
			failed := 0.0
			if s.LastError != "" {
				failed = 1
			}
			gauge(syncErr, failed, l.Name, kind)
			if kind == "offsets" {
				gauge(syncSkip, float64(len(s.SkippedActive)), l.Name)
			}
		}
		for _, m := range l.Mirrors {
			gauge(mirState, 1, l.Name, m.Name, m.State)
			gauge(mirLag, float64(m.Lag), l.Name, m.Name)
			gauge(mirLagS, float64(m.LagMillis)/1000, l.Name, m.Name)
			var recs, bytes, fill int64
			for _, p := range m.Partitions {
				recs += p.RecordsMirrored
				bytes += p.BytesMirrored
				fill += p.FilledOffsets
				if perPartition {
					pl := fmt.Sprint(p.Partition)
					gauge(partLag, float64(p.Lag), l.Name, m.Name, pl)
					gauge(partLagS, float64(p.LagMillis)/1000, l.Name, m.Name, pl)
					counter(partRecs, float64(p.RecordsMirrored), l.Name, m.Name, pl)
				}
			}
			counter(mirRecs, float64(recs), l.Name, m.Name)
			counter(mirBytes, float64(bytes), l.Name, m.Name)
			counter(mirFill, float64(fill), l.Name, m.Name)
		}
	}
	if nl := st.NetworkLinks; nl != nil {
		for _, e := range append(append([]netlink.EndpointStatus(nil), nl.Endpoints...), nl.SourceLinks...) {
			gauge(nlState, 1, e.Name, e.State)
		}
		for _, s := range nl.Services {
			gauge(nlAssoc, float64(len(s.Associations)), s.Name)
		}
	}
	if lr := st.LastReload; lr != nil {
		ok := 0.0
		if lr.OK {
			ok = 1
		}
		gauge(reloadOK, ok)
	}
}
