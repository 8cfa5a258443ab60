package replicator

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kconn"
	"github.com/klink-io/klink/replicator/secure"
)

// cluster is one Kafka cluster as klink sees it: a kgo client for metadata,
// admin requests and fetches, and a small cache of topic metadata.
type cluster struct {
	sec   *secure.Client // TLS and SASL
	seeds []string
	role  string // "source" or "destination", for messages
	cl    *kgo.Client
	adm   *kadm.Client

	mu      sync.Mutex
	brokers map[int32]string // node id -> host:port
	topics  map[string]topicMeta
	id      string
	unknown map[string]bool // topics the last metadata said do not exist (mu)
}

type topicMeta struct {
	id         [16]byte
	partitions []partitionMeta // by partition number
}

type partitionMeta struct {
	leader int32
	epoch  int32
}

func newCluster(role string, seeds []string, sec *secure.Client, log *zap.Logger, extra ...kgo.Opt) (*cluster, error) {
	if sec == nil {
		sec = &secure.Client{}
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.ClientID("klink"),
		kgo.WithLogger(kgoLogger{log.With(zap.String("cluster", role))}),
		kgo.RetryTimeout(30 * time.Second),
		kgo.MetadataMinAge(time.Second),
	}, append(sec.KgoOpts(), extra...)...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("%s client: %w", role, err)
	}
	return &cluster{
		role:    role,
		seeds:   seeds,
		sec:     sec,
		cl:      cl,
		adm:     kadm.NewClient(cl),
		brokers: map[int32]string{},
		topics:  map[string]topicMeta{},
		unknown: map[string]bool{},
	}, nil
}

func (c *cluster) close() { c.cl.Close() }

// explain turns a failed request's error, which from kgo can be as bare as
// EOF when a broker refuses klink, into one that says what failed: it
// connects to the bootstrap brokers itself (TCP, TLS, SASL) and returns
// that connection's error, or err if it connects fine.
func (c *cluster) explain(ctx context.Context, err error) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var probe error
	for _, s := range c.seeds {
		conn, perr := kconn.Dial(ctx, s, c.connOptions("klink"))
		if perr == nil {
			conn.Close()
			return err
		}
		probe = perr
	}
	if probe == nil {
		return err
	}
	return fmt.Errorf("%s cluster: %w", c.role, probe)
}

// connOptions are the options of klink's own connections to the cluster's
// brokers (fetch and produce): the same TLS and SASL as the client's.
func (c *cluster) connOptions(clientID string) kconn.Options {
	return kconn.Options{ClientID: clientID, Dial: c.sec.Dial, SASL: c.sec.SASL}
}

// errTopicNotFound is returned by refresh for a topic the cluster does not
// have.
var errTopicNotFound = errors.New("topic not found")

// refresh asks the cluster for fresh metadata of the given topics (bypassing
// kgo's cache, which may be seconds old after a leader change).
func (c *cluster) refresh(ctx context.Context, topics ...string) (map[string]topicMeta, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{} // none, not all, when none are asked for
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return nil, fmt.Errorf("%s metadata: %w", c.role, err)
	}
	out := make(map[string]topicMeta, len(resp.Topics))
	c.mu.Lock()
	defer c.mu.Unlock()
	if resp.ClusterID != nil {
		c.id = *resp.ClusterID
	}
	for _, b := range resp.Brokers {
		c.brokers[b.NodeID] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
	}
	var errs []error
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		name := *t.Topic
		switch err := kerr.ErrorForCode(t.ErrorCode); {
		case errors.Is(err, kerr.UnknownTopicOrPartition):
			delete(c.topics, name)
			c.unknown[name] = true
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("%s topic %s: %w", c.role, name, err))
			continue
		}
		tm := topicMeta{id: t.TopicID, partitions: make([]partitionMeta, len(t.Partitions))}
		for _, p := range t.Partitions {
			if int(p.Partition) >= len(tm.partitions) {
				continue // a partition number beyond the count: ignore
			}
			leader := p.Leader
			if p.ErrorCode != 0 && !errors.Is(kerr.ErrorForCode(p.ErrorCode), kerr.ReplicaNotAvailable) {
				leader = -1
			}
			tm.partitions[p.Partition] = partitionMeta{leader: leader, epoch: p.LeaderEpoch}
		}
		c.topics[name] = tm
		delete(c.unknown, name)
		out[name] = tm
	}
	return out, errors.Join(errs...)
}

// topicUnknown reports whether the cluster's last answer about topic was
// that it does not exist (not merely an error, such as no leader).
func (c *cluster) topicUnknown(topic string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.unknown[topic]
}

// topicNames lists the cluster's topics.
func (c *cluster) topicNames(ctx context.Context) ([]string, error) {
	req := kmsg.NewPtrMetadataRequest() // nil Topics: all of them
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return nil, fmt.Errorf("%s metadata: %w", c.role, err)
	}
	var out []string
	for _, t := range resp.Topics {
		if t.Topic != nil && t.ErrorCode == 0 && !t.IsInternal {
			out = append(out, *t.Topic)
		}
	}
	return out, nil
}

// topic returns one topic's fresh metadata, or errTopicNotFound.
func (c *cluster) topic(ctx context.Context, name string) (topicMeta, error) {
	ts, err := c.refresh(ctx, name)
	if err != nil {
		return topicMeta{}, err
	}
	tm, ok := ts[name]
	if !ok {
		return topicMeta{}, fmt.Errorf("%s topic %s: %w", c.role, name, errTopicNotFound)
	}
	return tm, nil
}

// clusterID is the cluster's ID as of the last metadata response.
func (c *cluster) clusterID(ctx context.Context) (string, error) {
	if _, err := c.refresh(ctx); err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id, nil
}

// cachedLeader returns the leader from the last refresh (-1 if unknown).
func (c *cluster) cachedLeader(topic string, p int32) int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	tm, ok := c.topics[topic]
	if !ok || int(p) >= len(tm.partitions) {
		return -1
	}
	return tm.partitions[p].leader
}

// leader returns a partition's leader, refreshing metadata.
func (c *cluster) leader(ctx context.Context, topic string, p int32) (int32, error) {
	tm, err := c.topic(ctx, topic)
	if err != nil {
		return -1, err
	}
	if int(p) >= len(tm.partitions) {
		return -1, fmt.Errorf("%s topic %s has no partition %d", c.role, topic, p)
	}
	if l := tm.partitions[p].leader; l >= 0 {
		return l, nil
	}
	return -1, fmt.Errorf("%s topic %s partition %d has no leader", c.role, topic, p)
}

func (c *cluster) brokerAddr(id int32) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.brokers[id]
	return a, ok
}

// listOffset returns a partition's start (-2) or end (-1) offset.
func (c *cluster) listOffset(ctx context.Context, topic string, p int32, which int64) (int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition = p
	rp.CurrentLeaderEpoch = -1
	rp.Timestamp = which
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return 0, fmt.Errorf("%s ListOffsets %s[%d]: %w", c.role, topic, p, err)
	}
	for _, t := range resp.Topics {
		for _, rp := range t.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				return 0, fmt.Errorf("%s ListOffsets %s[%d]: %w", c.role, topic, p, err)
			}
			return rp.Offset, nil
		}
	}
	return 0, fmt.Errorf("%s ListOffsets %s[%d]: partition missing from response", c.role, topic, p)
}

const (
	offsetLatest   = -1
	offsetEarliest = -2
)

// fetched is one partition's answer to a single-partition fetch.
type fetched struct {
	batches       []batch.Batch
	highWatermark int64
	logStart      int64
	lastStable    int64
	aborted       []kmsg.FetchResponseTopicPartitionAbortedTransaction
}

// fetchOnce fetches one partition from its leader, returning whole batches
// starting with the one that holds offset (or the first after it).
func (c *cluster) fetchOnce(ctx context.Context, topic string, p int32, offset int64, maxBytes int32, isolation int8) (fetched, error) {
	tm, err := c.topic(ctx, topic)
	if err != nil {
		return fetched{}, err
	}
	if int(p) >= len(tm.partitions) || tm.partitions[p].leader < 0 {
		return fetched{}, fmt.Errorf("%s topic %s partition %d has no leader", c.role, topic, p)
	}
	req := newFetchRequest(isolation, 0, maxBytes)
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = topic
	ft.TopicID = tm.id
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.Partition = p
	fp.FetchOffset = offset
	fp.PartitionMaxBytes = maxBytes
	ft.Partitions = append(ft.Partitions, fp)
	req.Topics = append(req.Topics, ft)
	kresp, err := c.cl.Broker(int(tm.partitions[p].leader)).Request(ctx, req)
	if err != nil {
		return fetched{}, fmt.Errorf("%s fetch %s[%d]@%d: %w", c.role, topic, p, offset, err)
	}
	resp := kresp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return fetched{}, fmt.Errorf("%s fetch %s[%d]@%d: %w", c.role, topic, p, offset, err)
	}
	for _, t := range resp.Topics {
		for _, rp := range t.Partitions {
			if rp.Partition != p {
				continue
			}
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				return fetched{}, fmt.Errorf("%s fetch %s[%d]@%d: %w", c.role, topic, p, offset, err)
			}
			bs, err := batch.Split(rp.RecordBatches)
			if err != nil {
				return fetched{}, fmt.Errorf("%s fetch %s[%d]@%d: %w", c.role, topic, p, offset, err)
			}
			return fetched{batches: bs, highWatermark: rp.HighWatermark, logStart: rp.LogStartOffset, lastStable: rp.LastStableOffset, aborted: rp.AbortedTransactions}, nil
		}
	}
	return fetched{}, fmt.Errorf("%s fetch %s[%d]@%d: partition missing from response", c.role, topic, p, offset)
}

// errScanEnd: a scan found no more batches before the end of its range.
var errScanEnd = errors.New("no more batches")

// scan calls fn with each batch of topic[p] that holds offsets in
// [from, to), in order, fetching as it goes (read_uncommitted, raw
// batches); fn returns stop to end it early. to < 0 means no bound. It
// returns errScanEnd when the partition has no batch left before to.
func (c *cluster) scan(ctx context.Context, topic string, p int32, from, to int64, fn func(batch.Batch) (stop bool, err error)) error {
	for off := from; to < 0 || off < to; {
		f, err := c.fetchOnce(ctx, topic, p, off, oneShotFetchBytes, 0)
		if err != nil {
			return err
		}
		progressed := false
		for _, b := range f.batches {
			if b.NextOffset() <= off {
				continue
			}
			if to >= 0 && b.BaseOffset() >= to {
				return nil
			}
			off, progressed = b.NextOffset(), true
			if stop, err := fn(b); stop || err != nil {
				return err
			}
		}
		if !progressed {
			return fmt.Errorf("%s %s[%d] at offset %d: %w", c.role, topic, p, off, errScanEnd)
		}
	}
	return nil
}

// describeTopicConfigs is topic's configs, as DescribeConfigs gives them
// (defaults included, each with its source).
func describeTopicConfigs(ctx context.Context, c *cluster, topic string) ([]kadm.Config, error) {
	rcs, err := c.adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("describing %s topic %s configs: %w", c.role, topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		return nil, fmt.Errorf("describing %s topic %s configs: %w", c.role, topic, err)
	}
	return rc.Configs, nil
}

// topicConfig is the value of one of topic's configs ("" if it has none).
func topicConfig(ctx context.Context, c *cluster, topic, key string) (string, error) {
	cfs, err := describeTopicConfigs(ctx, c, topic)
	if err != nil {
		return "", err
	}
	for _, cf := range cfs {
		if cf.Key == key && cf.Value != nil {
			return *cf.Value, nil
		}
	}
	return "", nil
}

// newFetchRequest is a sessionless consumer fetch.
func newFetchRequest(isolation int8, maxWait time.Duration, maxBytes int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = int32(maxWait / time.Millisecond)
	req.MinBytes = 1
	req.MaxBytes = maxBytes
	req.IsolationLevel = isolation
	req.SessionID = 0
	req.SessionEpoch = -1 // no fetch session: every request names its partitions
	return req
}

func topicIDString(id [16]byte) string {
	if id == ([16]byte{}) {
		return ""
	}
	return hex.EncodeToString(id[:])
}

// kgoLogger sends kgo's own log lines to zap at debug level and above warn.
type kgoLogger struct{ l *zap.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		fields = append(fields, zap.Any(fmt.Sprint(keyvals[i]), keyvals[i+1]))
	}
	switch level {
	case kgo.LogLevelError:
		k.l.Error(msg, fields...)
	case kgo.LogLevelWarn:
		k.l.Warn(msg, fields...)
	default:
		k.l.Debug(msg, fields...)
	}
}
