package replicator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/klink-io/klink/linkstate"
)

// A mirror's life is driven by the state the config asks for (desired)
// and the state it is in, through linkstate.Decide: run below sets the
// mirror up, then starts, pauses, resumes, promotes or fails it over,
// re-deciding whenever the desired state changes (a reload) or the mirror
// moves on by itself (caught up, failed).

// promoteCheckEvery is how often a promote checks whether the mirror has
// caught up; promotePatience, how long before its reason says why it is
// still waiting.
const (
	promoteCheckEvery = 250 * time.Millisecond
	promotePatience   = time.Minute
)

// setDesired changes what the config asks of the mirror.
func (m *mirror) setDesired(d linkstate.Desired) {
	m.mu.Lock()
	m.desired = d
	m.mu.Unlock()
	select {
	case <-m.done:
		m.decide() // nothing runs any more: just report a refusal
		return
	default:
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *mirror) current() (linkstate.MirrorState, linkstate.Desired, *linkstate.StopRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state, m.desired, m.stop
}

func (m *mirror) setRefusal(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	m.mu.Lock()
	changed := m.refusal != msg
	m.refusal = msg
	m.mu.Unlock()
	if changed && err != nil {
		m.log.Error("desired mirror state refused", zap.Error(err))
	}
}

// decide asks the state machine what to do now.
func (m *mirror) decide() linkstate.Action {
	cur, want, stop := m.current()
	var at time.Time
	if stop != nil {
		at = stop.At
	}
	act, err := linkstate.Decide(m.name, cur, want, at)
	m.setRefusal(err)
	return act
}

// running is a mirror's set of running partitions.
type running struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	notStarted map[int32]bool
}

// startPartitions starts mirroring every partition of rec. The mirror
// becomes ACTIVE once all have started, unless onStarted says otherwise.
func (m *mirror) startPartitions(ctx context.Context, rec linkstate.Mirror, onStarted func()) *running {
	r := &running{notStarted: map[int32]bool{}}
	r.ctx, r.cancel = context.WithCancel(ctx)
	m.mu.Lock()
	m.cancel = r.cancel
	m.parts = nil
	m.mu.Unlock()
	if m.link.group != nil {
		// The members the partitions are assigned to run them (see
		// hostReconcile), once no hold keeps them stopped.
		m.releaseHold(rec)
		onStarted()
		return r
	}
	for _, id := range sortedPartitions(rec.Partitions) {
		m.startPartition(r, id, rec.Partitions[id].StartOffset, onStarted)
	}
	return r
}

func (m *mirror) startPartition(r *running, id int32, startOffset int64, onStarted func()) {
	if m.link.group != nil {
		return // run by the member it is assigned to
	}
	p := m.newPartition(id, startOffset)
	r.mu.Lock()
	r.notStarted[id] = true
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		p.run(r.ctx, func() {
			r.mu.Lock()
			delete(r.notStarted, id)
			all := len(r.notStarted) == 0
			r.mu.Unlock()
			if all {
				onStarted()
			}
		})
	}()
}

// grow adds the partitions the source topic gained to the destination
// topic and the state file, and returns them, to be started.
func (m *mirror) grow(r *running) []int32 {
	added, err := m.growPartitions(r.ctx, m.partitionCount())
	if err != nil {
		m.log.Warn("checking the source partition count failed", zap.Error(err))
	}
	return added
}

// stop stops the partitions and waits until their appends are answered.
func (r *running) stop() {
	r.cancel()
	r.wg.Wait()
}

// run sets the mirror up, then keeps it in the state the config asks for
// until ctx ends, the mirror fails, or it stops for good.
func (m *mirror) run(ctx context.Context) {
	defer close(m.done)
	store, lname := m.link.store, m.link.cfg.Name
	if rec, err := store.GetMirror(lname, m.name); err == nil && rec.State == linkstate.Stopped {
		m.mu.Lock()
		m.state, m.reason, m.since, m.stop = rec.State, rec.Reason, rec.StateSince, rec.Stop
		m.mu.Unlock()
		m.decide() // reports a desired state that cannot be had
		return
	}
	rec, err := m.setupUntilReady(ctx)
	if err != nil {
		if errors.Is(err, errMirrorFailed) {
			m.waitForFailover(ctx)
		}
		return
	}

	var r *running
	onStarted := func() {
		if cur, _, _ := m.current(); cur != linkstate.PendingStopped {
			m.setState(linkstate.Active, "")
		}
	}
	stopParts := func() {
		if r != nil {
			r.stop()
			r = nil
			m.flushFills()
		}
	}
	tick := time.NewTicker(metadataEvery)
	defer tick.Stop()
	// The promote check ticks only while a promote waits: an idle klink
	// with thousands of mirrors must not wake four times a second each.
	promote := time.NewTicker(promoteCheckEvery)
	promote.Stop()
	defer promote.Stop()
	promoting := false
	var promoteSince time.Time
	for {
		act := m.decide()
		switch act {
		case linkstate.Pause:
			stopParts()
			m.setState(linkstate.Paused, "paused by the config")
		case linkstate.Resume:
			m.setState(linkstate.Active, "")
		case linkstate.Promote:
			m.setState(linkstate.PendingStopped, "promote: waiting for the mirror to catch up with the source")
			promoteSince = time.Now()
		case linkstate.Failover:
			stopParts()
			if m.link.group != nil && !m.holdPartitions(ctx, true) {
				return // ctx ended: the mirror's next owner fails it over
			}
			_, want, _ := m.current()
			m.stopFor(ctx, string(want))
			return
		}
		if s, why, change := m.healthState(); change {
			m.setState(s, why)
		}
		cur, _, _ := m.current()
		if cur == linkstate.Failed {
			stopParts()
			m.waitForFailover(ctx)
			return
		}
		if cur != linkstate.Paused && r == nil {
			if rec, err = store.GetMirror(lname, m.name); err != nil {
				m.log.Error("reading the mirror's state failed", zap.Error(err))
			} else {
				r = m.startPartitions(ctx, rec, onStarted)
			}
		}
		var failed <-chan struct{}
		if r != nil {
			failed = r.ctx.Done()
		}
		if want := cur == linkstate.PendingStopped; want != promoting {
			if promoting = want; want {
				promote.Reset(promoteCheckEvery)
			} else {
				promote.Stop()
			}
		}
		select {
		case <-ctx.Done():
			stopParts()
			return
		case <-m.wake:
			m.mu.Lock()
			grown := m.srcPartitions > len(m.parts)
			m.mu.Unlock()
			if grown && r != nil {
				for _, a := range m.grow(r) {
					m.startPartition(r, a, 0, onStarted)
				}
			}
		case <-failed:
			// A partition failed the mirror (fail cancels the
			// partitions); the next round sees FAILED.
		case <-tick.C:
			m.flushFills()
			// The link's source watch counts the source topic's
			// partitions (every few seconds, up to 30 s apart beyond
			// 2,000 mirrored partitions) and wakes the mirror when
			// they grow; the tick retries a growth that failed, and
			// asks nothing while there is none (a metadata request
			// per mirror every 30 s showed in an idle link's profile
			// at 50 mirrors).
			m.mu.Lock()
			grown := m.srcPartitions > len(m.parts)
			m.mu.Unlock()
			if grown && r != nil {
				for _, a := range m.grow(r) {
					m.startPartition(r, a, 0, onStarted)
				}
			}
		case <-promote.C:
			if cur != linkstate.PendingStopped {
				continue
			}
			behind, err := m.behind(ctx)
			if err != nil || behind > 0 {
				if time.Since(promoteSince) > promotePatience {
					why := fmt.Sprintf("promote: still %d records behind the source after %s; the source keeps receiving data: stop its producers, or use FAILOVER", behind, time.Since(promoteSince).Round(time.Second))
					if err != nil {
						why = fmt.Sprintf("promote: cannot compare with the source for %s (%v); a promote never loses data, so it waits", time.Since(promoteSince).Round(time.Second), err)
					}
					m.setReason(why)
				}
				continue
			}
			// Caught up: stop, then check again with nothing in
			// flight; if the source moved meanwhile, go on mirroring.
			stopParts()
			if m.link.group != nil && !m.holdPartitions(ctx, false) {
				continue // the desired state changed, or ctx ended
			}
			if behind, err := m.behind(ctx); err == nil && behind == 0 {
				if err := m.finalSyncRetrying(ctx); err != nil {
					continue // ctx ended, or the desired state changed
				}
				m.stopFor(ctx, string(linkstate.WantPromote))
				return
			}
		}
	}
}

// setupUntilReady runs setup until it succeeds, ctx ends, the mirror
// fails, or the config fails it over first (a mirror whose source topic
// never appeared, say).
func (m *mirror) setupUntilReady(ctx context.Context) (linkstate.Mirror, error) {
	retry := newBackoff(time.Second, 30*time.Second)
	for {
		rec, err := m.setup(ctx)
		if err == nil || errors.Is(err, errMirrorFailed) || ctx.Err() != nil {
			return rec, err
		}
		m.setReason(err.Error())
		m.log.Warn("mirror setup incomplete; retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return rec, ctx.Err()
		case <-m.wake:
			if m.decide() == linkstate.Failover {
				_, want, _ := m.current()
				m.stopFor(ctx, string(want))
				return rec, errStopped
			}
		case <-time.After(retry.next()):
		}
	}
}

var errStopped = errors.New("mirror stopped")

// waitForFailover keeps a FAILED mirror as it is until the config fails it
// over (or removes it): then it becomes STOPPED.
func (m *mirror) waitForFailover(ctx context.Context) {
	for {
		if m.decide() == linkstate.Failover {
			_, want, _ := m.current()
			m.stopFor(ctx, string(want))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		}
	}
}

// stopFor makes the mirror STOPPED for good, recording where each partition
// had been mirrored up to. Nothing of the mirror runs any more.
func (m *mirror) stopFor(ctx context.Context, by string) {
	offsets, err := m.lastSourceOffsets(ctx)
	if err != nil {
		m.log.Warn("reading where the mirror stopped failed; the stop is recorded without offsets", zap.Error(err))
	}
	stop := &linkstate.StopRecord{At: time.Now().UTC(), By: by, LastSourceOffsets: offsets}
	reason := map[string]string{
		string(linkstate.WantPromote):  "promoted: caught up with the source and stopped",
		string(linkstate.WantFailover): "failed over: stopped at once",
		string(linkstate.Removed):      "removed from the config: stopped, the destination topic stays",
	}[by]
	rec, err := m.link.store.UpdateMirror(m.link.cfg.Name, m.name, func(r *linkstate.Mirror) error {
		r.State, r.Reason, r.Stop = linkstate.Stopped, reason, stop
		return nil
	})
	if err != nil {
		m.log.Error("recording the stop failed", zap.Error(err))
		return
	}
	m.mu.Lock()
	m.state, m.reason, m.since, m.stop = rec.State, rec.Reason, rec.StateSince, rec.Stop
	m.mu.Unlock()
	m.log.Info("mirror STOPPED: its destination topic is an ordinary topic now", zap.String("by", by), zap.Any("lastSourceOffsets", offsets))
	if by == string(linkstate.Removed) && m.link.cfg.MirrorTopicOptions.DeleteOnRemove && m.link.dst != nil {
		// Only because the file says so (mirrorTopicOptions.deleteOnRemove).
		resp, err := m.link.dst.adm.DeleteTopics(ctx, m.name)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			m.log.Error("deleting the removed mirror's destination topic failed (deleteOnRemove)", zap.Error(err))
		} else {
			m.log.Warn("deleted the removed mirror's destination topic (mirrorTopicOptions.deleteOnRemove)")
		}
	}
}

// lastSourceOffsets reads, with no partition running, the source offset
// each destination partition holds everything below: its end offset less
// the partition's shift (see gapmap.go).
func (m *mirror) lastSourceOffsets(ctx context.Context) (map[int32]int64, error) {
	if err := m.link.store.Sync(ctx); err != nil {
		return nil, err // gap maps other members wrote
	}
	rec, err := m.link.store.GetMirror(m.link.cfg.Name, m.name)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	if m.link.dst == nil {
		return out, errors.New("destination not connected")
	}
	for id, pr := range rec.Partitions {
		end, err := m.link.dst.listOffset(ctx, m.name, id, offsetLatest)
		if err != nil {
			return out, err
		}
		out[id] = end - pr.Delta()
	}
	return out, nil
}

// behind is how many offsets the destination still misses to hold the
// source up to its high watermark, over all partitions (fresh offsets from
// both clusters).
func (m *mirror) behind(ctx context.Context) (int64, error) {
	mirrored, err := m.lastSourceOffsets(ctx)
	if err != nil {
		return 0, err
	}
	sm, err := m.link.src.topic(ctx, m.sourceTopic)
	if err != nil {
		return 0, err
	}
	var n int64
	for id := range int32(len(sm.partitions)) {
		srcEnd, err := m.link.src.listOffset(ctx, m.sourceTopic, id, offsetLatest)
		if err != nil {
			return 0, err
		}
		at, ok := mirrored[id]
		if !ok {
			// Added to the source and not mirrored yet: all of it is
			// missing (and the destination needs the partition).
			n += max(srcEnd, 1)
			continue
		}
		n += max(srcEnd-at, 0)
	}
	return n, nil
}

// setHealth is what the link's source watch saw: the source cluster down
// (why, or "") and the mirror's source topic missing, or its partition
// count. The control loop moves the mirror in and out of LINK_FAILED and
// SOURCE_UNAVAILABLE, and mirrors partitions added to the source.
func (m *mirror) setHealth(linkDown string, topicMissing bool, partitions int) {
	m.mu.Lock()
	changed := m.linkDown != linkDown || m.topicMissing != topicMissing || partitions > max(m.srcPartitions, len(m.parts))
	m.linkDown, m.topicMissing = linkDown, topicMissing
	m.srcPartitions = max(m.srcPartitions, partitions)
	m.mu.Unlock()
	if changed {
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

// healthState is the state the source's health calls for, given the
// state the mirror is in: only a mirror that mirrors (or should) moves
// between ACTIVE, LINK_FAILED and SOURCE_UNAVAILABLE.
func (m *mirror) healthState() (linkstate.MirrorState, string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.state {
	case linkstate.Active, linkstate.LinkFailed, linkstate.SourceUnavailable:
	default:
		return "", "", false
	}
	switch {
	case m.linkDown != "":
		return linkstate.LinkFailed, m.linkDown, m.state != linkstate.LinkFailed
	case m.topicMissing:
		return linkstate.SourceUnavailable, fmt.Sprintf("source topic %s does not exist; mirroring goes on if it comes back (a topic recreated under that name fails the mirror: its offsets are others)", m.sourceTopic), m.state != linkstate.SourceUnavailable
	}
	return linkstate.Active, "", m.state != linkstate.Active
}

// finalSyncRetrying runs finalSync, with nothing running, until it works
// (with a backoff: a refusal is not going to pass in 250 ms), the desired
// state changes, or ctx ends; a failure keeps the mirror PENDING_STOPPED
// with the reason.
func (m *mirror) finalSyncRetrying(ctx context.Context) error {
	retry := newBackoff(time.Second, 30*time.Second)
	for {
		err := m.finalSync(ctx)
		if err == nil {
			return nil
		}
		m.setReason(fmt.Sprintf("promote: caught up and stopped, but the last sync of offsets and configs failed (%v); retrying", err))
		m.log.Warn("promote: last sync failed; retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.wake:
			return errors.New("desired state changed")
		case <-time.After(retry.next()):
		}
	}
}

// finalSync is a promote's last copy of the mirror's consumer offsets (if
// the link syncs them) and topic configs, with nothing in flight: after
// it, the topic is on its own.
func (m *mirror) finalSync(ctx context.Context) error {
	m.link.syncMu.Lock() // after any periodic round in flight: this one is the last
	defer m.link.syncMu.Unlock()
	if on, _ := m.link.cfg.OffsetSync(); on {
		if st := m.link.syncOffsetsLocked(ctx, m); st.LastError != "" {
			return errors.New(st.LastError)
		}
	}
	return m.syncConfigs(ctx)
}

func (m *mirror) topicMissingLast() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.topicMissing
}
