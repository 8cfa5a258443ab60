package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// Many partitions: 50 topics with a few records in each partition. klink
// catches up (timed, peak RSS taken), then idles: the CPU of klink and of
// the source broker are measured over windows of idling, alternately with
// fetch sessions and without (klink restarted with source.fetchSessions
// false, then true, ...), so that each figure has a twin taken beside it.

const (
	manyTopics  = 50
	manyRecords = 3 // per partition
)

// The idle windows: how long each is, and how many of each kind (flags:
// the source broker's share moves by a percent of a core between windows,
// so telling a smaller difference apart takes more and longer ones).
var (
	idleWindow      = 20 * time.Second
	idleWindowsEach = 2
)

// idleSample is one window of idling.
type idleSample struct {
	sessions         bool
	klinkCPU, srcCPU time.Duration
	fetchRate        float64 // fetch requests answered per second
	readB, writtenB  int64   // klink's socket and file reads and writes (/proc/<pid>/io)
	window           time.Duration
	klinkRSS         int64
	// restart: from klink's start to every partition running (past its
	// start: tail check, transactions, producer id), 0 for the first
	// window (that klink caught up from scratch).
	restart time.Duration
}

func runMany(n int, real bool, write string) error {
	if n < manyTopics || n%manyTopics != 0 {
		return fmt.Errorf("-many %d: give a multiple of %d (topics)", n, manyTopics)
	}
	perTopic := n / manyTopics
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	bin, err := buildBinaries()
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	var src, dst kcluster
	var srcPIDs func() []int
	clusters := "kfake (1 broker each) in the harness process: the source's CPU is the harness's, both clusters"
	if real {
		// The harness's brokers have 768 MiB of heap; 10,000 partitions
		// (and a consumer of all of them, for the check) need more.
		if os.Getenv("KAFKA_HEAP_OPTS") == "" {
			os.Setenv("KAFKA_HEAP_OPTS", "-Xmx2g -Xms512m")
		}
		s, d, what, stop, err := startRealPair()
		if err != nil {
			return err
		}
		defer stop()
		src, dst, srcPIDs, clusters = s, d, s.PIDs, what
	} else {
		s, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("many-source"))
		if err != nil {
			return err
		}
		defer s.Close()
		d, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("many-destination"))
		if err != nil {
			return err
		}
		defer d.Close()
		src, dst = s, d
		srcPIDs = func() []int { return []int{os.Getpid()} }
	}
	var topics []string
	for i := range manyTopics {
		topics = append(topics, fmt.Sprintf("many-%02d", i))
	}
	fmt.Printf("creating %d topics of %d partitions on the source, %d records each...\n", manyTopics, perTopic, manyRecords)
	records, err := fillMany(ctx, src, topics, perTopic)
	if err != nil {
		return err
	}
	srcEnds := map[string]map[int32]int64{}
	for _, t := range topics {
		if srcEnds[t], err = endOffsets(ctx, src, t); err != nil {
			return err
		}
	}

	dir, err := os.MkdirTemp(bin, "many-")
	if err != nil {
		return err
	}
	start := func(sessions bool) (*exec.Cmd, string, error) {
		admin, err := freePort()
		if err != nil {
			return nil, "", err
		}
		var b strings.Builder
		fmt.Fprintf(&b, "stateDir: %s\nadmin: {listen: %q}\nlog: {level: warn, format: console}\n", filepath.Join(dir, "state"), admin)
		fmt.Fprintf(&b, "destination:\n  bootstrap: [%q]\nlinks:\n  - name: many\n    source:\n      bootstrap: [%q]\n      fetchSessions: %v\n    mirrorTopics:\n", dst.ListenAddrs()[0], src.ListenAddrs()[0], sessions)
		for _, t := range topics {
			fmt.Fprintf(&b, "      - name: %s\n", t)
		}
		p := filepath.Join(dir, "klink.yaml")
		if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
			return nil, "", err
		}
		cmd := exec.Command(filepath.Join(bin, "klink"), "run", "--config", p)
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} // not outliving klinkbench
		return cmd, admin, cmd.Start()
	}
	stop := func(cmd *exec.Cmd) {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}

	fmt.Println("klink catches up...")
	began := time.Now()
	cmd, admin, err := start(true)
	if err != nil {
		return err
	}
	for {
		caught := true
		for _, t := range topics {
			de, err := endOffsets(ctx, dst, t)
			if err != nil || !maps.Equal(de, srcEnds[t]) {
				caught = false
				break
			}
		}
		if caught {
			break
		}
		if ctx.Err() != nil {
			stop(cmd)
			return ctx.Err()
		}
		time.Sleep(500 * time.Millisecond)
	}
	catchUp := time.Since(began)
	_, _, catchRSS, err := procStats(cmd.Process.Pid)
	if err != nil {
		stop(cmd)
		return err
	}
	fmt.Printf("caught up in %.1f s, peak RSS %d MiB\n", catchUp.Seconds(), catchRSS>>20)

	var samples []idleSample
	var restart time.Duration
	sessions := true
	for i := range 2 * idleWindowsEach {
		if i > 0 {
			stop(cmd)
			sessions = !sessions
			began := time.Now()
			if cmd, admin, err = start(sessions); err != nil {
				return err
			}
			if err := waitRunning(ctx, admin, n); err != nil {
				stop(cmd)
				return err
			}
			restart = time.Since(began)
			fmt.Printf("restarted: all %d partitions running after %.1f s\n", n, restart.Seconds())
		}
		fmt.Printf("idle window %d/%d, fetch sessions %v: waiting for klink to settle...\n", i+1, 2*idleWindowsEach, sessions)
		if err := settle(cmd.Process.Pid); err != nil {
			stop(cmd)
			return err
		}
		s, err := idleWindowOf(cmd.Process.Pid, srcPIDs(), admin)
		if err != nil {
			stop(cmd)
			return err
		}
		s.sessions, s.restart = sessions, restart
		samples = append(samples, s)
	}
	stop(cmd)
	// The source broker alone: what it spends with no fetcher at all.
	time.Sleep(5 * time.Second)
	b0, err := cpuOf(srcPIDs())
	if err != nil {
		return err
	}
	time.Sleep(idleWindow)
	b1, _ := cpuOf(srcPIDs())
	brokerAlone := 100 * (b1 - b0).Seconds() / idleWindow.Seconds()

	fmt.Println("verifying every mirror record by record...")
	srcRecs, err := readMany(ctx, src, topics, records)
	if err != nil {
		return err
	}
	dstRecs, err := readMany(ctx, dst, topics, records)
	if err != nil {
		return err
	}
	matched := 0
	for _, t := range topics {
		m, fillers, err := mirrorcheck.Compare(srcRecs[t], dstRecs[t])
		if err != nil {
			return fmt.Errorf("mirror %s differs from the source: %w", t, err)
		}
		if fillers != 0 {
			return fmt.Errorf("mirror %s: %d fillers where the source has none", t, fillers)
		}
		matched += m
	}
	if int64(matched) != records {
		return fmt.Errorf("compared %d records, the source has %d", matched, records)
	}
	report := formatMany(n, perTopic, records, clusters, catchUp, catchRSS, samples, brokerAlone, matched)
	block := "many"
	if real {
		block = "many-kafka"
	}
	return publish(report, write, block)
}

// fillMany creates the topics and writes a few records to every partition.
func fillMany(ctx context.Context, src kcluster, topics []string, partitions int) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond),
		kgo.UnknownTopicRetries(-1))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for i := 0; i < len(topics); i += 10 {
		rs, err := adm.CreateTopics(ctx, int32(partitions), 1, nil, topics[i:min(i+10, len(topics))]...)
		if err != nil {
			return 0, err
		}
		if err := rs.Error(); err != nil {
			return 0, err
		}
	}
	// A new partition takes a moment to get its leader: wait for every
	// one, so that producing does not meet UNKNOWN_TOPIC_OR_PARTITION.
	for deadline := time.Now().Add(2 * time.Minute); ; {
		md, err := adm.Metadata(ctx, topics...)
		ready := err == nil
		for _, t := range topics {
			td, ok := md.Topics[t]
			if !ok || td.Err != nil || len(td.Partitions) != partitions {
				ready = false
				break
			}
			for _, p := range td.Partitions {
				if p.Leader < 0 || p.Err != nil {
					ready = false
				}
			}
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the source's %d new partitions have no leaders after 2 minutes (%v)", len(topics)*partitions, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	var n int64
	errs := make(chan error, 1)
	for _, t := range topics {
		for p := range int32(partitions) {
			for i := range manyRecords {
				r := &kgo.Record{Topic: t, Partition: p, Key: fmt.Appendf(nil, "key-%d", i), Value: fmt.Appendf(nil, "%s/%d record %d", t, p, i),
					Headers: []kgo.RecordHeader{{Key: "bench", Value: []byte("many")}}}
				cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
					if err != nil {
						select {
						case errs <- err:
						default:
						}
					}
				})
				n++
			}
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, err
	}
	select {
	case err := <-errs:
		return 0, fmt.Errorf("producing: %w", err)
	default:
	}
	return n, nil
}

// readMany reads every record of the topics with one consumer (plain
// records, no transactions: the data set is known), until want records.
func readMany(ctx context.Context, c kcluster, topics []string, want int64) (map[string]mirrorcheck.Records, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(1<<20))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	out := map[string]mirrorcheck.Records{}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for n := int64(0); n < want; {
		fs := cl.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			return nil, fmt.Errorf("read %d of %d records: %w", n, want, err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("%s[%d]: %w", t, p, err) })
		if ferr != nil {
			return nil, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if out[r.Topic] == nil {
				out[r.Topic] = mirrorcheck.Records{}
			}
			out[r.Topic][r.Partition] = append(out[r.Topic][r.Partition], r)
			n++
		})
	}
	return out, nil
}

func cpuOf(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		c, _, _, err := procStats(pid)
		if err != nil {
			return 0, err
		}
		sum += c
	}
	return sum, nil
}

// settle waits until klink's CPU use is steady (a restart at 10,000
// partitions checks every partition's destination tail first, for tens of
// seconds): two 5-second intervals within 20% of each other (or both under
// 2% of a core), at most two minutes.
func settle(pid int) error {
	const step = 5 * time.Second
	last := -1.0
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		c0, err := cpuOf([]int{pid})
		if err != nil {
			return err
		}
		time.Sleep(step)
		c1, err := cpuOf([]int{pid})
		if err != nil {
			return err
		}
		pct := 100 * (c1 - c0).Seconds() / step.Seconds()
		if last >= 0 && ((pct < 2 && last < 2) || (pct <= 1.2*last && last <= 1.2*pct)) {
			return nil
		}
		last = pct
	}
	fmt.Println("klink's CPU use did not settle within two minutes; measuring anyway")
	return nil
}

// waitRunning waits until klink's /status shows n partitions running
// (past their start) and none starting. /status is large at 10,000
// partitions: it is asked every 2 s.
func waitRunning(ctx context.Context, admin string, n int) error {
	for {
		var st struct {
			Links []struct {
				PartitionsStarting, PartitionsRunning int64
			}
		}
		if resp, err := http.Get("http://" + admin + "/status"); err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			var running, starting int64
			for _, l := range st.Links {
				running += l.PartitionsRunning
				starting += l.PartitionsStarting
			}
			if err == nil && running == int64(n) && starting == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d partitions to run: %w", n, ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
}

// idleWindowOf measures one window of idling. klink's /metrics is read
// before and after, outside the window: at 10,000 partitions a scrape
// costs klink more than a second of idling does.
func idleWindowOf(klink int, srcPIDs []int, admin string) (idleSample, error) {
	f0, err := fetchRequests(admin)
	if err != nil {
		return idleSample{}, err
	}
	scraped := time.Now()
	time.Sleep(time.Second)
	k0, err := cpuOf([]int{klink})
	if err != nil {
		return idleSample{}, err
	}
	s0, err := cpuOf(srcPIDs)
	if err != nil {
		return idleSample{}, err
	}
	r0, w0, err := procIO(klink)
	if err != nil {
		return idleSample{}, err
	}
	began := time.Now()
	time.Sleep(idleWindow)
	k1, _ := cpuOf([]int{klink})
	s1, _ := cpuOf(srcPIDs)
	r1, w1, _ := procIO(klink)
	window := time.Since(began)
	f1, err := fetchRequests(admin)
	if err != nil {
		return idleSample{}, err
	}
	_, _, rss, _ := procStats(klink)
	return idleSample{klinkCPU: k1 - k0, srcCPU: s1 - s0, fetchRate: (f1 - f0) / time.Since(scraped).Seconds(), readB: r1 - r0, writtenB: w1 - w0, window: window, klinkRSS: rss}, nil
}

// procIO reads a process's bytes read and written through system calls.
func procIO(pid int) (read, written int64, err error) {
	read, written, _, _, err = procIOCalls(pid)
	return read, written, err
}

// printIOCalls prints what procIOCalls reads of the process, if it can.
func printIOCalls(name string, pid int) {
	if r, w, rc, wc, err := procIOCalls(pid); err == nil {
		fmt.Printf("%s read %s in %d calls and wrote %s in %d calls\n", name, human(r), rc, human(w), wc)
	}
}

// procIOCalls reads a process's bytes read and written through system
// calls, and how many read-like and write-like calls it made.
func procIOCalls(pid int) (read, written, readCalls, writeCalls int64, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, 0, 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			read, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			written, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			readCalls, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			writeCalls, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return read, written, readCalls, writeCalls, nil
}

// fetchRequests sums klink_fetch_requests_total from klink's /metrics.
func fetchRequests(admin string) (float64, error) {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "klink_fetch_requests_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

func formatMany(n, perTopic int, records int64, clusters string, catchUp time.Duration, rss int64, samples []idleSample, brokerAlone float64, matched int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d partitions (%d topics × %d), %d records each (%d in all). Clusters: %s; klink a separate process.\n\n", n, manyTopics, perTopic, manyRecords, records, clusters)
	fmt.Fprintf(&b, "Catch-up from an empty destination (topics created by klink): **%.1f s**, klink's peak RSS **%d MiB**.\n\n", catchUp.Seconds(), rss>>20)
	fmt.Fprintf(&b, "Idle, %d windows of %s each, alternating (klink restarted between them, and left to settle first: its CPU steady over two 5 s intervals):\n\n", len(samples), idleWindow)
	fmt.Fprintln(&b, "| window | fetch sessions | restart: all partitions running after | klink CPU (% of a core) | source broker CPU (% of a core) | fetch requests/s | klink bytes read/s | klink bytes written/s | klink peak RSS |")
	fmt.Fprintln(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	pct := func(d, w time.Duration) float64 { return 100 * d.Seconds() / w.Seconds() }
	med := map[bool][2][]float64{}
	for i, s := range samples {
		w := s.window.Seconds()
		restart := "(the catch-up)"
		if s.restart > 0 {
			restart = fmt.Sprintf("%.1f s", s.restart.Seconds())
		}
		fmt.Fprintf(&b, "| %d | %v | %s | %.2f%% | %.2f%% | %.1f | %s | %s | %d MiB |\n", i+1, onOff(s.sessions), restart, pct(s.klinkCPU, s.window), pct(s.srcCPU, s.window),
			s.fetchRate, human(int64(float64(s.readB)/w)), human(int64(float64(s.writtenB)/w)), s.klinkRSS>>20)
		m := med[s.sessions]
		m[0] = append(m[0], pct(s.klinkCPU, s.window))
		m[1] = append(m[1], pct(s.srcCPU, s.window))
		med[s.sessions] = m
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	on, off := med[true], med[false]
	if len(on[0]) > 0 && len(off[0]) > 0 {
		fmt.Fprintf(&b, "\nMedians: klink idles at **%.2f%%** of a core with fetch sessions, %.2f%% without (%.1f× less); the source broker at **%.2f%%** with, %.2f%% without (%.1f× less).\n",
			median(on[0]), median(off[0]), median(off[0])/max(median(on[0]), 0.001), median(on[1]), median(off[1]), median(off[1])/max(median(on[1]), 0.001))
	}
	fmt.Fprintf(&b, "The source broker with klink stopped: %.2f%% of a core (its own housekeeping of %d partitions).\n", brokerAlone, n)
	fmt.Fprintf(&b, "Every mirror checked afterwards: %d records identical at identical offsets (offset, key, value, headers, timestamp).\n", matched)
	return b.String()
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
