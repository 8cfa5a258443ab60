package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klink-io/klink/replicator/kafkatest"
)

// klink's systemd notifications, read from a fake NOTIFY_SOCKET: READY=1
// with a status line once started, watchdog pings, RELOADING=1 with
// MONOTONIC_USEC then READY=1 around a SIGHUP, STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	src, dst, _ := clusterPair(t, kafkatest.KFake, kafkatest.Brokers(1))
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	path := writeConfig(t, src, dst, filepath.Join(dir, "state"), "orders")
	cmd := exec.Command(klinkBinary, "run", "--config", path)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=400000")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	defer func() {
		if t.Failed() {
			t.Logf("klink log:\n%s", logs.String())
		}
	}()
	buf := make([]byte, 4096)
	next := func(want string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ln.SetReadDeadline(deadline)
			n, err := ln.Read(buf)
			if err != nil {
				t.Fatalf("waiting for a notification with %q: %v", want, err)
			}
			if msg := string(buf[:n]); strings.Contains(msg, want) {
				return msg
			}
		}
	}
	if msg := next("READY=1"); !strings.Contains(msg, "STATUS=") || !strings.Contains(msg, "links running") {
		t.Fatalf("READY notification without a status line: %q", msg)
	}
	next("WATCHDOG=1")
	next("WATCHDOG=1")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if msg := next("RELOADING=1"); !regexp.MustCompile(`MONOTONIC_USEC=\d+`).MatchString(msg) {
		t.Fatalf("RELOADING without MONOTONIC_USEC: %q", msg)
	}
	next("READY=1")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next("STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("klink exited with %v", err)
	}
}

// log.level changes at once on a reload.
func TestLogLevelReload(t *testing.T) {
	src, dst, _ := clusterPair(t, kafkatest.KFake, kafkatest.Brokers(1))
	path := writeConfig(t, src, dst, filepath.Join(t.TempDir(), "state"), "orders")
	var logs syncBuffer
	cmd := startKlink(t, path, &logs)
	defer cmd.Process.Kill()
	waitUntil(t, 20*time.Second, "klink to start", func() bool { return strings.Contains(logs.String(), "klink started") })
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), "level: info", "level: debug", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the level change", func() bool {
		return strings.Contains(logs.String(), `"msg":"log level changed","from":"info","to":"debug"`)
	})
	if strings.Contains(logs.String(), "log.format: takes effect") {
		t.Fatalf("a level change reported as waiting for a restart:\n%s", logs.String())
	}
}
