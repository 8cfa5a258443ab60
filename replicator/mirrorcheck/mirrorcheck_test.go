package mirrorcheck

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/replicator/batch"
)

func rec(off int64, key, value string, hdr ...string) *kgo.Record {
	r := &kgo.Record{Offset: off, Key: []byte(key), Value: []byte(value), Timestamp: time.UnixMilli(1000 + off)}
	if key == "" {
		r.Key = nil
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: hdr[i], Value: []byte(hdr[i+1])})
	}
	return r
}

func filler(off int64) *kgo.Record {
	return &kgo.Record{Offset: off, Key: []byte(batch.FillerKey), Headers: []kgo.RecordHeader{{Key: batch.FillerHeader}}}
}

// Compare must fail on every kind of difference a mirror can have.
func TestCompareFindsEveryDifference(t *testing.T) {
	src := Records{0: {rec(0, "a", "1"), rec(1, "", "2", "h", "x"), rec(5, "c", "3")}}
	same := Records{0: {rec(0, "a", "1"), rec(1, "", "2", "h", "x"), filler(2), filler(3), filler(4), rec(5, "c", "3")}}
	if m, f, err := Compare(src, same); err != nil || m != 3 || f != 3 {
		t.Fatalf("identical mirror: matched %d fillers %d err %v", m, f, err)
	}
	cases := map[string]Records{
		"missing record":       {0: {rec(0, "a", "1"), rec(5, "c", "3")}},
		"missing tail":         {0: {rec(0, "a", "1"), rec(1, "", "2", "h", "x")}},
		"extra record":         {0: {rec(0, "a", "1"), rec(1, "", "2", "h", "x"), rec(2, "z", "9"), rec(5, "c", "3")}},
		"value differs":        {0: {rec(0, "a", "1"), rec(1, "", "X", "h", "x"), rec(5, "c", "3")}},
		"key null vs empty":    {0: {rec(0, "a", "1"), {Offset: 1, Key: []byte{}, Value: []byte("2"), Timestamp: time.UnixMilli(1001), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("x")}}}, rec(5, "c", "3")}},
		"header differs":       {0: {rec(0, "a", "1"), rec(1, "", "2", "h", "y"), rec(5, "c", "3")}},
		"timestamp differs":    {0: {rec(0, "a", "1"), {Offset: 1, Value: []byte("2"), Timestamp: time.UnixMilli(7), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("x")}}}, rec(5, "c", "3")}},
		"shifted offsets":      {0: {rec(1, "a", "1"), rec(2, "", "2", "h", "x"), rec(6, "c", "3")}},
		"filler over a record": {0: {rec(0, "a", "1"), filler(1), rec(5, "c", "3")}},
		"other partition":      {1: {rec(0, "a", "1")}},
	}
	for name, dst := range cases {
		if _, _, err := Compare(src, dst); err == nil {
			t.Errorf("%s: not detected", name)
		}
	}
}

func TestLastVisibleSkipsMarkersAndAborts(t *testing.T) {
	data := func(base int64, n int, pid int64, txn bool) batch.Batch {
		var raw []byte
		for i := 0; i < n; i++ {
			raw = batch.AppendRecord(raw, batch.Record{OffsetDelta: int32(i), Value: []byte("v")})
		}
		attrs := int16(0)
		if txn {
			attrs = batch.AttrTransactional
		}
		b, err := batch.Build(batch.CodecNone, attrs, int32(n-1), 1, 1, int32(n), raw)
		if err != nil {
			t.Fatal(err)
		}
		b.SetBaseOffset(base)
		b.Rewrite(batch.Producer{ID: pid, Epoch: 0, Sequence: 0}, 0, b.RecordsCRC())
		b.SetBaseOffset(base)
		return b
	}
	marker := func(base int64, pid int64, commit bool) batch.Batch {
		typ := byte(0)
		if commit {
			typ = 1
		}
		raw := batch.AppendRecord(nil, batch.Record{Key: []byte{0, 0, 0, typ}, Value: []byte{0, 0, 0, 0, 0, 0}})
		b, err := batch.Build(batch.CodecNone, batch.AttrTransactional|batch.AttrControl, 0, 1, 1, 1, raw)
		if err != nil {
			t.Fatal(err)
		}
		b.Rewrite(batch.Producer{ID: pid}, 0, b.RecordsCRC())
		b.SetBaseOffset(base)
		return b
	}
	bs := []batch.Batch{data(0, 3, 1, false), data(3, 2, 7, true), marker(5, 7, true), data(6, 2, 8, true), marker(8, 8, false)}
	if got, _ := lastVisible(bs, ReadUncommitted); got != 7 {
		t.Fatalf("read_uncommitted last = %d, want 7 (aborted data is visible)", got)
	}
	if got, _ := lastVisible(bs, ReadCommitted); got != 4 {
		t.Fatalf("read_committed last = %d, want 4 (the committed transaction)", got)
	}
	if got, _ := lastVisible([]batch.Batch{marker(0, 9, true)}, ReadUncommitted); got != -1 {
		t.Fatalf("markers only: %d", got)
	}
}
