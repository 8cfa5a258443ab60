package linkstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// Topic is the state the members of a klink cluster share: a compacted
// topic on the destination cluster, one record per link, per mirror and
// per mirrored partition (the latest record of a key is its value),
// written by the member that owns the thing, read from the start when a
// member starts and tailed while it runs. A mirror's partitions are
// records of their own because different members run them: a write
// publishes only the records it changed, so members writing different
// partitions of one mirror never overwrite each other. A local bbolt copy (stateDir/klink-cluster.db, rebuilt
// from the topic at each start) answers the reads.
//
// A record's value is {"format": "klink-state/2", "writer": member,
// "link"|"mirror"|"partition": {...}}: the state file's format, so that a newer klink's
// records are refused, not misread.
type Topic struct {
	*File
	topic  string
	member string
	log    *zap.Logger
	prod   *kgo.Client
	cons   *kgo.Client
	adm    *kadm.Client
	lease  func() bool
	// writeTimeout bounds a write, retries included.
	writeTimeout time.Duration
	cancel       context.CancelFunc
	done         chan struct{}

	mu      sync.Mutex
	members map[string]MemberRecord
	applied map[string]int64 // key -> offset of the record the local copy holds
	next    int64            // the next offset the tail reads
	moved   chan struct{}    // closed and replaced when next moves
	tailErr error
}

// ClusterFileName is the local copy of the shared state in stateDir.
const ClusterFileName = "klink-cluster.db"

var _ Store = (*Topic)(nil)

type envelope struct {
	Format    string          `json:"format"`
	Writer    string          `json:"writer,omitempty"`
	Link      json.RawMessage `json:"link,omitempty"`
	Mirror    json.RawMessage `json:"mirror,omitempty"`    // without its partitions
	Partition json.RawMessage `json:"partition,omitempty"` // partitionKey
	Member    *MemberRecord   `json:"member,omitempty"`
}

// MemberRecord is how a member's last run ended, as far as the shared
// state knows: "running" is written when a member starts, "left" once it
// stopped with every append answered.
type MemberRecord struct {
	Name  string    `json:"name"`
	State string    `json:"state"`
	At    time.Time `json:"at"`
}

// Member record states.
const (
	MemberRunning = "running"
	MemberLeft    = "left"
)

// partitionKey is the key of one mirrored partition's record.
func partitionKey(link, mirror string, p int32) string {
	return fmt.Sprintf("part/%s/%s/%d", link, mirror, p)
}

// OpenTopic opens the shared state in topic on the destination (creating
// the topic if needed), reads all of it into a fresh local copy in dir, and
// tails it until Close. opts reach the destination (seeds, TLS, SASL).
// lease reports whether this member may write now: a member whose lease
// ended writes no state either, so that an owner that vanished cannot
// overwrite what its successor wrote.
// A write lives at most writeTimeout (kgo's retries included), so that a
// member whose lease ended cannot have a write land much later.
func OpenTopic(ctx context.Context, dir, topic, member string, opts []kgo.Opt, lease func() bool, writeTimeout time.Duration, log *zap.Logger) (*Topic, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	// The local copy is rebuilt: the topic is the truth.
	if err := os.Remove(filepath.Join(dir, ClusterFileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("local copy of the shared state: %w", err)
	}
	f, err := openFile(dir, ClusterFileName)
	if err != nil {
		return nil, err
	}
	t := &Topic{File: f, topic: topic, member: member, log: log.With(zap.String("stateTopic", topic)), lease: lease, applied: map[string]int64{}, members: map[string]MemberRecord{}, moved: make(chan struct{}), done: make(chan struct{})}
	fail := func(err error) (*Topic, error) {
		t.closeClients()
		f.Close()
		return nil, err
	}
	t.writeTimeout = writeTimeout
	t.prod, err = kgo.NewClient(append(opts, kgo.DefaultProduceTopic(topic), kgo.RecordDeliveryTimeout(writeTimeout), kgo.ProducerLinger(0))...)
	if err != nil {
		return fail(fmt.Errorf("state topic %s: %w", topic, err))
	}
	t.adm = kadm.NewClient(t.prod)
	if err := t.ensureTopic(ctx); err != nil {
		return fail(err)
	}
	t.cons, err = kgo.NewClient(append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}), kgo.FetchMaxWait(500*time.Millisecond))...)
	if err != nil {
		return fail(fmt.Errorf("state topic %s: %w", topic, err))
	}
	tctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	go t.tail(tctx)
	if err := t.Sync(ctx); err != nil {
		t.Close()
		return nil, fmt.Errorf("reading the state topic %s: %w", topic, err)
	}
	f.publish = t.write
	t.log.Info("shared state read", zap.Int64("records", t.position()))
	return t, nil
}

// ensureTopic creates the state topic: one partition (one order of
// writes), compacted (the latest record of each key is kept forever).
func (t *Topic) ensureTopic(ctx context.Context) error {
	policy := "compact"
	_, err := t.adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &policy}, t.topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating the state topic %s: %w", t.topic, err)
	}
	for i := 0; ; i++ {
		td, err := t.adm.ListTopics(ctx, t.topic)
		if err == nil && td.Has(t.topic) && td[t.topic].Err == nil {
			if n := len(td[t.topic].Partitions); n != 1 {
				return fmt.Errorf("state topic %s has %d partitions; klink writes its state into one: give cluster.stateTopic another name", t.topic, n)
			}
			return nil
		}
		if i == 40 || ctx.Err() != nil {
			return fmt.Errorf("state topic %s not visible: %v", t.topic, errors.Join(err, ctx.Err()))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (t *Topic) closeClients() {
	if t.prod != nil {
		t.prod.Close()
	}
	if t.cons != nil {
		t.cons.Close()
	}
}

// Close stops the tail and closes the local copy.
func (t *Topic) Close() error {
	if t.cancel != nil {
		t.cancel()
		<-t.done
	}
	t.closeClients()
	return t.File.Close()
}

// Path names the shared state.
func (t *Topic) Path() string { return "topic " + t.topic + " (local copy " + t.File.Path() + ")" }

func (t *Topic) position() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next
}

// write is the local copy's publish hook: the records a change makes go to
// the topic first, and only if this member still holds its lease. A
// mirror's change publishes the mirror's own fields if they changed, and
// each partition that changed.
func (t *Topic) write(key string, old, raw []byte) error {
	if t.lease != nil && !t.lease() {
		return fmt.Errorf("state %s not written: this member's lease has ended", key)
	}
	var recs []*kgo.Record
	add := func(key string, env envelope) error {
		env.Format, env.Writer = formatVersion, t.member
		val, err := json.Marshal(env)
		if err != nil {
			return err
		}
		recs = append(recs, &kgo.Record{Key: []byte(key), Value: val})
		return nil
	}
	if strings.HasPrefix(key, "link/") {
		if err := add(key, envelope{Link: raw}); err != nil {
			return err
		}
	} else {
		var was, now Mirror
		if old != nil {
			if err := json.Unmarshal(old, &was); err != nil {
				return err
			}
		}
		if err := json.Unmarshal(raw, &now); err != nil {
			return err
		}
		parts := now.Partitions
		wasParts := was.Partitions
		now.Partitions, was.Partitions = nil, nil
		m, _ := json.Marshal(now)
		if w, _ := json.Marshal(was); old == nil || string(m) != string(w) {
			if err := add(key, envelope{Mirror: m}); err != nil {
				return err
			}
		}
		for id, p := range parts {
			pr, _ := json.Marshal(p)
			if w, _ := json.Marshal(wasParts[id]); wasParts[id] != nil && string(w) == string(pr) {
				continue
			}
			if err := add(partitionKey(now.Link, now.Name, id), envelope{Partition: pr}); err != nil {
				return err
			}
		}
	}
	if len(recs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.writeTimeout)
	defer cancel()
	res := t.prod.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		// What landed is applied by the tail (nothing is noted as
		// applied here): the local copy follows the topic.
		return fmt.Errorf("writing %s to the state topic %s: %w", key, t.topic, err)
	}
	t.mu.Lock()
	for _, r := range res {
		k := string(r.Record.Key)
		if at, ok := t.applied[k]; !ok || r.Record.Offset > at {
			t.applied[k] = r.Record.Offset
		}
	}
	t.mu.Unlock()
	return nil
}

// tail applies what the members write, in the topic's order.
func (t *Topic) tail(ctx context.Context) {
	defer close(t.done)
	for {
		fs := t.cons.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(_ string, _ int32, err error) {
			t.mu.Lock()
			t.tailErr = err
			t.mu.Unlock()
			t.log.Warn("reading the state topic", zap.Error(err))
		})
		var last int64 = -1
		fs.EachRecord(func(r *kgo.Record) {
			last = r.Offset
			if err := t.apply(r); err != nil {
				t.log.Error("state topic record not applied", zap.Int64("offset", r.Offset), zap.String("key", string(r.Key)), zap.Error(err))
			}
		})
		if last >= 0 {
			t.advance(last + 1)
		}
	}
}

func (t *Topic) advance(next int64) {
	t.mu.Lock()
	if next > t.next {
		t.next = next
		close(t.moved)
		t.moved = make(chan struct{})
	}
	t.mu.Unlock()
}

// apply writes one record into the local copy, unless the copy already
// holds a later record of the key (this member's own write).
func (t *Topic) apply(r *kgo.Record) error {
	key := string(r.Key)
	var env envelope
	if err := json.Unmarshal(r.Value, &env); err != nil {
		return fmt.Errorf("not a klink state record: %w", err)
	}
	if env.Format != formatVersion && env.Format != formatVersion1 {
		return fmt.Errorf("format %q, this klink reads %q (written by a newer klink, member %q?)", env.Format, formatVersion, env.Writer)
	}
	if strings.HasPrefix(key, "member/") {
		if env.Member == nil || "member/"+env.Member.Name != key {
			return fmt.Errorf("malformed member record")
		}
		t.mu.Lock()
		t.members[env.Member.Name] = *env.Member
		t.mu.Unlock()
		return nil
	}
	return t.db.Update(func(tx *bolt.Tx) error {
		// Checked holding the local copy's write lock: a write of this
		// member's (which notes its offset before it commits) is either
		// seen here or comes after.
		t.mu.Lock()
		if at, ok := t.applied[key]; ok && r.Offset <= at {
			t.mu.Unlock()
			return nil
		}
		t.applied[key] = r.Offset
		t.mu.Unlock()
		switch {
		case strings.HasPrefix(key, "link/") && env.Link != nil:
			var l Link
			if err := json.Unmarshal(env.Link, &l); err != nil {
				return err
			}
			return tx.Bucket(linksBucket).Put([]byte(l.Name), env.Link)
		case strings.HasPrefix(key, "mirror/") && env.Mirror != nil:
			var m Mirror
			if err := json.Unmarshal(env.Mirror, &m); err != nil {
				return err
			}
			return mergeMirror(tx, m.Link, m.Name, func(cur *Mirror) {
				parts := cur.Partitions
				*cur = m
				cur.Partitions = parts // partitions are records of their own
			})
		case strings.HasPrefix(key, "part/") && env.Partition != nil:
			f := strings.Split(key, "/")
			if len(f) != 4 {
				return fmt.Errorf("malformed partition key")
			}
			id, err := strconv.ParseInt(f[3], 10, 32)
			if err != nil {
				return fmt.Errorf("malformed partition key: %w", err)
			}
			var p Partition
			if err := json.Unmarshal(env.Partition, &p); err != nil {
				return err
			}
			return mergeMirror(tx, f[1], f[2], func(cur *Mirror) {
				if cur.Partitions == nil {
					cur.Partitions = map[int32]*Partition{}
				}
				cur.Partitions[int32(id)] = &p
			})
		}
		return fmt.Errorf("unknown record")
	})
}

// mergeMirror changes a mirror in the local copy (creating it if its own
// record has not been read yet).
func mergeMirror(tx *bolt.Tx, link, name string, change func(*Mirror)) error {
	if link == "" || name == "" {
		return fmt.Errorf("mirror record without link or name")
	}
	b, err := tx.Bucket(mirrorsBucket).CreateBucketIfNotExists([]byte(link))
	if err != nil {
		return err
	}
	var m Mirror
	if raw := b.Get([]byte(name)); raw != nil {
		if err := json.Unmarshal(raw, &m); err != nil {
			return err
		}
	} else {
		m = Mirror{Link: link, Name: name}
	}
	change(&m)
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put([]byte(name), raw)
}

// Sync waits until the tail has read everything the topic held when Sync
// was called: what a member wrote before it released a unit is then here.
func (t *Topic) Sync(ctx context.Context) error {
	ends, err := t.adm.ListEndOffsets(ctx, t.topic)
	if err != nil {
		return err
	}
	o, ok := ends.Lookup(t.topic, 0)
	if !ok || o.Err != nil {
		return fmt.Errorf("end of the state topic %s: %v", t.topic, o.Err)
	}
	for {
		t.mu.Lock()
		next, moved := t.next, t.moved
		t.mu.Unlock()
		if next >= o.Offset {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("read the state topic %s up to %d of %d: %w", t.topic, next, o.Offset, ctx.Err())
		case <-moved:
		case <-t.done:
			return fmt.Errorf("state topic %s closed", t.topic)
		}
	}
}

// Member returns how the named member's last run ended, as recorded.
func (t *Topic) Member(name string) (MemberRecord, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.members[name]
	return m, ok
}

// PutMember records how this member's run is going: running when it
// starts (before anything is appended), left when it stopped cleanly.
func (t *Topic) PutMember(state string) error {
	rec := MemberRecord{Name: t.member, State: state, At: time.Now().UTC()}
	val, err := json.Marshal(envelope{Format: formatVersion, Writer: t.member, Member: &rec})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := t.prod.ProduceSync(ctx, &kgo.Record{Key: []byte("member/" + t.member), Value: val}).FirstErr(); err != nil {
		return fmt.Errorf("recording member %s as %s in the state topic %s: %w", t.member, state, t.topic, err)
	}
	t.mu.Lock()
	t.members[t.member] = rec
	t.mu.Unlock()
	return nil
}
