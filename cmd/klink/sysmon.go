package main

import (
	"os"
	"runtime"
	"strings"
	"syscall"
)

// sysmonAwake is the GODEBUG setting that keeps the Go runtime's sysmon
// thread out of its deep sleep: a scheduler trace every 2^31-1 ms (24.8
// days), the largest interval it takes.
const sysmonAwake = "schedtrace=2147483647"

// keepSysmonAwake starts klink again (the same process: exec) with
// sysmonAwake added to GODEBUG, unless GODEBUG already sets schedtrace.
//
// Why: klink waits on its brokers thousands of times per GiB, and each time
// every P goes idle, sysmon sleeps deeply; the first system call after
// wakes it, and it then polls every 20 µs for a millisecond or more
// (golang/go#18236: its tick is fixed). On the 1 GiB kfake benchmark that
// was 15% of klink's CPU and half its context switches. With a scheduler
// trace due, sysmon never sleeps deeply and backs off to a 10 ms tick when
// there is nothing to do. The runtime reads schedtrace only at start, so
// it takes an exec. The cost: where the host has been up for more than
// 24.8 days (the runtime counts from boot), the runtime writes one line
// "SCHED ..." to stderr at start and every 24.8 days, and a fatal error
// prints the scheduler's state too. GODEBUG=schedtrace=0 turns it all off.
func keepSysmonAwake() {
	if runtime.GOOS != "linux" {
		return
	}
	godebug := os.Getenv("GODEBUG")
	if hasGodebug(godebug, "schedtrace") {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	if godebug != "" {
		godebug += ","
	}
	env := []string{"GODEBUG=" + godebug + sysmonAwake}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	// On success this does not return; if the exec fails, klink runs on
	// as it is, only costlier.
	_ = syscall.Exec(exe, os.Args, env)
}

// hasGodebug reports whether a GODEBUG value sets key.
func hasGodebug(godebug, key string) bool {
	for _, kv := range strings.Split(godebug, ",") {
		if k, _, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k == key {
			return true
		}
	}
	return false
}
