// Command baseline is the replicator klink is measured against: it consumes
// the source topic and re-produces every record into the destination with
// kgo, the way MirrorMaker 2 and Connect-based tools do (decompress,
// re-batch, recompress). It keeps partitions and record fields, not offsets.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	source := flag.String("source", "", "source bootstrap (comma separated)")
	dest := flag.String("destination", "", "destination bootstrap (comma separated)")
	topic := flag.String("topic", "", "source topic")
	destTopic := flag.String("dest-topic", "", "destination topic (default: same name)")
	partitions := flag.Int("partitions", 1, "partitions to copy (0..n-1)")
	flag.Parse()
	if *destTopic == "" {
		*destTopic = *topic
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, strings.Split(*source, ","), strings.Split(*dest, ","), *topic, *destTopic, *partitions); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, source, dest []string, topic, destTopic string, partitions int) error {
	parts := map[int32]kgo.Offset{}
	for p := 0; p < partitions; p++ {
		parts[int32(p)] = kgo.NewOffset().AtStart()
	}
	consumer, err := kgo.NewClient(
		kgo.SeedBrokers(source...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchMaxBytes(64<<20),
		kgo.FetchMaxPartitionBytes(8<<20),
	)
	if err != nil {
		return err
	}
	defer consumer.Close()
	producer, err := kgo.NewClient(
		kgo.SeedBrokers(dest...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.ZstdCompression()),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedBytes(256<<20),
	)
	if err != nil {
		return err
	}
	defer producer.Close()
	for {
		fs := consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errs := fs.Errors(); len(errs) > 0 {
			return errs[0].Err
		}
		fs.EachRecord(func(r *kgo.Record) {
			out := &kgo.Record{
				Topic:     destTopic,
				Partition: r.Partition,
				Key:       r.Key,
				Value:     r.Value,
				Headers:   r.Headers,
				Timestamp: r.Timestamp,
			}
			producer.Produce(ctx, out, func(_ *kgo.Record, err error) {
				if err != nil && ctx.Err() == nil {
					fmt.Fprintln(os.Stderr, "baseline: produce:", err)
				}
			})
		})
	}
}
