package replicator

import (
	"testing"
	"time"
)

func TestWatchTopicsEvery(t *testing.T) {
	for _, c := range []struct {
		every      time.Duration
		partitions int
		want       time.Duration
	}{
		{5 * time.Second, 0, 5 * time.Second},
		{5 * time.Second, 2000, 5 * time.Second},
		{5 * time.Second, 4000, 10 * time.Second},
		{5 * time.Second, 10000, 25 * time.Second},
		{5 * time.Second, 100000, 30 * time.Second},
		{250 * time.Millisecond, 10000, 1250 * time.Millisecond},
		{250 * time.Millisecond, 1000000, 30 * time.Second},
	} {
		if got := watchTopicsEvery(c.every, c.partitions); got != c.want {
			t.Errorf("watchTopicsEvery(%s, %d) = %s, want %s", c.every, c.partitions, got, c.want)
		}
	}
}
