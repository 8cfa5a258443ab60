package replicator

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/klink-io/klink/replicator/membership"
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
	fetchRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "klink_fetch_requests_total",
		Help: "Fetch requests answered by source brokers, by kind: incremental (a fetch session's request naming only what changed), full (one naming every partition wanted, which starts a session), sessionless (the broker or the config has no fetch sessions).",
	}, []string{"link", "kind"})
	fetchSessionResets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "klink_fetch_session_resets_total",
		Help: "Fetch sessions a source broker ended (FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, FETCH_SESSION_TOPIC_ID_ERROR): each costs one full fetch.",
	}, []string{"link"})
	fetchSizeBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "klink_fetch_size_bytes",
		Help: "The size of a source broker's fetches, which follows the round trip to it: 4 MiB near, up to 32 MiB far.",
	}, []string{"link", "broker"})
	logsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "klink_log_lines_suppressed_total",
		Help: "Repeated partition log lines not written (more than 5 of one message a second per link).",
	})
	errorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "klink_errors_total",
		Help: "Errors by kind: fetch, partition_restart (an append or start failed; retried), mirror_failed, sync_offsets, sync_configs, sync_acls.",
	}, []string{"link", "kind"})
)

// Collectors are the instruments above, to register once per process.
func Collectors() []prometheus.Collector {
	return append([]prometheus.Collector{fetchSeconds, fetchRequests, fetchSessionResets, fetchSizeBytes, produceSeconds, errorsTotal, logsDropped}, membership.Collectors()...)
}

func countError(link, kind string) { errorsTotal.WithLabelValues(link, kind).Inc() }

// rateLimited wraps a link's logger for its partitions: when a cluster is
// down, thousands of partitions retrying would each log the same line. A
// message (at one level) is written at most 5 times a second across the
// link's partitions; the rest are counted in klink_log_lines_suppressed_total.
// State changes of links and mirrors use the link's own logger, which is
// never limited: each is logged once.
func rateLimited(log *zap.Logger) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, 5, 0, zapcore.SamplerHook(func(_ zapcore.Entry, d zapcore.SamplingDecision) {
			if d&zapcore.LogDropped != 0 {
				logsDropped.Inc()
			}
		}))
	}))
}
