package replicator

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kconn"
)

// Produce sizing. Kafka takes one batch per partition per Produce request
// and handles a connection's requests one at a time, so a sink coalesces the
// next batch of many partitions into one request and pipelines a few
// requests on its connection. A partition has at most maxPartitionInFlight
// batches sent and unanswered (the idempotent producer's limit with order
// kept).
const (
	maxPartitionInFlight = 5
	maxRequestsInFlight  = 5
	maxRequestBytes      = 16 << 20
	produceTimeout       = 30 * time.Second
	// produceRequestTimeout is how long klink waits for a Produce answer:
	// the broker's own timeout plus the way there and back.
	produceRequestTimeout = produceTimeout + 10*time.Second
	maxProduceVersion     = kconn.MaxProduceVersion
)

// appendReq is one batch to append to a destination partition.
type appendReq struct {
	b batch.Batch
	// base and next are the destination offsets the batch must land on:
	// its source offsets.
	base, next int64
	filler     bool  // filler records, not source data
	srcBytes   int64 // fetched bytes this append accounts for
	records    int64
	maxTs      int64 // the batch's max timestamp (read before b may be released)
	// buf holds b when b lies in a fetch response; its reference is
	// released when the append is answered or dropped.
	buf *kconn.Buffer
	// txnID is the transactional producer's id (nil: the idempotent
	// producer). A Produce request carries one producer's batches.
	txnID *string
}

// appendResult is the destination's answer for one append.
type appendResult struct {
	a    *appendReq
	base int64 // where the broker put it (valid when err == nil)
	err  error
}

// sinkPart is one destination partition's produce queue. Its queue and
// counters are guarded by the mutex of the sink it is attached to.
type sinkPart struct {
	topic     string
	partition int32
	results   chan appendResult // capacity maxPartitionInFlight: never blocks the sink

	sink    *sink
	queue   []*appendReq
	stopped bool
	// inflight counts appends sent whose answer the partition has not yet
	// taken from results; so results never holds more than
	// maxPartitionInFlight. Atomic: a partition may take an answer from a
	// sink it has since left.
	inflight atomic.Int32
}

func newSinkPart(topic string, p int32) *sinkPart {
	return &sinkPart{topic: topic, partition: p, results: make(chan appendResult, maxPartitionInFlight)}
}

// sinks holds one sink per destination broker for a link.
type sinks struct {
	link string // for metrics
	// requestTimeout bounds an append from send to answer; the broker is
	// asked to answer within brokerTimeout. In a klink cluster they are
	// shorter (the append lifetime the lease argument counts on), and
	// lease says whether appends may be sent at all.
	requestTimeout, brokerTimeout time.Duration
	lease                         func() bool
	dst                           *cluster
	log                           *zap.Logger
	dial                          kconn.Options
	ctx                           context.Context
	mu                            sync.Mutex
	byID                          map[int32]*sink
	wg                            sync.WaitGroup
	close                         context.CancelFunc
}

func newSinks(dst *cluster, log *zap.Logger, opts kconn.Options) *sinks {
	ctx, cancel := context.WithCancel(context.Background())
	return &sinks{dst: dst, log: log, dial: opts, ctx: ctx, byID: map[int32]*sink{}, close: cancel,
		requestTimeout: produceRequestTimeout, brokerTimeout: produceTimeout}
}

// dropConnections closes every sink's connection: appends in flight are
// answered with the error, and what the kernel has not sent yet is
// discarded (see secure.Client.UserTimeout). Used when the member's lease
// ends.
func (s *sinks) dropConnections() {
	s.mu.Lock()
	ks := make([]*sink, 0, len(s.byID))
	for _, k := range s.byID {
		ks = append(ks, k)
	}
	s.mu.Unlock()
	for _, k := range ks {
		k.mu.Lock()
		c := k.conn
		k.mu.Unlock()
		if c != nil {
			c.Close()
		}
	}
}

// stop closes every sink; call it after every partition has stopped.
func (s *sinks) stop() {
	s.close()
	s.wg.Wait()
}

// get returns (starting if needed) the sink for a destination broker.
func (s *sinks) get(id int32) *sink {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.byID[id]; k != nil {
		return k
	}
	k := &sink{s: s, id: id, wake: make(chan struct{}, 1), parts: map[*sinkPart]struct{}{}}
	s.byID[id] = k
	s.wg.Add(1)
	go k.loop()
	return k
}

// sink sends produce requests to one destination broker.
type sink struct {
	s    *sinks
	id   int32
	wake chan struct{}

	mu       sync.Mutex
	parts    map[*sinkPart]struct{}
	order    []*sinkPart // round-robin order for fairness
	rr       int
	inflight int // requests sent, unanswered
	conn     *kconn.Conn
}

// attach makes the sink serve a partition. The partition must be idle (no
// queue, nothing in flight).
func (k *sink) attach(sp *sinkPart) {
	k.mu.Lock()
	sp.sink = k
	sp.stopped = false
	if _, ok := k.parts[sp]; !ok {
		k.parts[sp] = struct{}{}
		k.order = append(k.order, sp)
	}
	k.mu.Unlock()
}

// detach removes an idle partition from its sink.
func (sp *sinkPart) detach() {
	k := sp.sink
	if k == nil {
		return
	}
	k.mu.Lock()
	delete(k.parts, sp)
	for i, o := range k.order {
		if o == sp {
			k.order = append(k.order[:i], k.order[i+1:]...)
			break
		}
	}
	sp.sink = nil
	k.mu.Unlock()
}

// enqueue adds appends, in order, behind the partition's earlier ones.
func (sp *sinkPart) enqueue(as ...*appendReq) {
	k := sp.sink
	k.mu.Lock()
	sp.queue = append(sp.queue, as...)
	k.mu.Unlock()
	k.poke()
}

// taken is called by the partition for each answer it takes from results.
func (sp *sinkPart) taken() {
	sp.inflight.Add(-1)
	if k := sp.sink; k != nil {
		k.poke()
	}
}

// stop makes the sink send nothing more for the partition and returns the
// appends that were queued but not sent. Appends in flight still answer.
func (sp *sinkPart) stop() []*appendReq {
	k := sp.sink
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	sp.stopped = true
	q := sp.queue
	sp.queue = nil
	return q
}

func (k *sink) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

func (k *sink) loop() {
	defer k.s.wg.Done()
	defer func() {
		k.mu.Lock()
		if k.conn != nil {
			k.conn.Close()
		}
		k.mu.Unlock()
	}()
	retry := newBackoff(100*time.Millisecond, 5*time.Second)
	for {
		select {
		case <-k.s.ctx.Done():
			return
		case <-k.wake:
		}
		for {
			if k.waitingOnDeadConn() {
				break // its answers come first; answer() wakes us
			}
			conn, err := k.connection()
			version := int16(maxProduceVersion)
			if conn != nil {
				version = min(conn.MaxVersion(int16(kmsg.Produce)), maxProduceVersion)
			}
			req, sent := k.build(version)
			if req == nil {
				break
			}
			if err != nil {
				// Nothing can be sent: the partitions get the error,
				// look their leader up again and come back.
				k.answer(sent, nil, err)
				if !sleepCtx(k.s.ctx, retry.next()) {
					return
				}
				break
			}
			retry.reset()
			began := time.Now()
			conn.SendProduce(req, k.s.requestTimeout, func(resp *kmsg.ProduceResponse, err error) {
				if err == nil {
					produceSeconds.WithLabelValues(k.s.link).Observe(time.Since(began).Seconds())
				}
				k.answer(sent, resp, err)
			})
		}
	}
}

// waitingOnDeadConn reports a dead connection with requests still to be
// answered: a new connection (or a dial error) must not answer later
// appends before those.
func (k *sink) waitingOnDeadConn() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.conn != nil && k.conn.Err() != nil && k.inflight > 0
}

// connection returns a live connection to the broker, dialing if needed.
func (k *sink) connection() (*kconn.Conn, error) {
	k.mu.Lock()
	c := k.conn
	k.mu.Unlock()
	if c != nil && c.Err() == nil {
		return c, nil
	}
	if c != nil {
		k.s.log.Info("destination connection lost", zap.Int32("broker", k.id), zap.Error(c.Err()))
	}
	addr, ok := k.s.dst.brokerAddr(k.id)
	if !ok {
		return nil, fmt.Errorf("destination broker %d is unknown", k.id)
	}
	ctx, cancel := context.WithTimeout(k.s.ctx, 10*time.Second)
	defer cancel()
	c, err := kconn.Dial(ctx, addr, k.s.dial)
	if err != nil {
		return nil, err
	}
	if c.MaxVersion(int16(kmsg.Produce)) < 3 {
		c.Close()
		return nil, fmt.Errorf("destination broker %d (%s) does not support Produce v3+ (Kafka 0.11+ is required)", k.id, addr)
	}
	k.mu.Lock()
	k.conn = c
	k.mu.Unlock()
	return c, nil
}

// sentAppend remembers which partition an append in a request belongs to.
type sentAppend struct {
	sp *sinkPart
	a  *appendReq
}

// build takes the next batch of as many partitions as fit into one request.
func (k *sink) build(version int16) (*kconn.Produce, []sentAppend) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.inflight >= maxRequestsInFlight || len(k.order) == 0 {
		return nil, nil
	}
	if k.s.lease != nil && !k.s.lease() {
		// This member's lease has ended: another may own these
		// partitions by now. Nothing is sent; the partitions are being
		// stopped.
		return nil, nil
	}
	req := &kconn.Produce{Version: version, Acks: -1, TimeoutMillis: int32(k.s.brokerTimeout / time.Millisecond)}
	var sent []sentAppend
	size := 0
	topicIdx := map[string]int{}
	n := len(k.order)
	for i := 0; i < n; i++ {
		sp := k.order[(k.rr+i)%n]
		if sp.stopped || len(sp.queue) == 0 || sp.inflight.Load() >= maxPartitionInFlight {
			continue
		}
		a := sp.queue[0]
		if size > 0 && size+len(a.b) > maxRequestBytes {
			break
		}
		// The first append chooses the request's producer; only batches
		// of the same producer may join it.
		if len(sent) == 0 {
			req.TransactionalID = a.txnID
		} else if !sameTxnID(a.txnID, req.TransactionalID) {
			continue
		}
		sp.queue = sp.queue[1:]
		sp.inflight.Add(1)
		size += len(a.b)
		ti, ok := topicIdx[sp.topic]
		if !ok {
			req.Topics = append(req.Topics, kconn.ProduceTopic{Topic: sp.topic})
			ti = len(req.Topics) - 1
			topicIdx[sp.topic] = ti
		}
		req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, kconn.ProducePartition{Partition: sp.partition, Records: a.b})
		sent = append(sent, sentAppend{sp, a})
	}
	k.rr++
	if len(sent) == 0 {
		return nil, nil
	}
	k.inflight++
	return req, sent
}

func sameTxnID(a, b *string) bool {
	return a == b || (a != nil && b != nil && *a == *b)
}

// answer hands each partition its result. It runs on the connection's
// reader goroutine and never blocks: each partition's results channel has
// room for all its appends in flight.
func (k *sink) answer(sent []sentAppend, resp *kmsg.ProduceResponse, err error) {
	results := make([]appendResult, len(sent))
	type key struct {
		topic string
		p     int32
	}
	var byKey map[key]kmsg.ProduceResponseTopicPartition
	if err == nil {
		byKey = map[key]kmsg.ProduceResponseTopicPartition{}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				byKey[key{t.Topic, p.Partition}] = p
			}
		}
	}
	for i, s := range sent {
		r := appendResult{a: s.a, err: err}
		if err == nil {
			p, ok := byKey[key{s.sp.topic, s.sp.partition}]
			switch {
			case !ok:
				r.err = fmt.Errorf("produce response has no answer for %s[%d]", s.sp.topic, s.sp.partition)
			case p.ErrorCode != 0:
				r.err = produceError{code: p.ErrorCode, msg: p.ErrorMessage}
			default:
				r.base = p.BaseOffset
			}
		}
		results[i] = r
	}
	k.mu.Lock()
	k.inflight--
	k.mu.Unlock()
	for i, s := range sent {
		s.sp.results <- results[i]
	}
	k.poke()
}

// produceError is a partition-level Produce error with the broker's message.
type produceError struct {
	code int16
	msg  *string
}

func (e produceError) Error() string {
	err := kerr.ErrorForCode(e.code)
	if e.msg != nil && *e.msg != "" {
		return fmt.Sprintf("%v: %s", err, *e.msg)
	}
	return err.Error()
}

func (e produceError) Unwrap() error { return kerr.ErrorForCode(e.code) }
