package replicator

import (
	"fmt"
	"reflect"
	"sort"
	"time"

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
