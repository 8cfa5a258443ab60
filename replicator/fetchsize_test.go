package replicator

import (
	"testing"
	"time"
)

// The fetch size settles where the round trip is a small part of a fetch:
// the minimum over loopback or a LAN, a few round trips' worth of bytes
// (or the maximum) over a long line, and it never moves on an answer that
// was not full.
func TestFetchSizeFollowsRoundTrip(t *testing.T) {
	const MB = 1e6
	// settle runs fetches over a line of round trip rtt and bytesPerSec,
	// through a broker that takes serve to answer, from size start.
	settle := func(start int32, rtt, serve time.Duration, bytesPerSec float64, known bool) int32 {
		cur := start
		for range 20 {
			elapsed := rtt + serve + time.Duration(float64(cur)/bytesPerSec*float64(time.Second))
			seen := rtt
			if !known {
				seen = elapsed
			}
			cur = nextFetchBytes(cur, true, elapsed, seen)
		}
		return cur
	}
	for _, tc := range []struct {
		name        string
		start       int32
		rtt, serve  time.Duration
		bytesPerSec float64
		known       bool
		want        int32
	}{
		{"loopback", minFetchBytes, 5 * time.Microsecond, time.Millisecond, 2000 * MB, true, minFetchBytes},
		{"loopback, from the maximum", maxFetchBytes, 5 * time.Microsecond, time.Millisecond, 2000 * MB, true, minFetchBytes},
		{"LAN", minFetchBytes, 200 * time.Microsecond, 2 * time.Millisecond, 1000 * MB, true, minFetchBytes},
		// 50 ms at 100 MB/s: a fetch of 8 MiB takes 134 ms, of which
		// the round trip is more than a quarter; 16 MiB takes 218 ms.
		{"WAN, 100 MB/s", minFetchBytes, 50 * time.Millisecond, time.Millisecond, 100 * MB, true, 16 << 20},
		{"WAN, 1 GB/s", minFetchBytes, 50 * time.Millisecond, time.Millisecond, 1000 * MB, true, maxFetchBytes},
		{"round trip unknown (a tunnel)", minFetchBytes, 5 * time.Microsecond, time.Millisecond, 2000 * MB, false, maxFetchBytes},
	} {
		if got := settle(tc.start, tc.rtt, tc.serve, tc.bytesPerSec, tc.known); got != tc.want {
			t.Errorf("%s: settles at %d bytes, want %d", tc.name, got, tc.want)
		}
	}
	// An answer the broker had less for says nothing about the line.
	if got := nextFetchBytes(minFetchBytes, false, 100*time.Millisecond, 50*time.Millisecond); got != minFetchBytes {
		t.Errorf("grew to %d on an answer that was not full", got)
	}
	if got := nextFetchBytes(maxFetchBytes, false, time.Millisecond, time.Microsecond); got != maxFetchBytes {
		t.Errorf("fell to %d on an answer that was not full", got)
	}
	// The limits that follow it.
	if partitionFetchBytesFor(minFetchBytes) != 1<<20 || partitionBufferedFor(minFetchBytes) != 2<<20 || linkBufferedFor(minFetchBytes) != minLinkBuffered {
		t.Errorf("limits at the minimum: partition %d per fetch, %d held; link %d", partitionFetchBytesFor(minFetchBytes), partitionBufferedFor(minFetchBytes), linkBufferedFor(minFetchBytes))
	}
	if partitionFetchBytesFor(maxFetchBytes) != 8<<20 || partitionBufferedFor(maxFetchBytes) != 16<<20 || linkBufferedFor(maxFetchBytes) != 64<<20 {
		t.Errorf("limits at the maximum: partition %d per fetch, %d held; link %d", partitionFetchBytesFor(maxFetchBytes), partitionBufferedFor(maxFetchBytes), linkBufferedFor(maxFetchBytes))
	}
}
