package replicator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/replicator/batch"
)

// Source transactions are replayed on the destination with klink's own
// transactional producers, so that every data batch and every marker lands
// at its source offset with the source's outcome: a committed source
// transaction commits, an aborted one aborts.
//
// A source partition can have several transactions open at once (several
// producers, interleaved), and a producer can have only one open, so each
// partition has a small pool of transactional producers ("slots"), each
// bound to one source producer id while that producer's transaction is
// being replayed. One more transaction, never committed, carries filler
// records: offsets the source skips are filled inside it and its abort
// marker takes the last skipped offset, so read_committed consumers never
// see a filler.
//
// Transactional ids are klink-<link id>-<topic>-<partition>-<slot>: stable
// across restarts, so InitProducerId fences an older klink. After a crash,
// the destination itself says which transactions are still open
// (DescribeProducers, ListTransactions), so nothing about them needs to be
// kept elsewhere.

// fillerPID marks the slot replaying no source producer: it carries fillers.
const fillerPID = -2

// txnTimeout is the transaction timeout klink asks for: long enough to
// restart klink in the middle of replaying a transaction and finish it (the
// destination aborts it after this long). Brokers cap it at
// transaction.max.timeout.ms (15 minutes by default); a broker that refuses
// it gets txnTimeoutFallback.
//
// Variables, not constants, so that tests can make the destination abort a
// transaction within seconds.
var (
	txnTimeout         = 15 * time.Minute
	txnTimeoutFallback = time.Minute
)

// slot is one of klink's destination producers for a partition: the
// idempotent producer (txnID nil), or a transactional one.
type slot struct {
	txnID    *string
	producer batch.Producer // id, epoch and next sequence on this partition
	ready    bool           // producer id and epoch are known
	inTxn    bool           // a destination transaction is open
	srcPID   int64          // source producer id replayed, or fillerPID
	since    int64          // recovered: the destination offset its transaction's data starts at
}

// take returns the producer fields for a batch of n records and advances
// the sequence.
func (s *slot) take(n int64) batch.Producer {
	pr := s.producer
	s.producer.Sequence = nextSequence(s.producer.Sequence, n)
	return pr
}

func (p *partition) txnIDFor(index int) string {
	return fmt.Sprintf("klink-%s-%s-%d-%d", p.m.link.identity.ID, p.m.name, p.id, index)
}

func (p *partition) txnIDPrefix() string {
	return fmt.Sprintf("klink-%s-%s-%d-", p.m.link.identity.ID, p.m.name, p.id)
}

// slotFor returns the slot replaying srcPID's open transaction, opening
// one (and adding the partition to its transaction) if there is none.
func (p *partition) slotFor(ctx context.Context, srcPID int64) (*slot, error) {
	if s := p.bySrc[srcPID]; s != nil {
		return s, nil
	}
	for _, c := range p.slots {
		if c.inTxn && c.srcPID == orphanPID {
			c.srcPID = srcPID // opened for this step before klink stopped
			p.bySrc[srcPID] = c
			return c, nil
		}
	}
	var s *slot
	for _, c := range p.slots {
		if !c.inTxn {
			s = c
			break
		}
	}
	if s == nil {
		id := p.txnIDFor(len(p.slots))
		s = &slot{txnID: &id}
		p.slots = append(p.slots, s)
	}
	if !s.ready {
		if err := p.initTxnProducer(ctx, s); err != nil {
			return nil, err
		}
	}
	if err := p.addPartitionToTxn(ctx, s); err != nil {
		return nil, err
	}
	s.inTxn = true
	s.srcPID = srcPID
	p.bySrc[srcPID] = s
	return s, nil
}

// initTxnProducer gets the slot's producer id and a new epoch, fencing any
// older klink using the same transactional id.
func (p *partition) initTxnProducer(ctx context.Context, s *slot) error {
	if err := p.requireNotOpenHere(ctx, *s.txnID); err != nil {
		return err
	}
	for _, timeout := range []time.Duration{txnTimeout, txnTimeoutFallback} {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = s.txnID
		req.TransactionTimeoutMillis = int32(timeout / time.Millisecond)
		err := retryTxn(ctx, func() (int16, error) {
			r, err := req.RequestWith(ctx, p.m.link.dst.cl)
			if err != nil {
				return 0, err
			}
			s.producer = batch.Producer{ID: r.ProducerID, Epoch: r.ProducerEpoch}
			if r.ErrorCode == 0 {
				p.ourPIDs[r.ProducerID] = true
			}
			return r.ErrorCode, nil
		})
		if errors.Is(err, kerr.InvalidTransactionTimeout) {
			continue
		}
		if err != nil {
			return fmt.Errorf("destination InitProducerId for %s: %w", *s.txnID, err)
		}
		s.ready = true
		return nil
	}
	return fmt.Errorf("destination InitProducerId for %s: the destination refuses transaction timeouts of %s and %s", *s.txnID, txnTimeout, txnTimeoutFallback)
}

// requireNotOpenHere refuses to take over a transactional id whose
// transaction holds this partition: InitProducerId would abort it, and the
// abort marker would take the offset klink is about to append at (a shift
// in the gap map where no source offset moved). recoverTxns resumes such a
// transaction, but learns of it from a listing of every broker, and a
// listing can leave one out (the transaction log moving between brokers,
// the old one unloaded and the new one not loading yet), or the
// transaction can have changed state between the listing and recovery's
// DescribeTransactions (the likely cause of one run of the
// destination-leader-killed test on Kafka 3.8 that shifted on the abort
// marker of klink's own transaction, opened just before its append was
// refused). DescribeTransactions goes to the id's own coordinator.
func (p *partition) requireNotOpenHere(ctx context.Context, id string) error {
	described, err := p.m.link.dst.adm.DescribeTransactions(ctx, id)
	if err != nil {
		return fmt.Errorf("destination DescribeTransactions %s: %w", id, err)
	}
	dt, ok := described[id]
	switch {
	case !ok:
		return fmt.Errorf("destination DescribeTransactions %s: missing from the answer", id)
	case errors.Is(dt.Err, kerr.TransactionalIDNotFound):
		return nil
	case dt.Err != nil:
		return fmt.Errorf("destination DescribeTransactions %s: %w", id, dt.Err)
	}
	ended := slices.Contains([]string{"Empty", "CompleteCommit", "CompleteAbort", "Dead"}, dt.State)
	if ended || !dt.Topics.Lookup(p.m.name, p.id) { // none open, or its end writes no marker here
		p.unresumedSince = time.Time{}
		return nil
	}
	if p.unresumedSince.IsZero() {
		p.unresumedSince = time.Now()
	}
	err = fmt.Errorf("destination %s[%d]: klink's transaction %s is open (%s) and holds the partition, but was not resumed when the partition started (not listed yet, or it changed state since); starting again", p.m.name, p.id, id, dt.State)
	if d := time.Since(p.unresumedSince); d > foreignTxnGrace {
		// Not an endless quiet loop: say what comes if it goes on.
		err = fmt.Errorf("%w (for %s: if no listing shows it, the destination aborts it after its transaction timeout, and the partition shifts by its marker, recorded in the gap map)", err, d.Round(time.Second))
	}
	return err
}

func (p *partition) addPartitionToTxn(ctx context.Context, s *slot) error {
	if err := addPartitionToTxn(ctx, p.m.link.dst.cl, *s.txnID, s.producer, p.m.name, p.id); err != nil {
		return p.txnError("AddPartitionsToTxn", s, err)
	}
	return nil
}

// addPartitionToTxn adds topic[partition] to the open transaction of
// txnID (producer pr's id and epoch), waiting out what retryTxn waits out.
func addPartitionToTxn(ctx context.Context, cl *kgo.Client, txnID string, pr batch.Producer, topic string, partition int32) error {
	req := kmsg.NewPtrAddPartitionsToTxnRequest()
	req.TransactionalID = txnID
	req.ProducerID = pr.ID
	req.ProducerEpoch = pr.Epoch
	rt := kmsg.NewAddPartitionsToTxnRequestTopic()
	rt.Topic = topic
	rt.Partitions = []int32{partition}
	req.Topics = append(req.Topics, rt)
	return retryTxn(ctx, func() (int16, error) {
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		for _, t := range resp.Topics {
			for _, pr := range t.Partitions {
				if pr.ErrorCode != 0 {
					return pr.ErrorCode, nil
				}
			}
		}
		return resp.ErrorCode, nil
	})
}

// endTxn commits or aborts the slot's transaction and waits until its
// marker is at offset marker in the destination log.
func (p *partition) endTxn(ctx context.Context, s *slot, commit bool, marker int64) error {
	req := kmsg.NewPtrEndTxnRequest()
	req.TransactionalID = *s.txnID
	req.ProducerID = s.producer.ID
	req.ProducerEpoch = s.producer.Epoch
	req.Commit = commit
	err := retryTxn(ctx, func() (int16, error) {
		resp, err := req.RequestWith(ctx, p.m.link.dst.cl)
		if err != nil {
			return 0, err
		}
		return resp.ErrorCode, nil
	})
	if err != nil {
		return p.txnError("EndTxn", s, err)
	}
	s.inTxn = false
	delete(p.bySrc, s.srcPID)
	return p.waitMarker(ctx, marker, commit, s.producer.ID)
}

// waitMarker waits until the destination log holds the marker at offset m
// (the coordinator writes it after EndTxn returns, usually within 20 ms):
// nothing may be appended before it is there, or it would land later.
func (p *partition) waitMarker(ctx context.Context, m int64, commit bool, pid int64) error {
	dst := p.m.link.dst
	deadline := time.Now().Add(30 * time.Second)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		end, err := dst.listOffset(ctx, p.m.name, p.id, offsetLatest)
		if err != nil {
			return err
		}
		if end > m {
			if end != m+1 {
				if p.ownAbortIn(ctx, m, end) || p.ownMarkerIn(ctx, m+1, end) {
					return errShiftedAppend
				}
				return fatalf("destination %s[%d] end offset is %d after the transaction marker expected at %d: something else writes into the mirror topic", p.m.name, p.id, end, m)
			}
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("destination %s[%d]: transaction marker not at offset %d after 30s (end offset %d)", p.m.name, p.id, m, end)
		}
		if !sleepCtx(ctx, wait) {
			return ctx.Err()
		}
	}
	f, err := dst.fetchOnce(ctx, p.m.name, p.id, m, 1, 0)
	for wait := 10 * time.Millisecond; err == nil && len(f.batches) == 0; wait = min(2*wait, 200*time.Millisecond) {
		// The end offset came from one broker, the fetch went to another
		// that does not serve the marker yet (a leader that just moved,
		// or stale metadata): an empty answer says nothing, ask again.
		// (Seen on Kafka 3.8 with a destination leader SIGKILLed.)
		if time.Now().After(deadline) {
			return fmt.Errorf("destination %s[%d]: the transaction marker at offset %d is not readable after 30s", p.m.name, p.id, m)
		}
		if !sleepCtx(ctx, wait) {
			return ctx.Err()
		}
		f, err = dst.fetchOnce(ctx, p.m.name, p.id, m, 1, 0)
	}
	if err != nil {
		return err
	}
	if f.batches[0].BaseOffset() != m || !f.batches[0].IsControl() || f.batches[0].ProducerID() != pid {
		if p.ownAbortIn(ctx, m, m+1) {
			return errShiftedAppend
		}
		return fatalf("destination %s[%d] offset %d does not hold klink's transaction marker: something else writes into the mirror topic", p.m.name, p.id, m)
	}
	typ, err := f.batches[0].ControlType()
	if err != nil || (typ == batch.ControlCommit) != commit {
		return fatalf("destination %s[%d] marker at offset %d has the wrong outcome (%v)", p.m.name, p.id, m, err)
	}
	p.next, p.acked = m+1, m+1
	p.destEnd.Store(p.acked)
	return nil
}

// txnError turns a transactional error into what it means for the mirror.
func (p *partition) txnError(op string, s *slot, err error) error {
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) {
		// The destination aborted the transaction on its own (timeout)
		// and bumped the epoch, or another klink took over the id: the
		// next start reads the destination and tells which.
		return fmt.Errorf("%s for %s: %w: the destination ended this transaction (transaction timeout), or another klink uses the same transactional id", op, *s.txnID, err)
	}
	return fmt.Errorf("%s for %s: %w", op, *s.txnID, err)
}

// retryTxn runs a transactional request until it succeeds, fails for good,
// or 30 s pass: CONCURRENT_TRANSACTIONS (the previous transaction of the id
// is still being completed), coordinator moves and loads are waited out.
func retryTxn(ctx context.Context, do func() (int16, error)) error {
	deadline := time.Now().Add(30 * time.Second)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		code, err := do()
		if err == nil {
			err = kerr.ErrorForCode(code)
		}
		if err == nil {
			return nil
		}
		switch {
		case errors.Is(err, kerr.ConcurrentTransactions), errors.Is(err, kerr.CoordinatorLoadInProgress),
			errors.Is(err, kerr.NotCoordinator), errors.Is(err, kerr.CoordinatorNotAvailable):
		default:
			return err
		}
		if time.Now().After(deadline) {
			return err
		}
		if !sleepCtx(ctx, wait) {
			return ctx.Err()
		}
	}
}

// listTransactions lists every transaction of the destination. Tests
// replace it (listTransactionsHook) to make a listing leave one out, as one
// sent while the transaction log moves between brokers can.
func listTransactions(ctx context.Context, adm *kadm.Client) (kadm.ListedTransactions, error) {
	if hook := listTransactionsHook.Load(); hook != nil {
		return (*hook)(ctx, adm)
	}
	return adm.ListTransactions(ctx, nil, nil)
}

type listTransactionsFunc = func(context.Context, *kadm.Client) (kadm.ListedTransactions, error)

// listTransactionsHook is nil but in tests (atomic: the listers'
// goroutines may outlive a test's replicator).
var listTransactionsHook atomic.Pointer[listTransactionsFunc]

// txnLister shares ListTransactions among a link's partitions. Each
// partition's start must see every transaction of the destination (Kafka
// cannot list by transactional id prefix), so a restart at 10,000
// partitions listed them 10,000 times. A listing serves every partition
// that asked for one before it was sent (so none is served a listing older
// than its request: a partition restarting after an error must see the
// transactions it opened itself), and at most one is in flight.
type txnLister struct {
	mu      sync.Mutex
	running bool
	waiting []chan<- txnListing
	calls   atomic.Int64 // listings sent, for tests
}

type txnListing struct {
	listed kadm.ListedTransactions // shared: read only
	err    error
}

// list returns a listing sent after the call.
func (tl *txnLister) list(ctx context.Context, adm *kadm.Client) (kadm.ListedTransactions, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := make(chan txnListing, 1)
	tl.mu.Lock()
	tl.waiting = append(tl.waiting, ch)
	if !tl.running {
		tl.running = true
		go tl.serve(adm)
	}
	tl.mu.Unlock()
	select {
	case r := <-ch:
		return r.listed, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// serve sends listings while partitions wait for one. Each listing has its
// own bound (it serves many callers, so none of their contexts); a link
// that stops closes the client, which ends it at once.
func (tl *txnLister) serve(adm *kadm.Client) {
	for {
		tl.mu.Lock()
		batch := tl.waiting
		tl.waiting = nil
		if len(batch) == 0 {
			tl.running = false
			tl.mu.Unlock()
			return
		}
		tl.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		listed, err := listTransactions(ctx, adm)
		cancel()
		tl.calls.Add(1)
		for _, ch := range batch {
			ch <- txnListing{listed, err}
		}
	}
}

// orphanPID marks a recovered destination transaction that holds the
// partition but no data yet: klink stopped between AddPartitionsToTxn and
// its first append (or the marker that was to end it). It is used for the
// next step that needs a transaction, which is the one it was opened for:
// replay starts again at the same place.
const orphanPID = -3

// recoverTxns learns, from the destination, which of klink's transactions
// hold this partition (klink stopped in the middle of replaying them), and
// what each one replays, so that replay goes on with them: aborting them
// (InitProducerId would, and so would the coordinator after the timeout)
// writes a marker klink did not plan, and their source outcome may be a
// commit. A transaction klink just ended is waited for until its marker is
// written.
func (p *partition) recoverTxns(ctx context.Context) error {
	p.slots = nil
	p.bySrc = map[int64]*slot{}
	p.ourPIDs = map[int64]bool{}
	adm := p.m.link.dst.adm
	prefix := p.txnIDPrefix()
	var ours []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		listed, err := p.m.link.txnLister.list(ctx, adm)
		if err != nil {
			return fmt.Errorf("destination ListTransactions: %w", err)
		}
		ours = ours[:0]
		settling := false
		for id, lt := range listed {
			if strings.HasPrefix(id, prefix) {
				// Every producer id klink's ids have: their markers
				// are klink's (see verifyTail).
				p.ourPIDs[lt.ProducerID] = true
				switch lt.State {
				case "Ongoing":
					ours = append(ours, id)
				case "PrepareCommit", "PrepareAbort":
					settling = true
				}
			}
		}
		if !settling {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("destination %s[%d]: klink's transactions are still being completed after 30s", p.m.name, p.id)
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
	var ts kadm.TopicsSet
	ts.Add(p.m.name, p.id)
	dps, err := adm.DescribeProducers(ctx, ts)
	if err != nil {
		return fmt.Errorf("destination DescribeProducers %s[%d]: %w", p.m.name, p.id, err)
	}
	dp, ok := dps[p.m.name].Partitions[p.id]
	if !ok {
		return fmt.Errorf("destination DescribeProducers %s[%d]: partition missing from the answer", p.m.name, p.id)
	}
	if dp.Err != nil {
		return fmt.Errorf("destination DescribeProducers %s[%d]: %w", p.m.name, p.id, dp.Err)
	}
	// Sequences go on across the transactions of one producer epoch, so a
	// transaction resumed without data still needs the producer's last
	// sequence on this partition.
	active := map[int64]kadm.DescribedProducer{}
	withData := map[int64]kadm.DescribedProducer{}
	for _, pr := range dp.ActiveProducers {
		active[pr.ProducerID] = pr
		if pr.CurrentTxnStartOffset >= 0 {
			withData[pr.ProducerID] = pr
		}
	}
	var described kadm.DescribedTransactions
	if len(ours) > 0 {
		if described, err = adm.DescribeTransactions(ctx, ours...); err != nil {
			return fmt.Errorf("destination DescribeTransactions: %w", err)
		}
	}
	for id, dt := range described {
		if dt.Err != nil {
			return fmt.Errorf("destination DescribeTransactions %s: %w", id, dt.Err)
		}
		if dt.State != "Ongoing" || !dt.Topics.Lookup(p.m.name, p.id) {
			continue
		}
		index, err := strconv.Atoi(strings.TrimPrefix(id, prefix))
		if err != nil || index < 0 || index > math.MaxInt16 {
			return fatalf("destination %s[%d]: transactional id %q is not one of klink's", p.m.name, p.id, id)
		}
		for len(p.slots) <= index {
			tid := p.txnIDFor(len(p.slots))
			p.slots = append(p.slots, &slot{txnID: &tid})
		}
		s := p.slots[index]
		s.producer = batch.Producer{ID: dt.ProducerID, Epoch: dt.ProducerEpoch}
		s.ready, s.inTxn = true, true
		s.srcPID = orphanPID
		if pr, ok := active[dt.ProducerID]; ok && pr.ProducerEpoch == dt.ProducerEpoch && pr.LastSequence >= 0 {
			s.producer.Sequence = nextSequence(pr.LastSequence, 1)
		}
		s.since = -1
		if pr, ok := withData[dt.ProducerID]; ok {
			delete(withData, dt.ProducerID)
			s.since = pr.CurrentTxnStartOffset
			s.srcPID = unboundPID // bindRecovered, once the tail is checked
		} else {
			p.log.Info("resuming a destination transaction left open", zap.String("transactionalID", id), zap.String("holds", "no data yet"))
		}
	}
	for _, pr := range withData {
		if p.ourPIDs[pr.ProducerID] {
			// One of klink's transactions moved on (the destination
			// is aborting it) between the two reads: read again.
			return fmt.Errorf("destination %s[%d]: klink's transaction of producer id %d changed state during recovery; retrying", p.m.name, p.id, pr.ProducerID)
		}
		// A transaction coordinator that moved (its broker died) lists
		// nothing until it has loaded its log: one of klink's own
		// transactions can look foreign for a while. Nothing is
		// appended meanwhile; the partition starts again.
		if p.foreignSince.IsZero() {
			p.foreignSince = time.Now()
		}
		if time.Since(p.foreignSince) < foreignTxnGrace {
			return fmt.Errorf("destination %s[%d] has a transaction open since offset %d that no coordinator lists as klink's yet (producer id %d); checking again", p.m.name, p.id, pr.CurrentTxnStartOffset, pr.ProducerID)
		}
		return fatalf("destination %s[%d] has a transaction open since offset %d that klink did not start (producer id %d): something else writes into the mirror topic", p.m.name, p.id, pr.CurrentTxnStartOffset, pr.ProducerID)
	}
	p.foreignSince = time.Time{}
	return nil
}

// foreignTxnGrace is how long an open transaction no coordinator lists as
// klink's may be taken for a coordinator still loading, before the mirror
// fails as written into by someone else.
const foreignTxnGrace = 30 * time.Second

// unboundPID marks a recovered transaction with data whose source producer
// is not known yet.
const unboundPID = -5

// bindRecovered binds each recovered transaction with data to the source
// producer it replays. It runs after the tail check, which may have found
// the partition shifted (see gapmap.go).
func (p *partition) bindRecovered(ctx context.Context) error {
	for _, s := range p.slots {
		if !s.inTxn || s.srcPID != unboundPID {
			continue
		}
		if p.copyingSince(s.since) {
			s.srcPID = copiesPID // finishCopies aborts it and copies again
		} else {
			pid, err := p.replayedProducer(ctx, s.since)
			if err != nil {
				return err
			}
			s.srcPID = pid
		}
		p.bySrc[s.srcPID] = s
		p.log.Info("resuming a destination transaction left open", zap.String("transactionalID", *s.txnID), zap.Int64("since", s.since), zap.Int64("sourceProducerID", s.srcPID))
	}
	return nil
}

// copyingSince reports whether a destination transaction starting at
// offset holds copies of aborted records still being appended.
func (p *partition) copyingSince(offset int64) bool {
	for _, sh := range p.shifts {
		if c := sh.Copies; c != nil && c.Pending && c.From > 0 && offset >= c.From {
			return true
		}
	}
	return false
}

// replayedProducer says which source producer the destination transaction
// starting at destination offset replays: the source batch at that offset
// (less p.delta) tells, unless the destination batch there holds fillers.
func (p *partition) replayedProducer(ctx context.Context, offset int64) (int64, error) {
	df, err := p.m.link.dst.fetchOnce(ctx, p.m.name, p.id, offset, 1, 0)
	if err != nil {
		return 0, err
	}
	if len(df.batches) == 0 || df.batches[0].BaseOffset() != offset {
		return 0, fmt.Errorf("destination %s[%d]: no batch at the open transaction's first offset %d", p.m.name, p.id, offset)
	}
	if filler, err := df.batches[0].IsFillerBatch(); err != nil || filler {
		return fillerPID, err
	}
	at := p.sourceOffsetOf(offset)
	sf, err := p.m.link.src.fetchOnce(ctx, p.m.sourceTopic, p.id, at, 1, 0)
	if err != nil {
		return 0, err
	}
	for _, b := range sf.batches {
		if b.NextOffset() > at {
			if b.BaseOffset() > at {
				return 0, fatalf("destination %s[%d] offset %d: the source no longer has the batch at offset %d, so klink cannot tell which source transaction it replays", p.m.name, p.id, offset, at)
			}
			if !b.IsTransactional() || b.IsControl() {
				return 0, fatalf("destination %s[%d] has a transaction open at offset %d where the source has no transactional data", p.m.name, p.id, offset)
			}
			return b.ProducerID(), nil
		}
	}
	return 0, fmt.Errorf("source %s[%d]: no batch at offset %d", p.m.sourceTopic, p.id, at)
}
