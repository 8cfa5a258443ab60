package linkstate

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/klink-io/klink/replicator/kafkatest"
)

func openTopic(t *testing.T, c *kafkatest.Cluster, member string, lease func() bool) *Topic {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := append(c.ClientOpts(), kgo.SeedBrokers(c.ListenAddrs()...))
	s, err := OpenTopic(ctx, t.TempDir(), "_klink-test-state", member, opts, lease, 10*time.Second, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Two members share the state: what one writes, the other reads after
// Sync, field by field; a member that starts later reads everything; a
// member whose lease ended writes nothing.
func TestTopicShared(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		c := kafkatest.Start(t, k, "state")
		a := openTopic(t, c, "a", nil)
		var bLease atomic.Bool
		bLease.Store(true)
		b := openTopic(t, c, "b", bLease.Load)
		ctx := context.Background()

		link := Link{Name: "west", ID: NewLinkID(), SourceClusterID: "src", DestinationClusterID: "dst", CreatedAt: time.Now().UTC().Truncate(time.Second)}
		if err := a.PutLink(link); err != nil {
			t.Fatal(err)
		}
		shift := OffsetShift{SourceOffset: 10, DestOffset: 11, AffectedFrom: 7, Reason: "aborted by the destination", At: time.Now().UTC().Truncate(time.Second)}
		want, err := a.UpdateMirror("west", "orders", func(m *Mirror) error {
			m.SourceTopic, m.DestTopicID = "orders", "abc"
			m.Partitions = map[int32]*Partition{0: {StartOffset: 5, FilledOffsets: 5, Shifts: []OffsetShift{shift}}, 1: {}}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// b takes the mirror over: it reads what a wrote first, then
		// writes.
		if err := b.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := b.UpdateMirror("west", "orders", func(m *Mirror) error { return nil }); err != nil {
			t.Fatal(err)
		}
		sameJSON(t, "link on b", b.GetLink, "west", link)
		// a's write and b's rewrite of it carry the same fields.
		got, err := b.GetMirror("west", "orders")
		if err != nil {
			t.Fatal(err)
		}
		if got.Partitions[0] == nil || got.Partitions[0].Translate(12) != 13 || got.DestTopicID != "abc" {
			t.Fatalf("b reads %+v, a wrote %+v", got, want)
		}

		// Two members write different partitions of the mirror, each
		// from its own copy: neither overwrites the other.
		if _, err := a.UpdateMirror("west", "orders", func(m *Mirror) error {
			m.Partitions[0].FilledRanges = 3
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.UpdateMirror("west", "orders", func(m *Mirror) error {
			m.Partitions[1].FilledOffsets = 9
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Topic{a, b} {
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			m, err := s.GetMirror("west", "orders")
			if err != nil || m.Partitions[0].FilledRanges != 3 || m.Partitions[1].FilledOffsets != 9 || m.Partitions[0].Translate(12) != 13 {
				t.Fatalf("%s reads %+v %+v after writes to two partitions by two members (%v)", s.member, m.Partitions[0], m.Partitions[1], err)
			}
		}

		// A third member, started later, reads all of it.
		late := openTopic(t, c, "late", nil)
		sameJSON(t, "link on a late member", late.GetLink, "west", link)
		m, err := late.GetMirror("west", "orders")
		if err != nil || m.Partitions[0].FilledOffsets != 5 || len(m.Partitions[0].Shifts) != 1 {
			t.Fatalf("a late member reads %+v, %v", m, err)
		}

		// b's lease ends: it writes nothing, locally or shared.
		bLease.Store(false)
		_, err = b.UpdateMirror("west", "orders", func(m *Mirror) error {
			m.State = Active
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), "lease has ended") {
			t.Fatalf("write without a lease: %v", err)
		}
		if m, _ := b.GetMirror("west", "orders"); m.State != Pending {
			t.Errorf("the refused write changed b's copy: %s", m.State)
		}
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if m, _ := a.GetMirror("west", "orders"); m.State != Pending {
			t.Errorf("the refused write reached a: %s", m.State)
		}
	})
}

func sameJSON(t *testing.T, what string, get func(string) (Link, error), name string, want Link) {
	t.Helper()
	got, err := get(name)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("%s:\n got %s\nwant %s", what, g, w)
	}
}

// A record of a format this klink does not read is not applied (a newer
// klink wrote it), and the member says so instead of misreading it.
func TestTopicRefusesNewerFormat(t *testing.T) {
	c := kafkatest.Start(t, kafkatest.KFake, "state")
	a := openTopic(t, c, "a", nil)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	val := `{"format":"klink-state/9","writer":"new","link":{"name":"west","id":"x"}}`
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "_klink-test-state", Key: []byte("link/west"), Value: []byte(val)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetLink("west"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a record of format klink-state/9 was applied: %v", err)
	}
}
