package replicator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/linkstate"
)

// Consumer-group offsets copy exactly because offsets are the same on both
// sides: a committed source offset is the destination offset of the same
// record (through the gap map where a partition had to shift). Each copied
// offset is clamped to the mirror's end, so a consumer that starts on the
// destination after a failover never skips records not mirrored yet; and an
// offset the source moved backwards (a reset) moves back on the
// destination too. A group with members on the destination is never
// written to.

// SyncStatus is one kind of sync's last round, shown in /status.
type SyncStatus struct {
	LastSync  time.Time `json:"lastSync,omitzero"`
	LastError string    `json:"lastError,omitempty"`
	// Synced counts what the last round found in step or brought in step
	// (groups, or mirror topics' configs).
	Synced int `json:"synced"`
	// SkippedActive lists groups left alone because they have members on
	// the destination.
	SkippedActive []string `json:"skippedActive,omitempty"`
	// SkippedUnauthorized lists groups klink is not allowed to read on the
	// source or write on the destination.
	SkippedUnauthorized []string `json:"skippedUnauthorized,omitempty"`
}

// syncLoop runs one kind of sync every interval until ctx ends.
func (l *Link) syncLoop(ctx context.Context, kind string, every time.Duration, round func(context.Context) SyncStatus, set func(SyncStatus)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		st := round(ctx)
		if ctx.Err() != nil {
			return
		}
		if st.LastError != "" {
			countError(l.cfg.Name, "sync_"+kind)
		}
		set(st)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncOffsets copies the committed offsets of the selected source groups
// for the mirrors' source topics to the destination.
func (l *Link) syncOffsets(ctx context.Context) SyncStatus {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	return l.syncOffsetsLocked(ctx, nil)
}

// syncOffsetsLocked is syncOffsets with l.syncMu held. With only set, it
// copies for that mirror alone (a promote's last sync).
func (l *Link) syncOffsetsLocked(ctx context.Context, only *mirror) SyncStatus {
	st := SyncStatus{LastSync: time.Now().UTC()}
	fail := func(err error) SyncStatus {
		st.LastError = err.Error()
		l.log.Warn("consumer offset sync failed; will retry", zap.Error(err))
		return st
	}
	l.mu.Lock()
	ms := slices.Clone(l.mirrors)
	l.mu.Unlock()
	bySource := map[string][]*mirror{}
	for _, m := range ms {
		cur, _, _ := m.current()
		switch {
		case only != nil && m != only:
		case only == nil && cur != linkstate.Active && cur != linkstate.Paused && cur != linkstate.PendingStopped && cur != linkstate.LinkFailed && cur != linkstate.SourceUnavailable:
		default:
			bySource[m.sourceTopic] = append(bySource[m.sourceTopic], m)
		}
	}
	if len(bySource) == 0 {
		return st
	}
	listed, err := l.src.adm.ListGroups(ctx)
	if err != nil {
		return fail(fmt.Errorf("listing source groups: %w", err))
	}
	targets := newOffsetTargets(l)
	var errs []error
	for _, g := range listed.Groups() {
		if !l.cfg.SelectsGroup(g) {
			continue
		}
		synced, active, err := l.syncGroup(ctx, g, bySource, targets)
		switch {
		case errors.Is(err, kerr.GroupAuthorizationFailed) || errors.Is(err, kerr.TopicAuthorizationFailed):
			// klink may not read (or write) this group: it is the
			// filters' business, not a failed round.
			st.SkippedUnauthorized = append(st.SkippedUnauthorized, g)
		case err != nil:
			errs = append(errs, fmt.Errorf("group %s: %w", g, err))
		case active:
			st.SkippedActive = append(st.SkippedActive, g)
		case synced:
			st.Synced++
		}
	}
	sort.Strings(st.SkippedActive)
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	return st
}

// offsetTargets caches, for one round, each mirror partition's destination
// end offset and gap map.
type offsetTargets struct {
	l    *Link
	ends map[string]map[int32]int64
	recs map[string]linkstate.Mirror
}

func newOffsetTargets(l *Link) *offsetTargets {
	return &offsetTargets{l: l, ends: map[string]map[int32]int64{}, recs: map[string]linkstate.Mirror{}}
}

// target is where source offset at of a partition goes on the mirror:
// translated through the gap map, clamped to the mirror's end.
func (o *offsetTargets) target(ctx context.Context, m *mirror, p int32, at int64) (int64, bool, error) {
	rec, ok := o.recs[m.name]
	if !ok {
		var err error
		if rec, err = o.l.store.GetMirror(o.l.cfg.Name, m.name); err != nil {
			return 0, false, err
		}
		o.recs[m.name] = rec
	}
	pr, ok := rec.Partitions[p]
	if !ok {
		return 0, false, nil // a partition not mirrored (yet)
	}
	ends, ok := o.ends[m.name]
	if !ok {
		listed, err := o.l.dst.adm.ListEndOffsets(ctx, m.name)
		if err == nil {
			err = listed.Error()
		}
		if err != nil {
			return 0, false, fmt.Errorf("destination end offsets of %s: %w", m.name, err)
		}
		ends = map[int32]int64{}
		listed.Each(func(lo kadm.ListedOffset) { ends[lo.Partition] = lo.Offset })
		o.ends[m.name] = ends
	}
	end, ok := ends[p]
	if !ok {
		return 0, false, nil
	}
	return min(pr.Translate(at), end), true, nil
}

// syncGroup copies one group's offsets. It reports whether the group is in
// step now, or was left alone because it is active on the destination.
func (l *Link) syncGroup(ctx context.Context, group string, bySource map[string][]*mirror, targets *offsetTargets) (synced, active bool, err error) {
	srcOffs, err := l.src.adm.FetchOffsets(ctx, group)
	if err != nil {
		return false, false, fmt.Errorf("source offsets: %w", err)
	}
	want := kadm.Offsets{}
	srcOffs.Each(func(o kadm.OffsetResponse) {
		if o.Err != nil || o.At < 0 {
			return
		}
		for _, m := range bySource[o.Topic] {
			at, ok, terr := targets.target(ctx, m, o.Partition, o.At)
			if terr != nil {
				err = terr
				return
			}
			if ok {
				want.Add(kadm.Offset{Topic: m.name, Partition: o.Partition, At: at, LeaderEpoch: -1, Metadata: o.Metadata})
			}
		}
	})
	if err != nil || len(want) == 0 {
		return false, false, err
	}
	dg, err := l.dst.adm.DescribeGroups(ctx, group)
	if err != nil {
		return false, false, fmt.Errorf("describing the destination group: %w", err)
	}
	if d, ok := dg[group]; ok && d.Err == nil && len(d.Members) > 0 {
		return false, true, nil // never write under a running consumer
	}
	cur, err := l.dst.adm.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		cur, err = nil, nil // nothing committed there yet
	}
	if err != nil {
		return false, false, fmt.Errorf("destination offsets: %w", err)
	}
	change := kadm.Offsets{}
	want.Each(func(o kadm.Offset) {
		if c, ok := cur.Lookup(o.Topic, o.Partition); !ok || c.Err != nil || c.At != o.At || c.Metadata != o.Metadata {
			change.Add(o)
		}
	})
	if len(change) == 0 {
		return true, false, nil
	}
	resp, err := l.dst.adm.CommitOffsets(ctx, group, change)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return false, false, fmt.Errorf("committing on the destination: %w", err)
	}
	l.log.Debug("consumer offsets copied", zap.String("group", group), zap.Int("partitions", len(change)))
	return true, false, nil
}

// syncConfigs applies the source topic configs to every mirror that is not
// stopped (see mirror.syncConfigs).
func (l *Link) syncConfigs(ctx context.Context) SyncStatus {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	st := SyncStatus{LastSync: time.Now().UTC()}
	l.mu.Lock()
	ms := slices.Clone(l.mirrors)
	l.mu.Unlock()
	var errs []error
	for _, m := range ms {
		switch cur, _, _ := m.current(); cur {
		case linkstate.Active, linkstate.Paused, linkstate.PendingStopped:
			if err := m.syncConfigs(ctx); err != nil {
				errs = append(errs, err)
				continue
			}
			st.Synced++
		}
	}
	if err := errors.Join(errs...); err != nil {
		st.LastError = err.Error()
		l.log.Warn("topic config sync failed; will retry", zap.Error(err))
	}
	return st
}

// syncConfigs brings the destination topic's dynamic configs in line with
// what a new mirror would be created with now (the source's, less the
// configs that stay local, plus klink's own and the mirror's overrides):
// changed and new ones are set, ones the source dropped are removed.
func (m *mirror) syncConfigs(ctx context.Context) error {
	want, err := m.desiredConfigs(ctx, false)
	if err != nil {
		return err
	}
	cfs, err := describeTopicConfigs(ctx, m.link.dst, m.name)
	if err != nil {
		return err
	}
	have := map[string]string{}
	for _, c := range cfs {
		if c.Source == kmsg.ConfigSourceDynamicTopicConfig && c.Value != nil {
			have[c.Key] = *c.Value
		}
	}
	var alter []kadm.AlterConfig
	for _, k := range sortedNames(want) {
		if v, ok := have[k]; !ok || v != *want[k] {
			alter = append(alter, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: want[k]})
		}
	}
	for _, k := range sortedNames(have) {
		if _, ok := want[k]; !ok {
			if _, local := notCopied[k]; !local {
				alter = append(alter, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: k})
			}
		}
	}
	if len(alter) == 0 {
		return nil
	}
	resp, err := m.link.dst.adm.AlterTopicConfigs(ctx, alter, m.name)
	if err == nil {
		for _, r := range resp {
			if r.Err != nil {
				err = fmt.Errorf("%w (%s)", r.Err, r.ErrMessage)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("altering destination topic %s configs: %w", m.name, err)
	}
	for _, a := range alter {
		m.log.Info("destination topic config synced from the source", zap.String("config", a.Name), zap.Stringp("value", a.Value))
	}
	return nil
}
