package membership

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// Unit is one piece of work the group assigns to exactly one member: a
// link's control duties, or a mirror topic. Weight is what it costs to run,
// in partitions.
type Unit struct {
	Name   string `json:"name"`
	Weight int    `json:"weight"`
	// Spread: units of one spread (a mirror's partitions) are spread
	// over the members, so that one busy topic is not one member's load.
	Spread string `json:"spread,omitempty"`
	// Needs names what the unit needs to run (its link): a member that
	// says it cannot run that gets none of its units while another can.
	Needs string `json:"needs,omitempty"`
}

// memberMeta is what a member tells the group when it joins (JoinGroup
// metadata, JSON).
type memberMeta struct {
	Version int    `json:"v"`
	Name    string `json:"name"`
	Host    string `json:"host"`
	Since   string `json:"since"` // RFC 3339
	Hash    string `json:"configHash"`
	// Owned are the units the member is running or still stopping.
	Owned []string `json:"owned,omitempty"`
	// Released are the units it stopped since it last joined, with every
	// append answered: they may be handed on at once.
	Released []string `json:"released,omitempty"`
	// Leaving: the member is stopping; it owns nothing and takes nothing.
	Leaving bool `json:"leaving,omitempty"`
	// Dirty are units it stopped with appends unanswered less than an
	// append lifetime ago: whoever gets them next waits.
	Dirty []string `json:"dirty,omitempty"`
	// Incarnation is random per process: a member restarted under the
	// same name is another incarnation.
	Incarnation string `json:"incarnation"`
	// Cannot lists what this member cannot run now (links it has not
	// reached for a while): units that need them go to others.
	Cannot []string `json:"cannot,omitempty"`
}

// metaVersion is the format of memberMeta and assignment; a member that
// reads a newer one owns nothing until all members run the same klink.
const metaVersion = 1

// Grant is a unit given to a member. Clean: its previous owner released it
// (or nobody ever ran it in this group's memory), so it may start at once;
// otherwise the new owner waits until any lease the previous owner may
// hold has ended and its appends have died.
type Grant struct {
	Unit  string `json:"unit"`
	Clean bool   `json:"clean,omitempty"`
}

// MemberInfo is one member as the leader saw it at the last assignment.
type MemberInfo struct {
	Name       string `json:"name"`
	Host       string `json:"host"`
	Since      string `json:"since"`
	ConfigHash string `json:"configHash"`
	Units      int    `json:"units"`
	Weight     int    `json:"weight"`
	Partitions int    `json:"partitions"` // units of a spread: mirrored partitions
	// Refused says why the member owns nothing (its config differs).
	Refused string `json:"refused,omitempty"`
	// LastSeen is when the member last said, in the shared state, that it
	// runs (every half session timeout while it holds its lease); filled
	// in by the replicator's status.
	LastSeen *time.Time `json:"lastSeen,omitempty"`
}

// assignment is what the leader hands each member in SyncGroup (JSON).
type assignment struct {
	Version    int     `json:"v"`
	Generation int32   `json:"generation"`
	Grants     []Grant `json:"grants,omitempty"`
	Refused    string  `json:"refused,omitempty"`
	// The whole cluster, so that status on any member shows it.
	Leader  string            `json:"leader"`
	Members []MemberInfo      `json:"members"`
	Owners  map[string]string `json:"owners"` // unit -> member name ("" while it is being released)
	// Releasing names, for each unit revoked in this generation, the
	// member that releases it: the only one whose release of it the next
	// leader believes.
	Releasing map[string]string `json:"releasing,omitempty"`
	// Incarnations of the members, by name.
	Incarnations map[string]string `json:"incarnations,omitempty"`
}

type joined struct {
	id   string
	meta memberMeta
}

// assign computes every member's assignment. It is sticky: a unit stays
// where it runs unless moving it evens out the load. It is cooperative: a
// unit never goes from one live member to another in one generation; it is
// revoked first (given to nobody), and given on when its owner says it has
// released it, at the next rebalance, which that member starts itself.
// prev is the assignment the leader last received: a member's release of a
// unit makes the unit's next grant clean only if prev says that member
// owned or was releasing it (an older, stale release proves nothing).
func assign(gen int32, leader joined, members []joined, units []Unit, prev assignment) map[string]assignment {
	weight := map[string]int{}
	spreadOf := map[string]string{}
	needs := map[string]string{}
	for _, u := range units {
		weight[u.Name] = max(u.Weight, 1)
		spreadOf[u.Name] = u.Spread
		needs[u.Name] = u.Needs
	}
	// spread counts, per member, the units of each spread it runs or
	// is given.
	spread := map[string]map[string]int{}
	count := func(id, u string, n int) {
		if s := spreadOf[u]; s != "" {
			if spread[id] == nil {
				spread[id] = map[string]int{}
			}
			spread[id][s] += n
		}
	}
	sort.Slice(members, func(i, j int) bool { return members[i].meta.Name < members[j].meta.Name })
	eligible := map[string]bool{}
	refused := map[string]string{}
	for _, m := range members {
		switch {
		case m.meta.Version != metaVersion:
			refused[m.id] = fmt.Sprintf("speaks group format %d, the leader %s %d: run the same klink on every member", m.meta.Version, leader.meta.Name, metaVersion)
		case m.meta.Leaving:
			refused[m.id] = "leaving"
		case m.meta.Hash != leader.meta.Hash:
			refused[m.id] = fmt.Sprintf("its config (hash %s) differs from the leader %s's (hash %s): give every member the same file", m.meta.Hash, leader.meta.Name, leader.meta.Hash)
		default:
			eligible[m.id] = true
		}
	}
	var ids []string
	cannot := map[string]map[string]bool{} // member id -> what it cannot run
	for _, m := range members {
		if eligible[m.id] {
			ids = append(ids, m.id)
			for _, c := range m.meta.Cannot {
				if cannot[m.id] == nil {
					cannot[m.id] = map[string]bool{}
				}
				cannot[m.id][c] = true
			}
		}
	}
	// canRun: id may run u, unless no eligible member can (then anyone
	// may: the unit is not better off nowhere).
	canRun := func(id, u string) bool {
		n := needs[u]
		if n == "" || !cannot[id][n] {
			return true
		}
		for _, other := range ids {
			if !cannot[other][n] {
				return false
			}
		}
		return true
	}
	busy := map[string]bool{} // claimed by some member: not free this round
	released := map[string]bool{}
	kept := map[string][]string{}
	load := map[string]int{}
	owners := map[string]string{}
	releasing := map[string]string{}
	dirty := map[string]bool{}
	present := map[string]string{} // name -> incarnation
	for _, m := range members {
		present[m.meta.Name] = m.meta.Incarnation
		for _, u := range m.meta.Dirty {
			dirty[u] = true
		}
	}
	// A unit the last assignment gave to a member that is here, the same
	// process, and does not claim it, never started there (a member
	// claims a unit from the moment it takes the grant): its next grant
	// needs no wait, unless it is dirty.
	unstarted := func(u string) bool {
		o := prev.Owners[u]
		inc, here := present[o]
		return o != "" && here && inc != "" && prev.Incarnations[o] == inc
	}
	for _, m := range members {
		for _, u := range m.meta.Released {
			if prev.Owners[u] == m.meta.Name || prev.Releasing[u] == m.meta.Name {
				released[u] = true
			}
		}
	}
	claims := map[string]int{}
	for _, m := range members {
		for _, u := range m.meta.Owned {
			claims[u]++
		}
	}
	for _, m := range members {
		for _, u := range m.meta.Owned {
			busy[u] = true
			if _, known := weight[u]; !known || !eligible[m.id] || claims[u] > 1 || !canRun(m.id, u) {
				// Revoked: it stops there. A unit two members claim
				// (one lost its lease and came back) stops on both,
				// and is given on without trusting either release.
				owners[u] = ""
				if claims[u] == 1 {
					releasing[u] = m.meta.Name
				}
				continue
			}
			kept[m.id] = append(kept[m.id], u)
			load[m.id] += weight[u]
			count(m.id, u, 1)
			owners[u] = m.meta.Name
		}
	}
	planned := map[string]int{} // load with the units revoked for a member counted in
	for _, id := range ids {
		planned[id] = load[id]
	}
	leastLoaded := func() string {
		best := ""
		for _, id := range ids {
			if best == "" || planned[id] < planned[best] {
				best = id
			}
		}
		return best
	}
	grants := map[string][]Grant{}
	// Free units, heaviest first, to the least loaded.
	free := slices.Clone(units)
	sort.SliceStable(free, func(i, j int) bool {
		if weight[free[i].Name] != weight[free[j].Name] {
			return weight[free[i].Name] > weight[free[j].Name]
		}
		return free[i].Name < free[j].Name
	})
	for _, u := range free {
		if busy[u.Name] || len(ids) == 0 {
			continue
		}
		if _, done := owners[u.Name]; done {
			continue
		}
		// Of the members that can run it: the one with the fewest of its
		// spread, then the least loaded.
		id := ""
		for _, c := range ids {
			if !canRun(c, u.Name) {
				continue
			}
			sp := u.Spread
			if id == "" || (sp != "" && spread[c][sp] < spread[id][sp]) || ((sp == "" || spread[c][sp] == spread[id][sp]) && planned[c] < planned[id]) {
				id = c
			}
		}
		grants[id] = append(grants[id], Grant{Unit: u.Name, Clean: (released[u.Name] || unstarted(u.Name)) && !dirty[u.Name]})
		planned[id] += weight[u.Name]
		count(id, u.Name, 1)
		for _, m := range members {
			if m.id == id {
				owners[u.Name] = m.meta.Name
			}
		}
	}
	// Even out: revoke a unit the most loaded member runs, for the least
	// loaded, while that narrows the gap.
	for range len(units) {
		hi, lo := "", leastLoaded()
		for _, id := range ids {
			if hi == "" || planned[id] > planned[hi] {
				hi = id
			}
		}
		if hi == "" || hi == lo {
			break
		}
		gap := planned[hi] - planned[lo]
		// The heaviest unit that narrows the gap; of those, the one
		// whose spread is most concentrated here.
		pick := -1
		for i, u := range kept[hi] {
			w := weight[u]
			if 2*w > gap || !canRun(lo, u) {
				continue
			}
			if pick < 0 || w > weight[kept[hi][pick]] ||
				(w == weight[kept[hi][pick]] && spread[hi][spreadOf[u]]-spread[lo][spreadOf[u]] > spread[hi][spreadOf[kept[hi][pick]]]-spread[lo][spreadOf[kept[hi][pick]]]) {
				pick = i
			}
		}
		if pick < 0 {
			break
		}
		u := kept[hi][pick]
		kept[hi] = slices.Delete(kept[hi], pick, pick+1)
		planned[hi] -= weight[u]
		planned[lo] += weight[u]
		count(hi, u, -1)
		count(lo, u, 1)
		owners[u] = ""
		for _, m := range members {
			if m.id == hi {
				releasing[u] = m.meta.Name
			}
		}
	}
	for _, id := range ids {
		for _, u := range kept[id] {
			grants[id] = append(grants[id], Grant{Unit: u, Clean: true})
		}
	}
	var infos []MemberInfo
	for _, m := range members {
		w, parts := 0, 0
		for _, g := range grants[m.id] {
			w += weight[g.Unit]
			if spreadOf[g.Unit] != "" {
				parts++
			}
		}
		infos = append(infos, MemberInfo{Name: m.meta.Name, Host: m.meta.Host, Since: m.meta.Since, ConfigHash: m.meta.Hash, Units: len(grants[m.id]), Weight: w, Partitions: parts, Refused: refused[m.id]})
	}
	out := map[string]assignment{}
	for _, m := range members {
		out[m.id] = assignment{Version: metaVersion, Generation: gen, Grants: grants[m.id], Refused: refused[m.id], Leader: leader.meta.Name, Members: infos, Owners: owners, Releasing: releasing, Incarnations: present}
	}
	return out
}
