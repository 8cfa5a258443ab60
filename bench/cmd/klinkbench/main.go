// Command klinkbench measures klink against a consume/re-produce baseline on
// the same data set, side by side in one run.
//
// It runs a source and two destination Kafka clusters (kfake) in this
// process, fills the source with a fixed data set (default 1 GiB of zstd
// batches of ~1 MiB over 16 partitions), then runs `klink run` as a separate
// process until the destination has caught up, and the baseline (bench/cmd/
// baseline, kgo consume + produce) the same way into the second destination.
// CPU seconds come from /proc/<pid>/stat of each process, so the clusters'
// own work is not counted.
//
//	go run ./bench/cmd/klinkbench [-size 1GiB] [-partitions 16] [-write bench/RESULTS.md]
//
// With -members 1,2,3 it mirrors the same data set with klink clusters of
// those sizes instead (one fresh destination each), then measures the
// takeover time after a SIGKILL (-takeovers times) on the largest.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

const topic = "bench"

var cpuProfile, svgPath string

// klinkBinary, if set, runs in klink's place (see bench/cmd/minfwd).
var klinkBinary string

func main() {
	if len(os.Args) > 1 && os.Args[1] == "relay" {
		relay(os.Args[2])
		return
	}
	size := flag.String("size", "1GiB", "data set size in batch bytes (e.g. 256MiB, 1GiB)")
	partitions := flag.Int("partitions", 16, "partitions")
	batchBytes := flag.Int("batch-bytes", 1<<20, "target size of one zstd batch")
	skipBaseline := flag.Bool("skip-baseline", false, "measure klink only")
	verify := flag.Bool("verify", true, "compare the klink mirror with the source record by record afterwards")
	write := flag.String("write", "", "also write the results as Markdown to this file")
	flag.StringVar(&cpuProfile, "klink-cpuprofile", "", "write klink's CPU profile to this file")
	flag.StringVar(&klinkBinary, "klink-binary", "", "run this program in klink's place (given `run --config FILE`), with the same data and checks: see bench/cmd/minfwd")
	flag.StringVar(&svgPath, "svg", "", "also draw CPU per GiB of each run as an SVG bar chart into this file")
	members := flag.String("members", "", "measure klink clusters of these sizes (e.g. 1,2,3) instead")
	takeoverRuns := flag.Int("takeovers", 5, "with -members: SIGKILL takeovers to time on the largest cluster")
	runs := flag.Int("runs", 3, "klink and floor runs, alternating; the median is reported")
	real := flag.Bool("kafka", false, "real Kafka brokers from $KLINK_KAFKA_HOME (../shared/kafka) instead of kfake, or the clusters named by $KLINK_TEST_SOURCE and $KLINK_TEST_DESTINATION")
	flag.DurationVar(&idleWindow, "idle-window", idleWindow, "with -many: the length of each idle window")
	flag.IntVar(&idleWindowsEach, "idle-windows", idleWindowsEach, "with -many: idle windows with fetch sessions, and as many without")
	idle := flag.Int("many", 0, "instead: mirror this many partitions (50 topics) with a few records each; time the catch-up, then measure idle CPU of klink and the source broker with and without fetch sessions")
	flag.Parse()
	if klinkBinary != "" {
		if *write != "" || svgPath != "" {
			fail(fmt.Errorf("-klink-binary measures another program in klink's place: its figures must not go into klink's results (-write, -svg)"))
		}
		fmt.Printf("in klink's place (the rows named klink below): %s\n", klinkBinary)
	}
	stopOnSignal()
	total, err := parseSize(*size)
	if err != nil {
		fail(err)
	}
	if *members != "" {
		if err := runClusters(total, *partitions, *batchBytes, *members, *takeoverRuns, *verify, *write); err != nil {
			fail(err)
		}
		return
	}
	if *idle > 0 {
		if err := runMany(*idle, *real, *write); err != nil {
			fail(err)
		}
		return
	}
	if err := run(total, *partitions, *batchBytes, *runs, *skipBaseline, *verify, *real, *write); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "klinkbench:", err)
	os.Exit(1)
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if strings.HasSuffix(s, u.suffix) {
			mult, s = u.m, strings.TrimSuffix(s, u.suffix)
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	return int64(f * float64(mult)), nil
}

// result is one replicator's run.
type result struct {
	name    string
	wall    time.Duration
	cpu     time.Duration
	sys     time.Duration // the kernel's part of cpu
	maxRSS  int64         // bytes
	bytes   int64
	records int64
	// faults (minor and major page faults) and switches (voluntary and
	// involuntary context switches): kernel work that is not the copying.
	faults, switches int64
}

func (r result) gib() float64 { return float64(r.bytes) / (1 << 30) }

// kcluster is a Kafka cluster the harness reaches: kfake in this process,
// or real brokers.
type kcluster interface{ ListenAddrs() []string }

// benchEnv is where a run takes place: the source, a fresh destination
// (cluster and topic) for each klink run, and one for the baseline.
type benchEnv struct {
	clusters string // for the report
	short    string // for the chart's title
	src      kcluster
	dest     func(run int) (dst kcluster, dstTopic string, done func(), err error)
}

func run(total int64, partitions, batchBytes, runs int, skipBaseline, verify, real bool, write string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Hour)
	defer cancel()
	bin, err := buildBinaries()
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	var env benchEnv
	if real {
		e, stop, err := realEnv()
		if err != nil {
			return err
		}
		defer stop()
		env = e
	} else {
		src, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.ClusterID("bench-source"))
		if err != nil {
			return err
		}
		defer src.Close()
		env = benchEnv{clusters: "kfake (3 brokers each) in the harness process", short: "kfake", src: src,
			dest: func(run int) (kcluster, string, func(), error) {
				dst, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.ClusterID(fmt.Sprintf("bench-destination-%d", run)))
				if err != nil {
					return nil, "", nil, err
				}
				return dst, topic, dst.Close, nil
			}}
	}
	src := env.src
	fmt.Printf("writing the data set: %s over %d partitions in zstd batches of ~%d KiB...\n", human(total), partitions, batchBytes>>10)
	dataBytes, records, batches, err := fillSource(ctx, src, partitions, batchBytes, total)
	if err != nil {
		return err
	}
	fmt.Printf("data set: %d batches, %d records, %s\n", batches, records, human(dataBytes))

	// klink and the floor alternately, runs times each (the order flips
	// every run), so that a noisy moment cannot decide the ratio.
	var klinks, floors []result
	var verified string
	for i := range runs {
		for _, which := range [][]string{{"klink", "floor"}, {"floor", "klink"}}[i%2] {
			switch which {
			case "floor":
				fmt.Printf("run %d/%d: the floor, a process that only relays the same bytes over TCP...\n", i+1, runs)
				fr, err := measureFloor(ctx, dataBytes)
				if err != nil {
					return err
				}
				floors = append(floors, fr)
			case "klink":
				fmt.Printf("run %d/%d: klink...\n", i+1, runs)
				kr, v, err := klinkRun(ctx, env, bin, i, partitions, dataBytes, records, verify)
				if err != nil {
					return err
				}
				klinks = append(klinks, kr)
				verified = v
			}
		}
	}
	var results []result
	km, fm := medianResult(klinks), medianResult(floors)
	results = append(results, km)
	if !skipBaseline {
		dst, dstTopic, done, err := env.dest(runs)
		if err != nil {
			return err
		}
		if err := createTopic(ctx, dst, dstTopic, partitions); err != nil {
			return err
		}
		fmt.Println("running the baseline (kgo consume + re-produce)...")
		cmd := exec.Command(filepath.Join(bin, "baseline"), "-source", strings.Join(src.ListenAddrs(), ","), "-destination", strings.Join(dst.ListenAddrs(), ","),
			"-topic", topic, "-dest-topic", dstTopic, "-partitions", strconv.Itoa(partitions))
		br, err := measureRecords(ctx, "baseline (kgo consume + re-produce, zstd)", cmd, dst, dstTopic, records)
		done()
		if err != nil {
			return err
		}
		br.bytes, br.records = dataBytes, records
		results = append(results, br)
	}
	results = append(results, fm)
	report := formatResults(results, dataBytes, records, batches, partitions, env.clusters)
	report += formatRuns(klinks, floors)
	if verified != "" {
		report += "Every klink run's mirror checked afterwards; the last: " + verified + ".\n"
	}
	block := "results"
	if real {
		block = "kafka"
	}
	if err := publish(report, write, block); err != nil {
		return err
	}
	if svgPath != "" {
		var bars []bar
		for _, r := range results {
			bars = append(bars, bar{label: shortName(r.name), value: r.cpu.Seconds() / r.gib()})
		}
		title := "CPU seconds per GiB mirrored, " + env.short + " (lower is better)"
		if err := os.WriteFile(svgPath, barChart(title, "CPU-s/GiB", bars), 0o644); err != nil {
			return err
		}
		fmt.Println("chart written to", svgPath)
	}
	return nil
}

// buildBinaries builds klink and the baseline into a temporary folder.
func buildBinaries() (string, error) {
	bin, err := os.MkdirTemp("", "klinkbench-")
	if err != nil {
		return "", err
	}
	fmt.Println("building klink and the baseline...")
	for _, b := range []struct{ out, pkg string }{{"klink", "./cmd/klink"}, {"baseline", "./bench/cmd/baseline"}} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, b.out), b.pkg).CombinedOutput(); err != nil {
			os.RemoveAll(bin)
			return "", fmt.Errorf("building %s: %v\n%s", b.pkg, err, out)
		}
	}
	return bin, nil
}

// klinkRun mirrors the data set with klink into a fresh destination, and
// checks the mirror record by record and batch by batch.
func klinkRun(ctx context.Context, env benchEnv, bin string, run, partitions int, dataBytes, records int64, verify bool) (result, string, error) {
	dst, dstTopic, done, err := env.dest(run)
	if err != nil {
		return result{}, "", err
	}
	defer done()
	dir, err := os.MkdirTemp(bin, "run-")
	if err != nil {
		return result{}, "", err
	}
	cfg, err := writeKlinkConfig(dir, env.src, dst, dstTopic, "")
	if err != nil {
		return result{}, "", err
	}
	args := []string{"run", "--config", cfg}
	if cpuProfile != "" {
		args = append(args, "--cpuprofile", cpuProfile)
	}
	kbin := filepath.Join(bin, "klink")
	if klinkBinary != "" {
		kbin = klinkBinary
	}
	kcmd := exec.Command(kbin, args...)
	kcmd.Env = append(os.Environ(), os.Getenv("KLINKBENCH_ENV"))
	kr, err := measure(ctx, "klink (offset-preserving, zero-copy)", kcmd, dst, dstTopic, env.src)
	if err != nil {
		return result{}, "", err
	}
	kr.bytes, kr.records = dataBytes, records
	if !verify {
		return kr, "", nil
	}
	fmt.Println("verifying the klink mirror record by record...")
	v, err := verifyMirror(ctx, env.src, dst, dstTopic, partitions, records)
	if err != nil {
		return result{}, "", err
	}
	fmt.Println(v)
	return kr, v, nil
}

// medianResult is the run with the median CPU time (the upper one of an
// even count).
func medianResult(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int { return cmp.Compare(a.cpu, b.cpu) })
	return s[len(s)/2]
}

// formatRuns lists the alternating runs and the median of their ratios.
func formatRuns(klinks, floors []result) string {
	if len(klinks) < 2 {
		return ""
	}
	var b strings.Builder
	var ratios []float64
	fmt.Fprintf(&b, "\n%d alternating runs (klink first in odd runs, the floor first in even ones); the table above shows the median of each:\n\n", len(klinks))
	fmt.Fprintln(&b, "| run | klink CPU s per GiB | floor CPU s per GiB | klink / floor |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|")
	for i := range klinks {
		k, f := klinks[i].cpu.Seconds()/klinks[i].gib(), floors[i].cpu.Seconds()/floors[i].gib()
		ratios = append(ratios, k/f)
		fmt.Fprintf(&b, "| %d | %.3f | %.3f | %.2f× |\n", i+1, k, f, k/f)
	}
	slices.Sort(ratios)
	fmt.Fprintf(&b, "\nMedian klink / floor over the runs: **%.2f×** (min %.2f×, max %.2f×).\n", ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1])
	return b.String()
}

// shortName is a result's name up to its first parenthesis or colon.
func shortName(name string) string {
	if i := strings.IndexAny(name, "(:"); i > 0 {
		return strings.TrimSpace(name[:i])
	}
	return name
}

// words make record values about as compressible as JSON logs.
var words = strings.Fields(`order customer payment shipped pending refund warehouse invoice
	status amount currency EUR USD GBP created updated region eu-west us-east ap-south
	priority express standard item sku quantity price discount coupon session device
	mobile desktop tablet browser firefox chrome safari referrer campaign checkout cart`)

func randomValue(r *rand.Rand, n int) []byte {
	var b []byte
	b = fmt.Appendf(b, `{"id":%d,"ts":%d,"text":"`, r.Int64(), r.Int64N(1<<40))
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
		b = append(b, ' ')
		b = strconv.AppendInt(b, r.Int64N(100000), 10)
		b = append(b, ' ')
	}
	return append(b, `"}`...)
}

// makeBatch builds one zstd batch of about target bytes.
func makeBatch(r *rand.Rand, target int) (batch.Batch, int, error) {
	now := time.Now().UnixMilli()
	n := 1000
	for {
		var raw []byte
		for i := 0; i < n; i++ {
			raw = batch.AppendRecord(raw, batch.Record{
				OffsetDelta:    int32(i),
				TimestampDelta: int64(i / 100),
				Key:            fmt.Appendf(nil, "customer-%d", r.IntN(10000)),
				Value:          randomValue(r, 900),
				Headers:        []batch.RecordHeader{{Key: "source", Value: []byte("bench")}},
			})
		}
		b, err := batch.Build(batch.CodecZstd, 0, int32(n-1), now, now+int64((n-1)/100), int32(n), raw)
		if err != nil {
			return nil, 0, err
		}
		if len(b) >= target*9/10 || n > 100000 {
			if len(b) > target*11/10 && n > 100 {
				n = n * target / len(b)
				continue
			}
			return b, n, nil
		}
		n = n * target / len(b)
	}
}

func createTopic(ctx context.Context, c kcluster, name string, partitions int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		return err
	}
	defer cl.Close()
	_, err = kadm.NewClient(cl).CreateTopic(ctx, int32(partitions), 1, map[string]*string{"max.message.bytes": kmsg.StringPtr(strconv.Itoa(4 << 20))}, name)
	return err
}

// fillSource writes batches round-robin over the partitions until total
// bytes are written.
func fillSource(ctx context.Context, src kcluster, partitions, batchBytes int, total int64) (bytes, records int64, batches int, err error) {
	if err := createTopic(ctx, src, topic, partitions); err != nil {
		return 0, 0, 0, err
	}
	r := rand.New(rand.NewPCG(1, 2))
	type tmpl struct {
		b batch.Batch
		n int
	}
	var templates []tmpl
	for i := 0; i < 8; i++ {
		b, n, err := makeBatch(r, batchBytes)
		if err != nil {
			return 0, 0, 0, err
		}
		templates = append(templates, tmpl{b, n})
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...))
	if err != nil {
		return 0, 0, 0, err
	}
	defer cl.Close()
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return 0, 0, 0, err
	}
	leaders := map[int32]int32{}
	for p, pd := range md.Topics[topic].Partitions {
		leaders[p] = pd.Leader
	}
	for bytes < total {
		// One request per leader, one batch per partition.
		reqs := map[int32]*kmsg.ProduceRequest{}
		for p := 0; p < partitions && bytes < total; p++ {
			t := templates[batches%len(templates)]
			leader := leaders[int32(p)]
			req := reqs[leader]
			if req == nil {
				req = kmsg.NewPtrProduceRequest()
				req.Acks = -1
				req.TimeoutMillis = 30000
				rt := kmsg.NewProduceRequestTopic()
				rt.Topic = topic
				rt.TopicID = md.Topics[topic].ID
				req.Topics = append(req.Topics, rt)
				reqs[leader] = req
			}
			rp := kmsg.NewProduceRequestTopicPartition()
			rp.Partition = int32(p)
			rp.Records = t.b
			req.Topics[0].Partitions = append(req.Topics[0].Partitions, rp)
			bytes += int64(len(t.b))
			records += int64(t.n)
			batches++
		}
		for leader, req := range reqs {
			kresp, err := cl.Broker(int(leader)).Request(ctx, req)
			if err != nil {
				return 0, 0, 0, err
			}
			for _, t := range kresp.(*kmsg.ProduceResponse).Topics {
				for _, p := range t.Partitions {
					if p.ErrorCode != 0 {
						return 0, 0, 0, fmt.Errorf("producing the data set: partition %d: error %d", p.Partition, p.ErrorCode)
					}
				}
			}
		}
	}
	return bytes, records, batches, nil
}

// writeKlinkConfig writes a config that mirrors the source topic into
// dstTopic; sourceExtra is added to the link's source section.
func writeKlinkConfig(dir string, src, dst kcluster, dstTopic, sourceExtra string) (string, error) {
	stateDir := filepath.Join(dir, "state")
	cfg := fmt.Sprintf(`stateDir: %s
admin: {listen: "off"}
log: {level: warn, format: console}
destination:
  bootstrap: [%q]
links:
  - name: bench
    source:
      bootstrap: [%q]
%s    mirrorTopics:
      - name: %s
        sourceTopicName: %s
`, stateDir, dst.ListenAddrs()[0], src.ListenAddrs()[0], sourceExtra, dstTopic, topic)
	p := filepath.Join(dir, "klink.yaml")
	return p, os.WriteFile(p, []byte(cfg), 0o600)
}

// measure runs cmd until every partition of topic on dst has the source's
// end offset, and returns its wall time, CPU time and peak memory.
func measure(ctx context.Context, name string, cmd *exec.Cmd, dst kcluster, dstTopic string, src kcluster) (result, error) {
	srcEnds, err := endOffsets(ctx, src, topic)
	if err != nil {
		return result{}, err
	}
	return runUntil(ctx, name, cmd, func() (bool, error) {
		de, err := endOffsets(ctx, dst, dstTopic)
		if err != nil {
			return false, nil // not created yet
		}
		for p, e := range srcEnds {
			if de[p] != e {
				return false, nil
			}
		}
		return true, nil
	})
}

// measureRecords runs cmd until dst holds want records in topic (the
// baseline does not keep offsets, only records).
func measureRecords(ctx context.Context, name string, cmd *exec.Cmd, dst kcluster, dstTopic string, want int64) (result, error) {
	return runUntil(ctx, name, cmd, func() (bool, error) {
		de, err := endOffsets(ctx, dst, dstTopic)
		if err != nil {
			return false, nil
		}
		var n int64
		for _, e := range de {
			n += e
		}
		return n >= want, nil
	})
}

func runUntil(ctx context.Context, name string, cmd *exec.Cmd, done func() (bool, error)) (result, error) {
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} // not outliving klinkbench
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	exited := make(chan error, 1)
	waited := make(chan struct{}) // closed once Wait has returned
	go func() {
		err := cmd.Wait()
		close(waited)
		exited <- err
	}()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-waited // (the loop below may have taken exited's value)
		fmt.Print(stderr.String())
	}()
	for {
		ok, err := done()
		if err != nil {
			return result{}, err
		}
		if ok {
			break
		}
		select {
		case err := <-exited:
			return result{}, fmt.Errorf("%s exited early: %v\n%s", name, err, stderr.String())
		case <-ctx.Done():
			return result{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	wall := time.Since(start)
	cpu, sys, rss, err := procStats(cmd.Process.Pid)
	if err != nil {
		return result{}, fmt.Errorf("%s: reading its CPU time: %v\n%s", name, err, stderr.String())
	}
	faults, switches := procCounters(cmd.Process.Pid)
	printIOCalls(shortName(name), cmd.Process.Pid)
	return result{name: name, wall: wall, cpu: cpu, sys: sys, maxRSS: rss, faults: faults, switches: switches}, nil
}

// procStats reads a live process's CPU time (user + system), its system
// part, and its peak RSS.
func procStats(pid int) (cpu, sys time.Duration, rss int64, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	// Fields after the command name (which may hold spaces) start at ") ".
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const clkTck = 100 // sysconf(_SC_CLK_TCK) on Linux
	cpu = time.Duration(utime+stime) * time.Second / clkTck
	sys = time.Duration(stime) * time.Second / clkTck
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	return cpu, sys, rss, nil
}

// procCounters reads a live process's page faults (minor and major) and
// context switches (voluntary and involuntary), summed over its threads.
func procCounters(pid int) (faults, switches int64) {
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		minflt, _ := strconv.ParseInt(f[7], 10, 64)
		majflt, _ := strconv.ParseInt(f[9], 10, 64)
		faults = minflt + majflt
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			for _, k := range []string{"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"} {
				if v, ok := strings.CutPrefix(line, k); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					switches += n
				}
			}
		}
	}
	return faults, switches
}

func endOffsets(ctx context.Context, c kcluster, topic string) (map[int32]int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	l, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	if err := l.Error(); err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	l.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	if len(out) == 0 {
		return nil, errors.New("no partitions")
	}
	return out, nil
}

// verifyMirror compares the klink mirror with the source, one partition at
// a time (to bound memory): records (offset, key, value, headers,
// timestamp) and batches (byte-identical records sections).
func verifyMirror(ctx context.Context, src, dst kcluster, dstTopic string, partitions int, records int64) (string, error) {
	var matched, identical int
	for p := int32(0); p < int32(partitions); p++ {
		s, err := mirrorcheck.ReadPartition(ctx, src.ListenAddrs(), topic, p, mirrorcheck.ReadUncommitted)
		if err != nil {
			return "", err
		}
		d, err := mirrorcheck.ReadPartition(ctx, dst.ListenAddrs(), dstTopic, p, mirrorcheck.ReadUncommitted)
		if err != nil {
			return "", err
		}
		m, fillers, err := mirrorcheck.Compare(mirrorcheck.Records{p: s}, mirrorcheck.Records{p: d})
		if err != nil {
			return "", fmt.Errorf("klink mirror differs from the source: %w", err)
		}
		if fillers != 0 {
			return "", fmt.Errorf("partition %d: %d filler records where the source has none", p, fillers)
		}
		matched += m
		n, _, err := mirrorcheck.ComparePartitionBatches(ctx, src.ListenAddrs(), dst.ListenAddrs(), topic, dstTopic, p)
		if err != nil {
			return "", err
		}
		identical += n
	}
	if int64(matched) != records {
		return "", fmt.Errorf("compared %d records, the data set has %d", matched, records)
	}
	return fmt.Sprintf("%d records identical at identical offsets (offset, key, value, headers, timestamp), %d batches with byte-identical records sections", matched, identical), nil
}

func human(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d B", b)
}

func formatResults(rs []result, bytes, records int64, batches, partitions int, clusters string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Data set: %s in %d zstd batches (~%d KiB each), %d records, %d partitions.\n", human(bytes), batches, bytes/int64(batches)>>10, records, partitions)
	fmt.Fprintf(&b, "Machine: %s/%s, %d CPUs, %s. Clusters: %s; replicators as separate processes.\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), clusters)
	fmt.Fprintln(&b, "| replicator | wall time | throughput | CPU seconds (of which kernel) | CPU s per GiB | page faults per GiB | context switches per GiB | peak RSS |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %.1f s | %.0f MiB/s | %.2f (%.2f) | %.3f | %.0f | %.0f | %d MiB |\n", r.name, r.wall.Seconds(), float64(r.bytes)/(1<<20)/r.wall.Seconds(), r.cpu.Seconds(), r.sys.Seconds(), r.cpu.Seconds()/r.gib(),
			float64(r.faults)/r.gib(), float64(r.switches)/r.gib(), r.maxRSS>>20)
	}
	var klink, baseline, floor *result
	for i := range rs {
		switch {
		case strings.HasPrefix(rs[i].name, "klink"):
			klink = &rs[i]
		case strings.HasPrefix(rs[i].name, "baseline"):
			baseline = &rs[i]
		case strings.HasPrefix(rs[i].name, "floor"):
			floor = &rs[i]
		}
	}
	if klink != nil && baseline != nil {
		fmt.Fprintf(&b, "\nBaseline / klink: %.1f× the CPU per GiB, %.1f× the wall time.\n", baseline.cpu.Seconds()/klink.cpu.Seconds(), baseline.wall.Seconds()/klink.wall.Seconds())
	}
	if klink != nil && floor != nil {
		fmt.Fprintf(&b, "klink / floor: %.1f× the CPU per GiB of only moving the bytes through a process.\n", klink.cpu.Seconds()/floor.cpu.Seconds())
	}
	return b.String()
}

// publish prints a report and, if write names a file, puts it there as
// the block named block.
func publish(report, write, block string) error {
	fmt.Println()
	fmt.Print(report)
	if write == "" {
		return nil
	}
	if err := writeResultsBlock(write, block, report); err != nil {
		return err
	}
	fmt.Println("written to", write)
	return nil
}

// writeResultsBlock replaces the block between the markers named name in
// a results file, keeping the rest of the file.
func writeResultsBlock(path, name, report string) error {
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	block := begin + "\n" + report + end
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		s = s + "\n" + block + "\n"
	} else {
		s = s[:i] + block + s[j+len(end):]
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// measureFloor runs a relay process that reads n bytes from one loopback
// TCP connection and writes them to another, and returns its CPU time: the
// least any replicator that moves the data through a process pays here.
func measureFloor(ctx context.Context, n int64) (result, error) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	defer sink.Close()
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(self, "relay", sink.Addr().String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	var addr string
	if _, err := fmt.Fscanln(out, &addr); err != nil {
		return result{}, fmt.Errorf("relay address: %w", err)
	}
	received := make(chan error, 1)
	go func() {
		c, err := sink.Accept()
		if err != nil {
			received <- err
			return
		}
		defer c.Close()
		m, err := io.CopyBuffer(io.Discard, c, make([]byte, 1<<20))
		if err == nil && m != n {
			err = fmt.Errorf("floor relay delivered %d of %d bytes", m, n)
		}
		received <- err
	}()
	start := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return result{}, err
	}
	buf := make([]byte, 1<<20)
	for sent := int64(0); sent < n; {
		k := min(int64(len(buf)), n-sent)
		if _, err := c.Write(buf[:k]); err != nil {
			c.Close()
			return result{}, err
		}
		sent += k
	}
	c.Close()
	if err := <-received; err != nil {
		return result{}, err
	}
	wall := time.Since(start)
	cpu, sys, rss, err := procStats(cmd.Process.Pid)
	if err != nil {
		return result{}, err
	}
	faults, switches := procCounters(cmd.Process.Pid)
	printIOCalls("floor", cmd.Process.Pid)
	return result{name: "floor: TCP relay of the same bytes, no Kafka", wall: wall, cpu: cpu, sys: sys, maxRSS: rss, bytes: n, faults: faults, switches: switches}, nil
}

// relay is the floor process: accept one connection, copy it to addr, then
// wait to be measured and stopped.
func relay(addr string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	fmt.Println(ln.Addr().String())
	in, err := ln.Accept()
	if err != nil {
		fail(err)
	}
	outc, err := net.Dial("tcp", addr)
	if err != nil {
		fail(err)
	}
	if _, err := io.CopyBuffer(struct{ io.Writer }{outc}, struct{ io.Reader }{in}, make([]byte, 1<<20)); err != nil {
		fail(err)
	}
	outc.Close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	<-sigs
}
