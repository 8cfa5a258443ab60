// Package bench holds klink's benchmarks: the end-to-end harness
// (cmd/klinkbench, with the consume/re-produce baseline in cmd/baseline) and
// per-batch micro-benchmarks (go test -bench . ./bench/). Results and the
// commands that reproduce them are in RESULTS.md.
package bench
