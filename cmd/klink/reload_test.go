package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/replicator"
	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// reloadConfig writes klink's file with an admin listener on a free port
// and the given mirrors (name -> state line, "" for none).
func reloadConfig(t *testing.T, path, stateDir string, src, dst *kafkatest.Cluster, extra string, mirrors ...[2]string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "stateDir: %s\nadmin: {listen: \"127.0.0.1:0\"}\nlog: {level: info, format: json}\n%s", stateDir, extra)
	fmt.Fprintf(&b, "destination:\n  bootstrap: [%q]\n", dst.ListenAddrs()[0])
	fmt.Fprintf(&b, "links:\n  - name: reload-test\n    source:\n      bootstrap: [%q]\n    mirrorTopics:\n", src.ListenAddrs()[0])
	for _, m := range mirrors {
		fmt.Fprintf(&b, "      - name: %s\n", m[0])
		if m[1] != "" {
			fmt.Fprintf(&b, "        state: %s\n", m[1])
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

var adminAddr = regexp.MustCompile(`"msg":"admin listener","address":"([^"]+)"`)

// adminAddress waits for klink's log to say where its admin listener is.
func adminAddress(t *testing.T, logs *syncBuffer) string {
	t.Helper()
	var addr string
	waitUntil(t, 20*time.Second, "the admin listener", func() bool {
		if m := adminAddr.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return addr
}

func klinkStatus(t *testing.T, addr string) replicator.Status {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s replicator.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func mirrorState(s replicator.Status, name string) string {
	for _, l := range s.Links {
		for _, m := range l.Mirrors {
			if m.Name == name {
				return m.State
			}
		}
	}
	return ""
}

// klink as a process, driven by editing its file and sending SIGHUP: pause,
// an invalid file (refused, nothing changes, the error names the key path,
// klink keeps running), resume and failover.
func TestSighupReload(t *testing.T) {
	src, dst, adm := clusterPair(t, kafkatest.KFake, kafkatest.Brokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := adm.CreateTopics(ctx, 1, 1, nil, "ra", "rb"); err != nil {
		t.Fatal(err)
	}
	produce := func(topic string, n int, tag string) {
		for i := 0; i < n; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "%s-%d", tag, i), Value: fmt.Appendf(nil, "%s %d", tag, i)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce("ra", 20, "first")
	produce("rb", 20, "first")

	dir := t.TempDir()
	path := filepath.Join(dir, "klink.yaml")
	reloadConfig(t, path, filepath.Join(dir, "state"), src, dst, "", [2]string{"ra", ""}, [2]string{"rb", ""})
	cmd, logs := startKlinkLogged(t, "run", "--config", path)
	addr := adminAddress(t, logs)
	waitUntil(t, 30*time.Second, "both mirrors ACTIVE", func() bool {
		s := klinkStatus(t, addr)
		return mirrorState(s, "ra") == "ACTIVE" && mirrorState(s, "rb") == "ACTIVE"
	})
	// /readyz and /metrics.
	if code, body := httpGet(t, "http://"+addr+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d: %s", code, body)
	}
	_, metrics := httpGet(t, "http://"+addr+"/metrics")
	for _, want := range []string{`klink_mirror_state{link="reload-test",state="ACTIVE",topic="ra"} 1`, `klink_link_state{link="reload-test",state="RUNNING"} 1`, `klink_mirror_records_total{link="reload-test",topic="rb"}`, `klink_partition_lag_records{link="reload-test",partition="0",topic="ra"}`, `klink_produce_duration_seconds_count{link="reload-test"}`, `klink_fetch_duration_seconds_bucket{link="reload-test",le=`} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("/metrics lacks %s:\n%s", want, metrics)
		}
	}
	hup := func() {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	// klink plan asks the daemon what the edit would do.
	edited := filepath.Join(dir, "edited.yaml")
	reloadConfig(t, edited, filepath.Join(dir, "state"), src, dst, "", [2]string{"ra", "PAUSE"}, [2]string{"rb", ""}, [2]string{"rc", ""})
	out := klinkOutput(t, "plan", "--config", edited, "--admin", addr)
	for _, want := range []string{"against the running daemon", "link reload-test mirror ra: pause (ACTIVE -> PAUSE)", "link reload-test mirror rc: create (from source topic rc)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("klink plan output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "mirror rb") {
		t.Fatalf("klink plan lists the unchanged mirror rb:\n%s", out)
	}

	// Pause ra.
	reloadConfig(t, path, filepath.Join(dir, "state"), src, dst, "", [2]string{"ra", "PAUSE"}, [2]string{"rb", ""})
	hup()
	waitUntil(t, 20*time.Second, "ra PAUSED", func() bool { return mirrorState(klinkStatus(t, addr), "ra") == "PAUSED" })
	if out := klinkOutput(t, "status", "--config", path, "--admin", addr); !regexp.MustCompile(`(?m)^\s+ra\s+PAUSED\s+PAUSE\s`).MatchString(out) || !strings.Contains(out, "link reload-test  RUNNING") {
		t.Fatalf("klink status output:\n%s", out)
	}
	produce("ra", 20, "paused")

	// An invalid file changes nothing.
	reloadConfig(t, path, filepath.Join(dir, "state"), src, dst, "bogusKey: 1\n", [2]string{"ra", ""}, [2]string{"rb", "FAILOVER"})
	hup()
	waitUntil(t, 20*time.Second, "the refused reload in status", func() bool {
		lr := klinkStatus(t, addr).LastReload
		return lr != nil && !lr.OK && strings.Contains(lr.Error, "bogusKey")
	})
	s := klinkStatus(t, addr)
	if mirrorState(s, "ra") != "PAUSED" || mirrorState(s, "rb") != "ACTIVE" {
		t.Fatalf("an invalid reload changed states: ra %s, rb %s", mirrorState(s, "ra"), mirrorState(s, "rb"))
	}

	// Resume ra, fail rb over (once rb holds its 20 records: a failover
	// stops at once, whatever is mirrored).
	waitUntil(t, 20*time.Second, "rb to catch up", func() bool {
		o, err := dstOffsets(ctx, dst, "rb")
		if err != nil {
			return false
		}
		e, _ := o.Lookup("rb", 0)
		return e.Offset == 20
	})
	reloadConfig(t, path, filepath.Join(dir, "state"), src, dst, "", [2]string{"ra", ""}, [2]string{"rb", "FAILOVER"})
	hup()
	waitUntil(t, 20*time.Second, "ra ACTIVE and rb STOPPED", func() bool {
		s := klinkStatus(t, addr)
		return mirrorState(s, "ra") == "ACTIVE" && mirrorState(s, "rb") == "STOPPED"
	})
	waitUntil(t, 20*time.Second, "ra to catch up", func() bool {
		o, err := dstOffsets(ctx, dst, "ra")
		if err != nil {
			return false
		}
		e, _ := o.Lookup("ra", 0)
		return e.Offset == 40
	})
	for _, tp := range []string{"ra", "rb"} {
		sr, err := mirrorcheck.ReadAll(ctx, src.ListenAddrs(), tp, mirrorcheck.ReadCommitted)
		if err != nil {
			t.Fatal(err)
		}
		dr, err := mirrorcheck.ReadAll(ctx, dst.ListenAddrs(), tp, mirrorcheck.ReadCommitted)
		if err != nil {
			t.Fatal(err)
		}
		if n, _, err := mirrorcheck.Compare(sr, dr); err != nil || n != 40 && tp == "ra" || n != 20 && tp == "rb" {
			t.Fatalf("%s: %d records identical: %v", tp, n, err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("klink exited with %v after SIGTERM", err)
	}
	// With no daemon, klink plan reads the state file.
	out = klinkOutput(t, "plan", "--config", edited)
	for _, want := range []string{"against the state file", "mirror ra: pause (ACTIVE -> PAUSE)", "mirror rb: refuse (mirror rb was stopped", "mirror rc: create"} {
		if !strings.Contains(out, want) {
			t.Fatalf("offline klink plan output lacks %q:\n%s", want, out)
		}
	}
}

// klinkOutput runs a klink command and returns its output; it must succeed.
func klinkOutput(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(klinkBinary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("klink %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func waitUntil(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
