// Package bench holds what measures latchkey against its machine and its
// peers rather than testing it: the fsync-rate benchmark (the ceiling of
// any durable queue on this disk) and compare.sh, the side-by-side run
// against Postfix + OpenDKIM described in docs/benchmarks.md.
package bench
