package bench

import (
	"os"
	"path/filepath"
	"testing"
)

// benchDir is where the fsync benchmarks write: LATCHKEY_BENCH_DIR (put it
// on the disk that will hold data_dir) or the test's temporary directory.
func benchDir(b *testing.B) string {
	if d := os.Getenv("LATCHKEY_BENCH_DIR"); d != "" {
		return d
	}
	return b.TempDir()
}

// BenchmarkFsync appends 4 KiB and fsyncs, as a log-structured store does
// per commit: ops/s is the most durable commits per second this disk allows
// without group commit.
func BenchmarkFsync(b *testing.B) {
	f, err := os.CreateTemp(benchDir(b), "fsync-*")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFsyncParallel: several writers, each its own file, fsyncing at
// once; whether the disk overlaps them says how much group commit can gain
// beyond sharing one fsync.
func BenchmarkFsyncParallel(b *testing.B) {
	dir := benchDir(b)
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		f, err := os.CreateTemp(dir, "fsyncp-*")
		if err != nil {
			b.Error(err)
			return
		}
		defer os.Remove(filepath.Clean(f.Name()))
		defer f.Close()
		buf := make([]byte, 4096)
		for pb.Next() {
			if _, err := f.Write(buf); err != nil {
				b.Error(err)
				return
			}
			if err := f.Sync(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
