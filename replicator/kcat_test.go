package replicator

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kafkatest"
)

// kcatConsume reads one partition from its start to its end with kcat (a
// real librdkafka client), one line per record: offset, timestamp, key,
// headers, value. Null keys and values print as NULL.
func kcatConsume(t *testing.T, c *kafkatest.Cluster, topic string, p int32, extra ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"-C", "-b", c.ListenAddrs()[0], "-t", topic, "-p", fmt.Sprint(p), "-o", "beginning", "-e", "-q", "-Z",
		"-f", "%o|%T|%k|%h|%s\n"}, extra...)
	out, err := exec.CommandContext(ctx, "kcat", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kcat %v: %v\n%s", args, err, out)
	}
	return out
}

func requireKcat(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Skip("kcat is not installed (Debian package kcat; .ci/run installs it): skipping the real-client check")
	}
}

// Test 7: kcat consuming the destination prints exactly what it prints
// consuming the source, for every codec and for a topic whose log starts
// above 0.
func TestKcatSeesTheSameRecords(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		requireKcat(t)
		src, dst := testClusters(t, k)
		createTopic(t, src, "mixed", 2, nil)
		createTopic(t, src, "trimmed", 1, nil)
		for name, codec := range codecs {
			cl := newClient(t, src, kgo.ProducerBatchCompression(codec), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			produceRounds(t, cl, "mixed", 0, 40, 10, name)
			produceRounds(t, cl, "mixed", 1, 25, 5, name)
			produceRounds(t, cl, "trimmed", 0, 30, 10, name)
		}
		deleteRecords(t, src, "trimmed", map[int32]int64{0: 37})
		runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: "mixed"}, config.MirrorTopic{Name: "trimmed"}))
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"mixed", "mixed"}, [2]string{"trimmed", "trimmed"})
		waitFor(t, 10*time.Second, "destination log start 37", func() bool { return startOffsets(t, dst, "trimmed")[0] == 37 })

		for _, tp := range []struct {
			topic string
			p     int32
			lines int
		}{{"mixed", 0, 200}, {"mixed", 1, 125}, {"trimmed", 0, 150 - 37}} {
			s := kcatConsume(t, src, tp.topic, tp.p)
			d := kcatConsume(t, dst, tp.topic, tp.p)
			if n := bytes.Count(s, []byte("\n")); n != tp.lines {
				t.Fatalf("kcat read %d records from source %s[%d], want %d:\n%s", n, tp.topic, tp.p, tp.lines, s)
			}
			if !bytes.Equal(s, d) {
				t.Fatalf("kcat output differs for %s[%d]:\nsource:\n%s\ndestination:\n%s", tp.topic, tp.p, s, d)
			}
		}
	})
}

// withoutFillers drops kcat's lines for klink filler records.
func withoutFillers(out []byte) []byte {
	var keep [][]byte
	for _, line := range bytes.SplitAfter(out, []byte("\n")) {
		if !bytes.Contains(line, []byte("|"+batch.FillerKey+"|")) {
			keep = append(keep, line)
		}
	}
	return bytes.Join(keep, nil)
}

// Test 4 of the Exact-offsets issue: kcat (librdkafka) as the consumer of a
// transactional topic (interleaved commits and aborts) and of a compacted
// one: read_committed prints the same on both sides; read_uncommitted
// prints the same but for filler records.
func TestKcatTransactionsAndCompaction(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		requireKcat(t)
		src, dst := testClusters(t, k, cleanerOpts)
		createTopic(t, src, "tx", 2, nil)
		createTopic(t, src, "ct", 2, compactedTopicConfigs)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var wg sync.WaitGroup
		for i, id := range []string{"app-a", "app-b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				txnProducer(ctx, t, src, id, "tx", 2, uint64(10+i))
			}()
		}
		wg.Wait()
		cancel()
		for round := 0; round < 3; round++ {
			produceChangelog(t, src, "ct", round)
		}
		compact(t, src, "ct", 2)
		// The mirror's segments never roll, so that its own cleaner (on a
		// real broker) leaves it as klink wrote it for the comparison.
		noCleaning := config.Properties{"segment.ms": "604800000"}
		runReplicator(t, testConfig(t, src, dst, nil, config.MirrorTopic{Name: "tx"}, config.MirrorTopic{Name: "ct", Configs: noCleaning}))
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"tx", "tx"}, [2]string{"ct", "ct"})

		fillers := 0
		for _, topic := range []string{"tx", "ct"} {
			for p := int32(0); p < 2; p++ {
				s := kcatConsume(t, src, topic, p, "-X", "isolation.level=read_committed")
				d := kcatConsume(t, dst, topic, p, "-X", "isolation.level=read_committed")
				if len(s) == 0 || !bytes.Equal(s, d) {
					t.Fatalf("%s[%d] read_committed: kcat output differs:\nsource:\n%s\ndestination:\n%s", topic, p, s, d)
				}
				su := kcatConsume(t, src, topic, p, "-X", "isolation.level=read_uncommitted")
				du := kcatConsume(t, dst, topic, p, "-X", "isolation.level=read_uncommitted")
				if !bytes.Equal(su, withoutFillers(du)) {
					t.Fatalf("%s[%d] read_uncommitted: kcat output differs beyond fillers:\nsource:\n%s\ndestination:\n%s", topic, p, su, du)
				}
				if bytes.Equal(s, su) && topic == "tx" {
					t.Fatalf("%s[%d]: read_committed and read_uncommitted print the same: no aborted data in the test", topic, p)
				}
				fillers += bytes.Count(du, []byte(batch.FillerKey))
			}
		}
		if fillers == 0 {
			t.Fatal("no filler records on the destination: compaction left no holes")
		}
	})
}
