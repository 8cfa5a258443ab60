// Package replicator is the running daemon's data path: for each link, a
// fetch loop per source broker ("fetchers"), a produce loop per destination
// broker ("sinks"), and between them one goroutine per mirrored partition
// that owns its append order and checks every append lands on its source
// offset.
package replicator

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/membership"
)

// Replicator runs every link of a config, and applies a new config to the
// running links (Reload).
type Replicator struct {
	store linkstate.Store
	log   *zap.Logger

	reloadMu sync.Mutex // one reload at a time

	mu         sync.Mutex
	cfg        *config.Config
	links      []*runningLink
	ctx        context.Context // set by Run
	wg         sync.WaitGroup
	lastReload *ReloadResult
	nl         *netLinks
	group      *membership.Group // in a klink cluster (see clustered.go)
	// leftCleanly records, in a klink cluster, that this member stopped
	// with every append answered; beat, that it runs; seen, when a
	// member last said so.
	leftCleanly func()
	beat        func()
	seen        func(member string) (time.Time, bool)
}

// newLink makes a link, reaching its source through its network link if
// it names one.
func (r *Replicator) newLink(lc config.Link, dest config.Destination) *Link {
	l := NewLink(lc, dest, r.store, r.log)
	l.tunnel = r.nl.tunnelFor(lc)
	l.group = r.group
	return l
}

// runningLink is a link and the means to stop it.
type runningLink struct {
	*Link
	cancel context.CancelFunc
	done   chan struct{}
}

// New prepares the links of cfg.
func New(cfg *config.Config, store linkstate.Store, log *zap.Logger) *Replicator {
	r := &Replicator{store: store, log: log, cfg: cfg, nl: newNetLinks(cfg.NetworkLinks, cfg.Links, log)}
	for _, lc := range cfg.Links {
		if lc.IsSource() {
			continue // it relays (see netLinks); it mirrors nothing here
		}
		r.links = append(r.links, &runningLink{Link: r.newLink(lc, cfg.Destination)})
	}
	return r
}

// Run runs all links until ctx ends, then waits for them to stop.
func (r *Replicator) Run(ctx context.Context) {
	r.nl.run(ctx, r.log, func(f func()) {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			f()
		}()
	})
	r.mu.Lock()
	r.ctx = ctx
	for _, l := range r.links {
		r.startLink(l)
	}
	r.mu.Unlock()
	// The group outlives the links: it leaves only once every unit has
	// stopped, so that the others take them over at once.
	gctx, stopGroup := context.WithCancel(context.Background())
	defer stopGroup()
	groupDone := make(chan struct{})
	if r.group != nil {
		go func() {
			defer close(groupDone)
			r.group.Run(gctx)
		}()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.runCluster(ctx)
		}()
	} else {
		r.retireRemovedLinks(ctx)
	}
	<-ctx.Done()
	r.wg.Wait()
	if r.group != nil {
		clean := r.stoppedCleanly()
		r.group.Leaving(clean)
		if clean && r.leftCleanly != nil {
			r.leftCleanly()
		}
		stopGroup()
		<-groupDone
	}
}

// startLink runs a link (r.mu held, r.ctx set).
func (r *Replicator) startLink(l *runningLink) {
	ctx, cancel := context.WithCancel(r.ctx)
	l.cancel, l.done = cancel, make(chan struct{})
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(l.done)
		defer cancel()
		l.Run(ctx)
	}()
}

// ReloadResult is what the last reload did, shown in /status.
type ReloadResult struct {
	At      time.Time `json:"at"`
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	Applied []string  `json:"applied,omitempty"`
	// NotApplied lists changes that take effect only after a restart.
	NotApplied []string `json:"notApplied,omitempty"`
}

// NoteReloadError records a reload that was refused (an invalid file):
// nothing changed.
func (r *Replicator) NoteReloadError(err error) {
	r.mu.Lock()
	r.lastReload = &ReloadResult{At: time.Now().UTC(), Error: err.Error()}
	r.mu.Unlock()
}

// Reload applies a new, valid config: only the difference. Links and
// mirrors that did not change keep running untouched. A link whose source
// or link configs changed is restarted (its mirrors resume from the
// destination, exactly where they were); a removed link's mirrors are
// failed over (their topics stay) and the link stops.
func (r *Replicator) Reload(cfg *config.Config) ReloadResult {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	res := ReloadResult{At: time.Now().UTC(), OK: true}
	r.mu.Lock()
	old := r.cfg
	running := r.ctx != nil
	r.mu.Unlock()
	res.NotApplied = restartOnlyChanges(old, cfg)
	nlApplied, nlNotApplied := r.nl.reload(cfg.NetworkLinks, cfg.Links, r.log)
	res.Applied = append(res.Applied, nlApplied...)
	res.NotApplied = append(res.NotApplied, nlNotApplied...)

	want := map[string]config.Link{}
	for _, lc := range cfg.Links {
		want[lc.Name] = lc
	}
	r.mu.Lock()
	links := slices.Clone(r.links)
	r.mu.Unlock()
	seen := map[string]bool{}
	for _, l := range links {
		if l.removedLink() {
			continue
		}
		seen[l.cfg.Name] = true
		lc, ok := want[l.cfg.Name]
		switch {
		case !ok:
			r.removeLink(l)
			res.Applied = append(res.Applied, fmt.Sprintf("link %s: removed (its mirrors failed over; their topics stay)", l.cfg.Name))
		case !reflect.DeepEqual(old.Destination, cfg.Destination) || !sameLinkSettings(l.cfg, lc):
			r.restartLink(l, lc, cfg.Destination, running)
			res.Applied = append(res.Applied, fmt.Sprintf("link %s: restarted with new source, destination or link settings", l.cfg.Name))
		case l.secretsChanged(lc, cfg.Destination, &res):
			r.restartLink(l, lc, cfg.Destination, running)
			res.Applied = append(res.Applied, fmt.Sprintf("link %s: reconnected with the rotated certificates or secrets", l.cfg.Name))
		default:
			for _, a := range l.applyMirrors(lc) {
				res.Applied = append(res.Applied, fmt.Sprintf("link %s: %s", l.cfg.Name, a))
			}
		}
	}
	for _, lc := range cfg.Links {
		if seen[lc.Name] {
			continue
		}
		if lc.IsSource() || lc.IsInbound() {
			// Their tunnels are set up at start.
			if !r.nl.hasSourceInitiated(lc.Name) {
				res.NotApplied = append(res.NotApplied, fmt.Sprintf("link %s: a source-initiated link takes effect after a restart", lc.Name))
			}
			if lc.IsSource() {
				continue
			}
		}
		nl := &runningLink{Link: r.newLink(lc, cfg.Destination)}
		r.mu.Lock()
		r.links = slices.DeleteFunc(r.links, func(x *runningLink) bool { return x.cfg.Name == lc.Name })
		r.links = append(r.links, nl)
		if running {
			r.startLink(nl)
		}
		r.mu.Unlock()
		res.Applied = append(res.Applied, fmt.Sprintf("link %s: added", lc.Name))
	}
	if r.group != nil {
		r.group.SetConfigHash(cfg.Hash())
	}
	r.mu.Lock()
	// What waits for a restart stays as it runs, so that the next reload
	// still reports it.
	stored := *cfg
	stored.StateDir, stored.Admin, stored.Log, stored.Cluster = old.StateDir, old.Admin, old.Log, old.Cluster
	stored.NetworkLinks.Endpoints = old.NetworkLinks.Endpoints
	r.cfg = &stored
	r.lastReload = &res
	r.mu.Unlock()
	return res
}

// restartLink stops a link and runs it again with new settings.
func (r *Replicator) restartLink(l *runningLink, lc config.Link, dest config.Destination, running bool) {
	if l.cancel != nil {
		l.cancel()
		<-l.done
	}
	nl := &runningLink{Link: r.newLink(lc, dest)}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.links {
		if x == l {
			r.links[i] = nl
		}
	}
	if running {
		r.startLink(nl)
	}
}

// removeLink fails over every mirror of a link that left the config, waits
// until they are STOPPED, and stops the link. It stays in status.
func (r *Replicator) removeLink(l *runningLink) {
	l.applyMirrors(config.Link{Name: l.cfg.Name, Source: l.cfg.Source, Configs: l.cfg.Configs})
	l.mu.Lock()
	ms := slices.Clone(l.mirrors)
	running := l.ctx != nil
	l.mu.Unlock()
	if running {
		for _, m := range ms {
			select {
			case <-m.done:
			case <-time.After(config.ShutdownTimeout):
				l.log.Warn("mirror did not stop in time while removing its link", zap.String("mirror", m.name))
			}
		}
	}
	if l.cancel != nil {
		l.cancel()
		<-l.done
	}
	l.mu.Lock()
	l.state, l.err = LinkRemoved, "removed from the config"
	l.mu.Unlock()
	if !running {
		// Never connected: its mirrors are failed over by the next
		// start (see retireRemovedLinks).
		l.log.Warn("link removed before it connected; its mirrors are failed over at the next start")
	}
}

// retireRemovedLinks fails over, at start, the mirrors of links that are in
// the state file but no longer in the config (removed while klink was
// stopped), through the destination alone.
func (r *Replicator) retireRemovedLinks(ctx context.Context) {
	recs, err := r.store.Links()
	if err != nil {
		r.log.Error("reading links from the state file failed", zap.Error(err))
		return
	}
	r.mu.Lock()
	inConfig := map[string]bool{}
	for _, l := range r.links {
		inConfig[l.cfg.Name] = true
	}
	dest := r.cfg.Destination
	r.mu.Unlock()
	for _, rec := range recs {
		if inConfig[rec.Name] {
			continue
		}
		l := NewLink(config.Link{Name: rec.Name}, dest, r.store, r.log)
		l.identity = rec
		l.state, l.err = LinkRemoved, "not in the config"
		rl := &runningLink{Link: l, done: make(chan struct{})}
		close(rl.done)
		r.mu.Lock()
		r.links = append(r.links, rl)
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			l.retire(ctx)
		}()
	}
}

func (l *Link) removedLink() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == LinkRemoved
}

// Status is the whole daemon's status.
type Status struct {
	Links        []LinkStatus        `json:"links"`
	Cluster      *membership.Status  `json:"cluster,omitempty"`
	LastReload   *ReloadResult       `json:"lastReload,omitempty"`
	NetworkLinks *NetworkLinksStatus `json:"networkLinks,omitempty"`
}

// Status reports every link.
func (r *Replicator) Status() Status {
	r.mu.Lock()
	links := slices.Clone(r.links)
	s := Status{Links: []LinkStatus{}, LastReload: r.lastReload, NetworkLinks: r.nl.status()}
	r.mu.Unlock()
	for _, l := range links {
		s.Links = append(s.Links, l.Status())
	}
	if r.group != nil {
		cs := r.group.Status()
		cs.Members = slices.Clone(cs.Members)
		for i, m := range cs.Members {
			if at, ok := r.seen(m.Name); ok {
				cs.Members[i].LastSeen = &at
			}
		}
		s.Cluster = &cs
	}
	return s
}

// secretsChanged reports whether a link's certificate or secret files hold
// new contents. A file that cannot be read keeps the link as it is (with
// the ones it read before), and the reload says why.
func (l *Link) secretsChanged(lc config.Link, dest config.Destination, res *ReloadResult) bool {
	fp, err := linkFingerprint(lc, dest)
	if err != nil {
		res.NotApplied = append(res.NotApplied, fmt.Sprintf("link %s: a certificate or secret file cannot be read (%v); the link keeps the ones it has", lc.Name, err))
		return false
	}
	return fp != l.secrets
}
