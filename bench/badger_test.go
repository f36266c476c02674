package bench

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"

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
			opts := badger.DefaultOptions(benchDir(b)).WithSyncWrites(c.sync).WithLogger(nil).
				WithNumVersionsToKeep(1).WithMemTableSize(mt).WithNumMemtables(3).
				WithBlockCacheSize(32 << 20).WithIndexCacheSize(16 << 20).WithValueLogFileSize(128 << 20).
				WithNumCompactors(2).WithDetectConflicts(false)
			db, err := badger.Open(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			var n atomic.Int64
			cpu0 := cpuTime()
			b.SetParallelism(4)
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
		})
	}
}

// cpuTime is this process's user+system CPU time in microseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Sec*1e6 + ru.Utime.Usec + ru.Stime.Sec*1e6 + ru.Stime.Usec
}
