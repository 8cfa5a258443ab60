// Package membership makes a klink daemon one member of a klink cluster.
// The members share the links through Kafka's classic group protocol on the
// destination cluster (protocol type "klink", static membership: a member's
// name is its group.instance.id), the way Kafka Connect workers share
// connectors: the coordinator picks a leader, the leader assigns the units
// of work (a link's control duties, a mirror topic), and each member runs
// what it was given.
//
// The replicator asks the group which units it may run (Assignment), and
// tells it when one it had to give up has stopped (Released). The group
// also keeps the member's lease (LeaseValid): appends are sent only while
// it holds, which is what keeps one writer per destination partition (see
// "Running a klink cluster" in the README for the timing argument).
package membership

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// ProtocolType is klink's group protocol type (Connect's is "connect"); a
// consumer group of the same id is refused by the coordinator.
const ProtocolType = "klink"

const protocolName = "klink-sticky"

// Config is what a member needs to join.
type Config struct {
	Group  string
	Member string // group.instance.id
	Host   string
	// SessionTimeout: the coordinator evicts a member it has not heard
	// from for this long.
	SessionTimeout time.Duration
	// AppendLifetime is the longest an append can live after it was
	// sent: the produce request's deadline (connections carry
	// TCP_USER_TIMEOUT of the same length).
	AppendLifetime time.Duration
	ConfigHash     string
	// LeftCleanly: this member's previous run stopped with every append
	// answered (the shared state says so), so this run need not wait for
	// it before its first appends.
	LeftCleanly bool
	// Units lists the work to share (called by the leader at each
	// assignment, on its own view: every member runs the same config).
	Units func() []Unit
	// Cannot lists what this member cannot run now (see Unit.Needs);
	// nil: everything.
	Cannot func() []string
}

// Group is this daemon's membership. Its methods are safe for concurrent
// use.
type Group struct {
	cfg     Config
	cl      *kgo.Client
	log     *zap.Logger
	started time.Time
	since   string

	changed chan struct{} // the assignment changed (capacity 1)
	rejoin  chan struct{} // join again: a release to report, units changed

	mu          sync.Mutex
	memberID    string
	generation  int32
	joining     bool      // a JoinGroup/SyncGroup round is under way
	leaving     bool      // stopping: see Leaving
	leaseUntil  time.Time // monotonic; zero: no lease
	lastBeat    time.Time
	grants      map[string]time.Time // unit -> may start appending from (monotonic)
	holding     map[string]bool      // granted, or revoked and still stopping
	released    []string             // stopped cleanly, not yet reported in an assignment round
	sent        []string             // released units the round under way reported
	dirty       map[string]time.Time // units stopped with appends unanswered, when
	incarnation string
	view        assignment // the last assignment received
	refused     string
	lastErr     string
	rebalances  int
	moved       int
	fenceWait   time.Duration
}

// New prepares a member; Run joins.
func New(cl *kgo.Client, cfg Config, log *zap.Logger) *Group {
	now := time.Now()
	return &Group{
		cfg:         cfg,
		cl:          cl,
		log:         log.With(zap.String("group", cfg.Group), zap.String("member", cfg.Member)),
		started:     now,
		since:       now.UTC().Format(time.RFC3339),
		changed:     make(chan struct{}, 1),
		rejoin:      make(chan struct{}, 1),
		grants:      map[string]time.Time{},
		holding:     map[string]bool{},
		dirty:       map[string]time.Time{},
		incarnation: randomID(),
	}
}

// margin is how much earlier than the coordinator a member gives up its
// lease: the heartbeat's way to the coordinator, and clocks that run at
// slightly different rates.
func (g *Group) margin() time.Duration { return max(g.cfg.SessionTimeout/5, time.Second) }

func (g *Group) heartbeatEvery() time.Duration {
	return max(g.cfg.SessionTimeout/5, 200*time.Millisecond)
}

// rebalanceTimeout bounds how long the coordinator waits for members to
// join again. Members keep running their units meanwhile (cooperative), so
// it only has to cover a heartbeat interval and the way there.
func (g *Group) rebalanceTimeout() time.Duration { return max(3*g.cfg.SessionTimeout, 30*time.Second) }

// SessionTimeout is the group's session timeout (Config).
func (g *Group) SessionTimeout() time.Duration { return g.cfg.SessionTimeout }

// AppendLifetime is the longest an append may live (Config).
func (g *Group) AppendLifetime() time.Duration { return g.cfg.AppendLifetime }

// Owner names the member that runs unit, as of the last assignment ("":
// none, or being released).
func (g *Group) Owner(unit string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.view.Owners[unit]
}

// Changed is signalled when the assignment changes (or the lease ends).
func (g *Group) Changed() <-chan struct{} { return g.changed }

func (g *Group) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// LeaseValid reports whether this member may send appends now: the
// coordinator heard from it less than the session timeout minus the margin
// ago, measured from when the heartbeat was sent, on the monotonic clock.
func (g *Group) LeaseValid() bool {
	g.mu.Lock()
	until := g.leaseUntil
	g.mu.Unlock()
	return time.Now().Before(until)
}

// renew extends the lease after an answer from the coordinator to a
// request sent at sent.
func (g *Group) renew(sent time.Time) {
	g.mu.Lock()
	if u := sent.Add(g.cfg.SessionTimeout - g.margin()); u.After(g.leaseUntil) {
		g.leaseUntil = u
	}
	g.lastBeat = time.Now()
	g.mu.Unlock()
}

// Assignment returns the units this member may run now, each with the
// time from which it may append (monotonic; in the past for most).
func (g *Group) Assignment() map[string]time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !time.Now().Before(g.leaseUntil) {
		if len(g.grants) > 0 {
			// The lease ended: every grant goes, for good (a lease
			// renewed later does not bring them back; the member joins
			// again).
			g.dropGrants()
		}
		return nil
	}
	out := make(map[string]time.Time, len(g.grants))
	for u, t := range g.grants {
		out[u] = t
	}
	return out
}

// Released tells the group a unit it no longer grants has stopped. clean:
// every append it sent was answered. The member joins again so that the
// unit can be given on. A unit granted again meanwhile is not released: it
// is this member's still, and the replicator starts it again.
func (g *Group) Released(unit string, clean bool) {
	g.mu.Lock()
	if _, granted := g.grants[unit]; granted || !g.holding[unit] {
		g.mu.Unlock()
		return
	}
	delete(g.holding, unit)
	if clean {
		g.released = append(g.released, unit)
	} else {
		g.dirty[unit] = time.Now()
	}
	g.mu.Unlock()
	g.signal(g.rejoin)
}

// Sweep releases every unit this member holds that it neither has granted
// nor runs (active: running or still stopping): a revocation the
// replicator did not see (its link not running yet, say) is released all
// the same.
func (g *Group) Sweep(active map[string]bool) {
	g.mu.Lock()
	var free []string
	for u := range g.holding {
		if _, granted := g.grants[u]; !granted && !active[u] {
			free = append(free, u)
		}
	}
	g.mu.Unlock()
	for _, u := range free {
		g.Released(u, true)
	}
}

// SetConfigHash changes the hash of this member's config (a reload) and
// joins again, so that the leader compares it.
func (g *Group) SetConfigHash(h string) {
	g.mu.Lock()
	changed := g.cfg.ConfigHash != h
	g.cfg.ConfigHash = h
	g.mu.Unlock()
	if changed {
		g.signal(g.rejoin)
	}
}

// UnitsChanged makes the member join again, so that the leader assigns the
// units as they are now (a reload, a mirror auto-created).
func (g *Group) UnitsChanged() { g.signal(g.rejoin) }

// Run is the member's life in the group until ctx ends: join, take the
// assignment, heartbeat, join again when the group or the units change.
// The caller stops every unit before it ends ctx; Run then leaves the group
// so that the others take over at once.
func (g *Group) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		g.heartbeats(ctx)
	}()
	go func() {
		defer wg.Done()
		g.watchLease(ctx)
	}()
	retry := time.Second
	for ctx.Err() == nil {
		// Reasons to join noted before now are served by this round.
		select {
		case <-g.rejoin:
		default:
		}
		g.mu.Lock()
		g.joining = true
		g.mu.Unlock()
		err := g.joinAndSync(ctx)
		g.mu.Lock()
		g.joining = false
		g.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			g.setErr(err)
			g.log.Warn("joining the klink cluster failed; retrying", zap.Error(err), zap.Duration("backoff", retry))
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
			retry = min(2*retry, 10*time.Second)
			continue
		}
		retry = time.Second
		g.setErr(nil)
		select {
		case <-ctx.Done():
		case <-g.rejoin:
		}
	}
	wg.Wait()
	g.mu.Lock()
	leaving := g.leaving
	g.mu.Unlock()
	if leaving {
		// One last round, so that the leader hands this member's units
		// on as released, without the wait for a lease.
		fctx, cancel := context.WithTimeout(context.Background(), min(g.cfg.SessionTimeout, 8*time.Second))
		if err := g.joinAndSync(fctx); err != nil {
			g.log.Info("last round before leaving failed; the others wait for this member's lease", zap.Error(err))
		} else {
			// The others' SyncGroup may still be on its way (a member
			// under load is slower than the leader). LeaveGroup now would
			// start the next round first: the coordinator answers their
			// SyncGroup with REBALANCE_IN_PROGRESS, they never see the
			// clean grants of the last round, and a new leader that did
			// not see them either makes the next owners wait a lease.
			// Seen in CI: staying a heartbeat interval longer closes that.
			time.Sleep(g.heartbeatEvery())
		}
		cancel()
	}
	g.leave()
}

// Leaving tells the group, once every unit has stopped, that this member
// is stopping: before it leaves, it joins once more saying so, owning
// nothing, with everything it held released if clean (every append
// answered), so that the others take its units over at once.
func (g *Group) Leaving(clean bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.leaving = true
	g.grants = map[string]time.Time{}
	for u := range g.holding {
		if clean {
			g.released = append(g.released, u)
		}
		delete(g.holding, u)
	}
}

func (g *Group) setErr(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil {
		g.lastErr = ""
		return
	}
	g.lastErr = err.Error()
}

// heartbeats keeps the session and the lease. An answer of
// REBALANCE_IN_PROGRESS renews the session as well (the coordinator resets
// the member's timer), and says to join again.
func (g *Group) heartbeats(ctx context.Context) {
	t := time.NewTicker(g.heartbeatEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.mu.Lock()
		id, gen := g.memberID, g.generation
		g.mu.Unlock()
		if id == "" || gen < 0 {
			continue
		}
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.MemberID, req.Generation = g.cfg.Group, id, gen
		req.InstanceID = &g.cfg.Member
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, g.heartbeatEvery()*2)
		resp, err := req.RequestWith(rctx, g.cl)
		cancel()
		if err != nil {
			continue // the lease runs out by itself if this goes on
		}
		g.mu.Lock()
		stale := g.joining || g.generation != gen
		g.mu.Unlock()
		switch err := kerr.ErrorForCode(resp.ErrorCode); {
		case stale && (errors.Is(err, kerr.RebalanceInProgress) || errors.Is(err, kerr.IllegalGeneration)):
			// Answered about a round this member is in, or has
			// finished, already. While its JoinGroup waits, the
			// coordinator keeps it (and renewed its session).
			g.mu.Lock()
			joining := g.joining
			g.mu.Unlock()
			if joining && errors.Is(err, kerr.RebalanceInProgress) {
				g.renew(sent)
			}
		case err == nil:
			g.renew(sent)
		case errors.Is(err, kerr.RebalanceInProgress):
			// Not renewed: a member that does not join again within
			// the rebalance timeout is removed whatever its session.
			g.signal(g.rejoin)
		case errors.Is(err, kerr.FencedInstanceID):
			g.setErr(fmt.Errorf("another klink joined as member %q: member names must differ", g.cfg.Member))
			g.log.Error("another process uses this member name; this one owns nothing until it can join again", zap.Error(err))
			g.mu.Lock()
			g.leaseUntil = time.Time{}
			g.dropGrants()
			g.mu.Unlock()
			g.dropMembership()
		default:
			g.log.Info("heartbeat refused; joining again", zap.Error(err))
			if errors.Is(err, kerr.UnknownMemberID) {
				g.dropMembership()
			}
			g.signal(g.rejoin)
		}
	}
}

func (g *Group) dropMembership() {
	g.mu.Lock()
	g.memberID, g.generation = "", -1
	g.mu.Unlock()
}

// watchLease gives up every grant the moment the lease ends, so that the
// replicator stops appending even if nothing else happens.
func (g *Group) watchLease(ctx context.Context) {
	t := time.NewTicker(min(g.heartbeatEvery()/4, 250*time.Millisecond))
	defer t.Stop()
	had := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		valid := g.LeaseValid()
		if had && !valid {
			g.log.Warn("lease ended: the coordinator has not answered for the session timeout less the margin; stopping every append", zap.Duration("sessionTimeout", g.cfg.SessionTimeout))
			g.mu.Lock()
			g.dropGrants()
			g.mu.Unlock()
		}
		had = valid
	}
}

func (g *Group) metadata() []byte {
	var cannot []string
	if g.cfg.Cannot != nil {
		cannot = g.cfg.Cannot()
	}
	g.mu.Lock()
	m := memberMeta{Version: metaVersion, Name: g.cfg.Member, Host: g.cfg.Host, Since: g.since, Hash: g.cfg.ConfigHash, Released: slices.Clone(g.released), Leaving: g.leaving, Incarnation: g.incarnation}
	g.sent = m.Released
	m.Cannot = cannot
	for u, at := range g.dirty {
		if time.Since(at) > g.cfg.AppendLifetime {
			delete(g.dirty, u)
			continue
		}
		m.Dirty = append(m.Dirty, u)
	}
	for u := range g.holding {
		m.Owned = append(m.Owned, u)
	}
	g.mu.Unlock()
	sort.Strings(m.Owned)
	raw, _ := json.Marshal(m)
	return raw
}

// joinAndSync runs one rebalance round: JoinGroup, the leader's assignment,
// SyncGroup, and applies what this member was given.
func (g *Group) joinAndSync(ctx context.Context) error {
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group = g.cfg.Group
	join.SessionTimeoutMillis = int32(g.cfg.SessionTimeout / time.Millisecond)
	join.RebalanceTimeoutMillis = int32(g.rebalanceTimeout() / time.Millisecond)
	join.InstanceID = &g.cfg.Member
	join.ProtocolType = ProtocolType
	reason := "klink member joins"
	join.Reason = &reason
	var resp *kmsg.JoinGroupResponse
	for {
		g.mu.Lock()
		join.MemberID = g.memberID
		g.mu.Unlock()
		join.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: protocolName, Metadata: g.metadata()}}
		var err error
		resp, err = join.RequestWith(ctx, g.cl)
		if err != nil {
			return fmt.Errorf("JoinGroup %s: %w", g.cfg.Group, err)
		}
		err = kerr.ErrorForCode(resp.ErrorCode)
		switch {
		case err == nil:
		case errors.Is(err, kerr.MemberIDRequired):
			g.mu.Lock()
			g.memberID = resp.MemberID
			g.mu.Unlock()
			continue
		case errors.Is(err, kerr.UnknownMemberID):
			g.dropMembership()
			continue
		case errors.Is(err, kerr.InconsistentGroupProtocol):
			return fmt.Errorf("JoinGroup %s: %w: a group of that id exists with another protocol (a consumer group?): give cluster.group another name", g.cfg.Group, err)
		default:
			return fmt.Errorf("JoinGroup %s: %w", g.cfg.Group, err)
		}
		break
	}
	g.mu.Lock()
	g.memberID, g.generation = resp.MemberID, resp.Generation
	g.mu.Unlock()

	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.Generation, sync.MemberID = g.cfg.Group, resp.Generation, resp.MemberID
	sync.InstanceID = &g.cfg.Member
	pt, pn := ProtocolType, protocolName
	sync.ProtocolType, sync.Protocol = &pt, &pn
	if resp.LeaderID == resp.MemberID && !resp.SkipAssignment {
		plans, err := g.plan(resp)
		if err != nil {
			return err
		}
		for id, a := range plans {
			raw, _ := json.Marshal(a)
			sync.GroupAssignment = append(sync.GroupAssignment, kmsg.SyncGroupRequestGroupAssignment{MemberID: id, MemberAssignment: raw})
		}
	}
	sent := time.Now()
	sresp, err := sync.RequestWith(ctx, g.cl)
	if err != nil {
		return fmt.Errorf("SyncGroup %s: %w", g.cfg.Group, err)
	}
	if err := kerr.ErrorForCode(sresp.ErrorCode); err != nil {
		if errors.Is(err, kerr.UnknownMemberID) {
			g.dropMembership()
		}
		if errors.Is(err, kerr.RebalanceInProgress) || errors.Is(err, kerr.IllegalGeneration) || errors.Is(err, kerr.UnknownMemberID) {
			g.signal(g.rejoin)
			return nil
		}
		return fmt.Errorf("SyncGroup %s: %w", g.cfg.Group, err)
	}
	g.renew(sent)
	var a assignment
	if len(sresp.MemberAssignment) > 0 {
		if err := json.Unmarshal(sresp.MemberAssignment, &a); err != nil {
			return fmt.Errorf("assignment from the leader %s: %w", resp.LeaderID, err)
		}
	}
	g.apply(a)
	return nil
}

// plan is the leader's assignment for the members that joined.
func (g *Group) plan(resp *kmsg.JoinGroupResponse) (map[string]assignment, error) {
	var members []joined
	var leader joined
	for _, m := range resp.Members {
		var meta memberMeta
		if err := json.Unmarshal(m.ProtocolMetadata, &meta); err != nil {
			meta = memberMeta{Version: -1, Name: m.MemberID}
		}
		if meta.Name == "" {
			meta.Name = m.MemberID
		}
		j := joined{id: m.MemberID, meta: meta}
		members = append(members, j)
		if m.MemberID == resp.MemberID {
			leader = j
		}
	}
	g.mu.Lock()
	last := g.view
	g.mu.Unlock()
	out := assign(resp.Generation, leader, members, g.cfg.Units(), last)
	prev := last.Owners
	moved := 0
	for _, a := range out {
		for _, gr := range a.Grants {
			if owner, ok := prev[gr.Unit]; ok && owner != "" && owner != a.Owners[gr.Unit] {
				moved++
			}
		}
		break // every member gets the same Owners
	}
	unitsMoved.Add(float64(moved))
	return out, nil
}

// apply takes the assignment this member was given. Units no longer
// granted are revoked (the replicator stops them and calls Released);
// new units may append from now, or, when their previous owner did not
// release them, once any lease it may hold has ended and its appends have
// died (AppendLifetime from now, the coordinator having evicted it a
// session timeout after it was last heard). A member that just started
// waits that long for every unit, unless its previous run is known to have
// stopped cleanly: that run may have appended until it died.
func (g *Group) apply(a assignment) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rebalances++
	rebalances.Inc()
	g.view = a
	g.refused = a.Refused
	// The releases this round reported are told; later ones wait for
	// the next round.
	g.released = slices.DeleteFunc(g.released, func(u string) bool { return slices.Contains(g.sent, u) })
	g.sent = nil
	next := map[string]time.Time{}
	for _, gr := range a.Grants {
		if at, ok := g.grants[gr.Unit]; ok {
			next[gr.Unit] = at
			continue
		}
		at := now
		if !gr.Clean {
			at = now.Add(g.cfg.AppendLifetime)
		}
		if fresh := g.started.Add(g.cfg.AppendLifetime); at.Before(fresh) && !g.cfg.LeftCleanly {
			at = fresh
		}
		if w := at.Sub(now); w > 0 {
			g.fenceWait += w
			fenceWait.Add(w.Seconds())
		}
		next[gr.Unit] = at
		g.holding[gr.Unit] = true
	}
	g.grants = next
	members.Set(float64(len(a.Members)))
	waiting, longest := 0, time.Duration(0)
	for _, at := range next {
		if w := at.Sub(now); w > 0 {
			waiting++
			longest = max(longest, w)
		}
	}
	g.log.Info("klink cluster assignment", zap.Int32("generation", a.Generation), zap.String("leader", a.Leader), zap.Int("members", len(a.Members)),
		zap.Int("units", len(next)), zap.Int("waiting", waiting), zap.Duration("longestWait", longest), zap.String("refused", a.Refused))
	g.signal(g.changed)
}

// leave tells the coordinator this member is gone, so that its units are
// given on at once instead of after the session timeout.
func (g *Group) leave() {
	g.mu.Lock()
	id := g.memberID
	g.mu.Unlock()
	if id == "" {
		return
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = g.cfg.Group
	req.MemberID = id
	reason := "klink member stops"
	req.Members = []kmsg.LeaveGroupRequestMember{{MemberID: id, InstanceID: &g.cfg.Member, Reason: &reason}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := req.RequestWith(ctx, g.cl); err != nil {
		g.log.Info("leaving the klink cluster failed; the others take over after the session timeout", zap.Error(err))
	}
}

// Status is the member's view of the cluster.
type Status struct {
	Group         string            `json:"group"`
	Member        string            `json:"member"`
	MemberID      string            `json:"memberID,omitempty"`
	Generation    int32             `json:"generation"`
	Leader        string            `json:"leader,omitempty"`
	ConfigHash    string            `json:"configHash"`
	LeaseValid    bool              `json:"leaseValid"`
	LastHeartbeat *time.Time        `json:"lastHeartbeat,omitempty"`
	Members       []MemberInfo      `json:"members"`
	Owners        map[string]string `json:"owners"`
	Owned         []string          `json:"owned"`
	// Waiting are units granted whose previous owner's lease may still
	// hold: this member appends to them from the time given.
	Waiting    map[string]time.Time `json:"waiting,omitempty"`
	Refused    string               `json:"refused,omitempty"`
	Error      string               `json:"error,omitempty"`
	Rebalances int                  `json:"rebalances"`
	FenceWait  string               `json:"fencingWaited"`
}

// Status reports the member and the cluster as of the last assignment.
func (g *Group) Status() Status {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	s := Status{Group: g.cfg.Group, Member: g.cfg.Member, MemberID: g.memberID, Generation: g.generation, Leader: g.view.Leader,
		ConfigHash: g.cfg.ConfigHash, LeaseValid: now.Before(g.leaseUntil), Members: g.view.Members, Owners: g.view.Owners,
		Refused: g.refused, Error: g.lastErr, Rebalances: g.rebalances, FenceWait: g.fenceWait.Round(time.Millisecond).String(), Owned: []string{}}
	if !g.lastBeat.IsZero() {
		t := g.lastBeat.UTC()
		s.LastHeartbeat = &t
	}
	for u, at := range g.grants {
		s.Owned = append(s.Owned, u)
		if at.After(now) {
			if s.Waiting == nil {
				s.Waiting = map[string]time.Time{}
			}
			s.Waiting[u] = time.Now().UTC().Add(at.Sub(now))
		}
	}
	sort.Strings(s.Owned)
	return s
}

var (
	members = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "klink_cluster_members",
		Help: "Members of the klink cluster in the last assignment this member received.",
	})
	rebalances = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "klink_cluster_rebalances_total",
		Help: "Assignments this member received.",
	})
	unitsMoved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "klink_cluster_units_moved_total",
		Help: "Units (mirror topics, link duties) given to another member, counted by the leader that moved them.",
	})
	fenceWait = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "klink_cluster_fencing_wait_seconds_total",
		Help: "Time units waited before their first append, because their previous owner's lease might still have held.",
	})
)

// Collectors are the group's instruments, to register once per process.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{members, rebalances, unitsMoved, fenceWait}
}

// SetLeftCleanly says this member's previous run stopped cleanly (see
// Config.LeftCleanly); call before Run.
func (g *Group) SetLeftCleanly() {
	g.mu.Lock()
	g.cfg.LeftCleanly = true
	g.mu.Unlock()
}

// dropGrants gives up every grant after the lease ended (g.mu held): the
// replicator stops every unit, and the member joins again.
func (g *Group) dropGrants() {
	g.grants = map[string]time.Time{}
	g.signal(g.changed)
	g.signal(g.rejoin)
}

func randomID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}
