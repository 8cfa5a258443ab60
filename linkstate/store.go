// Package linkstate keeps klink's durable state in one bbolt file: each
// link's identity and the clusters it was bound to, each mirror topic's state
// with its reason, and the per-partition bookkeeping the data path cannot
// read back from the destination log.
//
// Every change is one bbolt transaction, so a kill -9 leaves either the old
// or the new value. A file that is not klink's, or is damaged, is reported
// and never replaced.
package linkstate

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the state file inside the configured stateDir.
const FileName = "klink.db"

// formatVersion identifies the layout below; bump it on incompatible change.
// Version 2 added records an older klink would drop when it rewrites them
// (the gap map, stop records, created ACLs): a /1 file is upgraded in place
// when opened, and an older klink then refuses it instead of losing them.
const (
	formatVersion  = "klink-state/2"
	formatVersion1 = "klink-state/1"
)

var (
	metaBucket    = []byte("klink")
	formatKey     = []byte("format")
	linksBucket   = []byte("links")
	mirrorsBucket = []byte("mirrors") // nested: one bucket per link
)

// ErrNotFound is returned for a link or mirror that has no record yet.
var ErrNotFound = errors.New("not found")

// Store is klink's state: every link's identity and every mirror's state
// and bookkeeping. A lone klink keeps it in its state file (File); the
// members of a klink cluster share it through a compacted topic on the
// destination (Topic), each with a local copy. Methods are safe for
// concurrent use.
type Store interface {
	Path() string
	Close() error
	GetLink(name string) (Link, error)
	// Links returns every link recorded, including links no longer in
	// the config (their history stays).
	Links() ([]Link, error)
	PutLink(l Link) error
	// UpdateLink reads, changes and writes one link record atomically.
	UpdateLink(name string, fn func(l *Link) error) error
	GetMirror(link, name string) (Mirror, error)
	Mirrors(link string) ([]Mirror, error)
	// UpdateMirror reads, changes and writes one mirror atomically. fn
	// gets the current record (a fresh one with State PENDING if there is
	// none); if fn returns an error nothing is written. A change of State
	// must be allowed by the state machine (see Transition).
	UpdateMirror(link, name string, fn func(m *Mirror) error) (Mirror, error)
	// Sync returns once the store holds everything written (by any
	// member) before it was called.
	Sync(ctx context.Context) error
}

// File is the state file. Its methods are safe for concurrent use.
type File struct {
	db   *bolt.DB
	path string
	// publish, if set, writes a record to the shared state before it is
	// written here (see Topic); an error leaves both unchanged.
	publish func(key string, old, raw []byte) error
}

var _ Store = (*File)(nil)

// Sync: the state file is the whole truth.
func (s *File) Sync(context.Context) error { return nil }

// Open opens (or creates) dir/klink.db.
func Open(dir string) (*File, error) {
	return openFile(dir, FileName)
}

func openFile(dir, name string) (*File, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, name)
	// An existing file is read, read-only, before it is opened for
	// writing: bbolt writes to a file it opens read-write (a file synced
	// without a freelist, as etcd writes them, gets one), and a file that
	// is not klink's, or is damaged, must be left exactly as it was.
	if info, err := os.Stat(path); err == nil && info.Size() > 0 {
		if err := inspect(path); err != nil {
			return nil, err
		}
	}
	var s *File
	err := guard(path, func() error {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
		if err := openError(path, err); err != nil {
			return err
		}
		s = &File{db: db, path: path}
		if err := s.checkFormat(); err != nil {
			db.Close()
			s = nil
			return err
		}
		return nil
	})
	if err != nil {
		if s != nil {
			s.db.Close()
		}
		return nil, err
	}
	return s, nil
}

// openError phrases bolt.Open's error for an operator.
func openError(path string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("state file %s is locked: is another klink running with the same stateDir?", path)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrChecksum):
		return damaged(path, err)
	}
	return fmt.Errorf("state file %s: %w", path, err)
}

func damaged(path string, err error) error {
	return fmt.Errorf("state file %s is not a klink state file or is damaged (%v); klink will not replace it: move it away to start afresh (link and mirror state would be lost)", path, err)
}

// guard runs fn, reporting a panic, or a fault reading the memory-mapped
// file, as a damaged file: bbolt trusts the pages it reads, and a damaged
// file makes it panic, or read outside the file.
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = damaged(path, fmt.Errorf("%v", r))
		}
	}()
	return fn()
}

// inspect reads an existing state file without writing to it: it must be
// whole (see checkPages, and bbolt's own check of pages and freelist),
// klink's (or hold nothing at all) and of a format this klink reads.
func inspect(path string) error {
	return guard(path, func() error {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
		if err := openError(path, err); err != nil {
			return err
		}
		defer db.Close()
		// Open read-only, the file is locked against writers: these are
		// the bytes bbolt reads.
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("state file %s: %w", path, err)
		}
		if err := checkPages(data); err != nil {
			return damaged(path, err)
		}
		return db.View(func(tx *bolt.Tx) error {
			if _, err := readFormat(path, tx); err != nil {
				return err
			}
			var errs []error
			for err := range tx.Check() {
				errs = append(errs, err)
			}
			if len(errs) > 0 {
				return damaged(path, errors.Join(errs...))
			}
			return nil
		})
	})
}

// readFormat reads the file's klink header: the format of a klink file
// with its buckets, or "" for a file with no buckets at all (new, or an
// empty bbolt file). A file of other buckets, or of a format this klink
// does not read, is an error.
func readFormat(path string, tx *bolt.Tx) (version string, err error) {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		var foreign []string
		_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			foreign = append(foreign, string(name))
			return nil
		})
		if len(foreign) > 0 {
			return "", fmt.Errorf("state file %s holds buckets %q but no klink header: it is not klink's; klink will not touch it", path, foreign)
		}
		return "", nil
	}
	v := string(meta.Get(formatKey))
	if v != formatVersion && v != formatVersion1 {
		return "", fmt.Errorf("state file %s has format %q, this klink reads %q (written by a newer or foreign version?)", path, v, formatVersion)
	}
	if tx.Bucket(linksBucket) == nil || tx.Bucket(mirrorsBucket) == nil {
		return "", fmt.Errorf("state file %s is damaged: klink header present but buckets missing", path)
	}
	return v, nil
}

// checkFormat initialises an empty file and refuses one written by something
// else or by a newer klink.
func (s *File) checkFormat() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		v, err := readFormat(s.path, tx)
		switch {
		case err != nil:
			return err
		case v == "":
			meta, err := tx.CreateBucket(metaBucket)
			if err != nil {
				return err
			}
			if err := meta.Put(formatKey, []byte(formatVersion)); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(linksBucket); err != nil {
				return err
			}
			_, err = tx.CreateBucket(mirrorsBucket)
			return err
		case v == formatVersion1:
			return tx.Bucket(metaBucket).Put(formatKey, []byte(formatVersion))
		}
		return nil
	})
}

// Path is the state file's path.
func (s *File) Path() string { return s.path }

// Close closes the file.
func (s *File) Close() error { return s.db.Close() }

// Link is a link's durable identity.
type Link struct {
	Name string `json:"name"`
	// ID is generated when the link is first seen and never changes; it
	// names klink's own producers and transactional ids for this link.
	ID string `json:"id"`
	// Cluster IDs the link was bound to on its first successful start. A
	// later start against other clusters is refused.
	SourceClusterID      string    `json:"sourceClusterID,omitempty"`
	DestinationClusterID string    `json:"destinationClusterID,omitempty"`
	CreatedAt            time.Time `json:"createdAt"`
	// CreatedACLs are the destination ACLs the link's ACL sync created:
	// the only ones it may delete.
	CreatedACLs []ACL `json:"createdACLs,omitempty"`
}

// ACL is one ACL binding (Kafka's protocol codes for the enums).
type ACL struct {
	ResourceType int8   `json:"resourceType"`
	ResourceName string `json:"resourceName"`
	PatternType  int8   `json:"patternType"`
	Principal    string `json:"principal"`
	Host         string `json:"host"`
	Operation    int8   `json:"operation"`
	Permission   int8   `json:"permission"`
}

// UpdateLink reads, changes and writes one link record atomically.
func (s *File) UpdateLink(name string, fn func(l *Link) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var l Link
		if err := getJSON(tx.Bucket(linksBucket), name, &l); err != nil {
			return err
		}
		if err := fn(&l); err != nil {
			return err
		}
		return s.put(tx.Bucket(linksBucket), linkKey(name), name, l)
	})
}

// NewLinkID returns a random link ID (22 characters, URL-safe base64 of 16
// bytes, the same shape as Kafka cluster IDs).
func NewLinkID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// GetLink returns the named link, or ErrNotFound.
func (s *File) GetLink(name string) (Link, error) {
	var l Link
	err := s.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(linksBucket), name, &l)
	})
	return l, err
}

// Links returns every link recorded, including links no longer in the
// config (their history stays).
func (s *File) Links() ([]Link, error) {
	var ls []Link
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(linksBucket).ForEach(func(k, v []byte) error {
			var l Link
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("state file %s: link %s: %w", s.path, k, err)
			}
			ls = append(ls, l)
			return nil
		})
	})
	return ls, err
}

// PutLink writes a link record.
func (s *File) PutLink(l Link) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return s.put(tx.Bucket(linksBucket), linkKey(l.Name), l.Name, l)
	})
}

// Mirror is one mirror topic's durable state.
type Mirror struct {
	Link string `json:"link"`
	// Name is the destination topic.
	Name        string `json:"name"`
	SourceTopic string `json:"sourceTopic"`
	// SourceTopicID is the source topic's ID (hex) when the mirror was set
	// up; a topic recreated under the same name has another.
	SourceTopicID string `json:"sourceTopicID,omitempty"`
	// CreateRequestedAt is written before klink asks the destination to
	// create the topic, so that a crash between the request and
	// DestTopicID being written is recognised on restart.
	CreateRequestedAt time.Time `json:"createRequestedAt,omitzero"`
	// DestTopicID is the ID of the destination topic klink created. klink
	// writes only into a topic with this ID.
	DestTopicID string      `json:"destTopicID,omitempty"`
	State       MirrorState `json:"state"`
	Reason      string      `json:"reason,omitempty"`
	StateSince  time.Time   `json:"stateSince"`
	CreatedAt   time.Time   `json:"createdAt"`
	// Partitions holds per-partition bookkeeping, keyed by partition.
	Partitions map[int32]*Partition `json:"partitions,omitempty"`
	// Stop is set when the mirror became STOPPED, and kept forever.
	Stop *StopRecord `json:"stop,omitempty"`
	// AutoCreated: the link's autoCreateTopics filters made this mirror,
	// not an entry of mirrorTopics.
	AutoCreated bool `json:"autoCreated,omitempty"`
	// Hold, in a klink cluster, asks every member running one of the
	// mirror's partitions to stop appending (a promote, a pause, a
	// failover): its value names the request, and each partition says it
	// has stopped by setting its HeldFor to it. 0: partitions run.
	Hold int64 `json:"hold,omitempty"`
}

// StopRecord is how and when a mirror stopped, and where: the source offset
// each partition had been mirrored up to (the destination holds every
// source offset below it).
type StopRecord struct {
	At                time.Time       `json:"at"`
	By                string          `json:"by"` // PROMOTE, FAILOVER or REMOVED
	LastSourceOffsets map[int32]int64 `json:"lastSourceOffsets"`
}

// Partition is one mirrored partition's bookkeeping.
type Partition struct {
	// StartOffset is the source offset mirroring started from, chosen once
	// (mirror.start.offset.spec) and kept so that a restart during start
	// alignment finishes the same alignment.
	StartOffset int64 `json:"startOffset"`
	// Filled counts the offsets filled with filler records and the ranges
	// they came in, over the mirror's life.
	FilledRanges  int64 `json:"filledRanges,omitempty"`
	FilledOffsets int64 `json:"filledOffsets,omitempty"`
	// Shifts is the partition's exact gap map: where the destination
	// could not keep a source range at its offsets, in the order they
	// happened. Empty for a partition mirrored exactly.
	Shifts []OffsetShift `json:"shifts,omitempty"`
	// HeldFor is the mirror's Hold this partition's member stopped for
	// (klink cluster).
	HeldFor int64 `json:"heldFor,omitempty"`
	// Failed, in a klink cluster, is why the member running this
	// partition stopped it for good; the member running the mirror's
	// control loop then fails the mirror (it alone writes the mirror's
	// state).
	Failed string `json:"failed,omitempty"`
}

// OffsetShift records that from source offset SourceOffset on, the
// partition's records sit on the destination at DestOffset-SourceOffset
// further than on the source (until the next shift). It happens when the
// destination ends one of klink's transactions on its own (the transaction
// timeout passed while klink was stopped or waiting for the source): its
// abort marker takes an offset the source has something else at.
type OffsetShift struct {
	SourceOffset int64 `json:"sourceOffset"`
	DestOffset   int64 `json:"destinationOffset"`
	// AffectedFrom..SourceOffset-1 are the source offsets whose records
	// were in the aborted transaction. When the source committed them,
	// Copies holds where klink appended them again (committed), so that
	// read_committed consumers still see them, once.
	AffectedFrom int64      `json:"affectedFrom"`
	Copies       *CopyRange `json:"copies,omitempty"`
	Reason       string     `json:"reason"`
	At           time.Time  `json:"at"`
}

// CopyRange is where records of an aborted destination transaction were
// appended again: destination offsets From..To-1, the last one the copies'
// commit marker. Pending is set until the copies are committed.
type CopyRange struct {
	From    int64 `json:"from"`
	To      int64 `json:"to"`
	Pending bool  `json:"pending,omitempty"`
	// Producer is the destination producer id of the aborted transaction,
	// whose batches at destination offsets OriginalsFrom..OriginalsTo-1
	// are the originals.
	Producer      int64 `json:"producer"`
	OriginalsFrom int64 `json:"originalsFrom"`
	OriginalsTo   int64 `json:"originalsTo"`
	// SourceAt is the source offset the copies went in before (set with
	// the first From; a copy made again after a crash keeps it).
	SourceAt int64 `json:"sourceAt"`
}

// Translate maps a source offset to the destination offset that holds the
// same position in the log: the offset itself on an exact partition, and
// shifted past every recorded gap. A source offset inside an aborted and
// re-appended range maps to itself: a consumer resuming there reads the
// re-appended copies again (at least once, never lost).
func (p *Partition) Translate(sourceOffset int64) int64 {
	if p == nil {
		return sourceOffset
	}
	for i := len(p.Shifts) - 1; i >= 0; i-- {
		if sh := p.Shifts[i]; sh.SourceOffset <= sourceOffset {
			return sourceOffset + sh.DestOffset - sh.SourceOffset
		}
	}
	return sourceOffset
}

// Delta is the current distance between destination and source offsets.
func (p *Partition) Delta() int64 {
	if p == nil || len(p.Shifts) == 0 {
		return 0
	}
	sh := p.Shifts[len(p.Shifts)-1]
	return sh.DestOffset - sh.SourceOffset
}

// GetMirror returns one mirror, or ErrNotFound.
func (s *File) GetMirror(link, name string) (Mirror, error) {
	var m Mirror
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(mirrorsBucket).Bucket([]byte(link))
		if b == nil {
			return ErrNotFound
		}
		return getJSON(b, name, &m)
	})
	return m, err
}

// Mirrors returns every mirror recorded for a link.
func (s *File) Mirrors(link string) ([]Mirror, error) {
	var ms []Mirror
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(mirrorsBucket).Bucket([]byte(link))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var m Mirror
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("state file %s: mirror %s/%s: %w", s.path, link, k, err)
			}
			ms = append(ms, m)
			return nil
		})
	})
	return ms, err
}

// UpdateMirror reads, changes and writes one mirror atomically. fn gets the
// current record (a fresh one with State PENDING if there is none); if fn
// returns an error nothing is written. A change of State must be allowed by
// the state machine (see Transition).
func (s *File) UpdateMirror(link, name string, fn func(m *Mirror) error) (Mirror, error) {
	var out Mirror
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(mirrorsBucket).CreateBucketIfNotExists([]byte(link))
		if err != nil {
			return err
		}
		var m Mirror
		switch err := getJSON(b, name, &m); {
		case errors.Is(err, ErrNotFound):
			now := time.Now().UTC()
			m = Mirror{Link: link, Name: name, State: Pending, StateSince: now, CreatedAt: now}
		case err != nil:
			return err
		}
		before := m.State
		if err := fn(&m); err != nil {
			return err
		}
		if m.State != before {
			if err := Transition(before, m.State); err != nil {
				return fmt.Errorf("mirror %s/%s: %w", link, name, err)
			}
			m.StateSince = time.Now().UTC()
		}
		out = m
		return s.put(b, mirrorKey(link, name), name, m)
	})
	return out, err
}

func getJSON(b *bolt.Bucket, key string, v any) error {
	raw := b.Get([]byte(key))
	if raw == nil {
		return ErrNotFound
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("record %q: %w", key, err)
	}
	return nil
}

// put writes a record, to the shared state first if there is one.
func (s *File) put(b *bolt.Bucket, sharedKey, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if s.publish != nil {
		if err := s.publish(sharedKey, b.Get([]byte(key)), raw); err != nil {
			return err
		}
	}
	return b.Put([]byte(key), raw)
}

// Keys of records in the shared state: names never hold a '/'.
func linkKey(name string) string         { return "link/" + name }
func mirrorKey(link, name string) string { return "mirror/" + link + "/" + name }
