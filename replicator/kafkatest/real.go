package kafkatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// node is one real broker (broker and KRaft controller in one process)
// that the harness started.
type node struct {
	id         int
	dir        string
	port       int // PLAINTEXT: inter-broker, and the harness's admin listener
	cport      int // CONTROLLER
	clientPort int // the client listener when the cluster is secure; else port
	args       []string
	clusterID  string
}

// pid is the broker's process id, 0 if it is not running.
func (n *node) pid() int {
	b, err := os.ReadFile(filepath.Join(n.dir, "pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// start runs start.sh, which returns once the broker answers.
func (n *node) start(home string) error {
	formatted := n.prepare()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(home, "start.sh"), append([]string{strconv.Itoa(n.port), strconv.Itoa(n.cport), n.dir}, n.args...)...)
	cmd.Env = append(os.Environ(), "KAFKA_CLUSTER_ID="+n.clusterID)
	// start.sh passes KAFKA_HEAP_OPTS to the JVM.
	opts := os.Getenv("KAFKA_HEAP_OPTS")
	if opts == "" {
		// Only the C1 compiler: a broker starts on half the CPU, and
		// tests never need its peak speed.
		opts = "-Xmx512m -Xms128m -XX:TieredStopAtLevel=1"
	}
	// The JVM unpacks snappy's native library (280 KiB) into
	// java.io.tmpdir at every start and never removes it, and keeps its
	// perf data in /tmp/hsperfdata_*: in the node's folder, both go
	// with the test.
	tmp := filepath.Join(n.dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("node %d: %v", n.id, err)
	}
	cmd.Env = append(cmd.Env, "KAFKA_HEAP_OPTS="+opts+" -Djava.io.tmpdir="+tmp+" -XX:-UsePerfData")
	out, err := cmd.CombinedOutput()
	if pid := n.pid(); pid > 0 {
		register(pid)
	}
	if err != nil {
		return fmt.Errorf("node %d: start.sh: %v\n%s", n.id, err, out)
	}
	if !formatted {
		keepBootstrap(n.dir)
	}
	return nil
}

// bootstrap is the bootstrap.checkpoint (the metadata version) of the
// first broker start.sh formatted in this process. Later nodes get it and
// a meta.properties of their own written directly, which is all a format
// writes, and so start without the formatting JVM (a second or more of
// CPU each).
var bootstrap struct {
	sync.Mutex
	checkpoint []byte
}

func keepBootstrap(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "log", "bootstrap.checkpoint"))
	if err != nil {
		return
	}
	bootstrap.Lock()
	if bootstrap.checkpoint == nil {
		bootstrap.checkpoint = b
	}
	bootstrap.Unlock()
}

// prepare formats a new node's log dir the way the storage tool does, if a
// checkpoint is known; it reports whether the dir is formatted.
func (n *node) prepare() bool {
	logDir := filepath.Join(n.dir, "log")
	if _, err := os.Stat(filepath.Join(logDir, "meta.properties")); err == nil {
		return true
	}
	bootstrap.Lock()
	cp := bootstrap.checkpoint
	bootstrap.Unlock()
	if cp == nil {
		return false
	}
	meta := fmt.Sprintf("node.id=%d\ndirectory.id=%s\nversion=1\ncluster.id=%s\n", n.id, newClusterID(), n.clusterID)
	if os.MkdirAll(logDir, 0o755) != nil ||
		os.WriteFile(filepath.Join(logDir, "bootstrap.checkpoint"), cp, 0o644) != nil ||
		os.WriteFile(filepath.Join(logDir, "meta.properties"), []byte(meta), 0o644) != nil {
		os.RemoveAll(logDir)
		return false
	}
	return true
}

// signal sends sig to the broker; for SIGKILL it waits until the process
// is gone.
func (n *node) signal(sig syscall.Signal) error {
	pid := n.pid()
	if pid == 0 {
		return fmt.Errorf("node %d is not running", n.id)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return err
	}
	if sig == syscall.SIGKILL {
		for i := 0; i < 200 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		os.Remove(filepath.Join(n.dir, "pid"))
		unregister(pid)
	}
	return nil
}

// stop stops the broker cleanly (stop.sh: SIGTERM, SIGKILL after 20 s).
func (n *node) stop(home string) error {
	pid := n.pid()
	out, err := exec.Command(filepath.Join(home, "stop.sh"), n.dir).CombinedOutput()
	if pid > 0 {
		unregister(pid)
	}
	if err != nil {
		return fmt.Errorf("node %d: stop.sh: %v\n%s", n.id, err, out)
	}
	return nil
}

// logTail is the end of the broker's log.
func (n *node) logTail(lines int) string {
	b, err := os.ReadFile(filepath.Join(n.dir, "server.log"))
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// newClusterID is a KRaft cluster ID: a base64url UUID not starting with
// "-" (start.sh would read it as an option).
func newClusterID() string {
	for {
		var b [16]byte
		rand.Read(b[:])
		id := base64.RawURLEncoding.EncodeToString(b[:])
		if id[0] != '-' {
			return id
		}
	}
}

// freePorts finds n ports below 32768 (above, Linux hands ports out to
// outgoing connections) that can be bound now. Another process may still
// take one before the broker binds it: start retries with new ports.
func freePorts(n int) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for tries := 0; len(out) < n && tries < 1000; tries++ {
		r, _ := rand.Int(rand.Reader, big.NewInt(32000-20000))
		p := 20000 + int(r.Int64())
		if seen[p] {
			continue
		}
		seen[p] = true
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		out = append(out, p)
	}
	if len(out) < n {
		return nil, errors.New("no free ports between 20000 and 32000")
	}
	return out, nil
}

// startReal starts the cluster's brokers, retrying with other ports if a
// port was taken meanwhile.
func (c *Cluster) startReal(t testing.TB) {
	t.Helper()
	home := KafkaHome()
	if _, err := os.Stat(filepath.Join(home, "start.sh")); err != nil {
		t.Fatalf("%s=%s: %v", EnvKafkaHome, home, err)
	}
	reapOrphans()
	n := c.o.brokers
	if n == 0 {
		n = 1
	}
	if n != 1 && n != 3 {
		t.Fatalf("real clusters have 1 or 3 brokers, not %d", n)
	}
	base := t.TempDir()
	c.writeKeystore(t)
	t.Cleanup(func() {
		if t.Failed() {
			for _, nd := range c.nodes {
				t.Logf("%s node %d (%s), end of server.log:\n%s", c.name, nd.id, nd.dir, nd.logTail(25))
			}
		}
		c.killAll()
	})
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		dir := filepath.Join(base, fmt.Sprint("attempt-", attempt))
		if err := c.layout(dir, n); err != nil {
			t.Fatal(err)
		}
		if last = c.startNodes(home); last == nil {
			break
		}
		c.killAll()
		if !strings.Contains(last.Error(), "not free") && !strings.Contains(last.Error(), "Address already in use") {
			break
		}
	}
	if last != nil {
		t.Fatalf("%s: %v", c.name, last)
	}
	c.setupSecurity(t)
}

// layout decides the nodes' ports and settings.
func (c *Cluster) layout(dir string, n int) error {
	per := 2
	if c.o.secure() {
		per = 3
	}
	ports, err := freePorts(n * per)
	if err != nil {
		return err
	}
	id := newClusterID()
	c.nodes = nil
	var voters []string
	for i := 0; i < n; i++ {
		nd := &node{id: i + 1, dir: filepath.Join(dir, fmt.Sprint("node", i+1)), port: ports[i*per], cport: ports[i*per+1], clusterID: id}
		nd.clientPort = nd.port
		if per == 3 {
			nd.clientPort = ports[i*per+2]
		}
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", nd.id, nd.cport))
		c.nodes = append(c.nodes, nd)
	}
	// Topics klink and the tests create quickly: few partitions for the
	// internal topics.
	common := []string{"offsets.topic.num.partitions=4", "transaction.state.log.num.partitions=4",
		// A node SIGKILLed and started again registers only once the
		// controller has expired its old session: 4 s instead of 9.
		"broker.session.timeout.ms=4000", "broker.heartbeat.interval.ms=500",
		// Test records carry create times from 2001 (timestamps must
		// survive the mirror exactly); the default 7-day retention would
		// delete whole logs when the broker's retention task first runs,
		// 30 s after start (seen: a test's destination log start jumped
		// to its end mid-test). Tests delete records with DeleteRecords.
		"log.retention.ms=-1"}
	if n == 3 {
		common = append(common, "controller.quorum.voters="+strings.Join(voters, ","),
			"offsets.topic.replication.factor=3", "transaction.state.log.replication.factor=3",
			"transaction.state.log.min.isr=2", "default.replication.factor=3", "min.insync.replicas=2")
	}
	c.mu.Lock()
	c.addrs, c.admin, c.id = nil, nil, id
	for _, nd := range c.nodes {
		nd.args = append([]string{fmt.Sprint("node.id=", nd.id)}, common...)
		nd.args = append(nd.args, c.securityConfig(nd)...)
		nd.args = append(nd.args, c.o.brokerConf...)
		c.addrs = append(c.addrs, fmt.Sprintf("127.0.0.1:%d", nd.clientPort))
		if c.o.secure() {
			c.admin = append(c.admin, fmt.Sprintf("127.0.0.1:%d", nd.port))
		}
	}
	c.mu.Unlock()
	return nil
}

// startNodes starts every node, side by side (a KRaft quorum of three
// needs them together).
func (c *Cluster) startNodes(home string) error {
	errs := make(chan error, len(c.nodes))
	for _, nd := range c.nodes {
		go func() { errs <- nd.start(home) }()
	}
	var all []error
	for range c.nodes {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

// killAll SIGKILLs every node still running: tests never need a clean
// shutdown at their end, and it is instant.
func (c *Cluster) killAll() {
	for _, nd := range c.nodes {
		if nd.pid() > 0 {
			nd.signal(syscall.SIGKILL)
		}
	}
}

// Nodes is the number of brokers (real clusters the harness started).
func (c *Cluster) Nodes() int { return len(c.nodes) }

// PIDs are the process ids of the brokers running now (real clusters the
// harness started; none otherwise): benchmarks read their CPU time.
func (c *Cluster) PIDs() []int {
	var pids []int
	for _, n := range c.nodes {
		if pid := n.pid(); pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (c *Cluster) node(t testing.TB, i int) *node {
	t.Helper()
	if c.kind != Kafka || len(c.nodes) == 0 {
		t.Fatalf("%s: node control needs real brokers the test started", c.name)
	}
	if i < 0 || i >= len(c.nodes) {
		t.Fatalf("%s has no node %d", c.name, i)
	}
	return c.nodes[i]
}

// NodeID is the broker id of node i (0-based).
func (c *Cluster) NodeID(t testing.TB, i int) int32 { return int32(c.node(t, i).id) }

// KillNode SIGKILLs node i (0-based) of a real cluster.
func (c *Cluster) KillNode(t testing.TB, i int) {
	t.Helper()
	if err := c.node(t, i).signal(syscall.SIGKILL); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
}

// StartNode starts node i again on its data.
func (c *Cluster) StartNode(t testing.TB, i int) {
	t.Helper()
	if err := c.node(t, i).start(KafkaHome()); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
}

// PauseNode SIGSTOPs node i; ResumeNode SIGCONTs it.
func (c *Cluster) PauseNode(t testing.TB, i int) {
	t.Helper()
	if err := c.node(t, i).signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	t.Cleanup(func() { c.nodes[i].signal(syscall.SIGCONT) }) // never leave a stopped JVM behind
}

// ResumeNode SIGCONTs node i.
func (c *Cluster) ResumeNode(t testing.TB, i int) {
	t.Helper()
	if err := c.node(t, i).signal(syscall.SIGCONT); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
}

// Kill SIGKILLs every broker of a real cluster, or closes a kfake one
// (Restartable keeps its data for Start).
func (c *Cluster) Kill(t testing.TB) {
	t.Helper()
	if c.kind == KFake {
		c.closeFake(t)
		return
	}
	c.requireNodes(t)
	for i := range c.nodes {
		c.KillNode(t, i)
	}
}

// Stop stops the cluster cleanly: every broker of a real cluster, or a
// kfake cluster (Restartable keeps its data and ports for Start).
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if c.kind == KFake {
		c.closeFake(t)
		return
	}
	c.requireNodes(t)
	for _, nd := range c.nodes {
		if err := nd.stop(KafkaHome()); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
}

// Restart starts a stopped or killed cluster again, on its data and
// ports.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	if c.kind == KFake {
		if !c.o.restartable {
			t.Fatalf("%s: a kfake cluster needs Restartable to be started again", c.name)
		}
		c.startFake(t)
		return
	}
	c.requireNodes(t)
	if err := c.startNodes(KafkaHome()); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
}

func (c *Cluster) requireNodes(t testing.TB) {
	t.Helper()
	if len(c.nodes) == 0 {
		t.Fatalf("%s: needs real brokers the test started (RequireManaged)", c.name)
	}
}

func (c *Cluster) closeFake(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	k := c.fake
	c.fake = nil
	c.mu.Unlock()
	if k == nil {
		t.Fatalf("%s is not running", c.name)
	}
	k.Close()
}

// registry keeps the pids of the brokers this test process started, so
// that a later test process can kill those a crashed or timed-out one
// left behind (its cleanups never ran).
func registryDir() string { return filepath.Join(os.TempDir(), "klink-kafkatest-brokers") }

func register(pid int) {
	os.MkdirAll(registryDir(), 0o755)
	os.WriteFile(filepath.Join(registryDir(), fmt.Sprintf("%d.%d", os.Getpid(), pid)), nil, 0o644)
}

func unregister(pid int) {
	os.Remove(filepath.Join(registryDir(), fmt.Sprintf("%d.%d", os.Getpid(), pid)))
}

// reapOrphans kills brokers registered by test processes that are gone.
func reapOrphans() {
	ents, err := os.ReadDir(registryDir())
	if err != nil {
		return
	}
	for _, e := range ents {
		owner, broker, ok := strings.Cut(e.Name(), ".")
		if !ok {
			continue
		}
		op, _ := strconv.Atoi(owner)
		bp, _ := strconv.Atoi(broker)
		if op <= 0 || bp <= 0 || syscall.Kill(op, 0) == nil {
			continue
		}
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", bp)); err == nil && bytes.Contains(cmd, []byte("kafka.Kafka")) {
			syscall.Kill(bp, syscall.SIGKILL)
		}
		os.Remove(filepath.Join(registryDir(), e.Name()))
	}
}

// CleanedTo is the offset up to which a real broker's log cleaner has
// cleaned a partition (its cleaner-offset-checkpoint; the highest of the
// nodes'), -1 if it has not cleaned it yet.
func (c *Cluster) CleanedTo(t testing.TB, topic string, p int32) int64 {
	t.Helper()
	c.requireNodes(t)
	best := int64(-1)
	want := fmt.Sprintf("%s %d ", topic, p)
	for _, nd := range c.nodes {
		b, err := os.ReadFile(filepath.Join(nd.dir, "log", "cleaner-offset-checkpoint"))
		if err != nil {
			continue
		}
		// version, count, then "topic partition offset" lines.
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, want); ok {
				if o, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64); err == nil && o > best {
					best = o
				}
			}
		}
	}
	return best
}
