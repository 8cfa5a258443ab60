package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/replicator"
	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// A klink cluster under test: members run as processes with the same file
// (but for the member's name and state dir).
type klinkCluster struct {
	t        *testing.T
	src, dst *kafkatest.Cluster
	links    map[string][]string // link -> mirror topics (same name on both sides)
	session  time.Duration
	dir      string
	members  map[string]*clusterMember
	parts    int               // partitions per topic
	states   map[string]string // mirror -> desired state, if not ACTIVE
	extra    map[string]string // member -> link-level YAML only its file has
	mu       sync.Mutex        // guards members' admin addresses (read by watchers)
}

// adminOf is a member's admin address as of its last start.
func (c *klinkCluster) adminOf(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[name].admin
}

type clusterMember struct {
	name  string
	cmd   *exec.Cmd
	logs  *syncBuffer
	admin string
	all   strings.Builder // every run's log, for a failure
}

func newKlinkCluster(t *testing.T, src, dst *kafkatest.Cluster, links map[string][]string, session time.Duration) *klinkCluster {
	c := &klinkCluster{t: t, src: src, dst: dst, links: links, session: session, dir: t.TempDir(), members: map[string]*clusterMember{},
		parts: clusterTestPartitions, states: map[string]string{}, extra: map[string]string{}}
	t.Cleanup(func() {
		for _, m := range c.members {
			if m.cmd != nil {
				m.cmd.Process.Signal(syscall.SIGCONT)
				m.cmd.Process.Kill()
				m.cmd.Wait()
			}
			if t.Failed() {
				m.all.WriteString(m.logs.String())
				t.Logf("klink member %s log:\n%s", m.name, m.all.String())
			}
		}
	})
	return c
}

func (c *klinkCluster) config(member string) string {
	var b strings.Builder
	stateDir := filepath.Join(c.dir, member)
	fmt.Fprintf(&b, "stateDir: %s\nadmin: {listen: \"127.0.0.1:0\"}\nlog: {level: info, format: json}\n", stateDir)
	fmt.Fprintf(&b, "cluster: {group: klink-test, member: %s, sessionTimeout: %s}\n", member, c.session)
	fmt.Fprintf(&b, "destination:\n  bootstrap: [%q]\n", c.dst.ListenAddrs()[0])
	b.WriteString("links:\n")
	var names []string
	for l := range c.links {
		names = append(names, l)
	}
	sort.Strings(names)
	for _, l := range names {
		fmt.Fprintf(&b, "  - name: %s\n    source:\n      bootstrap: [%q]\n%s    mirrorTopics:\n", l, c.src.ListenAddrs()[0], c.extra[member])
		for _, tp := range c.links[l] {
			fmt.Fprintf(&b, "      - name: %s\n", tp)
			if s := c.states[tp]; s != "" {
				fmt.Fprintf(&b, "        state: %s\n", s)
			}
		}
	}
	p := filepath.Join(c.dir, member+".yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *klinkCluster) start(name string) *clusterMember {
	c.t.Helper()
	c.mu.Lock()
	m := c.members[name]
	if m == nil {
		m = &clusterMember{name: name}
		c.members[name] = m
	}
	c.mu.Unlock()
	if m.logs != nil {
		m.all.WriteString(m.logs.String())
	}
	m.logs = &syncBuffer{}
	m.cmd = startKlink(c.t, c.config(name), m.logs)
	addr := adminAddress(c.t, m.logs)
	c.mu.Lock()
	m.admin = addr
	c.mu.Unlock()
	return m
}

func (c *klinkCluster) signal(name string, s syscall.Signal) {
	c.t.Helper()
	if err := c.members[name].cmd.Process.Signal(s); err != nil {
		c.t.Fatal(err)
	}
}

// stop ends a member: SIGTERM must end it cleanly.
func (c *klinkCluster) stop(name string) {
	c.t.Helper()
	m := c.members[name]
	c.signal(name, syscall.SIGTERM)
	if err := m.cmd.Wait(); err != nil {
		c.t.Fatalf("member %s exited with %v after SIGTERM", name, err)
	}
	m.cmd = nil
}

func (c *klinkCluster) kill(name string) {
	c.t.Helper()
	m := c.members[name]
	c.signal(name, syscall.SIGKILL)
	m.cmd.Wait()
	m.cmd = nil
}

func (c *klinkCluster) topics() []string {
	var out []string
	for _, ts := range c.links {
		out = append(out, ts...)
	}
	sort.Strings(out)
	return out
}

// units is every unit the cluster shares: a control unit per link, a
// mirror's control loop, and each mirrored partition.
func (c *klinkCluster) units() []string {
	var out []string
	for l, ts := range c.links {
		out = append(out, "link/"+l)
		for _, tp := range ts {
			out = append(out, "mirror/"+l+"/"+tp)
			for p := range c.parts {
				out = append(out, fmt.Sprintf("part/%s/%s/%d", l, tp, p))
			}
		}
	}
	sort.Strings(out)
	return out
}

// ownership reads every running member's status: unit -> member, from the
// units each member says it owns; it fails the test at once if two members
// own one unit. waiting counts units owned but still waiting for a previous
// owner's lease.
func (c *klinkCluster) ownership(names ...string) (owners map[string]string, waiting int, statuses map[string]replicator.Status) {
	c.t.Helper()
	owners, statuses = map[string]string{}, map[string]replicator.Status{}
	for _, n := range names {
		s, err := statusOf(c.adminOf(n))
		if err != nil || s.Cluster == nil {
			continue
		}
		statuses[n] = s
		for _, u := range s.Cluster.Owned {
			if other, dup := owners[u]; dup {
				// The members are read one after the other: a unit
				// handed from other to n between the two reads shows
				// in both. Only if other still owns it after n was
				// seen owning it did they own it at once.
				if again, err := statusOf(c.adminOf(other)); err == nil && again.Cluster != nil && slices.Contains(again.Cluster.Owned, u) {
					c.t.Fatalf("unit %s owned by %s and %s at once", u, other, n)
				}
			}
			owners[u] = n
		}
		waiting += len(s.Cluster.Waiting)
	}
	return owners, waiting, statuses
}

// waitOwned waits until the named members own every unit between them,
// none still waiting, each member owning some; it returns how long it took.
func (c *klinkCluster) waitOwned(limit time.Duration, names ...string) time.Duration {
	c.t.Helper()
	start := time.Now()
	want := c.units()
	var last string
	for time.Since(start) < limit {
		owners, waiting, _ := c.ownership(names...)
		per := map[string]int{}
		for _, n := range owners {
			per[n]++
		}
		if len(owners) == len(want) && waiting == 0 && len(per) == len(names) {
			return time.Since(start)
		}
		last = fmt.Sprintf("%d of %d units owned, %d waiting, per member %v", len(owners), len(want), waiting, per)
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("members %v did not own every unit within %s: %s", names, limit, last)
	return 0
}

func statusOf(addr string) (replicator.Status, error) {
	var s replicator.Status
	code, body, err := httpGetErr("http://" + addr + "/status")
	if err != nil || code != 200 {
		return s, fmt.Errorf("status: %d %v", code, err)
	}
	return s, json.Unmarshal(body, &s)
}

// checkExact waits until the destination caught up with the source, and
// compares every topic record by record and batch by batch, both
// isolation levels; no mirror may be FAILED.
func (c *klinkCluster) checkExact(ctx context.Context, adm *kadm.Client, running ...string) int {
	c.t.Helper()
	var cmd *exec.Cmd
	for _, n := range running {
		if m := c.members[n]; m.cmd != nil {
			cmd = m.cmd
		}
	}
	waitDestinationCaughtUp(c.t, ctx, adm, c.dst, cmd, 120*time.Second, c.topics()...)
	_, _, statuses := c.ownership(running...)
	for n, s := range statuses {
		for _, l := range s.Links {
			for _, m := range l.Mirrors {
				if m.State != "ACTIVE" && !(m.State == "STOPPED" && c.states[m.Name] == "PROMOTE") {
					c.t.Fatalf("member %s shows mirror %s %s: %s", n, m.Name, m.State, m.Reason)
				}
			}
		}
	}
	total := 0
	for _, tp := range c.topics() {
		e, err := mirrorcheck.CompareExact(ctx, c.src.ListenAddrs(), c.dst.ListenAddrs(), tp, tp, int32(c.parts))
		if err != nil {
			c.t.Fatalf("%s: %v", tp, err)
		}
		total += e.Uncommitted
	}
	return total
}

const clusterTestPartitions = 25

// load produces to every topic until stopped; it returns how many records
// were acknowledged.
func load(t *testing.T, src *kafkatest.Cluster, topics []string) (stop func() int64) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var acked atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		cl, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchCompression(kgo.ZstdCompression()))
		if err != nil {
			t.Error(err)
			return
		}
		defer cl.Close()
		for n := 0; ctx.Err() == nil; n++ {
			r := &kgo.Record{Topic: topics[n%len(topics)], Key: fmt.Appendf(nil, "k%d", n%97), Value: fmt.Appendf(nil, "value %d", n),
				Headers: []kgo.RecordHeader{{Key: "n", Value: fmt.Appendf(nil, "%d", n)}}}
			cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
				if err == nil {
					acked.Add(1)
				}
			})
			if n%50 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
		fctx, fcancel := context.WithTimeout(context.Background(), 20*time.Second)
		cl.Flush(fctx)
		fcancel()
	}()
	return func() int64 {
		cancel()
		wg.Wait()
		return acked.Load()
	}
}

// Issue "klink clusters", must-show 1, 2, 3 and 8, on one set of
// clusters: three members share 3 links and 300 partitions (every unit
// one owner, destination identical); one SIGKILLed under load (the others
// take over within 30 s, exact); one SIGSTOPped under load for 3x the
// session timeout (it appends nothing after its lease ended: exact, no
// mirror FAILED; then it rejoins); every member stopped and one started
// (it resumes every partition from the shared state, exact).
func TestClusterMembers(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst, adm := clusterPair(t, k)
		ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
		defer cancel()
		links := map[string][]string{}
		for l := range 3 {
			for i := range 4 {
				tp := fmt.Sprintf("l%d-t%d", l, i)
				links[fmt.Sprintf("link-%d", l)] = append(links[fmt.Sprintf("link-%d", l)], tp)
				if _, err := adm.CreateTopic(ctx, clusterTestPartitions, -1, nil, tp); err != nil {
					t.Fatal(err)
				}
			}
		}
		c := newKlinkCluster(t, src, dst, links, 6*time.Second)
		stopLoad := load(t, src, c.topics())
		time.Sleep(time.Second)
		stopLoad()

		// 1. Three members share everything, each unit one owner.
		for _, n := range []string{"a", "b", "c"} {
			c.start(n)
		}
		took := c.waitOwned(90*time.Second, "a", "b", "c")
		n := c.checkExact(ctx, adm, "a", "b", "c")
		owners, _, statuses := c.ownership("a", "b", "c")
		for name, s := range statuses {
			if len(s.Cluster.Members) != 3 {
				t.Fatalf("member %s's status shows %d members", name, len(s.Cluster.Members))
			}
			for u, o := range s.Cluster.Owners {
				if owners[u] != o {
					t.Fatalf("member %s's status says %s owns %s; %s says it owns it", name, o, u, owners[u])
				}
			}
		}
		// klink status on any member shows the whole cluster: every
		// member (last seen through the shared state), and who runs
		// which partitions.
		waitUntil(t, 30*time.Second, "every member seen in the shared state", func() bool {
			s, err := statusOf(c.adminOf("b"))
			if err != nil || s.Cluster == nil || len(s.Cluster.Members) != 3 {
				return false
			}
			for _, m := range s.Cluster.Members {
				if m.LastSeen == nil {
					return false
				}
			}
			return true
		})
		out := klinkOutput(t, "status", "--admin", c.adminOf("b"))
		for _, want := range []string{"klink cluster klink-test", "LAST SEEN", "  a ", "  c ", "l0-t0: control on ", "partitions a: "} {
			if !strings.Contains(out, want) {
				t.Fatalf("klink status does not show %q:\n%s", want, out)
			}
		}
		t.Logf("3 members own %d units (%d partitions) after %s; %d records exact", len(owners), 3*4*clusterTestPartitions, took.Round(time.Millisecond), n)

		// 2. SIGKILL a member under load: the others take over.
		stopLoad = load(t, src, c.topics())
		time.Sleep(2 * time.Second)
		c.kill("c")
		took = c.waitOwned(60*time.Second, "a", "b")
		if took > 30*time.Second {
			t.Errorf("the killed member's units resumed after %s, more than 30 s", took)
		}
		time.Sleep(2 * time.Second)
		stopLoad()
		n = c.checkExact(ctx, adm, "a", "b")
		t.Logf("SIGKILL: the others own every unit %s after the kill (session %s); %d records exact", took.Round(time.Millisecond), c.session, n)

		// 3. SIGSTOP a member under load for 3x the session timeout.
		c.start("c")
		c.waitOwned(90*time.Second, "a", "b", "c")
		stopLoad = load(t, src, c.topics())
		time.Sleep(2 * time.Second)
		c.signal("b", syscall.SIGSTOP)
		took = c.waitOwned(60*time.Second, "a", "c")
		time.Sleep(3*c.session - took)
		c.signal("b", syscall.SIGCONT)
		c.waitOwned(90*time.Second, "a", "b", "c")
		time.Sleep(2 * time.Second)
		stopLoad()
		n = c.checkExact(ctx, adm, "a", "b", "c")
		if !strings.Contains(c.members["b"].logs.String(), "lease ended") {
			t.Errorf("member b, frozen for %s, did not say its lease ended", 3*c.session)
		}
		t.Logf("SIGSTOP %s: the others owned b's units after %s; b rejoined; %d records exact", 3*c.session, took.Round(time.Millisecond), n)

		// 8. Every member stops; one starts and resumes everything.
		for _, name := range []string{"a", "b", "c"} {
			c.stop(name)
		}
		stopLoad = load(t, src, c.topics())
		time.Sleep(2 * time.Second)
		stopLoad()
		c.start("a")
		c.waitOwned(90*time.Second, "a")
		n = c.checkExact(ctx, adm, "a")
		t.Logf("one member after a full stop: %d records exact", n)
	})
}

func httpGetErr(url string) (int, []byte, error) {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// destEnds samples the destination's end offset of every partition.
func (c *klinkCluster) destEnds(ctx context.Context, adm *kadm.Client) map[string]int64 {
	out := map[string]int64{}
	ends, err := adm.ListEndOffsets(ctx, c.topics()...)
	if err != nil {
		return out
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			out[fmt.Sprintf("%s/%d", o.Topic, o.Partition)] = o.Offset
		}
	})
	return out
}

// partOwners maps "topic/partition" to the member running it.
func partOwners(owners map[string]string) map[string]string {
	out := map[string]string{}
	for u, o := range owners {
		if rest, ok := strings.CutPrefix(u, "part/"); ok {
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				out[rest[i+1:]] = o
			}
		}
	}
	return out
}

// Issue "klink clusters", must-show 4, 5, 6 and 7: a member with another
// config owns nothing and status names why; a fourth member joins under
// load: about a quarter of the partitions move, and the others never
// pause; a rolling restart (SIGTERM one at a time): no mirror leaves
// ACTIVE; a promote of a mirror whose partitions are spread over the
// members.
func TestClusterOperations(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst, adm := clusterPair(t, k)
		ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
		defer cancel()
		links := map[string][]string{"link-0": {"a0", "a1", "a2"}, "link-1": {"b0", "b1", "b2"}}
		c := newKlinkCluster(t, src, dst, links, 6*time.Second)
		c.parts = 8
		for _, tp := range c.topics() {
			if _, err := adm.CreateTopic(ctx, int32(c.parts), -1, nil, tp); err != nil {
				t.Fatal(err)
			}
		}
		dstAdm := dst.Admin(t)
		for _, n := range []string{"a", "b", "c"} {
			c.start(n)
		}
		c.waitOwned(90*time.Second, "a", "b", "c")

		// 6. A member with another config owns nothing; status says why.
		c.extra["x"] = "    configs: {cluster.link.retry.timeout.ms: \"123000\"}\n"
		c.start("x")
		waitUntil(t, 60*time.Second, "the member with another config to be refused", func() bool {
			s, err := statusOf(c.adminOf("x"))
			return err == nil && s.Cluster != nil && strings.Contains(s.Cluster.Refused, "differs from the leader")
		})
		s, _ := statusOf(c.adminOf("a"))
		refused := ""
		for _, m := range s.Cluster.Members {
			if m.Name == "x" {
				refused = m.Refused
			}
		}
		if refused == "" {
			t.Fatalf("member a's status does not show x refused: %+v", s.Cluster.Members)
		}
		if xs, _ := statusOf(c.adminOf("x")); len(xs.Cluster.Owned) != 0 {
			t.Fatalf("the member with another config owns %v", xs.Cluster.Owned)
		}
		c.waitOwned(30*time.Second, "a", "b", "c")
		t.Logf("member x with another config: %s", refused)
		c.stop("x")

		// 5. A fourth member joins under load: about a quarter of the
		// partitions move; the others never pause.
		stopLoad := load(t, src, c.topics())
		time.Sleep(2 * time.Second)
		before, _, _ := c.ownership("a", "b", "c")
		sampler := c.sample(ctx, dstAdm)
		c.start("d")
		c.waitOwned(90*time.Second, "a", "b", "c", "d")
		time.Sleep(2 * time.Second)
		samples, sampleTimes := sampler()
		after, _, _ := c.ownership("a", "b", "c", "d")
		pb, pa := partOwners(before), partOwners(after)
		moved := 0
		for tp, o := range pa {
			if pb[tp] != o {
				moved++
			}
		}
		total := len(c.topics()) * c.parts
		if moved < total/8 || moved > total/2 {
			t.Errorf("%d of %d partitions moved to or between members when a fourth joined; about a quarter should", moved, total)
		}
		// A partition that stayed advanced all along: no gap between two
		// advances longer than 3 s.
		worst, worstPart := longestPause(samples, sampleTimes, func(tp string) bool { return pb[tp] == pa[tp] })
		// A pause is seen only as finely as the samples come (slower on a
		// loaded machine): three sampling intervals, at least 3 s.
		if limit := max(3*time.Second, 3*medianInterval(sampleTimes)); worst > limit {
			t.Errorf("partition %s, which did not move, made no progress for %s while the fourth member joined (limit %s)", worstPart, worst, limit)
		}
		stopLoad()
		n := c.checkExact(ctx, adm, "a", "b", "c", "d")
		t.Logf("a fourth member joined: %d of %d partitions moved; the longest pause of a partition that stayed: %s (%d samples); %d records exact", moved, total, worst.Round(time.Millisecond), len(samples), n)

		// 4. Rolling restart: SIGTERM one member at a time; no mirror
		// leaves ACTIVE.
		stopLoad = load(t, src, c.topics())
		sampler = c.sample(ctx, dstAdm)
		watching, stopWatching := context.WithCancel(ctx)
		var notActive, waited atomic.Value
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			for watching.Err() == nil {
				for _, name := range []string{"a", "b", "c", "d"} {
					st, err := statusOf(c.adminOf(name))
					if err != nil {
						continue
					}
					if st.Cluster != nil && len(st.Cluster.Waiting) > 0 {
						waited.Store(fmt.Sprintf("member %s had %d units waiting for a previous owner's lease", name, len(st.Cluster.Waiting)))
					}
					for _, l := range st.Links {
						for _, m := range l.Mirrors {
							if m.State != "ACTIVE" {
								notActive.Store(fmt.Sprintf("member %s saw mirror %s %s: %s", name, m.Name, m.State, m.Reason))
							}
						}
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		for _, name := range []string{"a", "b", "c", "d"} {
			c.stop(name)
			c.start(name)
			c.waitOwned(90*time.Second, "a", "b", "c", "d")
		}
		stopWatching()
		<-watched
		samples, sampleTimes = sampler()
		stopLoad()
		if v := notActive.Load(); v != nil {
			t.Errorf("rolling restart: %s", v)
		}
		// Members that stop cleanly hand their partitions on at once,
		// and take them back at once when they return: no unit waits for
		// a lease. (The longest pause is sampled too, and reported: how
		// finely depends on the machine's load.)
		if v := waited.Load(); v != nil {
			t.Errorf("rolling restart: %s", v)
		}
		restartPause, _ := longestPause(samples, sampleTimes, func(string) bool { return true })
		n = c.checkExact(ctx, adm, "a", "b", "c", "d")
		t.Logf("rolling restart of 4 members: every mirror ACTIVE throughout; the longest pause of a partition: %s; %d records exact", restartPause.Round(time.Millisecond), n)

		// 7. Promote a mirror whose partitions run on several members.
		owners, _, _ := c.ownership("a", "b", "c", "d")
		on := map[string]bool{}
		for tp, o := range partOwners(owners) {
			if strings.HasPrefix(tp, "a1/") {
				on[o] = true
			}
		}
		if len(on) < 2 {
			t.Fatalf("mirror a1's partitions all run on %v: not spread", on)
		}
		stopLoad = load(t, src, c.topics())
		time.Sleep(2 * time.Second)
		stopLoad()
		c.states["a1"] = "PROMOTE"
		for _, name := range []string{"a", "b", "c", "d"} {
			c.config(name)
			c.signal(name, syscall.SIGHUP)
		}
		waitUntil(t, 90*time.Second, "mirror a1 to be promoted", func() bool {
			for _, name := range []string{"a", "b", "c", "d"} {
				st, err := statusOf(c.adminOf(name))
				if err != nil || mirrorState(st, "a1") != "STOPPED" {
					return false
				}
			}
			return true
		})
		n = c.checkExact(ctx, adm, "a", "b", "c", "d")
		// After the promote, klink writes nothing more into a1: a
		// producer's record lands right after the mirrored ones.
		srcEnds, err := adm.ListEndOffsets(ctx, "a1")
		if err != nil {
			t.Fatal(err)
		}
		pcl, err := kgo.NewClient(kgo.SeedBrokers(dst.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		defer pcl.Close()
		time.Sleep(2 * c.session)
		for p := range int32(c.parts) {
			r, err := pcl.ProduceSync(ctx, &kgo.Record{Topic: "a1", Partition: p, Value: []byte("after promote")}).First()
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := srcEnds.Lookup("a1", p); r.Offset != want.Offset {
				t.Fatalf("a1[%d]: a producer's first record after the promote landed at %d, the mirror ended at %d", p, r.Offset, want.Offset)
			}
		}
		t.Logf("promote of a mirror spread over %d members: STOPPED, exact (%d records), nothing written after", len(on), n)
	})
}

// sample samples the destination's end offsets every 100 ms until the
// returned function is called; it returns the samples and their times.
func (c *klinkCluster) sample(ctx context.Context, adm *kadm.Client) func() ([]map[string]int64, []time.Time) {
	var samples []map[string]int64
	var times []time.Time
	sampling, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sampling.Err() == nil {
			samples = append(samples, c.destEnds(ctx, adm))
			times = append(times, time.Now())
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return func() ([]map[string]int64, []time.Time) {
		stop()
		<-done
		return samples, times
	}
}

// longestPause is the longest time one of the partitions that count made
// no progress over the samples, and which partition.
func longestPause(samples []map[string]int64, times []time.Time, counts func(tp string) bool) (time.Duration, string) {
	worst, worstPart := time.Duration(0), ""
	if len(samples) == 0 {
		return 0, ""
	}
	for tp := range samples[len(samples)-1] {
		if !counts(tp) {
			continue
		}
		last := times[0]
		for i := 1; i < len(samples); i++ {
			if samples[i][tp] > samples[i-1][tp] {
				if gap := times[i].Sub(last); gap > worst {
					worst, worstPart = gap, tp
				}
				last = times[i]
			}
		}
		if gap := times[len(times)-1].Sub(last); gap > worst {
			worst, worstPart = gap, tp
		}
	}
	return worst, worstPart
}

// medianInterval is the median time between two samples.
func medianInterval(times []time.Time) time.Duration {
	if len(times) < 2 {
		return 0
	}
	var d []time.Duration
	for i := 1; i < len(times); i++ {
		d = append(d, times[i].Sub(times[i-1]))
	}
	slices.Sort(d)
	return d[len(d)/2]
}
