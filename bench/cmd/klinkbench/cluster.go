package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/klink-io/klink/replicator"
)

// klink clusters: the same data set mirrored by 1, 2 and 3 members (each
// run into a fresh destination), CPU summed over the members; then the
// takeover time after a member is SIGKILLed, repeated.

const benchSession = 6 * time.Second

type member struct {
	name, admin string
	cmd         *exec.Cmd
	stderr      *strings.Builder
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func startMember(dir, bin, group, name string, src, dst *kfake.Cluster) (*member, error) {
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`stateDir: %s
admin: {listen: %q}
log: {level: warn, format: console}
cluster: {group: %s, member: %s, sessionTimeout: %s}
destination:
  bootstrap: [%q]
links:
  - name: bench
    source:
      bootstrap: [%q]
    mirrorTopics:
      - name: %s
`, filepath.Join(dir, name), admin, group, name, benchSession, dst.ListenAddrs()[0], src.ListenAddrs()[0], topic)
	p := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	m := &member{name: name, admin: admin, stderr: &strings.Builder{}}
	m.cmd = exec.Command(filepath.Join(bin, "klink"), "run", "--config", p)
	m.cmd.Stderr = m.stderr
	return m, m.cmd.Start()
}

func (m *member) stop() {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Signal(syscall.SIGTERM)
		m.cmd.Wait()
	}
}

func (m *member) status() (replicator.Status, error) {
	var s replicator.Status
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + m.admin + "/status")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// owned reads the members' statuses: how many units each owns (none
// waiting for a lease), and whether every unit of want is owned once.
func owned(ms []*member, want int) (per map[string]int, all bool) {
	per = map[string]int{}
	total, waiting := 0, 0
	for _, m := range ms {
		s, err := m.status()
		if err != nil || s.Cluster == nil {
			return per, false
		}
		per[m.name] = len(s.Cluster.Owned)
		total += len(s.Cluster.Owned)
		waiting += len(s.Cluster.Waiting)
	}
	return per, total == want && waiting == 0
}

// clusterRun mirrors the data set with n members into a fresh destination
// until it has caught up. keep: the members are returned running (for the
// takeover runs); otherwise they are stopped.
func clusterRun(ctx context.Context, bin string, src *kfake.Cluster, n, partitions int, dataBytes, records int64, verify, keep bool) (result, []*member, *kfake.Cluster, error) {
	dst, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.ClusterID(fmt.Sprintf("bench-cluster-%d", n)))
	if err != nil {
		return result{}, nil, nil, err
	}
	dir, err := os.MkdirTemp("", "klinkbench-cluster-")
	if err != nil {
		dst.Close()
		return result{}, nil, nil, err
	}
	var ms []*member
	cleanup := func() {
		for _, m := range ms {
			m.stop()
		}
		dst.Close()
		os.RemoveAll(dir)
	}
	srcEnds, err := endOffsets(ctx, src, topic)
	if err != nil {
		cleanup()
		return result{}, nil, nil, err
	}
	start := time.Now()
	for i := range n {
		m, err := startMember(dir, bin, fmt.Sprintf("bench-%d", n), fmt.Sprintf("m%d", i+1), src, dst)
		if err != nil {
			cleanup()
			return result{}, nil, nil, err
		}
		ms = append(ms, m)
	}
	for {
		de, err := endOffsets(ctx, dst, topic)
		done := err == nil
		for p, e := range srcEnds {
			done = done && de[p] == e
		}
		if done {
			break
		}
		for _, m := range ms {
			if m.cmd.ProcessState != nil {
				cleanup()
				return result{}, nil, nil, fmt.Errorf("member %s exited: %s", m.name, m.stderr.String())
			}
		}
		if ctx.Err() != nil {
			cleanup()
			return result{}, nil, nil, ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := result{name: fmt.Sprintf("klink cluster, %d member(s)", n), wall: time.Since(start), bytes: dataBytes, records: records}
	per, _ := owned(ms, -1)
	var spread []string
	for _, m := range ms {
		cpu, sys, rss, err := procStats(m.cmd.Process.Pid)
		if err != nil {
			cleanup()
			return result{}, nil, nil, err
		}
		r.cpu += cpu
		r.sys += sys
		r.maxRSS = max(r.maxRSS, rss)
		spread = append(spread, fmt.Sprintf("%s %d units, %.1f CPU s", m.name, per[m.name], cpu.Seconds()))
	}
	r.name += " (" + strings.Join(spread, "; ") + ")"
	if verify {
		v, err := verifyMirror(ctx, src, dst, topic, partitions, records)
		if err != nil {
			cleanup()
			return result{}, nil, nil, err
		}
		fmt.Println(v)
	}
	if !keep {
		cleanup()
		return r, nil, nil, nil
	}
	return r, ms, dst, nil
}

// takeovers SIGKILLs a random member of a running cluster k times and
// measures, each time, how long until the others own every unit (none
// waiting for the killed member's lease); the member is started again and
// the cluster settles between kills.
func takeovers(ctx context.Context, bin string, ms []*member, units, k int) ([]time.Duration, error) {
	var out []time.Duration
	// wait waits until the members own every unit, none waiting, and
	// (settled) each of them some.
	wait := func(ms []*member, limit time.Duration) (time.Duration, error) {
		start := time.Now()
		for time.Since(start) < limit {
			per, all := owned(ms, units)
			each := true
			for _, m := range ms {
				each = each && per[m.name] > 0
			}
			if all && each {
				return time.Since(start), nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		return 0, fmt.Errorf("members did not own every unit within %s", limit)
	}
	if _, err := wait(ms, 2*time.Minute); err != nil {
		return nil, err
	}
	for range k {
		i := rand.IntN(len(ms))
		victim := ms[i]
		if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			return nil, err
		}
		victim.cmd.Wait()
		rest := slices.Delete(slices.Clone(ms), i, i+1)
		took, err := wait(rest, 2*time.Minute)
		if err != nil {
			return nil, err
		}
		out = append(out, took)
		fmt.Printf("takeover after SIGKILL of %s: %s\n", victim.name, took.Round(time.Millisecond))
		cfg := victim.cmd.Args[len(victim.cmd.Args)-1]
		victim.cmd = exec.Command(filepath.Join(bin, "klink"), "run", "--config", cfg)
		victim.cmd.Stderr = victim.stderr
		if err := victim.cmd.Start(); err != nil {
			return nil, err
		}
		if _, err := wait(ms, 2*time.Minute); err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return out, nil
}

func formatClusterResults(rs []result, tk []time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nklink clusters (session timeout %s; each member a separate process, CPU summed over them):\n\n", benchSession)
	fmt.Fprintln(&b, "| run | wall time | CPU seconds (of which kernel) | CPU s per GiB | peak RSS (largest member) |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|---:|")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %.1f s | %.2f (%.2f) | %.3f | %d MiB |\n", r.name, r.wall.Seconds(), r.cpu.Seconds(), r.sys.Seconds(), r.cpu.Seconds()/r.gib(), r.maxRSS>>20)
	}
	if len(rs) > 1 {
		fmt.Fprintf(&b, "\n%d members / 1 member: %.2f× the CPU per GiB, %.2f× the wall time (the wall time includes a starting member's wait of one session timeout before its first append).\n",
			len(rs), rs[len(rs)-1].cpu.Seconds()/rs[0].cpu.Seconds(), rs[len(rs)-1].wall.Seconds()/rs[0].wall.Seconds())
	}
	if len(tk) > 0 {
		s := slices.Clone(tk)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		fmt.Fprintf(&b, "\nTakeover after a member is SIGKILLed (until the others own every unit, none waiting for its lease), %d runs: min %.1f s, median %.1f s, max %.1f s.\n",
			len(s), s[0].Seconds(), s[len(s)/2].Seconds(), s[len(s)-1].Seconds())
	}
	return b.String()
}

func runClusters(total int64, partitions, batchBytes int, sizes string, k int, verify bool, write string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	var ns []int
	for _, f := range strings.Split(sizes, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil || n < 1 {
			return fmt.Errorf("-members %q: want sizes like 1,2,3", sizes)
		}
		ns = append(ns, n)
	}
	bin, err := os.MkdirTemp("", "klinkbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "klink"), "./cmd/klink").CombinedOutput(); err != nil {
		return fmt.Errorf("building klink: %v\n%s", err, out)
	}
	src, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.ClusterID("bench-source"))
	if err != nil {
		return err
	}
	defer src.Close()
	fmt.Printf("writing the data set: %s over %d partitions...\n", human(total), partitions)
	dataBytes, records, batches, err := fillSource(ctx, src, partitions, batchBytes, total)
	if err != nil {
		return err
	}
	var rs []result
	var tk []time.Duration
	for i, n := range ns {
		last := i == len(ns)-1
		fmt.Printf("running a klink cluster of %d member(s)...\n", n)
		r, ms, dst, err := clusterRun(ctx, bin, src, n, partitions, dataBytes, records, verify, last && k > 0)
		if err != nil {
			return err
		}
		rs = append(rs, r)
		if ms != nil {
			// Units: the link's control duties, the mirror's, and each
			// partition.
			tk, err = takeovers(ctx, bin, ms, 2+partitions, k)
			for _, m := range ms {
				m.stop()
			}
			dst.Close()
			if err != nil {
				return err
			}
		}
	}
	report := fmt.Sprintf("Data set: %s in %d zstd batches, %d records, %d partitions. Machine: %d CPUs.\n", human(dataBytes), batches, records, partitions, runtime.NumCPU()) + formatClusterResults(rs, tk)
	return publish(report, write, "cluster")
}
