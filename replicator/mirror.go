package replicator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
)

// mirror is one mirror topic: its setup (destination topic, start offsets)
// and its partitions.
type mirror struct {
	link        *Link
	cfg         config.MirrorTopic
	name        string // destination topic
	sourceTopic string
	log         *zap.Logger

	// Set by setup before partitions start.
	maxMessageBytes int
	sourceTopicID   [16]byte
	destTopicID     [16]byte       // the destination topic klink created and writes into
	adoptedNow      map[int32]bool // partitions setup adopted, until their first start (mu)

	// wake tells run the desired state changed (see control.go).
	wake chan struct{}
	done chan struct{} // closed when run returns
	// quit stops run (a mirror restarted with new settings); set by
	// Link.startMirror. removed: the mirror left the config (l.mu).
	quit    context.CancelFunc
	started bool // run was started (l.mu)
	// stopping: its unit was revoked and it is stopping (l.mu); unclean:
	// a partition gave up waiting for an append's answer while it
	// stopped (the unit is then not released cleanly).
	stopping bool
	unclean  atomic.Bool
	removed  bool
	retired  bool // failed over at start, never run (see retireRemovedMirrors)
	// isHost: this object runs the partitions of the mirror assigned to
	// this klink cluster member, not the mirror's control loop (see
	// hostReconcile); hostRuns and hostGranted are guarded by mu.
	isHost      bool
	hostCtx     context.Context
	hostRuns    map[int32]*hostRun
	hostGranted map[int32]bool
	hostStops   map[int32]hostStop // how each partition last stopped
	prepared    bool
	lastFlush   time.Time
	auto        bool // made by the link's autoCreateTopics filters

	mu      sync.Mutex
	state   linkstate.MirrorState
	reason  string
	since   time.Time
	desired linkstate.Desired
	refusal string // why the desired state cannot be reached, if it cannot
	// linkDown and topicMissing are what the link's source watch saw.
	linkDown      string
	topicMissing  bool
	srcPartitions int // the source topic's partition count, as last seen
	stop          *linkstate.StopRecord
	parts         []*partition
	cancel        context.CancelFunc // stops the partitions
	fills         map[int32]int64    // filled offsets not yet written to the state file
	ranges        map[int32]int64
}

func newMirror(l *Link, cfg config.MirrorTopic) *mirror {
	return &mirror{
		link:        l,
		cfg:         cfg,
		name:        cfg.Name,
		sourceTopic: cfg.SourceTopic(),
		log:         l.log.With(zap.String("mirror", cfg.Name)),
		state:       linkstate.Pending,
		since:       time.Now().UTC(),
		desired:     linkstate.Desired(cfg.DesiredState()),
		wake:        make(chan struct{}, 1),
		done:        make(chan struct{}),
		fills:       map[int32]int64{},
		ranges:      map[int32]int64{},
	}
}

// errMirrorFailed ends setup for a mirror that is (or just became) FAILED.
var errMirrorFailed = errors.New("mirror failed")

func sortedPartitions(ps map[int32]*linkstate.Partition) []int32 {
	ids := make([]int32, 0, len(ps))
	for id := range ps {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func (m *mirror) newPartition(id int32, startOffset int64) *partition {
	p := m.partitionAt(id, startOffset)
	m.mu.Lock()
	m.parts = append(m.parts, p)
	m.mu.Unlock()
	return p
}

// partitionAt makes (does not start or list) the mirror's partition id.
func (m *mirror) partitionAt(id int32, startOffset int64) *partition {
	return &partition{
		m:           m,
		id:          id,
		log:         m.link.partLog.With(zap.String("mirror", m.name), zap.Int32("partition", id)),
		cur:         newCursor(m.sourceTopic, m.sourceTopicID, id),
		sp:          newSinkPart(m.name, id),
		startOffset: startOffset,
		logStartDue: -1,
	}
}

func (m *mirror) partitionsSnapshot() []*partition {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*partition(nil), m.parts...)
}

// setup makes sure the destination topic exists and is klink's, and that
// every partition has a start offset. It returns the mirror's record.
func (m *mirror) setup(ctx context.Context) (linkstate.Mirror, error) {
	store, lname := m.link.store, m.link.cfg.Name
	rec, err := store.GetMirror(lname, m.name)
	switch {
	case errors.Is(err, linkstate.ErrNotFound):
		rec, err = store.UpdateMirror(lname, m.name, func(r *linkstate.Mirror) error {
			r.SourceTopic = m.sourceTopic
			r.AutoCreated = m.auto
			return nil
		})
		if err != nil {
			return rec, err
		}
	case err != nil:
		return rec, err
	}
	m.mu.Lock()
	m.state, m.reason, m.since, m.stop = rec.State, rec.Reason, rec.StateSince, rec.Stop
	m.mu.Unlock()
	if rec.State == linkstate.Failed {
		m.log.Error("mirror is FAILED; not mirroring", zap.String("reason", rec.Reason))
		return rec, errMirrorFailed
	}
	if rec.SourceTopic != "" && rec.SourceTopic != m.sourceTopic {
		return rec, m.failSetup("mirror %s was set up from source topic %s, the config now names %s; a mirror never changes its source: give the mirror a new destination topic name", m.name, rec.SourceTopic, m.sourceTopic)
	}

	src, dst := m.link.src, m.link.dst
	sm, err := src.topic(ctx, m.sourceTopic)
	if errors.Is(err, errTopicNotFound) {
		return rec, fmt.Errorf("source topic %s does not exist (yet)", m.sourceTopic)
	}
	if err != nil {
		return rec, err
	}
	srcID := topicIDString(sm.id)
	if rec.SourceTopicID != "" && srcID != "" && rec.SourceTopicID != srcID {
		return rec, m.failSetup("source topic %s was deleted and recreated (topic ID %s, mirrored from %s): its offsets are not the ones mirrored", m.sourceTopic, srcID, rec.SourceTopicID)
	}
	m.sourceTopicID = sm.id

	dm, err := dst.topic(ctx, m.name)
	var adopted map[int32]adoptedPartition // an existing topic klink adopts
	switch {
	case errors.Is(err, errTopicNotFound):
		if rec.DestTopicID != "" {
			return rec, m.failSetup("destination topic %s that klink created (topic ID %s) was deleted; klink does not recreate it silently: remove the mirror from the config, or delete its state with the topic", m.name, rec.DestTopicID)
		}
		if dm, err = m.createTopic(ctx, len(sm.partitions)); err != nil {
			return rec, err
		}
	case err != nil:
		return rec, err
	default:
		if adopted, err = m.checkOwnership(ctx, rec, dm, len(sm.partitions)); err != nil {
			return rec, err
		}
	}
	if len(dm.partitions) < len(sm.partitions) {
		if err := m.createPartitions(ctx, len(sm.partitions)); err != nil {
			return rec, err
		}
	}
	m.destTopicID = dm.id
	if err := m.loadMaxMessageBytes(ctx); err != nil {
		return rec, err
	}

	// Start offsets are chosen once, for every partition, and kept.
	starts := map[int32]int64{}
	for id := range sm.partitions {
		if _, ok := rec.Partitions[int32(id)]; ok {
			continue
		}
		if a, ok := adopted[int32(id)]; ok {
			// The destination's own log start: what it holds is the
			// source's already, and nothing of it is deleted or filled.
			starts[int32(id)] = a.logStart
			continue
		}
		which := int64(offsetEarliest)
		if m.link.cfg.StartOffsetSpec() == config.StartLatest {
			which = offsetLatest
		}
		o, err := src.listOffset(ctx, m.sourceTopic, int32(id), which)
		if err != nil {
			return rec, err
		}
		starts[int32(id)] = o
	}
	dstID := topicIDString(dm.id)
	rec, err = store.UpdateMirror(lname, m.name, func(r *linkstate.Mirror) error {
		r.SourceTopic = m.sourceTopic
		r.SourceTopicID = srcID
		r.DestTopicID = dstID
		if r.Partitions == nil {
			r.Partitions = map[int32]*linkstate.Partition{}
		}
		for id, o := range starts {
			r.Partitions[id] = &linkstate.Partition{StartOffset: o}
		}
		return nil
	})
	if err != nil {
		return rec, err
	}
	m.log.Info("mirror set up", zap.String("sourceTopic", m.sourceTopic), zap.Int("partitions", len(rec.Partitions)), zap.String("destTopicID", dstID))
	m.setReason("")
	return rec, nil
}

// checkSourceIdentity looks at the source topic after a fetch said its ID
// is unknown or inconsistent: deleted (an error to retry on), recreated (the
// mirror fails: the new topic's offsets are not the ones mirrored), or the
// same topic (a passing metadata lag).
func (m *mirror) checkSourceIdentity(ctx context.Context) error {
	sm, err := m.link.src.topic(ctx, m.sourceTopic)
	if errors.Is(err, errTopicNotFound) {
		return fmt.Errorf("source topic %s no longer exists", m.sourceTopic)
	}
	if err != nil {
		return err
	}
	if sm.id != m.sourceTopicID && m.sourceTopicID != ([16]byte{}) {
		return fatalf("source topic %s was deleted and recreated (topic ID %s, mirrored from %s): its offsets are not the ones mirrored", m.sourceTopic, topicIDString(sm.id), topicIDString(m.sourceTopicID))
	}
	return nil
}

// checkDestinationIdentity checks, when a partition starts again (after an
// append error, for one), that the destination topic is still the one
// klink created: someone may have deleted it, or deleted and recreated it,
// while klink mirrored into it. Either fails the mirror: klink never
// recreates a topic silently, nor writes into one it did not create. A
// topic reported missing is asked about again a second later, so that a
// broker whose metadata lags cannot fail the mirror alone.
func (m *mirror) checkDestinationIdentity(ctx context.Context) error {
	dm, err := m.link.dst.topic(ctx, m.name)
	if errors.Is(err, errTopicNotFound) {
		if !sleepCtx(ctx, time.Second) {
			return ctx.Err()
		}
		dm, err = m.link.dst.topic(ctx, m.name)
		if errors.Is(err, errTopicNotFound) {
			return fatalf("destination topic %s (topic ID %s, created by klink) was deleted while klink mirrored into it; klink does not recreate it silently: remove the mirror from the config, or delete its state with the topic", m.name, topicIDString(m.destTopicID))
		}
	}
	if err != nil {
		return err
	}
	if dm.id != m.destTopicID && m.destTopicID != ([16]byte{}) && dm.id != ([16]byte{}) {
		return fatalf("destination topic %s was deleted and recreated by someone else while klink mirrored into it (topic ID %s, klink created %s); klink never writes into a topic it did not create", m.name, topicIDString(dm.id), topicIDString(m.destTopicID))
	}
	return nil
}

// checkOwnership refuses to write into a destination topic klink did not
// create, unless the mirror may adopt it (adopt: true) and it is provably a
// prefix of the source topic: then it returns where each partition stands.
func (m *mirror) checkOwnership(ctx context.Context, rec linkstate.Mirror, dm topicMeta, srcPartitions int) (map[int32]adoptedPartition, error) {
	id := topicIDString(dm.id)
	switch {
	case rec.DestTopicID != "" && rec.DestTopicID == id:
		return nil, nil
	case rec.DestTopicID != "":
		return nil, m.failSetup("destination topic %s was deleted and recreated by someone else (topic ID %s, klink created %s); klink never writes into a topic it did not create", m.name, id, rec.DestTopicID)
	case !rec.CreateRequestedAt.IsZero():
		// klink asked for the topic and stopped before noting its ID.
		// Adopt it only if it is still exactly as created: empty.
		empty, err := m.destinationEmpty(ctx, len(dm.partitions))
		if err != nil {
			return nil, err
		}
		if empty && len(dm.partitions) == srcPartitions {
			m.log.Info("adopting the destination topic created before a restart", zap.String("topicID", id))
			return nil, nil
		}
	}
	if m.adopts() {
		// A refusal does not fail the mirror: nothing was written, and
		// what the operator does about it (recreate the topic, say) is
		// seen at the next try of setupUntilReady, at most 30 s later.
		adopted, err := adoptCheck(ctx, m.link.src, m.link.dst, m.sourceTopic, m.name)
		var fatal fatalError
		if errors.As(err, &fatal) {
			return nil, fmt.Errorf("%s; nothing was written, and klink checks again every 30 s", fatal.reason)
		}
		if err != nil {
			return nil, err
		}
		// The topic's configs become a mirror's before the first
		// append: compression.type=producer and CreateTime keep the
		// copies byte for byte and their timestamps, and timestamp
		// bounds would refuse old records.
		if err := m.syncConfigs(ctx); err != nil {
			return nil, err
		}
		if err := m.dropTimestampBounds(ctx); err != nil {
			return nil, err
		}
		m.mu.Lock()
		m.adoptedNow = map[int32]bool{}
		for p := range adopted {
			m.adoptedNow[p] = true
		}
		m.mu.Unlock()
		m.log.Warn("adopting existing destination topic: it is a prefix of the source topic; mirroring from its end offsets", zap.String("topicID", id), zap.Strings("ends", adoptedEnds(adopted)))
		return adopted, nil
	}
	return nil, m.failSetup("destination topic %s already exists and klink did not create it (topic ID %s); klink never writes into a topic it did not create: delete it, mirror into another name, or set adopt: true if it is a copy of the source topic (after a failover)", m.name, id)
}

// dropTimestampBounds removes an adopted topic's own bounds on record
// timestamps: a lagging mirror appends old records (klink never sets them
// on the topics it creates; the config sync leaves them, as local).
func (m *mirror) dropTimestampBounds(ctx context.Context) error {
	cfs, err := describeTopicConfigs(ctx, m.link.dst, m.name)
	if err != nil {
		return err
	}
	var del []kadm.AlterConfig
	for _, c := range cfs {
		// Only the topic's own: Kafka describes every default too (these
		// as Long.MAX_VALUE), which is no bound.
		if (c.Key == "message.timestamp.before.max.ms" || c.Key == "message.timestamp.difference.max.ms") && c.Value != nil && c.Source == kmsg.ConfigSourceDynamicTopicConfig {
			del = append(del, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: c.Key})
			m.log.Warn("adopted topic: removing its bound on old timestamps", zap.String("config", c.Key), zap.String("was", *c.Value))
		}
	}
	if len(del) == 0 {
		return nil
	}
	resps, err := m.link.dst.adm.AlterTopicConfigs(ctx, del, m.name)
	if err == nil {
		for _, r := range resps {
			err = errors.Join(err, r.Err)
		}
	}
	if err != nil {
		return fmt.Errorf("destination topic %s: removing timestamp bounds: %w", m.name, err)
	}
	return nil
}

// takeAdopted reports, once, whether partition id was adopted by this
// run's setup: its start then skips the tail check, which the adoption
// proof has just done (and which, on a compacted topic whose two copies
// each cluster's cleaner has compacted on its own, compares batches the
// proof rightly does not).
func (m *mirror) takeAdopted(id int32) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	ok := m.adoptedNow[id]
	delete(m.adoptedNow, id)
	return ok
}

// adopts: the config lets this mirror adopt an existing destination topic
// (mirrorTopics[].adopt, or mirrorTopicOptions.adopt for auto-created
// mirrors).
func (m *mirror) adopts() bool {
	return m.cfg.Adopt || (m.auto && m.link.cfg.MirrorTopicOptions.Adopt)
}

func (m *mirror) destinationEmpty(ctx context.Context, partitions int) (bool, error) {
	for p := 0; p < partitions; p++ {
		end, err := m.link.dst.listOffset(ctx, m.name, int32(p), offsetLatest)
		if err != nil {
			return false, err
		}
		if end != 0 {
			return false, nil
		}
	}
	return true, nil
}

// failSetup marks the mirror FAILED and returns errMirrorFailed.
func (m *mirror) failSetup(format string, args ...any) error {
	m.fail(fmt.Sprintf(format, args...))
	return errMirrorFailed
}

// Source topic configs that are not copied to the destination: settings
// that would make the destination refuse or change what klink appends, and
// settings that name the source cluster's own brokers or features.
var notCopied = map[string]string{
	"compression.type":                        "klink keeps producer, so batches are stored as the source stored them",
	"message.timestamp.type":                  "klink keeps CreateTime and carries LogAppendTime timestamps itself",
	"message.timestamp.difference.max.ms":     "a lagging mirror must accept old timestamps",
	"message.timestamp.before.max.ms":         "a lagging mirror must accept old timestamps",
	"message.timestamp.after.max.ms":          "the source already accepted these timestamps",
	"leader.replication.throttled.replicas":   "names source brokers",
	"follower.replication.throttled.replicas": "names source brokers",
	"message.format.version":                  "deprecated",
	"message.downconversion.enable":           "deprecated",
	"remote.storage.enable":                   "tiered storage is a destination cluster choice",
	"min.insync.replicas":                     "durability is a destination cluster choice",
}

// desiredConfigs are the configs the destination topic is created with and
// kept in step with: the source topic's non-default configs, klink's
// required settings, then the mirror's overrides. logSkips logs each source
// config not copied (at creation; the sync would log them every round).
func (m *mirror) desiredConfigs(ctx context.Context, logSkips bool) (map[string]*string, error) {
	cfs, err := describeTopicConfigs(ctx, m.link.src, m.sourceTopic)
	if err != nil {
		return nil, err
	}
	out := map[string]*string{}
	for _, c := range cfs {
		if c.Source != kmsg.ConfigSourceDynamicTopicConfig || c.Value == nil {
			continue
		}
		why, skip := notCopied[c.Key]
		if strings.HasPrefix(c.Key, "confluent.") {
			why, skip = "vendor-specific", true
		}
		if skip {
			if logSkips {
				m.log.Info("source topic config not copied", zap.String("config", c.Key), zap.String("why", why))
			}
			continue
		}
		v := *c.Value
		out[c.Key] = &v
	}
	producer, createTime := "producer", "CreateTime"
	out["compression.type"] = &producer
	out["message.timestamp.type"] = &createTime
	for k, v := range m.cfg.Configs {
		v := v
		out[k] = &v
	}
	return out, nil
}

// createTopic creates the destination topic, noting the intent first so a
// crash in between is recognised.
func (m *mirror) createTopic(ctx context.Context, partitions int) (topicMeta, error) {
	configs, err := m.desiredConfigs(ctx, true)
	if err != nil {
		return topicMeta{}, err
	}
	if _, err := m.link.store.UpdateMirror(m.link.cfg.Name, m.name, func(r *linkstate.Mirror) error {
		r.CreateRequestedAt = time.Now().UTC()
		return nil
	}); err != nil {
		return topicMeta{}, err
	}
	rf := int16(-1)
	if m.cfg.ReplicationFactor > 0 {
		rf = int16(m.cfg.ReplicationFactor)
	}
	resp, err := m.link.dst.adm.CreateTopic(ctx, int32(partitions), rf, configs, m.name)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		msg := err.Error()
		if resp.ErrMessage != "" {
			msg += ": " + resp.ErrMessage
		}
		return topicMeta{}, fmt.Errorf("creating destination topic %s: %s", m.name, msg)
	}
	// Metadata can trail the creation by a moment.
	for i := 0; ; i++ {
		dm, err := m.link.dst.topic(ctx, m.name)
		if err == nil && len(dm.partitions) == partitions {
			if _, err := m.link.store.UpdateMirror(m.link.cfg.Name, m.name, func(r *linkstate.Mirror) error {
				r.DestTopicID = topicIDString(dm.id)
				return nil
			}); err != nil {
				return topicMeta{}, err
			}
			m.log.Info("destination topic created", zap.Int("partitions", partitions), zap.String("topicID", topicIDString(dm.id)))
			return dm, nil
		}
		if i == 20 {
			return topicMeta{}, fmt.Errorf("destination topic %s not visible after creation: %v", m.name, err)
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return topicMeta{}, ctx.Err()
		}
	}
}

// createPartitions grows the destination topic to the source's count.
func (m *mirror) createPartitions(ctx context.Context, total int) error {
	resps, err := m.link.dst.adm.UpdatePartitions(ctx, total, m.name)
	if err == nil {
		if r, ok := resps[m.name]; ok && r.Err != nil && !errors.Is(r.Err, kerr.InvalidPartitions) {
			err = r.Err
		}
	}
	if err != nil {
		return fmt.Errorf("growing destination topic %s to %d partitions: %w", m.name, total, err)
	}
	m.log.Info("destination partitions added", zap.Int("partitions", total))
	return nil
}

// growPartitions follows the source when partitions are added to it. New
// source partitions are mirrored from their beginning.
func (m *mirror) growPartitions(ctx context.Context, have int) ([]int32, error) {
	sm, err := m.link.src.topic(ctx, m.sourceTopic)
	if err != nil {
		return nil, err
	}
	if len(sm.partitions) <= have {
		return nil, nil
	}
	if err := m.createPartitions(ctx, len(sm.partitions)); err != nil {
		return nil, err
	}
	var added []int32
	if _, err := m.link.store.UpdateMirror(m.link.cfg.Name, m.name, func(r *linkstate.Mirror) error {
		for id := have; id < len(sm.partitions); id++ {
			if _, ok := r.Partitions[int32(id)]; !ok {
				r.Partitions[int32(id)] = &linkstate.Partition{StartOffset: 0}
			}
			added = append(added, int32(id))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return added, nil
}

// loadMaxMessageBytes reads the destination topic's max.message.bytes, the
// bound for filler batches.
func (m *mirror) loadMaxMessageBytes(ctx context.Context) error {
	m.maxMessageBytes = 1_048_588 // Kafka's default
	v, err := topicConfig(ctx, m.link.dst, m.name, "max.message.bytes")
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		m.maxMessageBytes = n
	}
	return nil
}

// setState records a state change in the state file and in memory.
func (m *mirror) setState(s linkstate.MirrorState, reason string) {
	rec, err := m.link.store.UpdateMirror(m.link.cfg.Name, m.name, func(r *linkstate.Mirror) error {
		r.State = s
		r.Reason = reason
		return nil
	})
	if err != nil {
		m.log.Error("recording mirror state failed", zap.String("state", string(s)), zap.Error(err))
		return
	}
	m.mu.Lock()
	changed := m.state != rec.State
	m.state, m.reason, m.since = rec.State, rec.Reason, rec.StateSince
	m.mu.Unlock()
	if changed {
		m.log.Info("mirror state changed", zap.String("state", string(s)), zap.String("reason", reason))
	}
}

// setReason records why a mirror is not yet mirroring, without a state
// change.
func (m *mirror) setReason(reason string) {
	m.mu.Lock()
	m.reason = reason
	m.mu.Unlock()
}

// fail stops the mirror for good: FAILED, with a reason; nothing more is
// written.
func (m *mirror) fail(reason string) {
	m.mu.Lock()
	already := m.state == linkstate.Failed
	cancel := m.cancel
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if already {
		return
	}
	countError(m.link.cfg.Name, "mirror_failed")
	m.log.Error("mirror FAILED", zap.String("reason", reason))
	m.setState(linkstate.Failed, reason)
}

// noteFill counts filled offsets until the next flush to the state file.
func (m *mirror) noteFill(p int32, offsets int64) {
	m.mu.Lock()
	m.fills[p] += offsets
	m.ranges[p]++
	m.mu.Unlock()
}

// flushFills adds the filled-offset counts to the state file.
func (m *mirror) flushFills() {
	m.mu.Lock()
	fills, ranges := m.fills, m.ranges
	m.fills, m.ranges = map[int32]int64{}, map[int32]int64{}
	m.mu.Unlock()
	if len(fills) == 0 {
		return
	}
	if _, err := m.link.store.UpdateMirror(m.link.cfg.Name, m.name, func(r *linkstate.Mirror) error {
		for p, n := range fills {
			if pr := r.Partitions[p]; pr != nil {
				pr.FilledOffsets += n
				pr.FilledRanges += ranges[p]
			}
		}
		return nil
	}); err != nil {
		m.log.Warn("recording filled offsets failed", zap.Error(err))
	}
}
