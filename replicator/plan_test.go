package replicator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
)

// What klink plan says for a set of edits to a running config.
func TestPlanChanges(t *testing.T) {
	mt := func(name, state string) config.MirrorTopic { return config.MirrorTopic{Name: name, State: state} }
	link := func(name string, ms ...config.MirrorTopic) config.Link {
		return config.Link{Name: name, Source: config.Source{Bootstrap: []string{"src:9092"}}, MirrorTopics: ms}
	}
	running := &config.Config{StateDir: "/var/lib/klink", Log: config.Log{Level: "info"}, Links: []config.Link{
		link("east", mt("orders", ""), mt("paused", "PAUSE"), mt("promoting", "PROMOTE"), mt("stopped", "FAILOVER"), mt("failed", ""), mt("dropped", "")),
		link("west", mt("w1", "")),
	}}
	stoppedAt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	view := func(state linkstate.MirrorState, mc config.MirrorTopic) mirrorView {
		v := mirrorView{state: state, cfg: &mc}
		if state == linkstate.Stopped {
			v.stopAt = stoppedAt
		}
		return v
	}
	views := map[string]map[string]mirrorView{
		"east": {
			"orders":    view(linkstate.Active, mt("orders", "")),
			"paused":    view(linkstate.Paused, mt("paused", "PAUSE")),
			"promoting": view(linkstate.PendingStopped, mt("promoting", "PROMOTE")),
			"stopped":   view(linkstate.Stopped, mt("stopped", "FAILOVER")),
			"failed":    view(linkstate.Failed, mt("failed", "")),
			"dropped":   view(linkstate.Active, mt("dropped", "")),
		},
		"west": {"w1": view(linkstate.Active, mt("w1", ""))},
	}
	renamed := mt("orders", "PAUSE")
	renamed.SourceTopicName = "orders-v2"
	next := &config.Config{StateDir: "/var/lib/klink", Log: config.Log{Level: "debug", Format: "console"}, Links: []config.Link{
		link("east", renamed, mt("paused", ""), mt("promoting", "FAILOVER"), mt("stopped", ""), mt("failed", "PROMOTE"), mt("new", "")),
		link("north", mt("n1", "PAUSE")),
	}}
	var got []string
	for _, it := range planChanges(running, views, next) {
		got = append(got, fmt.Sprintf("%s/%s %s: %s", it.Link, it.Mirror, it.Action, it.Detail))
	}
	want := []string{
		"/ restart-only: log.format: takes effect after a restart",
		"east/orders restart: settings changed",
		"east/orders pause: ACTIVE -> PAUSE",
		"east/paused resume: PAUSED -> ACTIVE",
		"east/promoting failover: PENDING_STOPPED -> FAILOVER",
		"east/stopped refuse: mirror stopped was stopped (promoted or failed over) at 2026-01-02T03:04:05Z",
		"east/failed refuse: mirror failed is FAILED and cannot catch up",
		"east/new create: from source topic new",
		"east/dropped failover: removed from the config; the destination topic stays",
		"north/ create: new link",
		"north/n1 create: from source topic n1, then PAUSE",
		"west/w1 failover: its link was removed from the config; the destination topic stays",
		"west/ remove: link removed from the config",
	}
	if len(got) != len(want) {
		t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("item %d: %q, want it to start with %q", i, got[i], want[i])
		}
	}
	// The running config again: nothing to do but the standing refusal
	// of the FAILED mirror (the config still asks ACTIVE of it).
	if items := planChanges(running, views, running); len(items) != 1 || items[0].Mirror != "failed" || items[0].Action != "refuse" {
		t.Fatalf("planning the running config: %+v", items)
	}
}
