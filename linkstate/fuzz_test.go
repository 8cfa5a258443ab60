package linkstate

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	bolt "go.etcd.io/bbolt"
)

// fuzzStateFiles are state files as klink writes them (new, in use, of the
// older format) and bbolt files that are not klink's: another program's
// buckets, one synced without a freelist (as etcd writes them), a klink
// header without its buckets, a newer format.
var fuzzStateFiles = sync.OnceValues(func() ([][]byte, error) {
	var files [][]byte
	add := func(dir string) error {
		b, err := os.ReadFile(filepath.Join(dir, FileName))
		files = append(files, b)
		return err
	}
	tmp, err := os.MkdirTemp("", "klink-fuzz-state")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	n := 0
	next := func() string {
		n++
		d := filepath.Join(tmp, string(rune('a'+n)))
		os.MkdirAll(d, 0o750)
		return d
	}

	empty := next()
	s, err := Open(empty)
	if err != nil {
		return nil, err
	}
	s.Close()
	if err := add(empty); err != nil {
		return nil, err
	}

	used := next()
	if s, err = Open(used); err != nil {
		return nil, err
	}
	for _, l := range []string{"east", "west"} {
		if err := s.PutLink(Link{Name: l, ID: NewLinkID(), SourceClusterID: "src", DestinationClusterID: "dst", CreatedAt: time.Unix(1_700_000_000, 0).UTC(),
			CreatedACLs: []ACL{{ResourceType: 2, ResourceName: "orders", PatternType: 3, Principal: "User:a", Host: "*", Operation: 3, Permission: 3}}}); err != nil {
			return nil, err
		}
		for _, m := range []string{"orders", "payments", "audit"} {
			if _, err := s.UpdateMirror(l, m, func(m *Mirror) error {
				m.SourceTopic = m.Name
				m.Partitions = map[int32]*Partition{0: {StartOffset: 7}, 1: {StartOffset: 0, FilledRanges: 2, FilledOffsets: 9,
					Shifts: []OffsetShift{{SourceOffset: 100, DestOffset: 101, AffectedFrom: 90, Copies: &CopyRange{From: 101, To: 120, Producer: 5}, Reason: "aborted"}}}}
				m.State = Active
				return nil
			}); err != nil {
				return nil, err
			}
		}
	}
	s.Close()
	if err := add(used); err != nil {
		return nil, err
	}

	raw := func(opts *bolt.Options, fn func(tx *bolt.Tx) error) error {
		d := next()
		db, err := bolt.Open(filepath.Join(d, FileName), 0o600, opts)
		if err != nil {
			return err
		}
		if err := db.Update(fn); err != nil {
			db.Close()
			return err
		}
		db.Close()
		return add(d)
	}
	klinkHeader := func(format string, buckets bool) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucket(metaBucket)
			if err != nil {
				return err
			}
			if err := meta.Put(formatKey, []byte(format)); err != nil {
				return err
			}
			if buckets {
				if _, err := tx.CreateBucket(linksBucket); err != nil {
					return err
				}
				_, err = tx.CreateBucket(mirrorsBucket)
			}
			return err
		}
	}
	foreign := func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("key"))
		if err != nil {
			return err
		}
		for i := 0; i < 50; i++ {
			if err := b.Put([]byte{byte(i), 'k'}, bytes.Repeat([]byte{byte(i)}, 100)); err != nil {
				return err
			}
		}
		return nil
	}
	for _, f := range []struct {
		opts *bolt.Options
		fn   func(tx *bolt.Tx) error
	}{
		{nil, klinkHeader(formatVersion1, true)},
		{nil, klinkHeader("klink-state/3", true)},
		{nil, klinkHeader(formatVersion, false)},
		{nil, foreign},
		{&bolt.Options{NoFreelistSync: true}, foreign},
	} {
		if err := raw(f.opts, f.fn); err != nil {
			return nil, err
		}
	}
	return files, nil
})

func addStateSeeds(f *testing.F, add func(i int, file []byte)) {
	files, err := fuzzStateFiles()
	if err != nil {
		f.Fatal(err)
	}
	for i, b := range files {
		add(i, b)
	}
}

// FuzzOpen opens arbitrary bytes as the state file. Open returns a store
// that works or an error naming the file; a file it refuses is left exactly
// as it was.
func FuzzOpen(f *testing.F) {
	addStateSeeds(f, func(_ int, b []byte) { f.Add(b) })
	f.Add([]byte{})
	f.Add([]byte(`{"links": {}}`))
	f.Add(append([]byte("SQLite format 3\x00"), make([]byte, 4096)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkOpen(t, data)
	})
}

// FuzzOpenDamaged opens a real state file (a seed file) with bytes
// overwritten at one place: damage a checksum does not always catch.
func FuzzOpenDamaged(f *testing.F) {
	files, err := fuzzStateFiles()
	if err != nil {
		f.Fatal(err)
	}
	for i, b := range files {
		pageSize := uint32(os.Getpagesize())
		for _, at := range []uint32{0, 16, pageSize + 32, 2*pageSize + 16, 3*pageSize + 16, uint32(len(b)) - 100} {
			f.Add(uint8(i), at, []byte{0xff, 0x00, 0x7f})
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, at uint32, patch []byte) {
		file := bytes.Clone(files[int(which)%len(files)])
		copy(file[int(at)%len(file):], patch)
		checkOpen(t, file)
	})
}

func checkOpen(t *testing.T, data []byte) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		if s != nil {
			t.Fatal("a store with an error")
		}
		if !strings.Contains(err.Error(), path) {
			t.Fatalf("error does not name the file: %v", err)
		}
		after, rerr := os.ReadFile(path)
		if rerr != nil || !bytes.Equal(after, data) {
			t.Fatalf("refused state file was changed (%d bytes, now %d): %v", len(data), len(after), err)
		}
		return
	}
	// A store that opened works: reads give records or errors, writes
	// land, and it opens again.
	links, _ := s.Links()
	for _, l := range links {
		s.Mirrors(l.Name)
		s.GetLink(l.Name)
	}
	s.Mirrors("east")
	s.GetMirror("east", "orders")
	if err := s.PutLink(Link{Name: "fuzz", ID: "id"}); err != nil {
		t.Fatalf("PutLink on an opened store: %v", err)
	}
	if _, err := s.UpdateMirror("fuzz", "topic", func(m *Mirror) error { m.SourceTopic = "topic"; return nil }); err != nil {
		t.Fatalf("UpdateMirror on an opened store: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatalf("reopening a store that opened: %v", err)
	}
	defer s.Close()
	if l, err := s.GetLink("fuzz"); err != nil || l.ID != "id" {
		t.Fatalf("link written before reopening: %+v, %v", l, err)
	}
	if _, err := s.GetMirror("fuzz", "topic"); errors.Is(err, ErrNotFound) {
		t.Fatal("mirror written before reopening is gone")
	}
}

// FuzzTopicRecord feeds records of the shared state topic, as any member
// (or anything else able to write the topic) may have written them, into a
// member's local copy: it never panics, and a record is either applied
// whole or refused.
func FuzzTopicRecord(f *testing.F) {
	f.Add([]byte("link/west"), []byte(`{"format":"klink-state/2","writer":"a","link":{"name":"west","id":"x"}}`))
	f.Add([]byte("mirror/west/orders"), []byte(`{"format":"klink-state/2","mirror":{"link":"west","name":"orders","partitions":{"0":{"startOffset":3}}}}`))
	f.Add([]byte("mirror/west/orders"), []byte(`{"format":"klink-state/9","mirror":{}}`))
	f.Add([]byte("link/"), []byte(`{"format":"klink-state/2","link":{"name":""}}`))
	f.Add([]byte("x"), []byte(`null`))
	dir := f.TempDir()
	file, err := openFile(dir, ClusterFileName)
	if err != nil {
		f.Fatal(err)
	}
	defer file.Close()
	tp := &Topic{File: file, applied: map[string]int64{}}
	var offset int64
	f.Fuzz(func(t *testing.T, key, value []byte) {
		offset++
		_ = tp.apply(&kgo.Record{Key: key, Value: value, Offset: offset})
		// Whatever was applied reads back.
		if _, err := tp.Links(); err != nil {
			t.Fatalf("links unreadable after applying %q=%q: %v", key, value, err)
		}
	})
}
