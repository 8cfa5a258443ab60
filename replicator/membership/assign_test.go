package membership

import (
	"fmt"
	"strings"
	"testing"
)

func units(n, weight int) []Unit {
	var us []Unit
	for i := range n {
		us = append(us, Unit{Name: fmt.Sprintf("mirror/l/t%02d", i), Weight: weight})
	}
	return us
}

func member(id, hash string, owned, released []string) joined {
	return joined{id: id, meta: memberMeta{Version: metaVersion, Name: "name-" + id, Hash: hash, Owned: owned, Released: released}}
}

// owners checks that every unit is granted to at most one member and
// returns unit -> member id.
func owners(t *testing.T, out map[string]assignment) map[string]string {
	t.Helper()
	own := map[string]string{}
	for id, a := range out {
		for _, g := range a.Grants {
			if other, dup := own[g.Unit]; dup {
				t.Fatalf("unit %s granted to %s and %s", g.Unit, other, id)
			}
			own[g.Unit] = id
		}
	}
	return own
}

func TestAssignSpreadsEvenly(t *testing.T) {
	us := units(30, 10)
	a, b, c := member("a", "h", nil, nil), member("b", "h", nil, nil), member("c", "h", nil, nil)
	out := assign(1, a, []joined{a, b, c}, us, assignment{})
	own := owners(t, out)
	if len(own) != 30 {
		t.Fatalf("%d of 30 units granted", len(own))
	}
	for id, a := range out {
		if len(a.Grants) != 10 {
			t.Errorf("member %s got %d units, want 10", id, len(a.Grants))
		}
		for _, g := range a.Grants {
			if g.Clean {
				t.Errorf("unit %s granted clean though nobody said it released it", g.Unit)
			}
		}
	}
}

// A fourth member: a quarter of the units are revoked (given to nobody in
// this generation), none moves directly, and the rest stay where they run.
func TestAssignCooperativeJoin(t *testing.T) {
	us := units(36, 10)
	held := map[string][]string{}
	for i, u := range us {
		id := []string{"a", "b", "c"}[i%3]
		held[id] = append(held[id], u.Name)
	}
	a, b, c := member("a", "h", held["a"], nil), member("b", "h", held["b"], nil), member("c", "h", held["c"], nil)
	d := member("d", "h", nil, nil)
	out := assign(2, a, []joined{a, b, c, d}, us, prevOf(held))
	own := owners(t, out)
	revoked := 36 - len(own)
	if revoked != 9 {
		t.Errorf("%d units revoked, want 9 (a quarter)", revoked)
	}
	if n := len(out["d"].Grants); n != 0 {
		t.Errorf("the new member got %d units in the generation they were revoked in", n)
	}
	for u, id := range own {
		was := map[string]string{}
		for hid, us := range held {
			for _, x := range us {
				was[x] = hid
			}
		}
		if was[u] != id {
			t.Errorf("unit %s moved from %s to %s in one generation", u, was[u], id)
		}
	}
	// Next round: the revoked ones were released; they go to d, clean.
	var relA, relB, relC []string
	keep := map[string][]string{}
	for u, id := range own {
		keep[id] = append(keep[id], u)
	}
	for _, u := range us {
		if _, ok := own[u.Name]; !ok {
			switch {
			case contains(held["a"], u.Name):
				relA = append(relA, u.Name)
			case contains(held["b"], u.Name):
				relB = append(relB, u.Name)
			default:
				relC = append(relC, u.Name)
			}
		}
	}
	a2, b2, c2 := member("a", "h", keep["a"], relA), member("b", "h", keep["b"], relB), member("c", "h", keep["c"], relC)
	out = assign(3, a2, []joined{a2, b2, c2, d}, us, out["a"])
	owners(t, out)
	if n := len(out["d"].Grants); n != 9 {
		t.Fatalf("the new member got %d units, want 9", n)
	}
	for _, g := range out["d"].Grants {
		if !g.Clean {
			t.Errorf("unit %s released by its owner was not granted clean", g.Unit)
		}
	}
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

func TestAssignRefusesOtherConfig(t *testing.T) {
	us := units(6, 1)
	a, b := member("a", "h1", nil, nil), member("b", "h2", []string{us[0].Name}, nil)
	out := assign(1, a, []joined{a, b}, us, assignment{})
	own := owners(t, out)
	if len(out["b"].Grants) != 0 || out["b"].Refused == "" {
		t.Fatalf("a member with another config got %v (refused %q)", out["b"].Grants, out["b"].Refused)
	}
	if _, ok := own[us[0].Name]; ok {
		t.Errorf("unit %s still held by the refused member was granted to another", us[0].Name)
	}
	if len(out["a"].Grants) != 5 {
		t.Errorf("leader got %d units, want 5", len(out["a"].Grants))
	}
}

// A member that vanished: its units are free and granted without Clean,
// so that the new owner waits for its lease to end.
func TestAssignVanishedOwner(t *testing.T) {
	us := units(4, 1)
	a := member("a", "h", []string{us[0].Name, us[1].Name}, nil)
	out := assign(5, a, []joined{a}, us, assignment{})
	for _, g := range out["a"].Grants {
		switch g.Unit {
		case us[0].Name, us[1].Name:
			if !g.Clean {
				t.Errorf("a unit the member runs was not kept clean")
			}
		default:
			if g.Clean {
				t.Errorf("unit %s of a vanished member granted clean", g.Unit)
			}
		}
	}
}

// A mirror's partitions spread over the members, also when a member joins
// and takes its share.
func TestAssignSpreadsAMirror(t *testing.T) {
	var us []Unit
	for m := range 4 {
		for p := range 8 {
			us = append(us, Unit{Name: fmt.Sprintf("part/l/m%d/%d", m, p), Weight: 10, Spread: fmt.Sprintf("l/m%d", m)})
		}
	}
	a, b, c := member("a", "h", nil, nil), member("b", "h", nil, nil), member("c", "h", nil, nil)
	out := assign(1, a, []joined{a, b, c}, us, assignment{})
	maxPerMember := func(out map[string]assignment) int {
		worst := 0
		for _, as := range out {
			per := map[string]int{}
			for _, g := range as.Grants {
				per[g.Unit[:len("part/l/m0")]]++
			}
			for _, n := range per {
				worst = max(worst, n)
			}
		}
		return worst
	}
	if w := maxPerMember(out); w > 3 {
		t.Errorf("a member got %d partitions of one mirror of 8 over 3 members", w)
	}
	// d joins; revoked units go to it next round.
	held := map[string][]string{}
	for id, as := range out {
		for _, g := range as.Grants {
			held[id] = append(held[id], g.Unit)
		}
	}
	a, b, c = member("a", "h", held["a"], nil), member("b", "h", held["b"], nil), member("c", "h", held["c"], nil)
	d := member("d", "h", nil, nil)
	out = assign(2, a, []joined{a, b, c, d}, us, out["a"])
	own := owners(t, out)
	var rel []string
	for _, u := range us {
		if _, ok := own[u.Name]; !ok {
			rel = append(rel, u.Name)
		}
	}
	keep := map[string][]string{}
	for u, id := range own {
		keep[id] = append(keep[id], u)
	}
	a, b, c = member("a", "h", keep["a"], rel), member("b", "h", keep["b"], nil), member("c", "h", keep["c"], nil)
	out = assign(3, a, []joined{a, b, c, d}, us, out["a"])
	owners(t, out)
	if w := maxPerMember(out); w > 3 {
		t.Errorf("after a fourth member joined, a member runs %d partitions of one mirror of 8", w)
	}
	if n := len(out["d"].Grants); n != 8 {
		t.Errorf("the fourth member got %d of 32 partitions, want 8", n)
	}
}

// prevOf is the assignment a leader last saw, from who held what.
func prevOf(held map[string][]string) assignment {
	a := assignment{Owners: map[string]string{}}
	for id, us := range held {
		for _, u := range us {
			a.Owners[u] = "name-" + id
		}
	}
	return a
}

// A release proves a unit stopped only coming from the member the last
// assignment gave it to: an older release, reported again after a failed
// round, does not make a later grant clean.
func TestAssignStaleRelease(t *testing.T) {
	us := units(2, 1)
	u := us[0].Name
	// b owned u last; a reports a release of it from long ago, and b has
	// vanished.
	a := member("a", "h", nil, []string{u})
	out := assign(7, a, []joined{a}, us, assignment{Owners: map[string]string{u: "name-b"}})
	for _, g := range out["a"].Grants {
		if g.Unit == u && g.Clean {
			t.Fatalf("unit %s granted clean on a stale release", u)
		}
	}
	// b itself released it: clean.
	b := member("b", "h", nil, []string{u})
	out = assign(8, a, []joined{a, b}, us, assignment{Owners: map[string]string{}, Releasing: map[string]string{u: "name-b"}})
	clean := false
	for _, as := range out {
		for _, g := range as.Grants {
			clean = clean || (g.Unit == u && g.Clean)
		}
	}
	if !clean {
		t.Fatalf("unit %s released by the member that was releasing it was not granted clean", u)
	}
}

// Two members claim one unit (one lost its lease and came back): neither
// keeps it, and it is not given on clean.
func TestAssignDoubleClaim(t *testing.T) {
	us := units(2, 1)
	u := us[0].Name
	a, b := member("a", "h", []string{u}, nil), member("b", "h", []string{u}, nil)
	out := assign(3, a, []joined{a, b}, us, assignment{Owners: map[string]string{u: "name-b"}})
	for id, as := range out {
		for _, g := range as.Grants {
			if g.Unit == u {
				t.Fatalf("unit %s claimed by two members granted to %s", u, id)
			}
		}
	}
}

// A unit the last round gave to a member that is here, the same process,
// and does not claim it never started there: granted again without a
// wait. Not so if that member is another process by now (it restarted
// under its name), or says the unit is dirty.
func TestAssignUnstartedGrant(t *testing.T) {
	us := units(1, 1)
	u := us[0].Name
	prev := assignment{Owners: map[string]string{u: "name-b"}, Incarnations: map[string]string{"name-b": "one"}}
	for _, tc := range []struct {
		name  string
		inc   string
		dirty []string
		clean bool
	}{{"same process", "one", nil, true}, {"restarted", "two", nil, false}, {"dirty", "one", []string{u}, false}} {
		b := member("b", "h", nil, nil)
		b.meta.Incarnation, b.meta.Dirty = tc.inc, tc.dirty
		out := assign(9, b, []joined{b}, us, prev)
		if g := out["b"].Grants; len(g) != 1 || g[0].Clean != tc.clean {
			t.Errorf("%s: granted %+v, want clean %v", tc.name, g, tc.clean)
		}
	}
}

// A member that cannot run a link (it has not reached the link's source)
// gets none of that link's units, and gives back those it has, while
// another member can run them; if none can, they are assigned anyway.
func TestAssignCannot(t *testing.T) {
	us := []Unit{{Name: "link/x", Weight: 1, Needs: "x"}, {Name: "part/x/t/0", Weight: 10, Needs: "x"}, {Name: "part/x/t/1", Weight: 10, Needs: "x"}, {Name: "link/y", Weight: 1, Needs: "y"}}
	a, b := member("a", "h", []string{"part/x/t/0"}, nil), member("b", "h", nil, nil)
	a.meta.Cannot = []string{"x"}
	out := assign(1, a, []joined{a, b}, us, assignment{})
	for _, g := range out["a"].Grants {
		if strings.HasSuffix(g.Unit, "x") || strings.Contains(g.Unit, "/x/") {
			t.Errorf("member a, which cannot run link x, got %s", g.Unit)
		}
	}
	if out["a"].Owners["part/x/t/0"] != "" {
		t.Errorf("member a keeps part/x/t/0 though it cannot run link x")
	}
	b.meta.Cannot = []string{"x"}
	out = assign(2, a, []joined{a, b}, us, assignment{})
	n := 0
	for _, as := range out {
		for _, g := range as.Grants {
			if strings.Contains(g.Unit, "x") {
				n++
			}
		}
	}
	if n != 3 {
		t.Errorf("with no member able to run link x, %d of its 3 units were granted", n)
	}
}
