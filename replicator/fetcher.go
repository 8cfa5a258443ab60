package replicator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kconn"
)

// Fetch sizing. Each source broker's fetches ask for fetchBytes, sized to
// the round trip (see nextFetchBytes): from minFetchBytes, where the
// broker is close and the bytes of one response go out to the destination
// while they are still in the processor's cache, up to maxFetchBytes, which
// keeps a distant broker's link full. A partition gets at most a quarter of
// that per fetch (a batch larger than that still comes whole when it is
// first in line), and stops being fetched while it holds half of it that
// the destination has not acknowledged; the link as a whole stops at twice
// the largest broker's fetch size (at least minLinkBuffered).
const (
	minFetchBytes   = 4 << 20
	maxFetchBytes   = 32 << 20
	minLinkBuffered = 16 << 20
	// oneShotFetchBytes bounds a single partition's one-off reads (the
	// tail check, verification).
	oneShotFetchBytes = 8 << 20
	// fetchRTTs is how many round trips of data one fetch should carry
	// once the broker is far enough for the round trip to matter.
	fetchRTTs    = 4
	fetchMaxWait = 500 * time.Millisecond
	// fetchIdleWait is the long poll once quietRounds fetches in a row
	// brought nothing.
	fetchIdleWait = 2 * time.Second
	quietRounds   = 4
	// fetchShortWait is used when some partitions of the broker were left
	// out of the fetch (busy, or backpressured): they must not wait behind
	// a long poll on idle ones.
	fetchShortWait = 50 * time.Millisecond
	metadataEvery  = 30 * time.Second
)

// partitionFetchBytesFor is the most one fetch of fetchBytes asks for one
// partition.
func partitionFetchBytesFor(fetchBytes int32) int32 { return max(1<<20, fetchBytes/4) }

// partitionBufferedFor is how much one partition may hold unacknowledged
// while its source broker's fetches are fetchBytes.
func partitionBufferedFor(fetchBytes int32) int64 { return max(2<<20, int64(fetchBytes)/2) }

// linkBufferedFor is how much the link may hold unacknowledged while its
// largest fetches are fetchBytes.
func linkBufferedFor(fetchBytes int32) int { return max(minLinkBuffered, 2*int(fetchBytes)) }

// nextFetchBytes is the fetch size after a fetch of cur bytes that took
// elapsed, over a connection whose round trip is rtt. full says the answer
// was as large as the fetch let it be (in all, or for one partition): a
// fetch the broker had less for says nothing about the pipe, and keeps the
// size. Of a full one, the round trip should be a small part: while it is
// more than 1/fetchRTTs of the fetch (a distant broker; the line idles
// between fetches), the size doubles, up to maxFetchBytes; once it is less
// than 1/(4*fetchRTTs) (a near one: tens of microseconds), it halves, down
// to minFetchBytes, where the bytes of one answer go on to the destination
// while they are still in the processor's cache. In between it stays, so
// that it settles.
func nextFetchBytes(cur int32, full bool, elapsed, rtt time.Duration) int32 {
	if !full || elapsed <= 0 {
		return cur
	}
	switch {
	case rtt*fetchRTTs > elapsed && cur < maxFetchBytes:
		return min(2*cur, maxFetchBytes)
	case rtt*4*fetchRTTs < elapsed && cur > minFetchBytes:
		return max(cur/2, minFetchBytes)
	}
	return cur
}

// fetchResult is what one fetch brought for one partition.
type fetchResult struct {
	gen           uint64
	fetchOffset   int64
	batches       []batch.Batch
	sums          []uint32 // records-section CRCs of batches[:len(sums)], taken while hot
	bytes         int64
	highWatermark int64
	logStart      int64
	lastStable    int64
	aborted       []kmsg.FetchResponseTopicPartitionAbortedTransaction
	err           error // a partition-level error the partition must act on
	// buf holds the batches: one reference per batch, released when the
	// batch is appended (or dropped).
	buf *kconn.Buffer
}

// releaseFrom drops the references of batches[i:].
func (r *fetchResult) releaseFrom(i int) {
	if r.buf == nil {
		return
	}
	for range r.batches[i:] {
		r.buf.Release()
	}
}

// cursor is one partition's fetch position. The partition's goroutine owns
// it (starts, resets, consumes); the fetcher of the partition's current
// source leader reads it to build fetches and delivers results into inbox.
type cursor struct {
	topic     string
	topicID   [16]byte
	partition int32
	// notify is signalled (never blocking) when inbox is filled.
	notify chan struct{}

	mu       sync.Mutex
	active   bool   // the partition wants data
	offset   int64  // next offset to fetch
	gen      uint64 // bumped by reset; older results are dropped
	buffered int64  // fetched bytes not yet acknowledged by the destination
	inbox    *fetchResult
	leader   int32     // source broker fetching this partition, -1 unknown
	notUntil time.Time // backoff after a partition error
	lastErr  error     // the last fetch error, for status

	// Latest figures seen, for status and lag.
	highWatermark atomic.Int64
	logStart      atomic.Int64
}

func newCursor(topic string, id [16]byte, p int32) *cursor {
	return &cursor{topic: topic, topicID: id, partition: p, notify: make(chan struct{}, 1), leader: -1}
}

// fetchers runs one fetch loop per source broker for a link's partitions.
type fetchers struct {
	link string // for metrics
	src  *cluster
	log  *zap.Logger
	dial kconn.Options
	// pool holds the record sets until the destination has them.
	pool *kconn.BufferPool
	// sessions: use incremental fetch sessions where brokers offer them.
	sessions bool

	mu       sync.Mutex
	byBroker map[int32]map[*cursor]struct{}
	loops    map[int32]*brokerFetcher
	cursors  map[*cursor]struct{}
	buffered atomic.Int64 // across the link
	// fetchBytes is the largest of the brokers' fetch sizes: the link's
	// and each partition's buffer limits follow it.
	fetchBytes atomic.Int32
	// changes counts changes to anything eligible looks at: a cursor's
	// position, activity, backoff, inbox, buffered bytes or broker, and
	// the link's limits. Each is counted after it is made, so an
	// eligible that read the count before its pass saw every change the
	// count holds.
	changes atomic.Uint64

	refreshCh chan struct{}
	ctx       context.Context
	wg        sync.WaitGroup
}

type brokerFetcher struct {
	id   int32
	wake chan struct{}
	conn *kconn.Conn // owned by the fetch loop
	// rotate moves the start of the partition list each fetch so that no
	// partition is always last (and cut short by the response size).
	rotate int
	// session is the incremental fetch session with this broker, and
	// version the Fetch version it was last used with.
	session fetchSession
	version int16
	// quiet counts the fetches in a row that brought no records;
	// lastParts is how many partitions the last fetch wanted.
	quiet, lastParts int
	// seen and parts are eligible's, kept between fetches. parts (with
	// leftOut) is also its answer while the link's cursors have not
	// changed since changes (see fetchers.changes) and no cursor's
	// backoff has ended (recheck; zero before the first pass).
	seen    map[tp]bool
	parts   []fetchPart
	leftOut bool
	changes uint64
	recheck time.Time
	// fetchBytes is the size of this broker's fetches (nextFetchBytes);
	// the fetch loop sets it, eligible reads it for the limits.
	fetchBytes atomic.Int32
}

func newFetchers(ctx context.Context, src *cluster, log *zap.Logger, dial kconn.Options, sessions bool) *fetchers {
	f := &fetchers{
		sessions:  sessions,
		src:       src,
		log:       log,
		dial:      dial,
		pool:      kconn.NewBufferPool(2 * linkBufferedFor(maxFetchBytes)),
		byBroker:  map[int32]map[*cursor]struct{}{},
		loops:     map[int32]*brokerFetcher{},
		cursors:   map[*cursor]struct{}{},
		refreshCh: make(chan struct{}, 1),
		ctx:       ctx,
	}
	f.fetchBytes.Store(minFetchBytes)
	f.wg.Add(1)
	go f.metadataLoop()
	return f
}

// wait returns when every fetch loop has stopped (after ctx is done).
func (f *fetchers) wait() { f.wg.Wait() }

// add starts fetching for a cursor (when it is active).
func (f *fetchers) add(c *cursor) {
	f.mu.Lock()
	f.cursors[c] = struct{}{}
	f.mu.Unlock()
	f.changes.Add(1)
	f.requestRefresh()
}

// remove stops fetching for a cursor for good.
func (f *fetchers) remove(c *cursor) {
	f.mu.Lock()
	delete(f.cursors, c)
	c.mu.Lock()
	if set := f.byBroker[c.leader]; set != nil {
		delete(set, c)
	}
	c.leader = -1
	f.dropInbox(c) // first: the inbox's bytes are part of c.buffered
	f.buffered.Add(-c.buffered)
	c.buffered = 0
	c.mu.Unlock()
	f.mu.Unlock()
	f.changes.Add(1)
}

// dropInbox forgets an undelivered result: its buffer references and the
// bytes it counted against the fetch limits. c.mu must be held.
func (f *fetchers) dropInbox(c *cursor) {
	if c.inbox == nil {
		return
	}
	c.inbox.releaseFrom(0)
	c.buffered -= c.inbox.bytes
	f.buffered.Add(-c.inbox.bytes)
	c.inbox = nil
	f.changes.Add(1)
}

func (f *fetchers) requestRefresh() {
	select {
	case f.refreshCh <- struct{}{}:
	default:
	}
}

// wakeCursor tells the cursor's fetcher that it may be fetchable again.
func (f *fetchers) wakeCursor(c *cursor) {
	c.mu.Lock()
	leader := c.leader
	c.mu.Unlock()
	f.mu.Lock()
	b := f.loops[leader]
	f.mu.Unlock()
	if b != nil {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

// metadataLoop assigns cursors to their source leaders, on request and
// every metadataEvery.
func (f *fetchers) metadataLoop() {
	defer f.wg.Done()
	t := time.NewTicker(metadataEvery)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.refreshCh:
		case <-t.C:
		}
		// At most four refreshes a second, however many partitions ask.
		if d := time.Until(last.Add(250 * time.Millisecond)); d > 0 {
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(d):
			}
		}
		last = time.Now()
		f.assignLeaders()
	}
}

func (f *fetchers) assignLeaders() {
	f.mu.Lock()
	topics := map[string]struct{}{}
	for c := range f.cursors {
		topics[c.topic] = struct{}{}
	}
	f.mu.Unlock()
	if len(topics) == 0 {
		return
	}
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	ctx, cancel := context.WithTimeout(f.ctx, 15*time.Second)
	meta, err := f.src.refresh(ctx, names...)
	cancel()
	if err != nil && meta == nil {
		f.log.Warn("source metadata refresh failed", zap.Error(err))
		time.AfterFunc(time.Second, f.requestRefresh)
		return
	}
	missing := false
	f.mu.Lock()
	for c := range f.cursors {
		leader := int32(-1)
		if tm, ok := meta[c.topic]; ok && int(c.partition) < len(tm.partitions) {
			leader = tm.partitions[c.partition].leader
		}
		if leader < 0 {
			missing = true
		}
		c.mu.Lock()
		old := c.leader
		c.leader = leader
		c.mu.Unlock()
		if old == leader && f.byBroker[leader] != nil {
			if _, ok := f.byBroker[leader][c]; ok {
				continue
			}
		}
		if set := f.byBroker[old]; set != nil {
			delete(set, c)
		}
		if leader < 0 {
			continue
		}
		if f.byBroker[leader] == nil {
			f.byBroker[leader] = map[*cursor]struct{}{}
		}
		f.byBroker[leader][c] = struct{}{}
		if f.loops[leader] == nil {
			b := &brokerFetcher{id: leader, wake: make(chan struct{}, 1), session: fetchSession{off: !f.sessions}}
			f.setFetchBytes(b, minFetchBytes)
			f.loops[leader] = b
			f.wg.Add(1)
			go f.fetchLoop(b)
		}
	}
	f.setLinkFetchBytes()
	f.changes.Add(1)
	for _, b := range f.loops {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	f.mu.Unlock()
	if missing {
		// A leader election is in progress somewhere: look again soon.
		time.AfterFunc(500*time.Millisecond, f.requestRefresh)
	}
}

// tp names a topic partition.
type tp struct {
	topic string
	p     int32
}

// fetchPart is a cursor as it was when a fetch was built.
type fetchPart struct {
	c      *cursor
	offset int64
	gen    uint64
}

// eligible snapshots the cursors this broker should fetch now, and whether
// any of its cursors were left out while having a reason to be fetched soon.
// same says the answer is the last one again, nothing having changed since
// (at 10,000 idle partitions, the pass over them was most of an idle
// fetch's cost, as their cursors are out of the processor's cache by then).
func (f *fetchers) eligible(b *brokerFetcher) (parts []fetchPart, leftOut, same bool) {
	now := time.Now()
	changes := f.changes.Load()
	if changes == b.changes && now.Before(b.recheck) {
		return b.parts, b.leftOut, true
	}
	recheck := now.Add(time.Hour)
	fetchBytes := f.fetchBytes.Load()
	linkFull := f.buffered.Load() >= int64(linkBufferedFor(fetchBytes))
	partFull := partitionBufferedFor(fetchBytes)
	f.mu.Lock()
	defer f.mu.Unlock()
	// Two mirrors of one source topic have a cursor each on the same
	// source partition; a fetch names a partition once, so that each
	// answer belongs to exactly one cursor. (The set is kept between
	// fetches: with thousands of idle partitions, allocating it twice a
	// second shows.)
	if b.seen == nil {
		b.seen = map[tp]bool{}
	}
	clear(b.seen)
	seen := b.seen
	parts = b.parts[:0]
	defer func() {
		b.parts, b.leftOut, b.changes, b.recheck = parts, leftOut, changes, recheck
	}()
	for c := range f.byBroker[b.id] {
		c.mu.Lock()
		key := tp{c.topic, c.partition}
		switch {
		case !c.active:
		case now.Before(c.notUntil):
			if c.notUntil.Before(recheck) {
				recheck = c.notUntil
			}
		case c.inbox != nil || c.buffered >= partFull || linkFull:
			leftOut = true
		case seen[key]:
			// Another cursor on this partition (a second mirror of
			// the topic) was taken: this one waits for a later pass,
			// which must be a new one, not this one from the cache
			// (while the taken cursor idles, nothing would change).
			leftOut = true
			recheck = now
		default:
			seen[key] = true
			parts = append(parts, fetchPart{c: c, offset: c.offset, gen: c.gen})
		}
		c.mu.Unlock()
	}
	return parts, leftOut, false
}

// fetchLoop keeps at most one Fetch in flight to one source broker.
func (f *fetchers) fetchLoop(b *brokerFetcher) {
	defer f.wg.Done()
	backoff := newBackoff(100*time.Millisecond, 10*time.Second)
	idle := time.NewTicker(time.Second) // picks up cursors whose backoff ended
	defer idle.Stop()
	for {
		if f.ctx.Err() != nil {
			return
		}
		parts, leftOut, same := f.eligible(b)
		if len(parts) == 0 {
			select {
			case <-f.ctx.Done():
				return
			case <-b.wake:
			case <-idle.C:
			}
			continue
		}
		wait := fetchMaxWait
		switch {
		case leftOut:
			wait = fetchShortWait
		case b.quiet >= quietRounds && len(parts) == b.lastParts:
			// Nothing came for a while and the same partitions are
			// wanted: poll longer. Records still come the moment they
			// arrive (the broker answers at the first byte); only a
			// partition that becomes wanted meanwhile waits for the
			// poll to end. At 10,000 partitions this is most of an
			// idle link's cost, and of the source broker's for it.
			wait = fetchIdleWait
		}
		b.lastParts = len(parts)
		began := time.Now()
		sf, err := f.fetch(b, parts, wait, same)
		if err == nil {
			fetchSeconds.WithLabelValues(f.link).Observe(time.Since(began).Seconds())
		}
		if err != nil {
			if f.ctx.Err() != nil {
				return
			}
			countError(f.link, "fetch")
			f.log.Warn("fetch failed", zap.Int32("broker", b.id), zap.Error(err))
			for _, fp := range parts {
				fp.c.mu.Lock()
				fp.c.lastErr = err
				fp.c.mu.Unlock()
			}
			f.requestRefresh()
			if !sleepCtx(f.ctx, backoff.next()) {
				return
			}
			continue
		}
		backoff.reset()
		b.quiet++
		var got, most int64
		for _, t := range sf.Records {
			for _, r := range t {
				if r != nil {
					b.quiet = 0
					got += int64(len(r.Bytes()))
					most = max(most, int64(len(r.Bytes())))
				}
			}
		}
		f.resize(b, got, most, time.Since(began))
		f.handleFetch(parts, sf)
		sf.Release() // the record sets no partition took
	}
}

// resize sets b's fetch size after a fetch that brought got bytes in
// elapsed, most of them for one partition (nextFetchBytes), from the round
// trip the kernel measures on the connection; where it cannot be had (a
// network link's tunnel, not Linux), the whole fetch counts as the round
// trip, which grows the size to the maximum: far is the safe guess.
func (f *fetchers) resize(b *brokerFetcher, got, most int64, elapsed time.Duration) {
	rtt, ok := b.conn.RTT()
	if !ok {
		rtt = elapsed
	}
	cur := b.fetchBytes.Load()
	// Whole batches come: a partition at its limit brings a little less
	// (or, with one batch larger than the limit, more).
	full := got >= int64(cur)/2 || most >= int64(partitionFetchBytesFor(cur))/2
	next := nextFetchBytes(cur, full, elapsed, rtt)
	if next == cur {
		return
	}
	f.setFetchBytes(b, next)
	defer f.changes.Add(1) // the limits follow it
	f.log.Debug("fetch size follows the round trip", zap.Int32("broker", b.id), zap.Int32("bytes", next), zap.Duration("rtt", rtt), zap.Duration("fetch", elapsed))
	f.mu.Lock()
	f.setLinkFetchBytes()
	f.mu.Unlock()
}

// setFetchBytes sets b's fetch size, and its gauge.
func (f *fetchers) setFetchBytes(b *brokerFetcher, n int32) {
	b.fetchBytes.Store(n)
	fetchSizeBytes.WithLabelValues(f.link, strconv.Itoa(int(b.id))).Set(float64(n))
}

// setLinkFetchBytes sets the size the link's limits follow: the largest
// fetch size of a broker that leads any of the link's partitions (a broker
// whose partitions all moved away keeps its loop and its size, but no
// longer sizes the limits). f.mu must be held, so that two brokers'
// changes cannot store an older largest over a newer one.
func (f *fetchers) setLinkFetchBytes() {
	largest := int32(minFetchBytes)
	for id, o := range f.loops {
		if len(f.byBroker[id]) > 0 {
			largest = max(largest, o.fetchBytes.Load())
		}
	}
	f.fetchBytes.Store(largest)
}

// connect makes sure b has a working connection to its broker.
func (f *fetchers) connect(ctx context.Context, b *brokerFetcher, timeout time.Duration) error {
	if b.conn != nil && b.conn.Err() == nil {
		return nil
	}
	addr, ok := f.src.brokerAddr(b.id)
	if !ok {
		return fmt.Errorf("source broker %d is unknown", b.id)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := kconn.Dial(ctx, addr, f.dial)
	if err != nil {
		return err
	}
	if b.conn != nil {
		b.conn.Close()
	}
	b.conn = conn
	return nil
}

// fetch sends one Fetch for parts to the broker, (re)connecting as needed.
// The answer is read as a stream: each partition's record set lands in a
// buffer of its own.
func (f *fetchers) fetch(b *brokerFetcher, parts []fetchPart, wait time.Duration, same bool) (*kconn.StreamedFetch, error) {
	if err := f.connect(f.ctx, b, 10*time.Second); err != nil {
		return nil, err
	}
	// read_committed: only batches whose transaction outcome is decided
	// (below the last stable offset), so that a replayed destination
	// transaction is open only as long as its replay takes.
	version := min(b.conn.MaxVersion(int16(kmsg.Fetch)), kmsg.NewPtrFetchRequest().MaxVersion(), kconn.MaxStreamedFetchVersion)
	for _, fp := range parts {
		if fp.c.topicID == ([16]byte{}) {
			version = min(version, 12) // v13+ names topics by ID only
		}
	}
	if version < 4 {
		return nil, fmt.Errorf("source broker %d does not support Fetch v4+ (Kafka 0.11+ is required)", b.id)
	}
	b.rotate++
	order := func(i int) int { return (i + b.rotate) % len(parts) }
	// At most twice: a session the broker no longer knows is answered
	// with an error, and the fetch is sent again as a full one.
	for range 2 {
		fetchBytes := b.fetchBytes.Load()
		req := newFetchRequest(1, wait, fetchBytes)
		req.SetVersion(version)
		b.version = version
		b.session.build(req, parts, order, partitionFetchBytesFor(fetchBytes), same)
		same = false // a second round is a new session's full fetch
		sf, err := b.conn.DoFetch(f.ctx, req, wait+30*time.Second, f.pool)
		if err != nil {
			b.session.reset() // whether the broker took the request is unknown
			b.conn.Close()
			return nil, err
		}
		resp := sf.Resp
		fetchRequests.WithLabelValues(f.link, fetchKind(req)).Inc()
		if hook := testHookFetchAnswered.Load(); hook != nil {
			(*hook)(f.link, req, resp)
		}
		usable, err := b.session.answered(resp)
		if !usable {
			sf.Release()
			if err == nil {
				fetchSessionResets.WithLabelValues(f.link).Inc()
				f.log.Debug("fetch session ended by the broker; starting a new one", zap.Int32("broker", b.id), zap.Error(kerr.ErrorForCode(resp.ErrorCode)))
				continue
			}
			return nil, fmt.Errorf("fetch refused: %w", err)
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			sf.Release()
			return nil, fmt.Errorf("fetch refused: %w", err)
		}
		return sf, nil
	}
	return nil, fmt.Errorf("source broker %d refused a new fetch session twice", b.id)
}

// testHookFetchAnswered, when set (by tests), sees every Fetch request a
// source broker answered, and the answer.
var testHookFetchAnswered atomic.Pointer[func(link string, req *kmsg.FetchRequest, resp *kmsg.FetchResponse)]

// closeConns closes the fetch connections once the loops have stopped,
// and with them their fetch sessions: otherwise each stays in its broker's
// cache, holding a slot other clients may need, until evicted.
func (f *fetchers) closeConns() {
	f.mu.Lock()
	loops := maps.Clone(f.loops)
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, b := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if b.conn != nil {
					b.conn.Close()
				}
			}()
			if req := b.session.closing(); req != nil {
				// The connection is often gone: the shutdown cut the
				// long poll on it short.
				req.SetVersion(b.version)
				ctx, cancel := context.WithTimeout(context.Background(), sessionCloseWait)
				defer cancel()
				if err := f.connect(ctx, b, sessionCloseWait); err != nil {
					return
				}
				if sf, err := b.conn.DoFetch(ctx, req, sessionCloseWait, f.pool); err == nil {
					fetchRequests.WithLabelValues(f.link, "close").Inc()
					if hook := testHookFetchAnswered.Load(); hook != nil {
						(*hook)(f.link, req, sf.Resp)
					}
					sf.Release()
				}
			}
		}()
	}
	wg.Wait()
}

// sessionCloseWait bounds the fetch that closes a session at shutdown.
const sessionCloseWait = 2 * time.Second

// handleFetch hands each partition its part of a fetch response.
func (f *fetchers) handleFetch(parts []fetchPart, sf *kconn.StreamedFetch) {
	resp := sf.Resp
	if len(resp.Topics) == 0 {
		return // an idle session's answer: nothing changed
	}
	byKey := make(map[tp]fetchPart, len(parts))
	byID := make(map[[16]byte]string)
	for _, fp := range parts {
		byKey[tp{fp.c.topic, fp.c.partition}] = fp
		byID[fp.c.topicID] = fp.c.topic
	}
	refresh := false
	for ti, t := range resp.Topics {
		topic := t.Topic
		if topic == "" {
			topic = byID[t.TopicID]
		}
		for pi, rp := range t.Partitions {
			fp, ok := byKey[tp{topic, rp.Partition}]
			if !ok {
				continue
			}
			res := &fetchResult{gen: fp.gen, fetchOffset: fp.offset}
			err := kerr.ErrorForCode(rp.ErrorCode)
			switch {
			case err == nil:
				res.batches, res.sums, res.buf, res.err = takeRecords(sf.Records[ti][pi])
				sf.Records[ti][pi] = nil // the result holds it now
				for _, b := range res.batches {
					res.bytes += int64(len(b))
				}
				res.highWatermark = rp.HighWatermark
				res.logStart = rp.LogStartOffset
				res.lastStable = rp.LastStableOffset
				res.aborted = rp.AbortedTransactions
			case isLeaderError(err):
				refresh = true
				f.unassign(fp.c, err)
				continue
			default:
				res.err = err
			}
			f.deliver(fp, res)
		}
	}
	if refresh {
		f.requestRefresh()
	}
}

// unassign takes a cursor off its broker until metadata names its leader.
func (f *fetchers) unassign(c *cursor, err error) {
	f.mu.Lock()
	c.mu.Lock()
	if set := f.byBroker[c.leader]; set != nil {
		delete(set, c)
	}
	c.leader = -1
	c.lastErr = err
	c.mu.Unlock()
	f.mu.Unlock()
	f.changes.Add(1)
}

// takeRecords splits a partition's record set, read into a buffer of its
// own, into batches; the buffer then holds one reference per batch, and is
// released when the last of them is appended (or dropped).
func takeRecords(buf *kconn.Buffer) ([]batch.Batch, []uint32, *kconn.Buffer, error) {
	if buf == nil {
		return nil, nil, nil, nil
	}
	bs, err := batch.Split(buf.Bytes())
	if err != nil || len(bs) == 0 {
		buf.Release()
		return nil, nil, nil, err
	}
	buf.Retain(len(bs) - 1)
	return bs, buf.Sums, buf, nil
}

// deliver puts a result into a cursor's inbox, unless the cursor was reset
// since the fetch was built.
func (f *fetchers) deliver(fp fetchPart, res *fetchResult) {
	c := fp.c
	c.mu.Lock()
	// A reset since the fetch was built makes the result stale; a full
	// inbox means another broker's fetch (the cursor moved leaders while
	// a long poll was open) answered first.
	if c.gen != fp.gen || !c.active || c.inbox != nil {
		c.mu.Unlock()
		res.releaseFrom(0)
		return
	}
	if res.highWatermark > 0 || res.err == nil {
		c.highWatermark.Store(res.highWatermark)
		c.logStart.Store(res.logStart)
	}
	if res.err == nil && len(res.batches) == 0 {
		c.lastErr = nil
		c.mu.Unlock()
		return // nothing new; the figures above are all there was
	}
	if res.err != nil {
		c.lastErr = res.err
		c.notUntil = time.Now().Add(time.Second)
	} else {
		c.lastErr = nil
		c.offset = res.batches[len(res.batches)-1].NextOffset()
		c.buffered += res.bytes
		f.buffered.Add(res.bytes)
	}
	c.inbox = res
	c.mu.Unlock()
	f.changes.Add(1)
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// take returns the cursor's undelivered result, if any.
func (f *fetchers) take(c *cursor) *fetchResult {
	c.mu.Lock()
	r := c.inbox
	c.inbox = nil
	c.mu.Unlock()
	if r != nil {
		f.changes.Add(1)
		f.wakeCursor(c)
	}
	return r
}

// release returns fetched bytes the destination has now acknowledged (or
// that were dropped), so that fetching may go on.
func (f *fetchers) release(c *cursor, n int64) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	before := c.buffered
	c.buffered -= n
	c.mu.Unlock()
	after := f.buffered.Add(-n)
	f.changes.Add(1)
	fetchBytes := f.fetchBytes.Load()
	if before >= partitionBufferedFor(fetchBytes) || after+n >= int64(linkBufferedFor(fetchBytes)) {
		f.wakeCursor(c)
	}
}

// reset points the cursor at offset and drops anything fetched before; the
// partition calls it on start and whenever it must re-read the source. The
// next fetch waits delay (a backoff after an error). Bytes the partition
// still holds are its to release.
func (f *fetchers) reset(c *cursor, offset int64, active bool, delay time.Duration) {
	c.mu.Lock()
	c.gen++
	c.offset = offset
	f.dropInbox(c)
	c.active = active
	c.notUntil = time.Now().Add(delay)
	c.mu.Unlock()
	f.changes.Add(1)
	if active {
		f.wakeCursor(c)
	}
}

// isLeaderError reports fetch errors that mean "ask someone else", cured by
// fresh metadata. UNKNOWN_TOPIC_ID and INCONSISTENT_TOPIC_ID are not: the
// topic was deleted or recreated, which the partition must decide about.
func isLeaderError(err error) bool {
	for _, e := range []error{
		kerr.NotLeaderForPartition, kerr.LeaderNotAvailable, kerr.UnknownLeaderEpoch,
		kerr.FencedLeaderEpoch, kerr.UnknownTopicOrPartition, kerr.KafkaStorageError,
		kerr.ReplicaNotAvailable, kerr.OffsetNotAvailable, kerr.NotCoordinator,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// backoff is exponential with a cap.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max} }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else if b.cur *= 2; b.cur > b.max {
		b.cur = b.max
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }

// sleepCtx sleeps for d, returning false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
