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
}

type clusterMember struct {
	name  string
	cmd   *exec.Cmd
	logs  *syncBuffer
	admin string
	all   strings.Builder // every run's log, for a failure
}

func newKlinkCluster(t *testing.T, src, dst *kafkatest.Cluster, links map[string][]string, session time.Duration) *klinkCluster {
	c := &klinkCluster{t: t, src: src, dst: dst, links: links, session: session, dir: t.TempDir(), members: map[string]*clusterMember{}}
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
		fmt.Fprintf(&b, "  - name: %s\n    source:\n      bootstrap: [%q]\n    mirrorTopics:\n", l, c.src.ListenAddrs()[0])
		for _, tp := range c.links[l] {
			fmt.Fprintf(&b, "      - name: %s\n", tp)
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
	m := c.members[name]
	if m == nil {
		m = &clusterMember{name: name}
		c.members[name] = m
	} else if m.logs != nil {
		m.all.WriteString(m.logs.String())
	}
	m.logs = &syncBuffer{}
	m.cmd = startKlink(c.t, c.config(name), m.logs)
	m.admin = adminAddress(c.t, m.logs)
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
			for p := range clusterTestPartitions {
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
		s, err := statusOf(c.members[n].admin)
		if err != nil || s.Cluster == nil {
			continue
		}
		statuses[n] = s
		for _, u := range s.Cluster.Owned {
			if other, dup := owners[u]; dup {
				c.t.Fatalf("unit %s owned by %s and %s at once", u, other, n)
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
				if m.State != "ACTIVE" {
					c.t.Fatalf("member %s shows mirror %s %s: %s", n, m.Name, m.State, m.Reason)
				}
			}
		}
	}
	total := 0
	for _, tp := range c.topics() {
		e, err := mirrorcheck.CompareExact(ctx, c.src.ListenAddrs(), c.dst.ListenAddrs(), tp, tp, clusterTestPartitions)
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
