package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// klinkBinary is built once for the tests that run klink as a process.
var klinkBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "klink-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	klinkBinary = filepath.Join(dir, "klink")
	if out, err := exec.Command("go", "build", "-o", klinkBinary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building klink: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeConfig(t *testing.T, src, dst *kafkatest.Cluster, stateDir string, topics ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "stateDir: %s\nadmin: {listen: \"off\"}\nlog: {level: info, format: json}\n", stateDir)
	fmt.Fprintf(&b, "destination:\n  bootstrap: [%q]\n", dst.ListenAddrs()[0])
	fmt.Fprintf(&b, "links:\n  - name: kill-test\n    source:\n      bootstrap: [%q]\n    mirrorTopics:\n", src.ListenAddrs()[0])
	for _, tp := range topics {
		fmt.Fprintf(&b, "      - name: %s\n", tp)
	}
	p := filepath.Join(t.TempDir(), "klink.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// clusterPair starts a source and a destination cluster of kind k for a
// test (see kafkatest), and an admin client on the source.
func clusterPair(t *testing.T, k kafkatest.Kind, opts ...kafkatest.Opt) (src, dst *kafkatest.Cluster, adm *kadm.Client) {
	t.Helper()
	src, dst = kafkatest.Pair(t, k, opts...)
	return src, dst, src.Admin(t)
}

// startKlink runs `klink run` as a child process; its log goes to logBuf.
func startKlink(t *testing.T, cfgPath string, logBuf *syncBuffer) *exec.Cmd {
	t.Helper()
	return startKlinkArgs(t, logBuf, "run", "--config", cfgPath)
}

// startKlinkLogged runs klink with args; its log is printed if the test
// fails, and it is killed when the test ends (if still running).
func startKlinkLogged(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	cmd := startKlinkArgs(t, logs, args...)
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("klink log:\n%s", logs.String())
		}
	})
	return cmd, logs
}

// startKlinkArgs runs klink with args as a child process.
func startKlinkArgs(t *testing.T, logBuf *syncBuffer, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(klinkBinary, args...)
	cmd.Stdout = logBuf
	cmd.Stderr = logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// soakKills is how many times TestKillNineWhileProducing kills klink:
// $KLINK_SOAK_KILLS (make soak sets 50), else 5.
func soakKills(t *testing.T) int {
	n := 5
	if v := os.Getenv("KLINK_SOAK_KILLS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("KLINK_SOAK_KILLS=%q: want a positive count", v)
		}
	}
	return n
}

// Test 4: klink killed with SIGKILL at random moments (five times, or
// $KLINK_SOAK_KILLS) while producers write; afterwards the destination
// equals the source record by record: nothing lost, nothing duplicated.
func TestKillNineWhileProducing(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst, adm := clusterPair(t, k)
		kills := soakKills(t)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute+time.Duration(kills)*3*time.Second)
		defer cancel()
		topics := []string{"orders", "events"}
		for _, tp := range topics {
			if _, err := adm.CreateTopic(ctx, 3, -1, nil, tp); err != nil {
				t.Fatal(err)
			}
		}

		// A producer writes throughout, across codecs.
		prodCtx, stopProducing := context.WithCancel(ctx)
		var acked sync.WaitGroup
		var produced, failed int64
		var countMu sync.Mutex
		var wg sync.WaitGroup
		for i, codec := range []kgo.CompressionCodec{kgo.ZstdCompression(), kgo.GzipCompression(), kgo.Lz4Compression(), kgo.SnappyCompression(), kgo.NoCompression()} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.ProducerBatchCompression(codec), kgo.ProducerLinger(3*time.Millisecond))
				if err != nil {
					t.Error(err)
					return
				}
				defer cl.Close()
				for n := 0; prodCtx.Err() == nil; n++ {
					r := &kgo.Record{
						Topic:   topics[n%2],
						Key:     []byte(fmt.Sprintf("k%d-%d", i, n%50)),
						Value:   []byte(fmt.Sprintf("value %d from producer %d", n, i)),
						Headers: []kgo.RecordHeader{{Key: "p", Value: []byte{byte(i)}}},
					}
					acked.Add(1)
					cl.Produce(prodCtx, r, func(_ *kgo.Record, err error) {
						countMu.Lock()
						if err == nil {
							produced++
						} else {
							failed++
						}
						countMu.Unlock()
						acked.Done()
					})
					if n%20 == 0 {
						time.Sleep(2 * time.Millisecond)
					}
				}
				fctx, fcancel := context.WithTimeout(context.Background(), 20*time.Second)
				cl.Flush(fctx)
				fcancel()
			}()
		}

		stateDir := t.TempDir()
		cfgPath := writeConfig(t, src, dst, stateDir, topics...)
		var logs syncBuffer
		defer func() {
			if t.Failed() {
				t.Logf("klink log:\n%s", logs.String())
			}
		}()
		for i := 0; i < kills; i++ {
			cmd := startKlink(t, cfgPath, &logs)
			time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
		}
		// A last run that stays up while the producer finishes.
		cmd := startKlink(t, cfgPath, &logs)
		time.Sleep(500 * time.Millisecond)
		stopProducing()
		wg.Wait()
		acked.Wait()

		// Wait until the destination has caught up with the source.
		waitDestinationCaughtUp(t, ctx, adm, dst, cmd, 60*time.Second, topics...)
		// SIGTERM: a clean stop, exit status 0.
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("klink exited with %v after SIGTERM", err)
		}

		total := 0
		for _, tp := range topics {
			s, err := mirrorcheck.ReadAll(ctx, src.ListenAddrs(), tp, mirrorcheck.ReadUncommitted)
			if err != nil {
				t.Fatal(err)
			}
			d, err := mirrorcheck.ReadAll(ctx, dst.ListenAddrs(), tp, mirrorcheck.ReadUncommitted)
			if err != nil {
				t.Fatal(err)
			}
			matched, fillers, err := mirrorcheck.Compare(s, d)
			if err != nil {
				t.Fatalf("%s: %v", tp, err)
			}
			if fillers != 0 || matched != s.Count() || d.Count() != s.Count() {
				t.Fatalf("%s: %d source records, %d destination records, %d matched, %d fillers", tp, s.Count(), d.Count(), matched, fillers)
			}
			for p := int32(0); p < 3; p++ {
				if _, _, err := mirrorcheck.ComparePartitionBatches(ctx, src.ListenAddrs(), dst.ListenAddrs(), tp, tp, p); err != nil {
					t.Fatal(err)
				}
			}
			total += s.Count()
		}
		if int64(total) != produced {
			t.Fatalf("source holds %d records, the producer had %d acknowledged (%d failed)", total, produced, failed)
		}
		t.Logf("%d records mirrored exactly across %d SIGKILLs", total, kills)
	})
}

func dstOffsets(ctx context.Context, dst *kafkatest.Cluster, topic string) (kadm.ListedOffsets, error) {
	cl, err := mirrorcheck.NewClient(dst.ListenAddrs())
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	l, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = l.Error()
	}
	return l, err
}

// Test 2 of the Exact-offsets issue: a Kafka Streams-like pattern (many
// small transactions a second on 8 partitions, a few aborted) for 30 s,
// with klink killed with SIGKILL twice: read_committed and
// read_uncommitted readers agree on both sides, every marker at its offset.
func TestKillNineDuringTransactions(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		src, dst, adm := clusterPair(t, k)
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		const topic, partitions = "streams-out", 8
		if _, err := adm.CreateTopic(ctx, partitions, -1, nil, topic); err != nil {
			t.Fatal(err)
		}

		prodCtx, stopProducing := context.WithTimeout(ctx, 30*time.Second)
		defer stopProducing()
		var wg sync.WaitGroup
		var txns, aborted atomic.Int64
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.TransactionalID(fmt.Sprint("streams-task-", i)),
					kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(time.Millisecond))
				if err != nil {
					t.Error(err)
					return
				}
				defer cl.Close()
				r := rand.New(rand.NewPCG(uint64(i), 7))
				for n := 0; prodCtx.Err() == nil; n++ {
					if err := cl.BeginTransaction(); err != nil {
						t.Error(err)
						return
					}
					for j, k := 0, 1+r.IntN(4); j < k; j++ {
						cl.Produce(ctx, &kgo.Record{Topic: topic, Partition: r.Int32N(partitions), Key: fmt.Appendf(nil, "task-%d-key-%d", i, r.IntN(100)), Value: fmt.Appendf(nil, "task %d txn %d record %d", i, n, j)}, nil)
					}
					if err := cl.Flush(ctx); err != nil {
						t.Error(err)
						return
					}
					commit := r.IntN(10) != 0
					if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
						t.Error(err)
						return
					}
					txns.Add(1)
					if !commit {
						aborted.Add(1)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}

		cfgPath := writeConfig(t, src, dst, t.TempDir(), topic)
		var logs syncBuffer
		defer func() {
			if t.Failed() {
				t.Logf("klink log:\n%s", logs.String())
			}
		}()
		cmd := startKlink(t, cfgPath, &logs)
		for _, at := range []time.Duration{8 * time.Second, 10 * time.Second} {
			time.Sleep(at + time.Duration(rand.IntN(1000))*time.Millisecond)
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			cmd = startKlink(t, cfgPath, &logs)
		}
		wg.Wait()
		if txns.Load() < 100 || aborted.Load() == 0 {
			t.Fatalf("%d transactions, %d aborted: not the pattern under test", txns.Load(), aborted.Load())
		}
		waitDestinationCaughtUp(t, ctx, adm, dst, cmd, 90*time.Second, topic)
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("klink exited with %v after SIGTERM", err)
		}
		e, err := mirrorcheck.CompareExact(ctx, src.ListenAddrs(), dst.ListenAddrs(), topic, topic, partitions)
		if err != nil {
			t.Fatal(err)
		}
		if e.Committed == 0 || e.Uncommitted <= e.Committed {
			t.Fatalf("%+v: the comparison saw no aborted data", e)
		}
		t.Logf("%d transactions (%d aborted) across 2 SIGKILLs: %+v", txns.Load(), aborted.Load(), e)
	})
}

// waitDestinationCaughtUp waits until every partition of the topics has
// the same end offset on the destination as on the source; past timeout it
// kills klink and fails the test.
func waitDestinationCaughtUp(t *testing.T, ctx context.Context, srcAdm *kadm.Client, dst *kafkatest.Cluster, cmd *exec.Cmd, timeout time.Duration, topics ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		caught := true
		for _, topic := range topics {
			se, err := srcAdm.ListEndOffsets(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			de, err := dstOffsets(ctx, dst, topic)
			if err != nil {
				caught = false
				continue
			}
			se.Each(func(o kadm.ListedOffset) {
				if d, ok := de.Lookup(topic, o.Partition); !ok || d.Offset != o.Offset {
					caught = false
				}
			})
		}
		if caught {
			return
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("destination did not catch up within %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
