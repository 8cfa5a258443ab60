package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/replicator/kafkatest"
)

// Real brokers come from the test suite's harness (kafkatest): Kafka from
// $KLINK_KAFKA_HOME, started fresh, or the clusters a user runs, named by
// $KLINK_TEST_SOURCE and $KLINK_TEST_DESTINATION. The harness takes a
// testing.TB; benchTB is one for a program.
type benchTB struct {
	testing.TB // never called: every method kafkatest uses is below
	mu         sync.Mutex
	cleanups   []func()
	failed     bool
}

// benchFatal is a harness Fatal, turned into an error by startCluster.
type benchFatal string

func (b *benchTB) Helper()                   {}
func (b *benchTB) Name() string              { return "klinkbench" }
func (b *benchTB) Fatal(args ...any)         { panic(benchFatal(fmt.Sprint(args...))) }
func (b *benchTB) Fatalf(f string, a ...any) { panic(benchFatal(fmt.Sprintf(f, a...))) }
func (b *benchTB) Skip(args ...any)          { panic(benchFatal(fmt.Sprint(args...))) }
func (b *benchTB) Skipf(f string, a ...any)  { panic(benchFatal(fmt.Sprintf(f, a...))) }
func (b *benchTB) Logf(f string, a ...any)   { fmt.Printf(f+"\n", a...) }
func (b *benchTB) Log(args ...any)           { fmt.Println(args...) }
func (b *benchTB) Errorf(f string, a ...any) { b.setFailed(); fmt.Fprintf(os.Stderr, f+"\n", a...) }
func (b *benchTB) Error(args ...any)         { b.setFailed(); fmt.Fprintln(os.Stderr, args...) }
func (b *benchTB) TempDir() string {
	d, err := os.MkdirTemp("", "klinkbench-kafka-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (b *benchTB) setFailed() {
	b.mu.Lock()
	b.failed = true
	b.mu.Unlock()
}

func (b *benchTB) Failed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failed
}

func (b *benchTB) Cleanup(f func()) {
	b.mu.Lock()
	b.cleanups = append(b.cleanups, f)
	b.mu.Unlock()
}

// close runs the cleanups, last first (brokers are killed, folders go).
func (b *benchTB) close() {
	b.mu.Lock()
	cs := b.cleanups
	b.cleanups = nil
	b.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

var (
	exitMu    sync.Mutex
	atExitFns []func()
)

// atExit registers f to run if klinkbench is interrupted (SIGINT,
// SIGTERM): real brokers must not outlive it.
func atExit(f func()) {
	exitMu.Lock()
	atExitFns = append(atExitFns, f)
	exitMu.Unlock()
}

// stopOnSignal runs the atExit functions and exits on SIGINT or SIGTERM.
func stopOnSignal() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "klinkbench: %v: stopping the brokers\n", s)
		exitMu.Lock()
		for i := len(atExitFns) - 1; i >= 0; i-- {
			atExitFns[i]()
		}
		os.Exit(1)
	}()
}

// newBenchTB is a benchTB whose cleanups also run on interruption.
func newBenchTB() *benchTB {
	tb := &benchTB{}
	atExit(tb.close)
	return tb
}

// startCluster starts (or, with $KLINK_TEST_*, reaches) a real cluster of
// one broker named source or destination.
func startCluster(tb *benchTB, name string) (c *kafkatest.Cluster, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(benchFatal)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("real %s cluster: %s", name, string(f))
		}
	}()
	return kafkatest.Start(tb, kafkatest.Kafka, name, kafkatest.Brokers(1)), nil
}

// startRealPair starts (or reaches) a real source and destination, and
// says what they are, for the report; stop kills what it started.
func startRealPair() (src, dst *kafkatest.Cluster, what string, stop func(), err error) {
	tb := newBenchTB()
	if src, err = startCluster(tb, "source"); err == nil {
		dst, err = startCluster(tb, "destination")
	}
	if err != nil {
		tb.close()
		return nil, nil, "", nil, err
	}
	what = "Apache Kafka 3.8 from $KLINK_KAFKA_HOME, one broker each (JVMs of their own)"
	if kafkatest.KafkaHome() == "" {
		what = "the clusters named by $KLINK_TEST_SOURCE and $KLINK_TEST_DESTINATION"
	}
	return src, dst, what, tb.close, nil
}

// realEnv is a source and a destination of real brokers; each klink run
// mirrors into a topic of its own, deleted after the run.
func realEnv() (benchEnv, func(), error) {
	src, dst, what, stop, err := startRealPair()
	if err != nil {
		return benchEnv{}, nil, err
	}
	env := benchEnv{clusters: what, short: "real Kafka brokers", src: src,
		dest: func(run int) (kcluster, string, func(), error) {
			name := fmt.Sprintf("bench-run-%d", run)
			return dst, name, func() { deleteTopic(dst, name) }, nil
		}}
	return env, stop, nil
}

// deleteTopic removes a run's destination topic, so that runs do not fill
// the disk.
func deleteTopic(c kcluster, name string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kadm.NewClient(cl).DeleteTopics(ctx, name)
}
