package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// demoTopics are produced with one codec each, so that the demo shows every
// codec passing through untouched.
var demoTopics = []struct {
	name  string
	codec kgo.CompressionCodec
	label string
}{
	{"orders", kgo.ZstdCompression(), "zstd"},
	{"payments", kgo.Lz4Compression(), "lz4"},
	{"clicks", kgo.SnappyCompression(), "snappy"},
	{"audit", kgo.GzipCompression(), "gzip"},
	{"metrics", kgo.NoCompression(), "none"},
}

// demoDeletedBefore: the demo deletes the first records of "orders" before
// the link starts, so that its mirror starts at a log start offset > 0.
const demoDeletedBefore = 1000

func demoCmd(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	duration := fs.Duration("duration", 0, "stop after this long (0: run until Ctrl-C)")
	rate := fs.Int("rate", 2000, "records per second produced across all topics")
	admin := fs.String("admin", "127.0.0.1:0", "admin listener for GET /status (\"off\" to disable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	return runDemo(ctx, os.Stdout, *rate, *admin)
}

func runDemo(ctx context.Context, out io.Writer, rate int, adminAddr string) error {
	src, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.ClusterID("demo-source"))
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.ClusterID("demo-destination"))
	if err != nil {
		return err
	}
	defer dst.Close()
	fmt.Fprintf(out, "source cluster      %s\ndestination cluster %s\n", strings.Join(src.ListenAddrs(), ","), strings.Join(dst.ListenAddrs(), ","))

	if err := seedDemo(ctx, src.ListenAddrs()); err != nil {
		return err
	}
	stateDir, err := os.MkdirTemp("", "klink-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stateDir)

	cfg := &config.Config{
		StateDir:    stateDir,
		Admin:       config.Admin{Listen: adminAddr},
		Log:         config.Log{Level: "warn", Format: "console"},
		Destination: config.Destination{Bootstrap: dst.ListenAddrs()},
		Links: []config.Link{{
			Name:    "demo",
			Source:  config.Source{Bootstrap: src.ListenAddrs()},
			Configs: config.Properties{"mirror.start.offset.spec": config.StartEarliest},
		}},
	}
	for _, t := range demoTopics {
		cfg.Links[0].MirrorTopics = append(cfg.Links[0].MirrorTopics, config.MirrorTopic{Name: t.name})
	}
	log, err := newLogger(cfg.Log)
	if err != nil {
		return err
	}
	store, err := linkstate.Open(stateDir)
	if err != nil {
		return err
	}
	defer store.Close()
	r := replicator.New(cfg, store, log)
	adm, err := startAdmin(cfg.Admin, r, zap.NewNop())
	if err != nil {
		return err
	}
	defer adm.Close()
	if a := adm.Addr(); a != "" {
		fmt.Fprintf(out, "status              http://%s/status\n", a)
	}

	linkCtx, stopLink := context.WithCancel(context.Background())
	linkDone := make(chan struct{})
	go func() {
		r.Run(linkCtx)
		close(linkDone)
	}()
	defer func() {
		stopLink()
		<-linkDone
	}()

	prodCtx, stopProducing := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		produceDemo(prodCtx, src.ListenAddrs(), rate)
	}()

	view := newLiveView(out)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	fmt.Fprintln(out, "mirroring; Ctrl-C to stop and verify")
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			view.draw(r.Status())
		}
	}
	stopProducing()
	wg.Wait()

	view.forget()
	fmt.Fprintln(out, "\nstopped producing; waiting for the mirrors to catch up, then comparing every record")
	vctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := waitDemoCaughtUp(vctx, r); err != nil {
		return err
	}
	view.draw(r.Status())
	return verifyDemo(vctx, out, src.ListenAddrs(), dst.ListenAddrs())
}

// seedDemo creates the source topics, writes a first batch of records and
// deletes the first demoDeletedBefore offsets of "orders".
func seedDemo(ctx context.Context, seeds []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for _, t := range demoTopics {
		if _, err := adm.CreateTopic(ctx, 3, 1, nil, t.name); err != nil {
			return fmt.Errorf("creating %s: %w", t.name, err)
		}
	}
	pcl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ProducerBatchCompression(kgo.ZstdCompression()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return err
	}
	defer pcl.Close()
	var rs []*kgo.Record
	for p := int32(0); p < 3; p++ {
		for i := 0; i < demoDeletedBefore+500; i++ {
			rs = append(rs, demoRecord("orders", p, i))
		}
	}
	if err := pcl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return err
	}
	var os kadm.Offsets
	for p := int32(0); p < 3; p++ {
		os.AddOffset("orders", p, demoDeletedBefore, -1)
	}
	resps, err := adm.DeleteRecords(ctx, os)
	if err != nil {
		return err
	}
	return resps.Error()
}

func demoRecord(topic string, p int32, i int) *kgo.Record {
	return &kgo.Record{
		Topic:     topic,
		Partition: p,
		Key:       fmt.Appendf(nil, "customer-%d", rand.IntN(1000)),
		Value:     fmt.Appendf(nil, `{"topic":%q,"seq":%d,"amount":%d,"note":"%s"}`, topic, i, rand.IntN(100000), strings.Repeat("x", rand.IntN(64))),
		Headers:   []kgo.RecordHeader{{Key: "source", Value: []byte("demo")}},
	}
}

// produceDemo writes about rate records per second across the topics.
func produceDemo(ctx context.Context, seeds []string, rate int) {
	var wg sync.WaitGroup
	for _, t := range demoTopics {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ProducerBatchCompression(t.codec), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(20*time.Millisecond))
			if err != nil {
				return
			}
			defer cl.Close()
			per := max(rate/len(demoTopics)/10, 1) // records per 100 ms
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; {
				select {
				case <-ctx.Done():
					fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					cl.Flush(fctx)
					cancel()
					return
				case <-tick.C:
				}
				for j := 0; j < per; j++ {
					cl.Produce(ctx, demoRecord(t.name, int32(i%3), i), nil)
					i++
				}
			}
		}()
	}
	wg.Wait()
}

func waitDemoCaughtUp(ctx context.Context, r *replicator.Replicator) error {
	for {
		s := r.Status()
		lag := int64(0)
		for _, l := range s.Links {
			for _, m := range l.Mirrors {
				if m.State != "ACTIVE" {
					lag++
				}
				lag += m.Lag
			}
		}
		if lag == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("mirrors did not catch up within 60s")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// verifyDemo compares every destination record with its source.
func verifyDemo(ctx context.Context, out io.Writer, src, dst []string) error {
	var failed bool
	for _, t := range demoTopics {
		s, err := mirrorcheck.ReadAll(ctx, src, t.name, mirrorcheck.ReadUncommitted)
		if err != nil {
			return err
		}
		d, err := mirrorcheck.ReadAll(ctx, dst, t.name, mirrorcheck.ReadUncommitted)
		if err != nil {
			return err
		}
		matched, fillers, err := mirrorcheck.Compare(s, d)
		if err != nil {
			failed = true
			fmt.Fprintf(out, "%-9s MISMATCH: %v\n", t.name, err)
			continue
		}
		identical := 0
		for p := int32(0); p < 3; p++ {
			n, _, err := mirrorcheck.ComparePartitionBatches(ctx, src, dst, t.name, t.name, p)
			if err != nil {
				failed = true
				fmt.Fprintf(out, "%-9s MISMATCH: %v\n", t.name, err)
			}
			identical += n
		}
		fmt.Fprintf(out, "%-9s %6d records identical (offset, key, value, headers, timestamp); %4d %s batches byte-identical", t.name, matched, identical, t.label)
		if fillers > 0 {
			fmt.Fprintf(out, ", %d filler records", fillers)
		}
		fmt.Fprintln(out)
	}
	if failed {
		return errors.New("verification failed")
	}
	return nil
}

// liveView prints the mirrors' progress once a second. On a terminal it
// redraws its table in place (cursor up over the previous one, each line
// cleared to its end); elsewhere (a pipe, a file, CI) it prints plain lines,
// one table after another, without escape sequences.
type liveView struct {
	out     io.Writer
	tty     bool
	lines   int // lines of the table on screen, to move up over (tty)
	last    map[string]int64
	lastAt  time.Time
	started time.Time
}

func newLiveView(out io.Writer) *liveView {
	tty := false
	if f, ok := out.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &liveView{out: out, tty: tty, last: map[string]int64{}, started: time.Now()}
}

// forget makes the next draw start below whatever was printed since the
// last one, instead of over it.
func (v *liveView) forget() { v.lines = 0 }

func (v *liveView) draw(s replicator.Status) {
	now := time.Now()
	secs := now.Sub(v.lastAt).Seconds()
	var table bytes.Buffer
	fmt.Fprintf(&table, "klink demo — %s\n", now.Sub(v.started).Truncate(time.Second))
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mirror\tpartition\tstate\tsource start\tdestination start\tsource end\tdestination end\tlag\trecords/s\t")
	for _, l := range s.Links {
		for _, m := range l.Mirrors {
			for _, p := range m.Partitions {
				key := fmt.Sprintf("%s/%d", m.Name, p.Partition)
				rps := "-"
				if !v.lastAt.IsZero() {
					rps = fmt.Sprintf("%.0f", float64(p.RecordsMirrored-v.last[key])/secs)
				}
				v.last[key] = p.RecordsMirrored
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t\n", m.Name, p.Partition, m.State, p.SourceStartOffset, p.DestStartOffset, p.SourceEndOffset, p.DestEndOffset, p.Lag, rps)
			}
			if len(m.Partitions) == 0 {
				fmt.Fprintf(tw, "%s\t-\t%s\t\t\t\t\t\t\t\n", m.Name, m.State)
			}
			if m.Reason != "" {
				fmt.Fprintf(tw, "%s\t\t%s\t\t\t\t\t\t\t\n", m.Name, m.Reason)
			}
		}
	}
	tw.Flush()
	v.lastAt = now
	if !v.tty {
		fmt.Fprintf(v.out, "\n%s", table.Bytes())
		return
	}
	var screen bytes.Buffer
	if v.lines > 0 {
		fmt.Fprintf(&screen, "\033[%dA\r", v.lines) // up to the previous table's first line
	}
	lines := strings.SplitAfter(strings.TrimSuffix(table.String(), "\n"), "\n")
	for _, l := range lines {
		screen.WriteString(strings.TrimSuffix(l, "\n"))
		screen.WriteString("\033[K\n") // clear what a longer line left
	}
	screen.WriteString("\033[J") // and the lines of a longer table
	v.lines = len(lines)
	v.out.Write(screen.Bytes())
}
