// Package replicator is the running daemon's data path: for each link, a
// fetch loop per source broker ("fetchers"), a produce loop per destination
// broker ("sinks"), and between them one goroutine per mirrored partition
// that owns its append order and checks every append lands on its source
// offset.
package replicator

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
)

// Replicator runs every link of a config.
type Replicator struct {
	store *linkstate.Store
	log   *zap.Logger
	links []*Link
}

// New prepares the links of cfg.
func New(cfg *config.Config, store *linkstate.Store, log *zap.Logger) *Replicator {
	r := &Replicator{store: store, log: log}
	for _, lc := range cfg.Links {
		r.links = append(r.links, NewLink(lc, cfg.Destination, store, log))
	}
	return r
}

// Run runs all links until ctx ends, then waits for them to stop.
func (r *Replicator) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, l := range r.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Run(ctx)
		}()
	}
	wg.Wait()
}

// Status is the whole daemon's status.
type Status struct {
	Links []LinkStatus `json:"links"`
}

// Status reports every link.
func (r *Replicator) Status() Status {
	s := Status{Links: []LinkStatus{}}
	for _, l := range r.links {
		s.Links = append(s.Links, l.Status())
	}
	return s
}
