package replicator

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
)

// PlanItem is one thing a reload with a new config would do.
type PlanItem struct {
	Link   string `json:"link"`
	Mirror string `json:"mirror,omitempty"`
	// Action: create, restart, pause, resume, promote, failover, remove,
	// refuse, or restart-only (a change that waits for the next start).
	Action string `json:"action"`
	Detail string `json:"detail,omitempty"`
}

// mirrorView is what a plan needs to know of a mirror as it is now.
type mirrorView struct {
	state  linkstate.MirrorState
	stopAt time.Time
	cfg    *config.MirrorTopic // nil when not known (no running daemon)
	source string              // source topic
	auto   bool                // made by autoCreateTopics
}

// restartOnlyChanges lists the changes between two configs that a reload
// cannot apply: they take effect at the next start.
func restartOnlyChanges(old, next *config.Config) []string {
	var out []string
	if old.StateDir != next.StateDir {
		out = append(out, "stateDir: takes effect after a restart")
	}
	if old.Admin != next.Admin {
		out = append(out, "admin: takes effect after a restart")
	}
	if !reflect.DeepEqual(old.NetworkLinks.Endpoints, next.NetworkLinks.Endpoints) {
		out = append(out, "networkLinks.endpoints: takes effect after a restart (service accept lists change at once)")
	}
	if old.Log.Format != next.Log.Format {
		out = append(out, "log.format: takes effect after a restart (log.level changes at once)")
	}
	if !reflect.DeepEqual(old.Cluster, next.Cluster) {
		out = append(out, "cluster: takes effect after a restart")
	}
	return out
}

// Plan says what Reload(next) would do now, without doing it.
func (r *Replicator) Plan(next *config.Config) []PlanItem {
	r.mu.Lock()
	running := r.cfg
	links := append([]*runningLink(nil), r.links...)
	r.mu.Unlock()
	views := map[string]map[string]mirrorView{}
	for _, l := range links {
		if l.removedLink() {
			continue
		}
		l.mu.Lock()
		ms := append([]*mirror(nil), l.mirrors...)
		l.mu.Unlock()
		vs := map[string]mirrorView{}
		for _, m := range ms {
			state, _, stop := m.current()
			v := mirrorView{state: state, source: m.sourceTopic, auto: m.auto}
			if stop != nil {
				v.stopAt = stop.At
			}
			l.mu.Lock() // removed and cfg change under it (applyMirrors)
			if !m.removed {
				c := m.cfg
				v.cfg = &c
			}
			l.mu.Unlock()
			vs[m.name] = v
		}
		views[l.cfg.Name] = vs
	}
	return planChanges(running, views, next)
}

// PlanFromState says what a start (or a reload) with next would do to the
// mirrors recorded in the state file, when no daemon runs.
func PlanFromState(store linkstate.Store, next *config.Config) ([]PlanItem, error) {
	ls, err := store.Links()
	if err != nil {
		return nil, err
	}
	views := map[string]map[string]mirrorView{}
	for _, l := range ls {
		ms, err := store.Mirrors(l.Name)
		if err != nil {
			return nil, err
		}
		vs := map[string]mirrorView{}
		for _, m := range ms {
			v := mirrorView{state: m.State, source: m.SourceTopic, auto: m.AutoCreated}
			if m.Stop != nil {
				v.stopAt = m.Stop.At
			}
			vs[m.Name] = v
		}
		views[l.Name] = vs
	}
	return planChanges(nil, views, next), nil
}

// planChanges compares the links and mirrors as they are (views; running
// is the running config, nil if not known) with the next config.
func planChanges(running *config.Config, views map[string]map[string]mirrorView, next *config.Config) []PlanItem {
	var items []PlanItem
	add := func(link, mirror, action, detail string) {
		items = append(items, PlanItem{Link: link, Mirror: mirror, Action: action, Detail: detail})
	}
	if running != nil {
		for _, c := range restartOnlyChanges(running, next) {
			add("", "", "restart-only", c)
		}
	}
	runningLinks := map[string]config.Link{}
	if running != nil {
		for _, l := range running.Links {
			runningLinks[l.Name] = l
		}
	}
	inNext := map[string]bool{}
	for _, lc := range next.Links {
		inNext[lc.Name] = true
		vs, known := views[lc.Name]
		if !known {
			add(lc.Name, "", "create", "new link")
		} else if rl, ok := runningLinks[lc.Name]; ok && (!sameLinkSettings(rl, lc) || !reflect.DeepEqual(running.Destination, next.Destination)) {
			add(lc.Name, "", "restart", "source, destination or link settings changed; its mirrors resume where the destination is")
		}
		listed := map[string]bool{}
		for _, mc := range lc.MirrorTopics {
			listed[mc.Name] = true
			want := linkstate.Desired(mc.DesiredState())
			v, ok := vs[mc.Name]
			if !ok {
				detail := "from source topic " + mc.SourceTopic()
				if want != linkstate.WantActive {
					detail += ", then " + string(want)
				}
				add(lc.Name, mc.Name, "create", detail)
				continue
			}
			if v.cfg != nil && !sameMirrorSettings(*v.cfg, mc) {
				add(lc.Name, mc.Name, "restart", "settings changed")
			}
			act, err := linkstate.Decide(mc.Name, v.state, want, v.stopAt)
			switch act {
			case linkstate.Keep:
			case linkstate.Refuse:
				add(lc.Name, mc.Name, "refuse", err.Error())
			default:
				add(lc.Name, mc.Name, string(act), fmt.Sprintf("%s -> %s", v.state, want))
			}
		}
		for _, name := range sortedNames(vs) {
			if v := vs[name]; !listed[name] && v.state != linkstate.Stopped && !(v.auto && lc.MirrorTopicOptions.AutoCreateTopics.Selects(v.source)) {
				add(lc.Name, name, "failover", "removed from the config; the destination topic stays")
			}
		}
	}
	for _, link := range sortedNames(views) {
		if inNext[link] {
			continue
		}
		vs := views[link]
		live := false
		for _, name := range sortedNames(vs) {
			if vs[name].state != linkstate.Stopped {
				live = true
				add(link, name, "failover", "its link was removed from the config; the destination topic stays")
			}
		}
		if live {
			add(link, "", "remove", "link removed from the config")
		}
	}
	return items
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// PreviewAdoptions adds to a plan what adoption would do for each mirror it
// creates with adopt: true: whether the destination topic exists, and if
// it does, whether it is a prefix of the source topic (from which offsets
// mirroring would go on) or why it would be refused. It asks the clusters
// with connections of its own, bounded by ctx; nothing is written.
func PreviewAdoptions(ctx context.Context, next *config.Config, items []PlanItem, log *zap.Logger) []PlanItem {
	links := map[string]config.Link{}
	for _, l := range next.Links {
		links[l.Name] = l
	}
	// One destination connection, and one per link's source.
	var dst *cluster
	srcs := map[string]*cluster{}
	defer func() {
		for _, c := range srcs {
			c.close()
		}
		if dst != nil {
			dst.close()
		}
	}()
	for i, it := range items {
		lc, ok := links[it.Link]
		if it.Action != "create" || it.Mirror == "" || !ok {
			continue
		}
		var mc *config.MirrorTopic
		for j := range lc.MirrorTopics {
			if lc.MirrorTopics[j].Name == it.Mirror && lc.MirrorTopics[j].Adopt {
				mc = &lc.MirrorTopics[j]
			}
		}
		if mc == nil {
			continue
		}
		if lc.IsInbound() || lc.Source.NetworkLink != "" {
			items[i].Detail += "; adopt: checked when the mirror starts (the source is reached through a network link)"
			continue
		}
		var err error
		if dst == nil {
			if dst, err = newDestinationCluster(next.Destination, 0, log); err != nil {
				items[i].Detail += "; adopt: cannot check now: " + err.Error()
				continue
			}
		}
		src, ok := srcs[lc.Name]
		if !ok {
			if src, err = newSourceCluster(lc, nil, log); err != nil {
				items[i].Detail += "; adopt: cannot check now: " + err.Error()
				continue
			}
			srcs[lc.Name] = src
		}
		_, err = dst.topic(ctx, mc.Name)
		switch {
		case errors.Is(err, errTopicNotFound):
			items[i].Detail += "; adopt: the destination topic does not exist, klink creates it"
			continue
		case err != nil:
			items[i].Detail += "; adopt: cannot check now: " + err.Error()
			continue
		}
		adopted, err := adoptCheck(ctx, src, dst, mc.SourceTopic(), mc.Name)
		var fatal fatalError
		switch {
		case errors.As(err, &fatal):
			items[i].Action, items[i].Detail = "refuse", fatal.reason
		case err != nil:
			items[i].Detail += "; adopt: cannot check now: " + err.Error()
		default:
			items[i].Detail += "; adopts the existing destination topic (a prefix of the source topic): mirroring goes on from its end offsets " + strings.Join(adoptedEnds(adopted), " ")
		}
	}
	return items
}
