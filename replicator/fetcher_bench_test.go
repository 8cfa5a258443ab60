package replicator

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// idleLink is a link's fetchers with one source broker leading n active
// partitions (50 topics), as an idle link has them, without fetch loops.
func idleLink(n int) (*fetchers, *brokerFetcher) {
	f := &fetchers{byBroker: map[int32]map[*cursor]struct{}{1: {}}, cursors: map[*cursor]struct{}{}, loops: map[int32]*brokerFetcher{}}
	f.fetchBytes.Store(minFetchBytes)
	b := &brokerFetcher{id: 1, wake: make(chan struct{}, 1)}
	b.fetchBytes.Store(minFetchBytes)
	f.loops[1] = b
	for i := range n {
		c := newCursor(fmt.Sprintf("topic-%02d", i%50), [16]byte{byte(i%50 + 1)}, int32(i/50))
		c.active, c.offset, c.leader = true, 3, 1
		f.cursors[c] = struct{}{}
		f.byBroker[1][c] = struct{}{}
	}
	return f, b
}

// idleRound is one fetch round's bookkeeping: choose the partitions, build
// the request, take the broker's empty answer.
func idleRound(tb testing.TB, f *fetchers, b *brokerFetcher) *kmsg.FetchRequest {
	parts, _, same := f.eligible(b)
	req := newFetchRequest(1, fetchIdleWait, minFetchBytes)
	req.SetVersion(13)
	b.session.build(req, parts, func(i int) int { return i }, partitionFetchBytesFor(minFetchBytes), same)
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(13)
	resp.SessionID = 7
	if ok, err := b.session.answered(resp); !ok || err != nil {
		tb.Fatal(ok, err)
	}
	return req
}

// BenchmarkIdleFetchRound is what an idle link pays per fetch to one source
// broker that leads 10,000 of its partitions, in a fetch session: choosing
// the partitions to fetch and building the (empty) incremental request;
// "unchanged" as an idle link has it, "changed" as it was before eligible
// and build knew that nothing had changed (and as it is after any change).
//
//	go test ./replicator -run '^$' -bench IdleFetchRound
func BenchmarkIdleFetchRound(b *testing.B) {
	for _, changed := range []bool{false, true} {
		name := "unchanged"
		if changed {
			name = "changed"
		}
		b.Run(name, func(b *testing.B) {
			f, bf := idleLink(10000)
			idleRound(b, f, bf) // the full fetch that opens the session
			idleRound(b, f, bf) // the first empty one settles it
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if changed {
					f.changes.Add(1)
				}
				idleRound(b, f, bf)
			}
		})
	}
}
