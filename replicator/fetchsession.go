package replicator

import (
	"errors"
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchSession is one source broker's incremental fetch session (KIP-227,
// Fetch v7+). The broker remembers the partitions a session names and the
// position of each; a request then names only the partitions whose
// position changed, and forgets those no longer wanted, and the answer
// carries only partitions with news (records, an error, a new high
// watermark, last stable offset or log start). With 10,000 idle partitions
// on a broker, that is the difference between naming all of them twice a
// second and naming none.
//
// The broker moves a partition's position only when a request names it,
// never on its own after an answer: a result that is dropped (the
// partition was reset meanwhile) is fetched again at the same position.
//
// Any doubt ends the session (a new one starts with a full fetch): a
// connection lost, an error answer, a topic whose ID changed.
type fetchSession struct {
	// off: the broker does not speak Fetch v7, or sessions are turned off.
	off bool
	id  int32 // 0: none yet
	ids bool  // the session names topics by ID (Fetch v13+)
	// partMax is the PartitionMaxBytes the session's partitions were
	// named with; the broker keeps it per partition.
	partMax int32
	// epoch is the next request's epoch: 0 asks for a new session (a full
	// fetch), then 1, 2, ... up to MaxInt32, then 1 again.
	epoch int32
	// parts are the partitions the broker holds in the session, at the
	// position the last accepted request gave them.
	parts map[tp]sessionPart
	// pending is what the request in flight changes, applied on success.
	pending sessionChange
	// settled: the broker accepted a request that named and forgot
	// nothing, so it holds every partition of that request's parts at
	// the position wanted; the same parts again make the same empty
	// request, and build need not look at each.
	settled bool
}

type sessionPart struct {
	topicID [16]byte
	offset  int64
	c       *cursor // the cursor the partition was named for
}

type sessionChange struct {
	set    map[tp]sessionPart
	forget []tp
	full   bool // the request was a full one (epoch 0): parts is set
}

// reset ends the session: the next request is a full one that asks for a
// new session. It carries the old session's id, which makes the broker
// drop that session (a full fetch closes the session it names) instead of
// keeping it in its cache, where it holds a slot other clients may need,
// until evicted.
func (s *fetchSession) reset() {
	s.epoch, s.parts, s.pending, s.settled = 0, nil, sessionChange{}, false
}

// closing is the request that closes the session (epoch -1, naming
// nothing, answered at once), or nil if there is none; the session is
// over either way. Its version must be set.
func (s *fetchSession) closing() *kmsg.FetchRequest {
	if s.off || s.id == 0 {
		return nil // no session, or the broker said it has none
	}
	req := newFetchRequest(1, 0, minFetchBytes)
	req.SessionID, req.SessionEpoch = s.id, -1
	s.id, s.epoch, s.parts, s.pending, s.settled = 0, 0, nil, sessionChange{}, false
	return req
}

// topicKey names a topic in a request: by name and ID, so that two topics
// of one name (one deleted and recreated meanwhile) are never merged.
type topicKey struct {
	name string
	id   [16]byte
}

// build fills req's session fields, topics and forgotten topics for parts
// (the partitions wanted now). Parts the request does not name are in the
// session at the position wanted, and the broker answers for them without
// being told. req's version must be set. order gives the index of the
// i-th part to name, so that the caller can rotate them. partMax is each
// partition's PartitionMaxBytes. same says parts are the very parts of the
// last request, none of whose cursors changed since: in a settled session
// that is the empty request again, built without looking at each part (at
// 10,000 idle partitions, that look was most of an idle fetch's cost).
func (s *fetchSession) build(req *kmsg.FetchRequest, parts []fetchPart, order func(i int) int, partMax int32, same bool) {
	byTopic := map[topicKey]int{}
	add := func(fp fetchPart) {
		k := topicKey{fp.c.topic, fp.c.topicID}
		ti, ok := byTopic[k]
		if !ok {
			ft := kmsg.NewFetchRequestTopic()
			ft.Topic = fp.c.topic
			ft.TopicID = fp.c.topicID
			req.Topics = append(req.Topics, ft)
			ti = len(req.Topics) - 1
			byTopic[k] = ti
		}
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = fp.c.partition
		rp.FetchOffset = fp.offset
		rp.PartitionMaxBytes = partMax
		rp.CurrentLeaderEpoch = -1
		req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, rp)
	}
	if s.off || req.GetVersion() < 7 {
		req.SessionID, req.SessionEpoch = 0, -1
		for i := range parts {
			add(parts[order(i)])
		}
		return
	}
	// A session names topics one way for its whole life: by ID from
	// Fetch v13 on, by name before. A topic recreated under the same name
	// has another ID: the session would hold both. Start afresh instead
	// (also while two topics of one name are fetched: every fetch is then
	// a full one, which is correct, and rare).
	ids := req.GetVersion() >= 13
	if s.epoch != 0 && s.ids != ids {
		s.reset()
	}
	s.ids = ids
	// The broker keeps each partition's size as it was named: a new size
	// (the fetch size followed the round trip) starts a new session,
	// whose full fetch names every partition with it. Rare: sizes change
	// by powers of two, and settle.
	if s.epoch != 0 && s.partMax != partMax {
		s.reset()
	}
	s.partMax = partMax
	if same && s.settled && s.epoch != 0 {
		req.SessionID, req.SessionEpoch = s.id, s.epoch
		s.pending = sessionChange{}
		return
	}
	s.settled = false
	if s.epoch != 0 {
		for _, fp := range parts {
			if have, ok := s.parts[tp{fp.c.topic, fp.c.partition}]; ok && have.topicID != fp.c.topicID {
				s.reset()
				break
			}
		}
	}
	ch := sessionChange{set: map[tp]sessionPart{}, full: s.epoch == 0}
	req.SessionID, req.SessionEpoch = s.id, s.epoch
	forgotten := map[topicKey]int{}
	forget := func(key tp, have sessionPart) {
		ch.forget = append(ch.forget, key)
		k := topicKey{key.topic, have.topicID}
		fi, ok := forgotten[k]
		if !ok {
			ft := kmsg.NewFetchRequestForgottenTopic()
			ft.Topic = key.topic
			ft.TopicID = have.topicID
			req.ForgottenTopics = append(req.ForgottenTopics, ft)
			fi = len(req.ForgottenTopics) - 1
			forgotten[k] = fi
		}
		req.ForgottenTopics[fi].Partitions = append(req.ForgottenTopics[fi].Partitions, key.p)
	}
	// Idle, every part is in the session where it was: one lookup each,
	// and nothing allocated.
	inSession := 0
	for i := range parts {
		fp := parts[order(i)]
		key := tp{fp.c.topic, fp.c.partition}
		if !ch.full {
			have, ok := s.parts[key]
			if ok {
				inSession++
			}
			if ok && have.c != fp.c {
				// Another cursor now (a mirror restarted at the same
				// position): the broker sends a partition's figures
				// only when they change, and the new cursor has none.
				// Forgotten now, added next time, it gets them all.
				forget(key, have)
				continue
			}
			if ok && have.offset == fp.offset {
				continue
			}
		}
		ch.set[key] = sessionPart{topicID: fp.c.topicID, offset: fp.offset, c: fp.c}
		add(fp)
	}
	if !ch.full && inSession < len(s.parts) {
		wanted := make(map[tp]bool, len(parts))
		for _, fp := range parts {
			wanted[tp{fp.c.topic, fp.c.partition}] = true
		}
		for key, have := range s.parts {
			if !wanted[key] {
				forget(key, have)
			}
		}
	}
	s.pending = ch
}

// answered takes the broker's answer to the request build filled in. It
// returns whether the answer's partitions are to be read (false: the
// session was refused, and the request must be sent again as a full one).
func (s *fetchSession) answered(resp *kmsg.FetchResponse) (usable bool, err error) {
	if s.off || resp.GetVersion() < 7 {
		return true, nil
	}
	ch := s.pending
	s.pending = sessionChange{}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		s.reset()
		if errors.Is(err, kerr.FetchSessionIDNotFound) {
			s.id = 0 // nothing to close
		}
		if isSessionError(err) {
			// Evicted (the broker's cache is full, or it restarted) or
			// out of step: a full fetch starts a new session.
			return false, nil
		}
		return false, err
	}
	if ch.full {
		if resp.SessionID == 0 {
			// The broker keeps no session for us (its cache is full, or
			// sessions are off there): every fetch stays a full one.
			s.reset()
			s.id = 0
			return true, nil
		}
		s.id, s.parts = resp.SessionID, ch.set
	} else {
		if resp.SessionID != s.id {
			s.reset()
			return false, errors.New("the broker answered for another fetch session")
		}
		for key, p := range ch.set {
			s.parts[key] = p
		}
		for _, key := range ch.forget {
			delete(s.parts, key)
		}
		s.settled = len(ch.set) == 0 && len(ch.forget) == 0
	}
	if s.epoch == math.MaxInt32 {
		s.epoch = 1
	} else {
		s.epoch++
	}
	return true, nil
}

// isSessionError reports the top-level errors that end a fetch session
// and call for a new one.
func isSessionError(err error) bool {
	return errors.Is(err, kerr.FetchSessionIDNotFound) || errors.Is(err, kerr.InvalidFetchSessionEpoch) ||
		errors.Is(err, kerr.FetchSessionTopicIDError)
}

// fetchKind names a Fetch request's kind, for metrics.
func fetchKind(req *kmsg.FetchRequest) string {
	switch {
	case req.SessionEpoch < 0:
		return "sessionless"
	case req.SessionEpoch == 0:
		return "full"
	default:
		return "incremental"
	}
}
