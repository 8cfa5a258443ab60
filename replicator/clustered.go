package replicator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/membership"
	"github.com/klink-io/klink/replicator/secure"
)

// In a klink cluster (config cluster:) every member runs every link's
// connections, and the group assigns the units of work, each to exactly
// one member: a link's control duties (topic discovery, consumer-offset,
// ACL and config sync, failing over mirrors removed while klink was
// stopped), a mirror's control loop (its setup and destination topic, its
// states, promote and failover), and each mirrored partition's data path.
// A mirror's partitions run on whichever members they are assigned to
// (hostReconcile), following the mirror's state in the shared state; its
// control loop runs on one member and reaches them through that state
// (holdPartitions). The link's source watch runs on every member, for the
// mirrors whose control loop it runs.

// Unit names: a link's control duties, and a mirror topic.
func controlUnit(link string) string        { return "link/" + link }
func mirrorUnit(link, mirror string) string { return "mirror/" + link + "/" + mirror }

// UseCluster makes this replicator a klink cluster member: it runs only
// what the group assigns it. Call before Run.
func (r *Replicator) UseCluster(g *membership.Group) {
	r.group = g
	for _, l := range r.links {
		l.group = g
		for _, m := range l.mirrors {
			m.loadShared() // status shows the shared state from the start
		}
	}
}

// Unit weights: a partition's data path is what costs CPU and network; a
// link's or mirror's control duties are a few requests now and then.
const (
	partitionWeight = 10
	controlWeight   = 1
)

// Units lists the work the cluster shares, as this member's config and
// the shared state see it: a control unit per link, and for every mirror
// not STOPPED its control loop and each of its partitions.
func (r *Replicator) Units() []membership.Unit {
	r.mu.Lock()
	links := slices.Clone(r.links)
	r.mu.Unlock()
	var us []membership.Unit
	for _, l := range links {
		if l.removedLink() {
			continue
		}
		us = append(us, membership.Unit{Name: controlUnit(l.cfg.Name), Weight: controlWeight, Needs: l.cfg.Name})
		l.adoptSharedMirrors()
		l.mu.Lock()
		ms := slices.Clone(l.mirrors)
		l.mu.Unlock()
		for _, m := range ms {
			rec, err := r.store.GetMirror(l.cfg.Name, m.name)
			if (err == nil && rec.State == linkstate.Stopped) || m.retired {
				continue
			}
			us = append(us, membership.Unit{Name: mirrorUnit(l.cfg.Name, m.name), Weight: controlWeight, Needs: l.cfg.Name})
			for id := range rec.Partitions {
				us = append(us, membership.Unit{Name: partUnit(l.cfg.Name, m.name, id), Weight: partitionWeight, Spread: l.cfg.Name + "/" + m.name, Needs: l.cfg.Name})
			}
		}
	}
	return us
}

// runCluster applies the group's assignment to the links until ctx ends:
// at each change, and a few times a second for units whose wait for the
// previous owner's lease ends. It also tells the group when the units
// changed (a reload, a mirror auto-created on another member).
func (r *Replicator) runCluster(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var lastUnits, lastCannot string
	var lastBeat time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.group.Changed():
		case <-t.C:
		}
		var names []string
		for _, u := range r.Units() {
			names = append(names, u.Name)
		}
		sort.Strings(names)
		if key := strings.Join(names, ","); key != lastUnits {
			if lastUnits != "" {
				r.group.UnitsChanged()
			}
			lastUnits = key
		}
		if key := strings.Join(r.Cannot(), ","); key != lastCannot {
			r.group.UnitsChanged() // the leader gives those links' units to others
			lastCannot = key
		}
		if r.beat != nil && time.Since(lastBeat) > r.group.SessionTimeout()/2 && r.group.LeaseValid() {
			lastBeat = time.Now()
			go r.beat() // for every member's status: when this one last ran
		}
		assigned := r.group.Assignment()
		r.mu.Lock()
		links := slices.Clone(r.links)
		r.mu.Unlock()
		active := map[string]bool{}
		for _, l := range links {
			l.reconcile(ctx, assigned)
			l.activeUnits(active)
		}
		r.group.Sweep(active)
	}
}

// activeUnits adds the link's units that run here, or are still stopping,
// or stopped with appends unanswered less than an append lifetime ago (not
// to be released as clean).
func (l *Link) activeUnits(into map[string]bool) {
	lifetime := l.group.AppendLifetime()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.control != nil {
		into[controlUnit(l.cfg.Name)] = true
	}
	for _, m := range l.mirrors {
		if m.started && !isClosed(m.done) {
			into[mirrorUnit(l.cfg.Name, m.name)] = true
		}
	}
	for _, h := range l.hosts {
		h.mu.Lock()
		for id := range h.hostRuns {
			into[partUnit(l.cfg.Name, h.name, id)] = true
		}
		for id, st := range h.hostStops {
			if !st.quiet(lifetime) {
				into[partUnit(l.cfg.Name, h.name, id)] = true
			}
		}
		h.mu.Unlock()
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Cannot lists the links this member cannot run now: not reached their
// source (or not started) for a while. Their units go to members that can
// (unless none can).
func (r *Replicator) Cannot() []string {
	r.mu.Lock()
	links := slices.Clone(r.links)
	r.mu.Unlock()
	var out []string
	for _, l := range links {
		l.mu.Lock()
		stale := time.Since(l.reached) > cannotRunAfter(l.group)
		l.mu.Unlock()
		if stale && !l.removedLink() {
			out = append(out, l.cfg.Name)
		}
	}
	sort.Strings(out)
	return out
}

// cannotRunAfter is how long a link may go without reaching its source
// before this member says it cannot run it: longer than the source watch's
// interval, and than a session timeout.
func cannotRunAfter(g *membership.Group) time.Duration {
	return g.SessionTimeout() + 10*time.Second
}

// grantedNow reports whether unit may run now: granted, and past any
// wait for its previous owner's lease.
func grantedNow(assigned map[string]time.Time, unit string) bool {
	at, ok := assigned[unit]
	return ok && !time.Now().Before(at)
}

// ownsControl reports whether this member holds the link's control unit
// (waiting or not): only it creates the link's identity.
func (l *Link) ownsControl() bool {
	_, ok := l.group.Assignment()[controlUnit(l.cfg.Name)]
	return ok
}

// reconcile starts the link's units granted to this member and stops
// those it no longer holds, telling the group when each has stopped.
func (l *Link) reconcile(ctx context.Context, assigned map[string]time.Time) {
	l.mu.Lock()
	running := l.ctx != nil
	if !running {
		for _, m := range l.mirrors {
			m.loadShared()
		}
	}
	l.mu.Unlock()
	if !running {
		return
	}
	if len(assigned) == 0 && !l.group.LeaseValid() {
		// No lease: nothing may be appended any more, whatever is still
		// queued or unanswered.
		l.sinks.dropConnections()
	}
	l.adoptSharedMirrors()
	// What others wrote before they released a unit is read before it
	// starts here.
	needSync := false
	l.mu.Lock()
	for _, m := range l.mirrors {
		if !m.started && !m.removedStopped() && grantedNow(assigned, mirrorUnit(l.cfg.Name, m.name)) {
			needSync = true
		}
	}
	if l.control == nil && grantedNow(assigned, controlUnit(l.cfg.Name)) {
		needSync = true
	}
	l.mu.Unlock()
	noStarts := false
	if needSync {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := l.store.Sync(sctx)
		cancel()
		if err != nil {
			// Units to stop still stop; none starts.
			l.log.Warn("reading the shared state before starting a unit failed; retrying", zap.Error(err))
			noStarts = true
		}
	}

	l.mu.Lock()
	cu := controlUnit(l.cfg.Name)
	_, holdControl := assigned[cu]
	switch {
	case l.control == nil && grantedNow(assigned, cu) && !noStarts:
		l.startControl()
	case l.control != nil && !holdControl && !l.control.stopping:
		l.control.stopping = true
		c := l.control
		c.cancel()
		go func() {
			<-c.done
			l.mu.Lock()
			l.control = nil
			l.mu.Unlock()
			l.group.Released(cu, true)
		}()
	case l.control == nil && !holdControl && l.granted[cu]:
		l.group.Released(cu, true)
	}
	if holdControl {
		l.granted[cu] = true
	} else {
		delete(l.granted, cu)
	}
	for i, m := range l.mirrors {
		u := mirrorUnit(l.cfg.Name, m.name)
		_, hold := assigned[u]
		switch {
		case hold:
			l.granted[u] = true
			if !m.started && grantedNow(assigned, u) && !m.removedStopped() && !noStarts {
				m.loadShared() // its status shows the state it has, not PENDING, while it sets up
				l.startMirror(m)
			}
		case m.started && !m.stopping:
			m.stopping = true
			m.quit() // its appends in flight are answered first
			fresh := newMirror(l, m.cfg)
			fresh.auto, fresh.removed, fresh.desired = m.auto, m.removed, m.desired
			go func(i int, m *mirror) {
				<-m.done
				fresh.loadShared() // status shows the shared state, not PENDING
				l.mu.Lock()
				if i < len(l.mirrors) && l.mirrors[i] == m {
					l.mirrors[i] = fresh
				}
				delete(l.granted, u)
				l.mu.Unlock()
				l.group.Released(u, !m.unclean.Load())
			}(i, m)
		case !m.started && l.granted[u]:
			delete(l.granted, u)
			l.group.Released(u, true)
		}
		if !m.started {
			m.loadShared()
		} else if !m.stopping {
			m.followShared()
		}
	}
	// The partitions assigned here, by mirror.
	type hostWork struct {
		h         *mirror
		now, held map[int32]bool
	}
	var work []hostWork
	prefix := "part/" + l.cfg.Name + "/"
	byMirror := map[string]*hostWork{}
	for _, m := range l.mirrors {
		if l.hosts[m.name] != nil || hasPrefixIn(assigned, prefix+m.name+"/") {
			work = append(work, hostWork{h: l.host(m), now: map[int32]bool{}, held: map[int32]bool{}})
			byMirror[m.name] = &work[len(work)-1]
		}
	}
	for u, at := range assigned {
		rest, ok := strings.CutPrefix(u, prefix)
		if !ok {
			continue
		}
		i := strings.LastIndexByte(rest, '/')
		if i < 0 {
			continue
		}
		w := byMirror[rest[:i]]
		id, err := strconv.ParseInt(rest[i+1:], 10, 32)
		if w == nil || err != nil {
			continue
		}
		w.held[int32(id)] = true
		if !time.Now().Before(at) {
			w.now[int32(id)] = true
		}
	}
	lctx := l.ctx
	l.mu.Unlock()
	for _, w := range work {
		l.hostReconcile(lctx, w.h, w.now, w.held, noStarts)
	}
}

func hasPrefixIn(assigned map[string]time.Time, prefix string) bool {
	for u := range assigned {
		if strings.HasPrefix(u, prefix) {
			return true
		}
	}
	return false
}

// followShared makes the mirror's control loop, running here, see a
// FAILED state another member's partition recorded.
func (m *mirror) followShared() {
	rec, err := m.link.store.GetMirror(m.link.cfg.Name, m.name)
	if err != nil {
		return
	}
	if why := partitionFailure(rec); why != "" && rec.State != linkstate.Failed {
		m.fail(why) // this member runs the control loop: it writes the state
		return
	}
	if rec.State != linkstate.Failed {
		return
	}
	m.mu.Lock()
	if m.state == linkstate.Failed {
		m.mu.Unlock()
		return
	}
	m.state, m.reason, m.since = rec.State, rec.Reason, rec.StateSince
	cancel := m.cancel
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// controlRun is a link's control duties running on this member.
type controlRun struct {
	cancel   context.CancelFunc
	done     chan struct{}
	stopping bool
}

// startControl runs the link's control duties (l.mu held, link running).
func (l *Link) startControl() {
	if l.closing {
		return
	}
	ctx, cancel := context.WithCancel(l.ctx)
	c := &controlRun{cancel: cancel, done: make(chan struct{})}
	l.control = c
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer close(c.done)
		l.log.Info("running the link's control duties")
		l.retireRemovedMirrors(ctx)
		l.runControl(ctx)
	}()
}

// removedStopped: a mirror removed from the config whose record says it
// is STOPPED runs nowhere.
func (m *mirror) removedStopped() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.removed && m.state == linkstate.Stopped
}

// loadShared shows, for a mirror another member runs, its state as the
// shared state has it (for status, and for the syncs on this member).
func (m *mirror) loadShared() {
	rec, err := m.link.store.GetMirror(m.link.cfg.Name, m.name)
	if err != nil {
		return
	}
	m.mu.Lock()
	m.state, m.reason, m.since, m.stop = rec.State, rec.Reason, rec.StateSince, rec.Stop
	m.mu.Unlock()
}

// adoptSharedMirrors adds the mirrors another member auto-created (its
// link's filters select them) so that this member can run them too.
func (l *Link) adoptSharedMirrors() {
	if !l.cfg.MirrorTopicOptions.AutoCreateTopics.Enabled {
		return
	}
	recs, err := l.store.Mirrors(l.cfg.Name)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	have := map[string]bool{}
	for _, m := range l.mirrors {
		have[m.name] = true
	}
	for _, rec := range recs {
		if have[rec.Name] || !rec.AutoCreated || !l.cfg.MirrorTopicOptions.AutoCreateTopics.Selects(rec.SourceTopic) {
			continue
		}
		m := newMirror(l, config.MirrorTopic{Name: rec.Name, SourceTopicName: rec.SourceTopic})
		m.auto = true
		l.mirrors = append(l.mirrors, m)
	}
}

// errNotControl: the link has no identity yet and another member creates
// it.
var errNotControl = errors.New("waiting for the member that runs the link's control duties to record the link")

// newFencingEpoch gives the partition's producer, in a klink cluster, the
// next epoch of a producer id bound to the destination partition: a stable
// transactional id per partition, whose InitProducerId bumps the epoch.
// Its batches are plain (idempotent, not transactional). Once this
// member's first append under the new epoch has landed, the broker refuses
// appends under any earlier epoch (INVALID_PRODUCER_EPOCH), so a member
// that lost the partition cannot write into it whatever its lease says.
// Measured on Kafka 3.8: before that first append lands, the partition has
// not heard of the new epoch and still takes the old one; the lease covers
// that window. The epoch is never bumped by klink itself (as a lone klink
// does), which would let two members reach the same epoch.
func (p *partition) newFencingEpoch(ctx context.Context) error {
	id := p.writerTxnID()
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &id
	req.TransactionTimeoutMillis = 60000
	var resp *kmsg.InitProducerIDResponse
	err := retryTxn(ctx, func() (int16, error) {
		r, err := req.RequestWith(ctx, p.m.link.dst.cl)
		if err != nil {
			return 0, err
		}
		resp = r
		return r.ErrorCode, nil
	})
	if err != nil {
		return fmt.Errorf("destination InitProducerId for %s: %w", id, err)
	}
	p.idem = &slot{producer: batch.Producer{ID: resp.ProducerID, Epoch: resp.ProducerEpoch}, ready: true}
	return nil
}

// writerTxnID is the partition's fencing producer: klink-<link id>-<topic>-
// <partition>w, outside the prefix of its transaction slots (see txnIDFor).
func (p *partition) writerTxnID() string {
	return fmt.Sprintf("klink-%s-%s-%dw", p.m.link.identity.ID, p.m.name, p.id)
}

// ClusterMember is what makes this daemon a member of the klink cluster
// its config names: the group on the destination cluster and the state
// the members share.
type ClusterMember struct {
	Group *membership.Group
	Store *linkstate.Topic
	cl    *kgo.Client
	r     atomic.Pointer[Replicator]
}

// JoinCluster connects to the destination cluster as a member of
// cfg.Cluster's group and reads the shared state (all of it, before it
// returns). The group joins when the replicator given to Serve runs.
func JoinCluster(ctx context.Context, cfg *config.Config, log *zap.Logger) (*ClusterMember, error) {
	sec, err := secure.New("destination", cfg.Destination.TLS, cfg.Destination.SASL, log)
	if err != nil {
		return nil, err
	}
	opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Destination.Bootstrap...), kgo.ClientID("klink-cluster"), kgo.WithLogger(kgoLogger{log.With(zap.String("cluster", "destination"))})}, sec.KgoOpts()...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("destination client: %w", err)
	}
	cm := &ClusterMember{cl: cl}
	host, _ := os.Hostname()
	member := cfg.Cluster.MemberName()
	session := cfg.Cluster.Session()
	cm.Group = membership.New(cl, membership.Config{
		Group: cfg.Cluster.Group, Member: member, Host: host, SessionTimeout: session,
		// An append lives at most a session timeout: its deadline
		// and TCP_USER_TIMEOUT (see Link.Run).
		AppendLifetime: session,
		ConfigHash:     cfg.Hash(),
		Units: func() []membership.Unit {
			if r := cm.r.Load(); r != nil {
				return r.Units()
			}
			return nil
		},
		Cannot: func() []string {
			if r := cm.r.Load(); r != nil {
				return r.Cannot()
			}
			return nil
		},
	}, log)
	cm.Store, err = linkstate.OpenTopic(ctx, cfg.StateDir, cfg.Cluster.Topic(), member, opts, cm.Group.LeaseValid, session, log)
	if err != nil {
		cl.Close()
		return nil, err
	}
	// A previous run of this member that stopped cleanly cannot still be
	// appending: this one need not wait for it. Recorded as running
	// before anything runs, so that a crash is never taken for a clean
	// stop.
	prev, ok := cm.Store.Member(member)
	if err := cm.Store.PutMember(linkstate.MemberRunning); err != nil {
		cm.Close()
		return nil, err
	}
	if ok && prev.State == linkstate.MemberLeft {
		cm.Group.SetLeftCleanly()
		log.Info("this member's previous run stopped cleanly: its units start without waiting for it", zap.Time("stopped", prev.At))
	}
	return cm, nil
}

// Serve makes r run what the group assigns this member.
func (cm *ClusterMember) Serve(r *Replicator) {
	cm.r.Store(r)
	r.UseCluster(cm.Group)
	r.leftCleanly = func() {
		if err := cm.Store.PutMember(linkstate.MemberLeft); err != nil {
			r.log.Warn("recording the clean stop failed; this member's next run waits for this one's appends", zap.Error(err))
		}
	}
	r.beat = func() {
		if err := cm.Store.PutMember(linkstate.MemberRunning); err != nil {
			r.log.Debug("recording that this member runs failed", zap.Error(err))
		}
	}
	r.seen = func(name string) (time.Time, bool) {
		rec, ok := cm.Store.Member(name)
		return rec.At, ok && rec.State == linkstate.MemberRunning
	}
}

// Close closes the shared state and the group's client (after the
// replicator stopped: it leaves the group then).
func (cm *ClusterMember) Close() {
	cm.Store.Close()
	cm.cl.Close()
}

// partUnit names a mirrored partition's data path, a unit of its own: the
// partitions of one mirror can run on different members.
func partUnit(link, mirror string, p int32) string {
	return fmt.Sprintf("part/%s/%s/%d", link, mirror, p)
}

// partitionCount is how many partitions the mirror has set up: those
// running here on a lone klink, those in the shared state in a cluster.
func (m *mirror) partitionCount() int {
	if m.link.group == nil {
		return len(m.partitionsSnapshot())
	}
	rec, err := m.link.store.GetMirror(m.link.cfg.Name, m.name)
	if err != nil {
		return 0
	}
	return len(rec.Partitions)
}

// releaseHold lets the mirror's partitions run again after a hold (a
// promote that found the source had moved on, a new owner of the mirror).
func (m *mirror) releaseHold(rec linkstate.Mirror) {
	if rec.Hold == 0 {
		return
	}
	if _, err := m.link.store.UpdateMirror(m.link.cfg.Name, m.name, func(r *linkstate.Mirror) error {
		r.Hold = 0
		return nil
	}); err != nil {
		m.log.Warn("releasing the hold on the mirror's partitions failed", zap.Error(err))
	}
}

// holdPartitions asks every member running one of the mirror's partitions
// to stop appending, and waits until each partition says it has stopped:
// what a promote or failover needs before it can say where the mirror
// stopped. It returns false if the desired state changed or ctx ended
// first. bounded (a failover: the source is gone, or must be left now)
// stops waiting once no member can still append without a lease: the
// session timeout and the append lifetime after the hold was written,
// plus the time a member takes to stop.
func (m *mirror) holdPartitions(ctx context.Context, bounded bool) bool {
	hold := time.Now().UnixNano()
	if _, err := m.link.store.UpdateMirror(m.link.cfg.Name, m.name, func(r *linkstate.Mirror) error {
		r.Hold = hold
		return nil
	}); err != nil {
		m.log.Warn("asking the members to hold the mirror's partitions failed", zap.Error(err))
	}
	g := m.link.group
	limit := time.Now().Add(g.SessionTimeout() + g.AppendLifetime() + 5*time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = m.link.store.Sync(sctx)
		cancel()
		rec, err := m.link.store.GetMirror(m.link.cfg.Name, m.name)
		waiting := 0
		for _, p := range rec.Partitions {
			if p == nil || p.HeldFor != hold {
				waiting++
			}
		}
		if err == nil && waiting == 0 {
			return true
		}
		if bounded && time.Now().After(limit) {
			m.log.Warn("members did not confirm they stopped the mirror's partitions; none can append any more without a lease", zap.Int("partitions", waiting))
			return true
		}
		m.setReason(fmt.Sprintf("waiting for the members running %d of its partitions to stop appending", waiting))
		var wake <-chan struct{}
		if !bounded {
			wake = m.wake // a promote gives way to a new desired state; a failover does not
		}
		select {
		case <-ctx.Done():
			return false
		case <-wake:
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// runnable: a mirror state in which its partitions run.
func runnable(s linkstate.MirrorState) bool {
	switch s {
	case linkstate.Active, linkstate.PendingStopped, linkstate.LinkFailed, linkstate.SourceUnavailable:
		return true
	}
	return false
}

// hostRun is one partition running on this member for its host mirror.
type hostRun struct {
	cancel   context.CancelFunc
	done     chan struct{}
	stopping bool
}

// hostStop is how a partition that ran here last stopped.
type hostStop struct {
	at      time.Time
	unclean bool // appends were left unanswered
}

// quiet reports whether nothing this member sent for the partition can
// still land: it stopped with every append answered, or an append
// lifetime ago.
func (s hostStop) quiet(lifetime time.Duration) bool {
	return !s.unclean || time.Since(s.at) > lifetime
}

// failPartition is a partition's fatal error on a host mirror: it records
// why in the partition's record, for the member running the mirror's
// control loop to fail the mirror (see followShared), and stops the
// mirror's partitions here.
func (h *mirror) failPartition(id int32, reason string) {
	countError(h.link.cfg.Name, "mirror_failed")
	h.log.Error("partition failed; the mirror fails", zap.Int32("partition", id), zap.String("reason", reason))
	if _, err := h.link.store.UpdateMirror(h.link.cfg.Name, h.name, func(r *linkstate.Mirror) error {
		if pr := r.Partitions[id]; pr != nil {
			pr.Failed = reason
		}
		return nil
	}); err != nil {
		h.log.Error("recording the partition's failure failed", zap.Error(err))
	}
	h.mu.Lock()
	cancel := h.cancel
	h.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// partitionFailure is why one of the mirror's partitions failed, if one
// did.
func partitionFailure(rec linkstate.Mirror) string {
	for _, id := range sortedPartitions(rec.Partitions) {
		if pr := rec.Partitions[id]; pr != nil && pr.Failed != "" {
			return fmt.Sprintf("partition %d: %s", id, pr.Failed)
		}
	}
	return ""
}

// host is the mirror object, separate from the one that runs the mirror's
// control loop, that runs the mirror's partitions assigned to this member
// (l.mu held).
func (l *Link) host(m *mirror) *mirror {
	if h := l.hosts[m.name]; h != nil {
		return h
	}
	h := newMirror(l, m.cfg)
	h.auto, h.isHost = m.auto, true
	h.hostRuns, h.hostGranted, h.hostStops = map[int32]*hostRun{}, map[int32]bool{}, map[int32]hostStop{}
	l.hosts[m.name] = h
	return h
}

// hostReconcile (ctx: the link's) runs the partitions of a mirror assigned to this member
// (now: may run; held: assigned, some waiting for a previous owner's
// lease) while the shared state lets them run: set up, in a running
// state, no hold. It stops the others, confirms a hold for partitions it
// does not run, and tells the group when a revoked partition has stopped.
func (l *Link) hostReconcile(ctx context.Context, h *mirror, now, held map[int32]bool, noStarts bool) {
	rec, err := l.store.GetMirror(l.cfg.Name, h.name)
	run := err == nil && rec.DestTopicID != "" && rec.Hold == 0 && runnable(rec.State) && partitionFailure(rec) == ""
	lifetime := l.group.AppendLifetime()
	h.mu.Lock()
	if h.hostCtx == nil || h.hostCtx.Err() != nil {
		h.hostCtx, h.cancel = context.WithCancel(ctx)
	}
	var release []int32
	for id := range h.hostGranted {
		if !held[id] && h.hostRuns[id] == nil {
			release = append(release, id)
			delete(h.hostGranted, id)
		}
	}
	for id := range held {
		h.hostGranted[id] = true
	}
	for id, hr := range h.hostRuns {
		if (!now[id] || !run) && !hr.stopping {
			hr.stopping = true
			hr.cancel()
		}
	}
	var ack []int32
	if err == nil && rec.Hold != 0 {
		for id := range now {
			if pr := rec.Partitions[id]; pr != nil && h.hostRuns[id] == nil && pr.HeldFor != rec.Hold && h.hostStops[id].quiet(lifetime) {
				ack = append(ack, id)
			}
		}
	}
	h.mu.Unlock()
	for _, id := range release {
		h.mu.Lock()
		clean := h.hostStops[id].quiet(lifetime)
		h.mu.Unlock()
		l.group.Released(partUnit(l.cfg.Name, h.name, id), clean)
	}
	if len(ack) > 0 {
		if _, err := l.store.UpdateMirror(l.cfg.Name, h.name, func(r *linkstate.Mirror) error {
			for _, id := range ack {
				if pr := r.Partitions[id]; pr != nil {
					pr.HeldFor = rec.Hold
				}
			}
			return nil
		}); err != nil {
			h.log.Warn("confirming a hold failed; retrying", zap.Error(err))
		}
	}
	if time.Since(h.lastFlush) > metadataEvery {
		h.lastFlush = time.Now()
		h.flushFills()
	}
	if !run || len(now) == 0 || noStarts {
		return
	}
	h.mu.Lock()
	starting := false
	for id := range now {
		starting = starting || h.hostRuns[id] == nil
	}
	h.mu.Unlock()
	if !starting {
		return
	}
	// What the previous owner of a partition wrote (its gap map, a hold)
	// is read before the partition starts here.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = l.store.Sync(sctx)
	cancel()
	if err != nil {
		h.log.Warn("reading the shared state before starting partitions failed; retrying", zap.Error(err))
		return
	}
	if rec, err = l.store.GetMirror(l.cfg.Name, h.name); err != nil || rec.Hold != 0 || !runnable(rec.State) || partitionFailure(rec) != "" {
		return
	}
	if !h.prepared {
		if err := h.prepareHost(ctx, rec); err != nil {
			h.log.Warn("preparing the mirror's partitions failed; retrying", zap.Error(err))
			return
		}
		h.prepared = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range now {
		pr := rec.Partitions[id]
		if pr == nil || h.hostRuns[id] != nil {
			continue
		}
		h.hostStart(id, pr.StartOffset)
	}
}

// hostStart runs one partition (h.mu held).
func (h *mirror) hostStart(id int32, startOffset int64) {
	ctx, cancel := context.WithCancel(h.hostCtx)
	hr := &hostRun{cancel: cancel, done: make(chan struct{})}
	delete(h.hostStops, id)
	h.hostRuns[id] = hr
	p := h.partitionAt(id, startOffset) // h.mu is held: listed here
	h.parts = append(h.parts, p)
	h.link.wg.Add(1)
	go func() {
		defer h.link.wg.Done()
		defer close(hr.done)
		p.run(ctx, func() {})
		h.flushFills()
		h.mu.Lock()
		h.hostStops[id] = hostStop{at: time.Now(), unclean: p.uncleanStop}
		delete(h.hostRuns, id)
		h.parts = slices.DeleteFunc(h.parts, func(x *partition) bool { return x == p })
		h.mu.Unlock()
	}()
}

// prepareHost learns what the mirror's owner set up: the topics' IDs
// (which the partitions check at each start) and the destination's
// max.message.bytes.
func (h *mirror) prepareHost(ctx context.Context, rec linkstate.Mirror) error {
	sm, err := h.link.src.topic(ctx, h.sourceTopic)
	if err != nil {
		return err
	}
	if id := topicIDString(sm.id); rec.SourceTopicID != "" && id != "" && id != rec.SourceTopicID {
		return fmt.Errorf("source topic %s has topic ID %s, the mirror was set up from %s", h.sourceTopic, id, rec.SourceTopicID)
	}
	dm, err := h.link.dst.topic(ctx, h.name)
	if err != nil {
		return err
	}
	if id := topicIDString(dm.id); id != "" && id != rec.DestTopicID {
		return fmt.Errorf("destination topic %s has topic ID %s, klink created %s", h.name, id, rec.DestTopicID)
	}
	h.sourceTopicID, h.destTopicID = sm.id, dm.id
	return h.loadMaxMessageBytes(ctx)
}

// stoppedCleanly reports, once every link has stopped, whether every
// append of every partition was answered (none gave up waiting).
func (r *Replicator) stoppedCleanly() bool {
	r.mu.Lock()
	links := slices.Clone(r.links)
	r.mu.Unlock()
	for _, l := range links {
		l.mu.Lock()
		ms := slices.Clone(l.mirrors)
		for _, h := range l.hosts {
			ms = append(ms, h)
		}
		l.mu.Unlock()
		for _, m := range ms {
			if m.unclean.Load() {
				return false
			}
		}
	}
	return true
}
