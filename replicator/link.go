package replicator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/membership"
	"github.com/klink-io/klink/replicator/secure"
)

// Link is one running cluster link: a source cluster, the destination, and
// the mirror topics between them.
type Link struct {
	cfg   config.Link
	dcfg  config.Destination
	store linkstate.Store
	log   *zap.Logger

	src, dst *cluster
	fetchers *fetchers
	sinks    *sinks
	// starts bounds how many partitions run their start (destination
	// tail check, producer id, fillers) at once: a restart with 10,000
	// partitions started them all together, at 650 MiB and more.
	starts chan struct{}
	// partsStarting counts partitions in start (or waiting for a slot),
	// partsRunning those past it, mirroring: /status shows both, so that
	// a restart's end can be seen.
	partsStarting, partsRunning atomic.Int64
	txnLister                   txnLister // see recoverTxns

	mu       sync.Mutex
	identity linkstate.Link
	state    string // STARTING, RUNNING, FAILED, REMOVED
	err      string
	mirrors  []*mirror
	ctx      context.Context // set once the link runs: mirrors run under it
	wg       sync.WaitGroup  // running mirrors
	// The last round of each sync (see groupsync.go).
	offsetSync, configSync, aclSync *SyncStatus
	secrets                         string                                                  // linkFingerprint when created
	partLog                         *zap.Logger                                             // partitions\' logger: repeats rate-limited (see rateLimited)
	tunnel                          func(context.Context, string, string) (net.Conn, error) // the source's network link, if any
	syncMu                          sync.Mutex                                              // one sync round at a time; a promote's last sync after them

	// In a klink cluster (see clustered.go): the group, the control
	// duties when this member runs them, and the units it was granted
	// (l.mu).
	group   *membership.Group
	control *controlRun
	granted map[string]bool
	hosts   map[string]*mirror // by mirror name: its partitions run here
	closing bool               // Run is waiting for everything to stop: start nothing (l.mu)
	// reached is when the link last reached its source (its start until
	// then; l.mu), for a klink cluster's members to say which links they
	// cannot run.
	reached time.Time
}

// Link states shown in status.
const (
	LinkStarting = "STARTING"
	LinkRunning  = "RUNNING"
	LinkFailed   = "FAILED"
	// LinkUnreachable: a cluster has not answered (or refused klink:
	// authentication, TLS) for longer than cluster.link.retry.timeout.ms
	// since the link started; it keeps trying.
	LinkUnreachable = "LINK_FAILED"
	// LinkRemoved: the link left the config; its mirrors were failed
	// over and its history stays in status.
	LinkRemoved = "REMOVED"
)

// NewLink prepares a link; Run starts it.
func NewLink(cfg config.Link, dest config.Destination, store linkstate.Store, log *zap.Logger) *Link {
	l := &Link{cfg: cfg, dcfg: dest, store: store, log: log.With(zap.String("link", cfg.Name)), state: LinkStarting, granted: map[string]bool{}, hosts: map[string]*mirror{}, reached: time.Now()}
	l.partLog = rateLimited(l.log)
	l.secrets, _ = linkFingerprint(cfg, dest) // unreadable files fail the link when it connects
	for _, mc := range cfg.MirrorTopics {
		l.mirrors = append(l.mirrors, newMirror(l, mc))
	}
	return l
}

// Name is the link's name.
func (l *Link) Name() string { return l.cfg.Name }

// Run runs the link until ctx ends. On return every append in flight has
// been answered (or the shutdown bound passed) and all connections are
// closed.
func (l *Link) Run(ctx context.Context) {
	var err error
	if l.src, err = newSourceCluster(l.cfg, l.tunnel, l.log); err != nil {
		l.setFailed(err)
		return
	}
	defer l.src.close()
	if l.dst, err = l.newDestination(); err != nil {
		l.setFailed(err)
		return
	}
	defer l.dst.close()

	if err := l.bind(ctx); err != nil {
		if ctx.Err() == nil {
			l.setFailed(err)
			<-ctx.Done()
		}
		return
	}
	l.mu.Lock()
	l.state, l.err = LinkRunning, ""
	l.mu.Unlock()

	l.starts = make(chan struct{}, maxConcurrentStarts)
	l.fetchers = newFetchers(ctx, l.src, l.log, l.src.connOptions("klink-"+l.identity.ID), l.cfg.Source.SessionsOn())
	l.sinks = newSinks(l.dst, l.log, l.dst.connOptions("klink-"+l.identity.ID))
	if l.group != nil {
		// An append lives at most the append lifetime (its deadline,
		// and TCP_USER_TIMEOUT on the connection: see newDestination),
		// and is sent only under the member's lease.
		lt := l.group.AppendLifetime()
		l.sinks.requestTimeout, l.sinks.brokerTimeout = lt, max(lt-2*time.Second, lt/2)
		l.sinks.dial.Timeout = lt
		l.sinks.lease = l.group.LeaseValid
	}
	l.fetchers.link, l.sinks.link = l.cfg.Name, l.cfg.Name
	// In a klink cluster the assignment starts mirrors and control
	// duties (see reconcile); the source watch runs on every member, for
	// the mirrors it runs.
	if l.group == nil {
		l.retireRemovedMirrors(ctx)
	}
	l.mu.Lock()
	l.ctx = ctx
	if l.group == nil {
		for _, m := range l.mirrors {
			l.startMirror(m)
		}
	}
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.watchSource(ctx)
	}()
	if l.group == nil {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.runControl(ctx)
		}()
	}
	<-ctx.Done()
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.wg.Wait()
	l.fetchers.wait()
	l.fetchers.closeConns()
	l.sinks.stop()
	l.log.Info("link stopped")
}

// runControl runs the link's sync loops and topic discovery until ctx
// ends: on a lone klink always, in a klink cluster on the member the
// link's control unit is assigned to.
func (l *Link) runControl(ctx context.Context) {
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	if on, every := l.cfg.OffsetSync(); on {
		run(func() {
			l.syncLoop(ctx, "offsets", every, l.syncOffsets, func(s SyncStatus) {
				l.mu.Lock()
				l.offsetSync = &s
				l.mu.Unlock()
			})
		})
	}
	if on, every := l.cfg.ACLSync(); on {
		run(func() {
			l.syncLoop(ctx, "acls", every, l.syncACLs, func(s SyncStatus) {
				l.mu.Lock()
				l.aclSync = &s
				l.mu.Unlock()
			})
		})
	}
	run(func() {
		l.syncLoop(ctx, "configs", l.cfg.TopicConfigSync(), l.syncConfigs, func(s SyncStatus) {
			l.mu.Lock()
			l.configSync = &s
			l.mu.Unlock()
		})
	})
	if l.cfg.MirrorTopicOptions.AutoCreateTopics.Enabled {
		run(func() {
			l.autoCreate(ctx)
		})
	}
	wg.Wait()
}

// destinationVersions caps the transactional requests klink replays source
// transactions with at the versions where the client adds partitions
// explicitly and a transaction keeps its producer epoch (EndTxn v5 and
// AddPartitionsToTxn v4 belong to KIP-890's other protocol).
func destinationVersions() *kversion.Versions {
	v := kversion.Stable()
	v.SetMaxKeyVersion(int16(kmsg.EndTxn), 4)
	v.SetMaxKeyVersion(int16(kmsg.AddPartitionsToTxn), 3)
	return v
}

// bind checks that the link talks to the clusters it was bound to (and the
// config's clusterID), waiting for them to be reachable. The first
// successful start records the link's identity.
func (l *Link) bind(ctx context.Context) error {
	retry := newBackoff(time.Second, min(30*time.Second, max(l.cfg.RetryTimeout()/2, time.Second)))
	since := time.Now()
	var srcID, dstID string
	for {
		var err error
		cctx, cancel := context.WithTimeout(ctx, min(15*time.Second, max(l.cfg.RetryTimeout(), 3*time.Second)))
		srcID, err = l.src.clusterID(cctx)
		if err != nil {
			err = l.src.explain(ctx, err)
		} else if dstID, err = l.dst.clusterID(cctx); err != nil {
			err = l.dst.explain(ctx, err)
		}
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l.setError(fmt.Errorf("waiting for clusters: %w", err))
		if time.Since(since) > l.cfg.RetryTimeout() {
			// Unreachable, or refusing klink (authentication, TLS)
			// for longer than the link's retry timeout.
			l.mu.Lock()
			l.state = LinkUnreachable
			l.mu.Unlock()
		}
		l.log.Warn("clusters not reachable yet", zap.Error(err))
		if !sleepCtx(ctx, retry.next()) {
			return ctx.Err()
		}
	}
	if want := l.cfg.Source.ClusterID; want != "" && want != srcID {
		return fmt.Errorf("source cluster ID is %q but the config says links[%s].source.clusterID %q: refusing to mirror from another cluster", srcID, l.cfg.Name, want)
	}
	id, err := l.store.GetLink(l.cfg.Name)
	for l.group != nil && errors.Is(err, linkstate.ErrNotFound) && !l.ownsControl() {
		// In a klink cluster one member records the link: the one
		// that runs its control duties.
		l.setError(errNotControl)
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return ctx.Err()
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = l.store.Sync(sctx)
		cancel()
		id, err = l.store.GetLink(l.cfg.Name)
	}
	switch {
	case errors.Is(err, linkstate.ErrNotFound):
		id = linkstate.Link{Name: l.cfg.Name, ID: linkstate.NewLinkID(), SourceClusterID: srcID, DestinationClusterID: dstID, CreatedAt: time.Now().UTC()}
		if err := l.store.PutLink(id); err != nil {
			return err
		}
		l.log.Info("link created", zap.String("linkID", id.ID), zap.String("sourceClusterID", srcID), zap.String("destinationClusterID", dstID))
	case err != nil:
		return err
	default:
		if id.SourceClusterID != "" && id.SourceClusterID != srcID {
			return fmt.Errorf("link %s was set up against source cluster %q but %v now answers as %q: refusing to mirror from another cluster (if the source was really replaced, give the link a new name)", l.cfg.Name, id.SourceClusterID, l.cfg.Source.Bootstrap, srcID)
		}
		if id.DestinationClusterID != "" && id.DestinationClusterID != dstID {
			return fmt.Errorf("link %s was set up against destination cluster %q but %v now answers as %q: refusing to write into another cluster", l.cfg.Name, id.DestinationClusterID, l.dcfg.Bootstrap, dstID)
		}
	}
	l.mu.Lock()
	l.identity = id
	l.mu.Unlock()
	return nil
}

func (l *Link) setFailed(err error) {
	l.log.Error("link FAILED", zap.Error(err))
	l.mu.Lock()
	l.state, l.err = LinkFailed, err.Error()
	l.mu.Unlock()
}

func (l *Link) setError(err error) {
	l.mu.Lock()
	l.err = err.Error()
	l.mu.Unlock()
}

// startMirror runs a mirror under the link (l.mu held, link running).
func (l *Link) startMirror(m *mirror) {
	if l.closing || m.retired {
		return
	}
	if l.group != nil && !grantedNow(l.group.Assignment(), mirrorUnit(l.cfg.Name, m.name)) {
		return // another member runs it, or this one once its wait ends (see reconcile)
	}
	ctx, cancel := context.WithCancel(l.ctx)
	m.quit, m.started = cancel, true
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer cancel()
		m.run(ctx)
	}()
}

// sameLinkSettings reports whether two configs of a link differ at most in
// their mirrors: then a reload changes mirrors, and the link keeps running.
func sameLinkSettings(a, b config.Link) bool {
	return a.Name == b.Name && reflect.DeepEqual(a.Source, b.Source) && maps.Equal(a.Configs, b.Configs) &&
		reflect.DeepEqual(a.MirrorTopicOptions, b.MirrorTopicOptions) &&
		reflect.DeepEqual(a.ConsumerGroupFilters, b.ConsumerGroupFilters) && reflect.DeepEqual(a.ACLFilters, b.ACLFilters)
}

// linkFingerprint digests the certificate and secret files a link's
// clusters read, so that a reload sees a rotation (same paths, new
// contents).
func linkFingerprint(cfg config.Link, dest config.Destination) (string, error) {
	s, err := secure.Fingerprint(cfg.Source.TLS, cfg.Source.SASL)
	if err != nil {
		return "", err
	}
	d, err := secure.Fingerprint(dest.TLS, dest.SASL)
	return s + d, err
}

// sameMirrorSettings reports whether two configs of a mirror differ at most
// in the desired state.
func sameMirrorSettings(a, b config.MirrorTopic) bool {
	return a.Name == b.Name && a.SourceTopic() == b.SourceTopic() && a.ReplicationFactor == b.ReplicationFactor && maps.Equal(a.Configs, b.Configs)
}

// applyMirrors brings the link's mirrors in line with cfg (whose link
// settings equal the running ones): new mirrors start, removed ones are
// failed over (their topics stay), a changed desired state is handed to the
// mirror, and a mirror whose other settings changed is restarted. Mirrors
// that did not change are not touched.
func (l *Link) applyMirrors(cfg config.Link) []string {
	// replacement is a mirror to start under a name: old (nil for a new
	// name) must have stopped first.
	type replacement struct {
		old     *mirror
		mc      config.MirrorTopic
		restart bool // old is running with other settings: stop it
	}
	var done []string
	var plans []replacement
	l.mu.Lock()
	byName := map[string]*mirror{}
	for _, m := range l.mirrors {
		byName[m.name] = m
	}
	keep := map[string]bool{}
	for _, mc := range cfg.MirrorTopics {
		keep[mc.Name] = true
		m, ok := byName[mc.Name]
		switch {
		case !ok:
			plans = append(plans, replacement{mc: mc})
		case m.removed:
			// Added back: once the removed one has stopped (it
			// records STOPPED), the new one sees that and refuses.
			plans = append(plans, replacement{old: m, mc: mc})
		case !sameMirrorSettings(m.cfg, mc):
			plans = append(plans, replacement{old: m, mc: mc, restart: true})
		case m.cfg.DesiredState() != mc.DesiredState():
			m.cfg.State = mc.State
			m.setDesired(linkstate.Desired(mc.DesiredState()))
			done = append(done, fmt.Sprintf("mirror %s: state %s", mc.Name, mc.DesiredState()))
		}
	}
	for _, m := range l.mirrors {
		if !keep[m.name] && !m.removed && !(m.auto && cfg.MirrorTopicOptions.AutoCreateTopics.Selects(m.sourceTopic)) {
			m.removed = true
			m.setDesired(linkstate.Removed)
			done = append(done, fmt.Sprintf("mirror %s: removed (failed over; the destination topic stays)", m.name))
		}
	}
	var wait []*mirror
	for _, p := range plans {
		if p.old != nil && p.old.started {
			wait = append(wait, p.old)
			if p.restart && p.old.quit != nil {
				p.old.quit() // its appends in flight finish first
			}
		}
	}
	l.mu.Unlock()

	for _, m := range wait {
		<-m.done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range plans {
		i := -1
		for j, x := range l.mirrors {
			if x == p.old || (p.old == nil && x.name == p.mc.Name) {
				i = j
			}
		}
		if p.old == nil && i >= 0 {
			continue // auto-created meanwhile
		}
		m := newMirror(l, p.mc)
		if i >= 0 {
			l.mirrors[i] = m
		} else {
			l.mirrors = append(l.mirrors, m)
		}
		if l.ctx != nil {
			l.startMirror(m)
		}
		switch {
		case p.restart:
			done = append(done, fmt.Sprintf("mirror %s: restarted with new settings", p.mc.Name))
		case p.old != nil:
			done = append(done, fmt.Sprintf("mirror %s: added back", p.mc.Name))
		default:
			done = append(done, fmt.Sprintf("mirror %s: added", p.mc.Name))
		}
	}
	return done
}

// retireRemovedMirrors fails over, at start, the mirrors of this link that
// are in the state file but no longer in the config (removed while klink
// was stopped): they become STOPPED, their topics stay. Mirrors stopped
// before are listed too, so that status shows every stop record.
func (l *Link) retireRemovedMirrors(ctx context.Context) {
	recs, err := l.store.Mirrors(l.cfg.Name)
	if err != nil {
		l.log.Error("reading the link's mirrors from the state file failed", zap.Error(err))
		return
	}
	inConfig := map[string]bool{}
	for _, mc := range l.cfg.MirrorTopics {
		inConfig[mc.Name] = true
	}
	l.mu.Lock()
	for _, m := range l.mirrors {
		inConfig[m.name] = true // removed by a reload: it fails over itself
	}
	l.mu.Unlock()
	for _, rec := range recs {
		if inConfig[rec.Name] {
			continue
		}
		if rec.AutoCreated && l.cfg.MirrorTopicOptions.AutoCreateTopics.Selects(rec.SourceTopic) {
			continue // autoCreate runs it again
		}
		m := newMirror(l, config.MirrorTopic{Name: rec.Name, SourceTopicName: rec.SourceTopic})
		m.state, m.reason, m.since, m.stop = rec.State, rec.Reason, rec.StateSince, rec.Stop
		m.removed, m.desired, m.retired = true, linkstate.Removed, true
		if rec.State != linkstate.Stopped {
			m.stopFor(ctx, string(linkstate.Removed))
		}
		close(m.done) // it never runs: it stays in status, with its stop record
		l.mu.Lock()
		l.mirrors = append(l.mirrors, m)
		l.mu.Unlock()
	}
}

// retire fails over, through the destination alone, the mirrors of a link
// removed from the config while klink was stopped.
func (l *Link) retire(ctx context.Context) {
	var err error
	if l.dst, err = l.newDestination(); err != nil {
		l.log.Error("failing over the mirrors of a removed link: cannot reach the destination", zap.Error(err))
		return
	}
	defer l.dst.close()
	l.retireRemovedMirrors(ctx)
}

// watchSource checks, every few seconds with one metadata request, that the
// source cluster answers; and which mirrors' source topics exist, in a
// topic pass at each tick up to 2,000 mirrored partitions, up to 30 s
// apart beyond (watchTopicsEvery). A source unreachable for longer than
// cluster.link.retry.timeout.ms makes the link's mirrors LINK_FAILED; a
// source topic gone makes its mirror SOURCE_UNAVAILABLE. Both go back to
// ACTIVE by themselves (a source topic recreated under the same name fails
// its mirror instead: see checkSourceIdentity). The ticks between topic
// passes name no topic (the answer still proves the cluster answers) but
// those that other requests saw appear or vanish.
func (l *Link) watchSource(ctx context.Context) {
	timeout := l.cfg.RetryTimeout()
	every := min(max(timeout/4, 100*time.Millisecond), 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	lastOK := time.Now()
	var passed []*mirror   // the mirrors of the last answered topic pass
	var passedAt time.Time // when that pass was
	partitions := 0        // how many partitions it found
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.mu.Lock()
		ms := slices.Clone(l.mirrors)
		l.mu.Unlock()
		// A topic pass names every mirror's source topic. Between
		// passes, a tick names only the topics whose existence another
		// request (the fetchers', a partition's start) saw change since
		// the mirror was told: a mirror changes state on this watch's
		// own answer, never on another's alone.
		full := !slices.Equal(ms, passed) || time.Since(passedAt) >= watchTopicsEvery(every, partitions)
		asked := map[string]bool{}
		var ask []string
		for _, m := range ms {
			if (full || l.src.topicUnknown(m.sourceTopic) != m.topicMissingLast()) && !asked[m.sourceTopic] {
				asked[m.sourceTopic] = true
				ask = append(ask, m.sourceTopic)
			}
		}
		rctx, cancel := context.WithTimeout(ctx, max(every, 5*time.Second))
		topics, err := l.src.refresh(rctx, ask...)
		cancel()
		if ctx.Err() != nil {
			return
		}
		var down string
		switch {
		case err == nil || topics != nil: // topic-level errors still show a live cluster
			lastOK = time.Now()
			l.mu.Lock()
			l.reached = lastOK
			l.mu.Unlock()
			if full {
				passed, passedAt, partitions = ms, lastOK, 0
				for _, tm := range topics {
					partitions += len(tm.partitions)
				}
			}
		case time.Since(lastOK) > timeout:
			down = fmt.Sprintf("source cluster unreachable for %s (cluster.link.retry.timeout.ms %d): %v", time.Since(lastOK).Round(time.Second), timeout.Milliseconds(), err)
		}
		for _, m := range ms {
			if topics == nil || !asked[m.sourceTopic] { // nothing learnt about the topic
				m.setHealth(down, m.topicMissingLast(), 0)
				continue
			}
			m.setHealth(down, l.src.topicUnknown(m.sourceTopic), len(topics[m.sourceTopic].partitions))
		}
	}
}

// watchTopicsPartitions is how many partitions the source watch asks about
// at each tick; beyond that, it asks proportionally less often. (A
// variable: tests set it low to see small topics as many partitions.)
var watchTopicsPartitions atomic.Int64

func init() { watchTopicsPartitions.Store(defaultWatchTopicsPartitions) }

const defaultWatchTopicsPartitions = 2000

// watchTopicsEvery is how often the source watch asks for the mirrored
// topics' metadata, given how many partitions they had: at each tick (every)
// up to watchTopicsPartitions, then less often in proportion, never more than
// metadataEvery apart. A Metadata answer names every partition with its replicas:
// at 10,000 partitions, one every 5 s was most of what klink read at idle,
// and each was work for a source broker. A partition added at the source is
// then mirrored up to 30 s later (Kafka's own clients look every 5 minutes,
// metadata.max.age.ms); a deleted topic is seen sooner where this klink
// fetches from it (its fetchers ask for the metadata at the first error),
// else at the next pass.
func watchTopicsEvery(every time.Duration, partitions int) time.Duration {
	per := watchTopicsPartitions.Load()
	if int64(partitions) <= per {
		return every
	}
	return max(every, min(metadataEvery, every*time.Duration(partitions)/time.Duration(per)))
}

// autoCreate mirrors, now and every auto.create.mirror.topics.refresh.ms,
// each source topic the link's filters select that has no mirror yet: its
// destination topic is the prefix and the source topic's name.
func (l *Link) autoCreate(ctx context.Context) {
	opts := l.cfg.MirrorTopicOptions
	t := time.NewTicker(l.cfg.AutoCreateRefresh())
	defer t.Stop()
	for {
		names, err := l.src.topicNames(ctx)
		if err != nil && ctx.Err() == nil {
			l.log.Warn("listing source topics for autoCreateTopics failed; will retry", zap.Error(err))
		}
		sort.Strings(names)
		var created []*mirror
		l.mu.Lock()
		have := map[string]bool{}
		for _, m := range l.mirrors {
			have[m.name] = true
		}
		for _, src := range names {
			dest := opts.Prefix + src
			if have[dest] || !opts.AutoCreateTopics.Selects(src) || config.CheckTopicName(dest) != nil {
				continue
			}
			m := newMirror(l, config.MirrorTopic{Name: dest, SourceTopicName: src})
			m.auto = true
			l.mirrors = append(l.mirrors, m)
			l.startMirror(m)
			created = append(created, m)
			l.log.Info("mirror auto-created", zap.String("sourceTopic", src), zap.String("mirror", dest))
		}
		l.mu.Unlock()
		if l.group != nil {
			// The other members learn of it from the shared state;
			// the group assigns it (see runCluster).
			for _, m := range created {
				if _, err := l.store.UpdateMirror(l.cfg.Name, m.name, func(r *linkstate.Mirror) error {
					r.SourceTopic, r.AutoCreated = m.sourceTopic, true
					return nil
				}); err != nil {
					l.log.Warn("recording an auto-created mirror in the shared state failed", zap.String("mirror", m.name), zap.Error(err))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// newDestination is the link's client of the destination cluster, with its
// TLS and SASL settings and the request versions klink replays with.
func (l *Link) newDestination() (*cluster, error) {
	var lifetime time.Duration
	if l.group != nil {
		lifetime = l.group.AppendLifetime()
	}
	return newDestinationCluster(l.dcfg, lifetime, l.log)
}

// newSourceCluster connects to a link's source (through its network link's
// tunnel, if any).
func newSourceCluster(lc config.Link, tunnel func(context.Context, string, string) (net.Conn, error), log *zap.Logger) (*cluster, error) {
	sec, err := secure.New(fmt.Sprintf("source of link %s", lc.Name), lc.Source.TLS, lc.Source.SASL, log)
	if err != nil {
		return nil, err
	}
	sec.Tunnel = tunnel
	return newCluster("source", lc.Source.Bootstrap, sec, log)
}

// newDestinationCluster connects to the destination. In a klink cluster
// (appendLifetime > 0) every request to the destination lives about an
// append lifetime at most (transaction markers are appends too): socket
// options, and kgo's retries and response wait bounded.
func newDestinationCluster(dc config.Destination, appendLifetime time.Duration, log *zap.Logger) (*cluster, error) {
	sec, err := secure.New("destination", dc.TLS, dc.SASL, log)
	if err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.MaxVersions(destinationVersions())}
	if appendLifetime > 0 {
		sec.UserTimeout = appendLifetime
		opts = append(opts, kgo.RetryTimeout(appendLifetime/2), kgo.RequestTimeoutOverhead(appendLifetime/2))
	}
	return newCluster("destination", dc.Bootstrap, sec, log, opts...)
}
