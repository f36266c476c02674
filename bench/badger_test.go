package bench

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Profiles of the relay put about 9% of its CPU in msync(2): with
// SyncWrites, Badger syncs the memtable's write-ahead log (a memory-mapped
// file) with msync, and the kernel's writeback of the dirty pages is
// charged to the relay. This benchmark commits 4.6 KB values from 4
// writers with the queue's options (queue/store.go), synced and not, with
// the queue's 16 MiB memtable and Badger's default 64 MiB, and reports the
// CPU time per commit (user+system, from getrusage).
func BenchmarkBadgerSyncCommit(b *testing.B) {
	val := make([]byte, 4600)
	for _, c := range []struct {
		mt   int64
		sync bool
	}{{16 << 20, true}, {16 << 20, false}, {64 << 20, true}} {
		mt := c.mt
		b.Run(fmt.Sprintf("memtable=%dMiB/sync=%v", mt>>20, c.sync), func(b *testing.B) {
			opts := queueOptions(b).WithSyncWrites(c.sync).WithMemTableSize(mt).WithValueLogFileSize(128 << 20)
			writeValues(b, opts, val, 4)
		})
	}
}

// queueOptions are the Badger options both benchmarks share with the queue
// (queue/store.go); each case sets sync, memtable and value-log sizes.
func queueOptions(b *testing.B) badger.Options {
	return badger.DefaultOptions(benchDir(b)).WithLogger(nil).WithNumVersionsToKeep(1).WithNumMemtables(3).
		WithBlockCacheSize(32 << 20).WithIndexCacheSize(16 << 20).WithNumCompactors(2).WithDetectConflicts(false)
}

// writeValues opens a database with opts and commits val under new keys from
// parallelism×GOMAXPROCS writers, one transaction each, reporting the CPU time
// per commit.
func writeValues(b *testing.B, opts badger.Options, val []byte, parallelism int) {
	db, err := badger.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var n atomic.Int64
	cpu0 := cpuTime()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := []byte(fmt.Sprintf("m/%012d", n.Add(1)))
			if err := db.Update(func(txn *badger.Txn) error { return txn.Set(k, val) }); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-µs/op")
}

// cpuTime is this process's user+system CPU time in microseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Sec*1e6 + ru.Utime.Usec + ru.Stime.Sec*1e6 + ru.Stime.Usec
}

// BenchmarkBadgerMemory writes 4.6 KB values (a queued message's body) from
// 16 synced writers, the way a busy submission listener fills the queue, and
// reports the process's peak RSS. Run each case in its own process, since
// the peak is per process:
//
//	go test -run='^$' -bench='BadgerMemory/inline' -benchtime=50000x ./bench
//	go test -run='^$' -bench='BadgerMemory/vlog' -benchtime=50000x ./bench
//
// "inline" is the queue's options (Badger's default 1 MB value threshold:
// bodies live in the LSM tree and every compaction rewrites them); "vlog"
// adds WithValueThreshold(1024), so bodies go to the value log once and the
// tree holds only pointers; "vlog32" also maps 32 MiB value-log files
// instead of 128 MiB (Badger maps twice the file size, and the written
// pages count in the RSS).
func BenchmarkBadgerMemory(b *testing.B) {
	val := make([]byte, 4600)
	for _, c := range []struct {
		name      string
		threshold int64
		vlogSize  int64
	}{{"inline", 0, 128 << 20}, {"vlog", 1024, 128 << 20}, {"vlog32", 1024, 32 << 20}} {
		b.Run(c.name, func(b *testing.B) {
			opts := queueOptions(b).WithSyncWrites(true).WithMemTableSize(16 << 20).WithValueLogFileSize(c.vlogSize)
			if c.threshold > 0 {
				opts = opts.WithValueThreshold(c.threshold)
			}
			writeValues(b, opts, val, 8)
			b.ReportMetric(peakRSSMB(), "peak-RSS-MB")
		})
	}
}

// peakRSSMB is VmHWM from /proc/self/status, in MiB (0 where unavailable).
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkBadgerSyncCommitTail commits one 4.6 KB value at a time, synced,
// with the queue's options and a pause between commits, as the relay does
// at 150 msg/s, and reports the latency distribution of the commit (the
// synced write every 250 waits for): where the e2e tail at low load comes
// from.
//
//	go test -run '^$' -bench SyncCommitTail -benchtime 2000x ./bench
func BenchmarkBadgerSyncCommitTail(b *testing.B) {
	opts := queueOptions(b).WithSyncWrites(true).WithMemTableSize(16 << 20).WithNumMemtables(2).
		WithValueThreshold(1024).WithValueLogFileSize(128 << 20)
	db, err := badger.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 4600)
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		k := []byte(fmt.Sprintf("m/%012d", i))
		t0 := time.Now()
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set(k, val) }); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		time.Sleep(3 * time.Millisecond) // ~150 commits per second with the commit itself
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}
