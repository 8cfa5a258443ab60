package membership

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/klink-io/klink/replicator/kafkatest"
)

type testMember struct {
	g      *Group
	cancel context.CancelFunc
	done   chan struct{}
}

func startMember(t *testing.T, c *kafkatest.Cluster, name string, session time.Duration, us []Unit) *testMember {
	t.Helper()
	cl, err := kgo.NewClient(append(c.ClientOpts(), kgo.SeedBrokers(c.ListenAddrs()...))...)
	if err != nil {
		t.Fatal(err)
	}
	g := New(cl, Config{Group: "klink-test", Member: name, Host: "h-" + name, SessionTimeout: session, AppendLifetime: session, ConfigHash: "h", Units: func() []Unit { return us }}, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	m := &testMember{g: g, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		defer cl.Close()
		g.Run(ctx)
	}()
	// Revoked units stop at once here.
	go func() {
		held := map[string]bool{}
		for {
			select {
			case <-ctx.Done():
				return
			case <-g.Changed():
			}
			now := g.Assignment()
			for u := range held {
				if _, ok := now[u]; !ok {
					delete(held, u)
					g.Released(u, true)
				}
			}
			for u := range now {
				held[u] = true
			}
		}
	}()
	t.Cleanup(m.stop)
	return m
}

func (m *testMember) stop() {
	m.cancel()
	<-m.done
}

// waitSpread waits until the members' assignments cover every unit exactly
// once, each member holding about its share, and returns unit -> member.
func waitSpread(t *testing.T, us []Unit, within time.Duration, ms ...*testMember) map[string]string {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		own := map[string]string{}
		dup := ""
		counts := []int{}
		for _, m := range ms {
			a := m.g.Assignment()
			counts = append(counts, len(a))
			for u := range a {
				if other, ok := own[u]; ok {
					dup = fmt.Sprintf("unit %s held by %s and %s", u, other, m.g.cfg.Member)
				}
				own[u] = m.g.cfg.Member
			}
		}
		if dup != "" {
			t.Fatal(dup) // never, at any moment
		}
		sort.Ints(counts)
		if len(own) == len(us) && counts[len(counts)-1]-counts[0] <= 1 {
			return own
		}
		last = fmt.Sprintf("%d of %d units held, per member %v", len(own), len(us), counts)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("assignment did not settle within %s: %s", within, last)
	return nil
}

// Three members share the units; one leaves and the others take its
// units; one vanishes (no LeaveGroup) and the survivor takes over after
// the session timeout, waiting for the lease the vanished one may hold.
func TestGroupShares(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		c := kafkatest.Start(t, k, "group")
		us := units(12, 1)
		session := 6 * time.Second
		a := startMember(t, c, "a", session, us)
		b := startMember(t, c, "b", session, us)
		cm := startMember(t, c, "c", session, us)
		own := waitSpread(t, us, 60*time.Second, a, b, cm)
		st := a.g.Status()
		if len(st.Members) != 3 || len(st.Owners) != len(us) {
			t.Fatalf("status shows %d members and %d owners: %+v", len(st.Members), len(st.Owners), st)
		}
		for u, name := range own {
			if st.Owners[u] != name {
				t.Errorf("status says %s owns %s, the member holding it is %s", st.Owners[u], u, name)
			}
		}

		// A clean leave: its units move without waiting.
		cm.stop()
		waitSpread(t, us, 30*time.Second, a, b)
		for _, m := range []*testMember{a, b} {
			if w := m.g.Status().Waiting; len(w) > 0 {
				// Only units that waited from the start may show here.
				for u, until := range w {
					if time.Until(until) > session {
						t.Errorf("%s waits until %s for %s after a clean leave", m.g.cfg.Member, until, u)
					}
				}
			}
		}

		// A vanished member (its process frozen; no leave): the other
		// holds everything after the session timeout, and its new units
		// wait for the vanished one's lease.
		frozen := b.g
		b.cancel() // Run ends without leaving: simulate by dropping the id
		frozen.mu.Lock()
		frozen.memberID = ""
		frozen.mu.Unlock()
		<-b.done
		start := time.Now()
		waitSpread(t, us, 60*time.Second, a)
		if took := time.Since(start); took < session-time.Second {
			t.Errorf("a unit of a vanished member was taken after %s, before its session could have ended", took)
		}
	})
}

// The lease ends by itself when the coordinator cannot be reached: a
// member whose broker is frozen gives up every unit within the session
// timeout, before the coordinator could have given them to another.
func TestGroupLeaseEnds(t *testing.T) {
	kafkatest.RequireKafka(t)
	c := kafkatest.Start(t, kafkatest.Kafka, "lease")
	us := units(3, 1)
	session := 6 * time.Second
	a := startMember(t, c, "a", session, us)
	waitSpread(t, us, 60*time.Second, a)
	if !a.g.LeaseValid() {
		t.Fatal("no lease while holding units")
	}
	var once sync.Once
	resume := func() { once.Do(func() { c.ResumeNode(t, 0) }) }
	c.PauseNode(t, 0)
	t.Cleanup(resume)
	frozeAt := time.Now()
	for a.g.LeaseValid() {
		if time.Since(frozeAt) > session {
			t.Fatalf("lease still valid %s after the coordinator froze (session %s)", time.Since(frozeAt), session)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(a.g.Assignment()); n != 0 {
		t.Errorf("%d units still assigned after the lease ended", n)
	}
	t.Logf("lease ended %s after the coordinator froze (session %s)", time.Since(frozeAt).Round(time.Millisecond), session)
	resume()
	waitSpread(t, us, 90*time.Second, a)
}
