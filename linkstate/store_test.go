package linkstate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestLinkAndMirrorRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLink("l1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetLink on empty store: %v", err)
	}
	l := Link{Name: "l1", ID: NewLinkID(), SourceClusterID: "src", DestinationClusterID: "dst"}
	if err := s.PutLink(l); err != nil {
		t.Fatal(err)
	}
	m, err := s.UpdateMirror("l1", "orders", func(m *Mirror) error {
		m.SourceTopic = "orders"
		m.Partitions = map[int32]*Partition{0: {StartOffset: 7}}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.State != Pending || m.CreatedAt.IsZero() {
		t.Fatalf("new mirror = %+v", m)
	}
	if _, err := s.UpdateMirror("l1", "orders", func(m *Mirror) error { m.State = Active; return nil }); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Reopen: everything is still there.
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetLink("l1")
	if err != nil || got.ID != l.ID || got.SourceClusterID != "src" {
		t.Fatalf("link after reopen = %+v, %v", got, err)
	}
	gm, err := s.GetMirror("l1", "orders")
	if err != nil || gm.State != Active || gm.Partitions[0].StartOffset != 7 {
		t.Fatalf("mirror after reopen = %+v, %v", gm, err)
	}
	ms, err := s.Mirrors("l1")
	if err != nil || len(ms) != 1 {
		t.Fatalf("Mirrors = %v, %v", ms, err)
	}
}

func TestRefusedTransitionWritesNothing(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.UpdateMirror("l", "t", func(m *Mirror) error { m.State = Failed; m.Reason = "x"; return nil }); err != nil {
		t.Fatal(err)
	}
	_, err = s.UpdateMirror("l", "t", func(m *Mirror) error { m.State = Active; m.Reason = ""; return nil })
	if err == nil || !strings.Contains(err.Error(), "stays FAILED") {
		t.Fatalf("FAILED -> ACTIVE allowed: %v", err)
	}
	m, _ := s.GetMirror("l", "t")
	if m.State != Failed || m.Reason != "x" {
		t.Fatalf("refused update was written: %+v", m)
	}
}

// The state machine, written out as a grid: row = from, column = to, in
// the order of States (PENDING ACTIVE PAUSED PENDING_STOPPED STOPPED
// SOURCE_UNAVAILABLE LINK_FAILED FAILED); x = allowed, . = refused.
func TestTransitionTable(t *testing.T) {
	grid := map[MirrorState]string{
		Pending:           "xxxxxxxx",
		Active:            ".xxxxxxx",
		Paused:            ".xxxx..x",
		PendingStopped:    ".xxxx..x",
		Stopped:           "....x...",
		SourceUnavailable: ".xxxxxxx",
		LinkFailed:        ".xxxxxxx",
		Failed:            "....x..x",
	}
	for _, from := range States {
		for i, to := range States {
			err := Transition(from, to)
			want := grid[from][i] == 'x'
			if (err == nil) != want {
				t.Errorf("%s -> %s: err=%v, want allowed=%v", from, to, err, want)
			}
		}
	}
}

// Every (current, desired) pair: the action taken, and for refusals, that
// the error names the mirror and says what to do.
func TestDecideTable(t *testing.T) {
	// Columns: ACTIVE PAUSE PROMOTE FAILOVER REMOVED.
	table := map[MirrorState][5]Action{
		Pending:           {Keep, Pause, Promote, Failover, Failover},
		Active:            {Keep, Pause, Promote, Failover, Failover},
		Paused:            {Resume, Keep, Promote, Failover, Failover},
		PendingStopped:    {Resume, Pause, Keep, Failover, Failover},
		Stopped:           {Refuse, Refuse, Keep, Keep, Keep},
		SourceUnavailable: {Keep, Pause, Promote, Failover, Failover},
		LinkFailed:        {Keep, Pause, Promote, Failover, Failover},
		Failed:            {Refuse, Refuse, Refuse, Failover, Failover},
	}
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, cur := range States {
		for i, want := range DesiredStates {
			act, err := Decide("orders", cur, want, at)
			if act != table[cur][i] {
				t.Errorf("%s wanting %s: %s, want %s", cur, want, act, table[cur][i])
			}
			if (act == Refuse) != (err != nil) {
				t.Errorf("%s wanting %s: action %s with error %v", cur, want, act, err)
			}
			if err != nil && (!strings.Contains(err.Error(), "mirror orders") || !strings.Contains(err.Error(), "remove")) {
				t.Errorf("%s wanting %s: refusal does not name the mirror or the way out: %v", cur, want, err)
			}
			// Whatever is decided must be a transition the store allows.
			to := map[Action]MirrorState{Pause: Paused, Resume: Active, Promote: PendingStopped, Failover: Stopped}[act]
			if to != "" {
				if err := Transition(cur, to); err != nil {
					t.Errorf("%s wanting %s: action %s leads to a refused transition: %v", cur, want, act, err)
				}
			}
		}
	}
	if _, err := Decide("orders", Stopped, WantActive, at); err == nil || !strings.Contains(err.Error(), "2026-03-04T05:06:07Z") {
		t.Errorf("STOPPED refusal does not say when it stopped: %v", err)
	}
}

func TestGarbageFileIsReportedNotReplaced(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, FileName)
	garbage := []byte(strings.Repeat("not a database ", 1000))
	if err := os.WriteFile(p, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "will not replace") {
		t.Fatalf("garbage file: %v", err)
	}
	after, _ := os.ReadFile(p)
	if string(after) != string(garbage) {
		t.Fatal("garbage file was modified")
	}
}

func TestForeignBoltFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, FileName)
	db, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("someone-else"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(dir)
	if err == nil || !strings.Contains(err.Error(), "not klink's") {
		t.Fatalf("foreign bolt file: %v", err)
	}
}

func TestSecondOpenIsRefusedWhileLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second open: %v", err)
	}
}

func TestTranslate(t *testing.T) {
	var exact *Partition
	if got := exact.Translate(42); got != 42 {
		t.Fatalf("no record: 42 -> %d", got)
	}
	// An abort marker took destination offset 5 (source 5 moves to 6);
	// then copies of source 0..4 and their commit marker took 7..12 while
	// the source was at 6.
	p := &Partition{Shifts: []OffsetShift{
		{SourceOffset: 5, DestOffset: 6, AffectedFrom: 0},
		{SourceOffset: 6, DestOffset: 13, AffectedFrom: 6},
	}}
	for src, want := range map[int64]int64{0: 0, 4: 4, 5: 6, 6: 13, 7: 14, 1000: 1007} {
		if got := p.Translate(src); got != want {
			t.Errorf("Translate(%d) = %d, want %d", src, got, want)
		}
	}
	if d := p.Delta(); d != 7 {
		t.Errorf("Delta() = %d, want 7", d)
	}
}

// A state file of format 1 is upgraded in place (an older klink then
// refuses it rather than drop what it does not know); a newer format is
// refused, the file untouched.
func TestFormatUpgradeAndNewerRefused(t *testing.T) {
	for _, tc := range []struct {
		header, want string
		ok           bool
	}{{"klink-state/1", "klink-state/2", true}, {"klink-state/9", "klink-state/9", false}} {
		dir := t.TempDir()
		p := filepath.Join(dir, FileName)
		db, err := bolt.Open(p, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucket(metaBucket)
			if err != nil {
				return err
			}
			if err := meta.Put(formatKey, []byte(tc.header)); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(linksBucket); err != nil {
				return err
			}
			_, err = tx.CreateBucket(mirrorsBucket)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		s, err := Open(dir)
		if (err == nil) != tc.ok {
			t.Fatalf("%s: open: %v", tc.header, err)
		}
		if err != nil {
			if !strings.Contains(err.Error(), tc.header) {
				t.Fatalf("%s: refusal does not name the format: %v", tc.header, err)
			}
		} else {
			s.Close()
		}
		db, err = bolt.Open(p, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.View(func(tx *bolt.Tx) error {
			if got := string(tx.Bucket(metaBucket).Get(formatKey)); got != tc.want {
				t.Errorf("%s: header now %q, want %q", tc.header, got, tc.want)
			}
			return nil
		})
		db.Close()
	}
}
