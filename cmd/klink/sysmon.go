package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
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
// (golang/go#18236: its tick is fixed). Side by side on the 1 GiB
// benchmarks (kfake and Kafka) that was 12-16% of klink's CPU and half its
// context switches. With a scheduler trace due, sysmon never sleeps
// deeply and backs off to a 10 ms tick when there is nothing to do. The
// runtime reads schedtrace only at start, so it takes an exec. The cost: where the host has been up for more than
// 24.8 days (the runtime counts from boot), the runtime writes one line
// "SCHED ..." to stderr at start and every 24.8 days; a crash (an
// unrecovered panic, a fatal error) also dumps every thread and goroutine
// of the scheduler; and sysmon ticks every 10 ms for good (about 0.1% of
// a core at idle). GODEBUG=schedtrace=0 turns it all off.
func keepSysmonAwake() {
	if runtime.GOOS != "linux" {
		return
	}
	godebug := os.Getenv("GODEBUG")
	if hasGodebug(godebug, "schedtrace") {
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
	// /proc/self/exe is the image running now, even if its file was
	// replaced (an upgrade) or removed since. On success this does not
	// return; if the exec fails, klink runs on as it is, only costlier.
	err := syscall.Exec("/proc/self/exe", os.Args, env)
	fmt.Fprintf(os.Stderr, "klink: starting again with GODEBUG=%s failed (%v); running on without it\n", sysmonAwake, err)
}

// hasGodebug reports whether a GODEBUG value sets key to a number, read
// the way the runtime reads it (no spaces trimmed, an int32 value), so
// that a setting the runtime ignores does not stop klink from adding its
// own.
func hasGodebug(godebug, key string) bool {
	for _, kv := range strings.Split(godebug, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			if _, err := strconv.ParseInt(v, 10, 32); err == nil {
				return true
			}
		}
	}
	return false
}
