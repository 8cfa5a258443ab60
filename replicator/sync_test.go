package replicator

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator/kafkatest"
)

// syncConfig is a link mirroring orders into e.orders (a prefix mapping)
// with consumer offset sync every interval.
func syncConfig(t *testing.T, src, dst *kafkatest.Cluster, interval string, mirrorState string) *config.Config {
	cfg := testConfig(t, src, dst, config.Properties{"consumer.offset.sync.enable": "true", "consumer.offset.sync.ms": interval, "topic.config.sync.ms": "200"},
		config.MirrorTopic{Name: "e.orders", SourceTopicName: "orders", State: mirrorState, Configs: config.Properties{"retention.bytes": "999999"}})
	cfg.Links[0].ConsumerGroupFilters = []config.TopicFilter{{FilterType: "INCLUDE", Name: "*"}, {FilterType: "EXCLUDE", Name: "test-", PatternType: "PREFIXED"}}
	return cfg
}

func commitOn(t *testing.T, c *kafkatest.Cluster, group, topic string, offsets map[int32]int64) {
	t.Helper()
	var os kadm.Offsets
	for p, at := range offsets {
		os.Add(kadm.Offset{Topic: topic, Partition: p, At: at, LeaderEpoch: -1, Metadata: "m-" + group})
	}
	resp, err := kadm.NewClient(newClient(t, c)).CommitOffsets(context.Background(), group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("commit %s: %v", group, err)
	}
}

func committed(t *testing.T, c *kafkatest.Cluster, group, topic string) map[int32]int64 {
	t.Helper()
	adm := kadm.NewClient(newClient(t, c))
	resp, err := adm.FetchOffsets(context.Background(), group)
	// A real broker answers COORDINATOR_NOT_AVAILABLE (retriable) while it
	// creates its offsets topic.
	for deadline := time.Now().Add(20 * time.Second); kerr.IsRetriable(err) && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		resp, err = adm.FetchOffsets(context.Background(), group)
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{}
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
			if strings.HasPrefix(o.Metadata, "m-") && o.Metadata != "m-"+group {
				t.Errorf("group %s %s[%d]: metadata %q, not the group's", group, topic, o.Partition, o.Metadata)
			}
		}
	})
	return out
}

func waitCommitted(t *testing.T, dst *kafkatest.Cluster, group, topic string, want map[int32]int64) {
	t.Helper()
	var got map[int32]int64
	waitFor(t, 15*time.Second, "group "+group+" offsets on the destination", func() bool {
		got = committed(t, dst, group, topic)
		if len(got) != len(want) {
			return false
		}
		for p, at := range want {
			if got[p] != at {
				return false
			}
		}
		return true
	})
}

// Consumer-group offsets: groups the filters select are copied (topic names
// mapped), others not; a reset backwards on the source follows; an offset
// beyond what is mirrored is clamped to the mirror's end; a group with
// members on the destination is left alone and shown in status.
func TestConsumerOffsetSync(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "orders", 2, nil)
		cfg := syncConfig(t, src, dst, "200", "")
		r, _ := runReplicator(t, cfg)
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceN(t, cl, "orders", 2, 100, "first")
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"orders", "e.orders"})

		commitOn(t, src, "app", "orders", map[int32]int64{0: 40, 1: 60})
		commitOn(t, src, "test-x", "orders", map[int32]int64{0: 10})
		waitCommitted(t, dst, "app", "e.orders", map[int32]int64{0: 40, 1: 60})
		commitOn(t, src, "app", "orders", map[int32]int64{0: 5, 1: 60}) // a reset backwards
		waitCommitted(t, dst, "app", "e.orders", map[int32]int64{0: 5, 1: 60})
		resp, err := kadm.NewClient(newClient(t, dst)).FetchOffsets(context.Background(), "app")
		if err != nil {
			t.Fatal(err)
		}
		if o, ok := resp.Lookup("e.orders", 1); !ok || o.Metadata != "m-app" {
			t.Fatalf("offset metadata not copied: %+v", o)
		}
		if got := committed(t, dst, "test-x", "e.orders"); len(got) != 0 {
			t.Fatalf("excluded group test-x copied: %v", got)
		}

		// Clamping: the mirror is paused while the source grows, and the
		// group commits past what the destination holds.
		r.Reload(withMirrors(cfg, config.MirrorTopic{Name: "e.orders", SourceTopicName: "orders", State: "PAUSE", Configs: config.Properties{"retention.bytes": "999999"}}))
		waitState(t, r, "e.orders", linkstate.Paused, 15*time.Second)
		produceN(t, cl, "orders", 2, 50, "while-paused")
		commitOn(t, src, "app", "orders", map[int32]int64{0: 150, 1: 150})
		waitCommitted(t, dst, "app", "e.orders", map[int32]int64{0: 100, 1: 100})

		// A group consuming on the destination is not written to.
		live := newClient(t, dst, kgo.ConsumerGroup("live"), kgo.ConsumeTopics("e.orders"), kgo.DisableAutoCommit())
		waitFor(t, 15*time.Second, "the live group to have members", func() bool {
			dg, err := kadm.NewClient(newClient(t, dst)).DescribeGroups(context.Background(), "live")
			live.PollRecords(context.Background(), 1)
			return err == nil && len(dg["live"].Members) > 0
		})
		commitOn(t, src, "live", "orders", map[int32]int64{0: 7})
		waitFor(t, 15*time.Second, "status to show the live group skipped", func() bool {
			s := r.Status().Links[0].OffsetSync
			return s != nil && slices.Contains(s.SkippedActive, "live")
		})
		if got := committed(t, dst, "live", "e.orders"); got[0] == 7 {
			t.Fatal("offsets were written under a running consumer group")
		}
	})
}

// After a promote, a consumer on the destination in a synced group resumes
// exactly where the source group stopped: no record lost or repeated.
func TestPromoteThenConsumerResumes(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "orders", 1, nil)
		cfg := syncConfig(t, src, dst, "60000", "") // only the promote's last sync copies
		r, _ := runReplicator(t, cfg)
		cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		produceN(t, cl, "orders", 1, 100, "x")
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"orders", "e.orders"})
		time.Sleep(300 * time.Millisecond)

		// A consumer on the source reads 37 records and commits.
		c := newClient(t, src, kgo.ConsumerGroup("g"), kgo.ConsumeTopics("orders"), kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		var read []*kgo.Record
		for len(read) < 37 {
			fs := c.PollRecords(context.Background(), 37-len(read))
			read = append(read, fs.Records()...)
		}
		if err := c.CommitRecords(context.Background(), read[len(read)-1]); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if got := committed(t, src, "g", "orders"); got[0] != 37 {
			t.Fatalf("source group committed %v", got)
		}

		r.Reload(withMirrors(cfg, config.MirrorTopic{Name: "e.orders", SourceTopicName: "orders", State: "PROMOTE", Configs: config.Properties{"retention.bytes": "999999"}}))
		waitState(t, r, "e.orders", linkstate.Stopped, 30*time.Second)

		d := newClient(t, dst, kgo.ConsumerGroup("g"), kgo.ConsumeTopics("e.orders"), kgo.DisableAutoCommit())
		srcRecs := readAll(t, src, "orders")[0]
		var got []*kgo.Record
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for len(got) < 63 && ctx.Err() == nil {
			got = append(got, d.PollRecords(ctx, 100).Records()...)
		}
		if len(got) != 63 {
			t.Fatalf("the destination consumer read %d records, want 63", len(got))
		}
		for i, rec := range got {
			s := srcRecs[37+i]
			if rec.Offset != s.Offset || string(rec.Key) != string(s.Key) || string(rec.Value) != string(s.Value) || !rec.Timestamp.Equal(s.Timestamp) {
				t.Fatalf("record %d: destination %d %s, source %d %s", i, rec.Offset, rec.Key, s.Offset, s.Key)
			}
		}
	})
}

// Topic configs: a config changed on the source reaches the mirror; a
// config that stays local does not; the mirror's own override wins.
func TestTopicConfigSync(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst := testClusters(t, k)
		createTopic(t, src, "orders", 1, nil)
		cfg := syncConfig(t, src, dst, "60000", "")
		runReplicator(t, cfg)
		waitFor(t, 15*time.Second, "the mirror topic", func() bool { return len(endOffsets(t, dst, "e.orders")) == 1 })
		adm := kadm.NewClient(newClient(t, src))
		set := func(k, v string) kadm.AlterConfig { return kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: &v} }
		if _, err := adm.AlterTopicConfigs(context.Background(), []kadm.AlterConfig{set("retention.ms", "12345"), set("min.insync.replicas", "2"), set("retention.bytes", "5")}, "orders"); err != nil {
			t.Fatal(err)
		}
		dadm := kadm.NewClient(newClient(t, dst))
		var got map[string]string
		waitFor(t, 15*time.Second, "retention.ms on the mirror", func() bool {
			rcs, err := dadm.DescribeTopicConfigs(context.Background(), "e.orders")
			if err != nil {
				return false
			}
			rc, err := rcs.On("e.orders", nil)
			if err != nil {
				return false
			}
			got = map[string]string{}
			for _, c := range rc.Configs {
				if c.Value != nil {
					got[c.Key] = *c.Value
				}
			}
			return got["retention.ms"] == "12345"
		})
		if got["min.insync.replicas"] == "2" {
			t.Fatal("a local config (min.insync.replicas) was copied")
		}
		if got["retention.bytes"] != "999999" {
			t.Fatalf("the mirror's override retention.bytes became %q", got["retention.bytes"])
		}
	})
}

// The sync interval comes from the file, and a reload changes it.
func TestOffsetSyncIntervalFromReload(t *testing.T) {
	src, dst := testClusters(t, kafkatest.KFake)
	createTopic(t, src, "orders", 1, nil)
	cfg := syncConfig(t, src, dst, "60000", "")
	r, _ := runReplicator(t, cfg)
	produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "orders", 1, 20, "x")
	waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"orders", "e.orders"})
	waitFor(t, 10*time.Second, "the first sync round", func() bool { return r.Status().Links[0].OffsetSync != nil })
	commitOn(t, src, "late", "orders", map[int32]int64{0: 12})
	time.Sleep(1500 * time.Millisecond)
	if got := committed(t, dst, "late", "e.orders"); len(got) != 0 {
		t.Fatalf("synced before the 60 s interval: %v", got)
	}
	faster := syncConfig(t, src, dst, "200", "")
	faster.StateDir = cfg.StateDir
	r.Reload(faster)
	waitCommitted(t, dst, "late", "e.orders", map[int32]int64{0: 12})
}

func aclOf(rt kmsg.ACLResourceType, name string, pt kmsg.ACLResourcePatternType, principal string, op kmsg.ACLOperation) linkstate.ACL {
	return linkstate.ACL{ResourceType: int8(rt), ResourceName: name, PatternType: int8(pt), Principal: principal, Host: "*", Operation: int8(op), Permission: int8(kmsg.ACLPermissionTypeAllow)}
}

func clusterOf(t *testing.T, c *kafkatest.Cluster) *cluster {
	t.Helper()
	cl, err := newCluster("test", c.ListenAddrs(), nil, zap.NewNop(), c.ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.close)
	return cl
}

// aclClusters starts a source and a destination that enforce ACLs, where
// the test's clients and klink are granted everything by ACLs (not as super
// users): on kfake User:ANONYMOUS, on a real broker (whose ANONYMOUS is the
// brokers' own super user) a SASL user (see kafkatest.ACLs).
func aclClusters(t *testing.T, k kafkatest.Kind) (src, dst *kafkatest.Cluster) {
	t.Helper()
	return testClusters(t, k, kafkatest.Brokers(1), kafkatest.ACLs(kafkatest.GrantAll()...))
}

// ACL sync, on clusters that enforce ACLs: the selected source ACLs are
// created on the destination with topic names mapped by the prefix (a
// literal * becomes the prefix, prefixed); one removed on the source is
// removed on the destination; ACLs a user created on the destination, and
// the ones it had before, are never touched; group ACLs are not selected.
func TestACLSync(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		if k == kafkatest.Kafka {
			kafkatest.RequireManaged(t)
		}
		src, dst := aclClusters(t, k)
		createTopic(t, src, "orders", 1, nil)
		cfg := testConfig(t, src, dst, config.Properties{"acl.sync.enable": "true", "acl.sync.ms": "200"}, config.MirrorTopic{Name: "e.orders", SourceTopicName: "orders"})
		cfg.Links[0].MirrorTopicOptions.Prefix = "e."
		cfg.Links[0].ACLFilters = []config.ACLFilter{{
			ResourceFilter: config.ACLResourceFilter{ResourceType: "topic", Name: "*", PatternType: "any"},
			AccessFilter:   config.ACLAccessFilter{Principal: "*", Host: "*", Operation: "any", PermissionType: "any"},
		}}
		ctx := context.Background()
		s, d := clusterOf(t, src), clusterOf(t, dst)
		alice := aclOf(kmsg.ACLResourceTypeTopic, "orders", kmsg.ACLResourcePatternTypeLiteral, "User:alice", kmsg.ACLOperationRead)
		bob := aclOf(kmsg.ACLResourceTypeTopic, "app.", kmsg.ACLResourcePatternTypePrefixed, "User:bob", kmsg.ACLOperationWrite)
		group := aclOf(kmsg.ACLResourceTypeGroup, "g1", kmsg.ACLResourcePatternTypeLiteral, "User:alice", kmsg.ACLOperationRead)
		carol := aclOf(kmsg.ACLResourceTypeTopic, "e.orders", kmsg.ACLResourcePatternTypeLiteral, "User:carol", kmsg.ACLOperationRead)
		if err := createACLs(ctx, s, []linkstate.ACL{alice, bob, group}); err != nil {
			t.Fatal(err)
		}
		if err := createACLs(ctx, d, []linkstate.ACL{carol}); err != nil {
			t.Fatal(err)
		}
		destACLs := func() []linkstate.ACL {
			acls, err := describeACLs(ctx, d, anyACL())
			if err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(acls, cmpACL)
			return acls
		}
		before := destACLs() // carol's and the seeded ones
		// The seeded topic ACL (* literal, the client principal, ALL) maps to e. prefixed.
		anon := linkstate.ACL{ResourceType: int8(kmsg.ACLResourceTypeTopic), ResourceName: "e.", PatternType: int8(kmsg.ACLResourcePatternTypePrefixed), Principal: src.Principal(), Host: "*", Operation: int8(kmsg.ACLOperationAll), Permission: int8(kmsg.ACLPermissionTypeAllow)}
		mapped := func(a linkstate.ACL) linkstate.ACL { a.ResourceName = "e." + a.ResourceName; return a }
		wantWith := func(extra ...linkstate.ACL) []linkstate.ACL {
			w := append(slices.Clone(before), extra...)
			slices.SortFunc(w, cmpACL)
			return w
		}

		r, _ := runReplicator(t, cfg)
		want := wantWith(mapped(alice), mapped(bob), anon)
		waitFor(t, 15*time.Second, "the ACLs on the destination", func() bool { return slices.Equal(destACLs(), want) })

		if err := deleteACLs(ctx, s, []linkstate.ACL{alice}); err != nil {
			t.Fatal(err)
		}
		want = wantWith(mapped(bob), anon)
		waitFor(t, 15*time.Second, "alice's ACL removed from the destination, the others kept", func() bool { return slices.Equal(destACLs(), want) })
		if st := r.Status().Links[0].ACLSync; st == nil || st.LastError != "" {
			t.Fatalf("ACL sync status %+v", st)
		}
		// Mirroring works under enforced ACLs.
		produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "orders", 1, 10, "x")
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"orders", "e.orders"})
		requireSameRecords(t, readAll(t, src, "orders"), readAll(t, dst, "e.orders"))
	})
}
