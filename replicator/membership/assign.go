package membership

import (
	"fmt"
	"slices"
	"sort"
)

// Unit is one piece of work the group assigns to exactly one member: a
// link's control duties, or a mirror topic. Weight is what it costs to run,
// in partitions.
type Unit struct {
	Name   string `json:"name"`
	Weight int    `json:"weight"`
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
	Weight     int    `json:"partitions"`
	// Refused says why the member owns nothing (its config differs).
	Refused string `json:"refused,omitempty"`
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
func assign(gen int32, leader joined, members []joined, units []Unit) map[string]assignment {
	weight := map[string]int{}
	for _, u := range units {
		weight[u.Name] = max(u.Weight, 1)
	}
	sort.Slice(members, func(i, j int) bool { return members[i].meta.Name < members[j].meta.Name })
	eligible := map[string]bool{}
	refused := map[string]string{}
	for _, m := range members {
		switch {
		case m.meta.Version != metaVersion:
			refused[m.id] = fmt.Sprintf("speaks group format %d, the leader %s %d: run the same klink on every member", m.meta.Version, leader.meta.Name, metaVersion)
		case m.meta.Hash != leader.meta.Hash:
			refused[m.id] = fmt.Sprintf("its config (hash %s) differs from the leader %s's (hash %s): give every member the same file", m.meta.Hash, leader.meta.Name, leader.meta.Hash)
		default:
			eligible[m.id] = true
		}
	}
	busy := map[string]bool{} // claimed by some member: not free this round
	released := map[string]bool{}
	kept := map[string][]string{}
	load := map[string]int{}
	owners := map[string]string{}
	for _, m := range members {
		for _, u := range m.meta.Released {
			released[u] = true
		}
	}
	for _, m := range members {
		for _, u := range m.meta.Owned {
			if busy[u] {
				continue // claimed twice (cannot happen with leases): the second stops
			}
			busy[u] = true
			if _, known := weight[u]; !known || !eligible[m.id] {
				owners[u] = "" // revoked: it stops there
				continue
			}
			kept[m.id] = append(kept[m.id], u)
			load[m.id] += weight[u]
			owners[u] = m.meta.Name
		}
	}
	var ids []string
	for _, m := range members {
		if eligible[m.id] {
			ids = append(ids, m.id)
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
		id := leastLoaded()
		grants[id] = append(grants[id], Grant{Unit: u.Name, Clean: released[u.Name]})
		planned[id] += weight[u.Name]
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
		pick := -1
		for i, u := range kept[hi] {
			if w := weight[u]; 2*w <= gap && (pick < 0 || w > weight[kept[hi][pick]]) {
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
		owners[u] = ""
	}
	for _, id := range ids {
		for _, u := range kept[id] {
			grants[id] = append(grants[id], Grant{Unit: u, Clean: true})
		}
	}
	var infos []MemberInfo
	for _, m := range members {
		w := 0
		for _, g := range grants[m.id] {
			w += weight[g.Unit]
		}
		infos = append(infos, MemberInfo{Name: m.meta.Name, Host: m.meta.Host, Since: m.meta.Since, ConfigHash: m.meta.Hash, Units: len(grants[m.id]), Weight: w, Refused: refused[m.id]})
	}
	out := map[string]assignment{}
	for _, m := range members {
		out[m.id] = assignment{Version: metaVersion, Generation: gen, Grants: grants[m.id], Refused: refused[m.id], Leader: leader.meta.Name, Members: infos, Owners: owners}
	}
	return out
}
