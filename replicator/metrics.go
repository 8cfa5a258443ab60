package replicator

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The data path's own instruments, for /metrics (status-derived metrics
// are read from Status at each scrape, in cmd/klink). Labels stay bounded:
// per link, and per error kind.
var (
	fetchSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "klink_fetch_duration_seconds",
		Help:    "Fetch requests to source brokers, from send to answer (includes the broker's long-poll wait when idle).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}, []string{"link"})
	produceSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "klink_produce_duration_seconds",
		Help:    "Produce requests to destination brokers, from send to answer.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}, []string{"link"})
	errorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "klink_errors_total",
		Help: "Errors by kind: fetch, partition_restart (an append or start failed; retried), mirror_failed, sync_offsets, sync_configs, sync_acls.",
	}, []string{"link", "kind"})
)

// Collectors are the instruments above, to register once per process.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{fetchSeconds, produceSeconds, errorsTotal}
}

func countError(link, kind string) { errorsTotal.WithLabelValues(link, kind).Inc() }
