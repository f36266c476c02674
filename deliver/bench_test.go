package deliver

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/latchkey/latchkey/testutil/smtpsink"
	"github.com/rs/zerolog"
)

// benchSetup returns a Deliverer aimed at a STARTTLS sink on loopback and a
// message of about 4 KB.
func benchSetup(b *testing.B, maxPerDomain int) (*Deliverer, *smtpsink.Sink, []byte) {
	sinks, port := startSinks(b, smtpsink.Options{TLS: true, Discard: true}, "127.0.0.8")
	dnss := dnstest.Start(b, "bench.test. 300 IN MX 10 mx.bench.test.\nmx.bench.test. 300 IN A 127.0.0.8\n")
	cfg := testConfig(dnss.Addr, port)
	cfg.MaxPerDomain = maxPerDomain
	cfg.MaxIdle = maxPerDomain
	cfg.MaxMessagesPerConn = 0
	d, err := New(cfg, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(d.Close)
	body := strings.Repeat("This is a line of a password reset message, padded to size.\r\n", 64)
	data := []byte("From: a@sender.test\r\nTo: u@bench.test\r\nSubject: Reset your password\r\n\r\n" + body)
	return d, sinks[0], data
}

// BenchmarkDeliverPooled measures one message at a time over a reused TLS
// connection: the latency part of the accept-to-delivered budget.
func BenchmarkDeliverPooled(b *testing.B) {
	d, sink, data := benchSetup(b, 1)
	ctx := context.Background()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		r := d.Deliver(ctx, "s@sender.test", []string{"u@bench.test"}, data)
		if !r[0].Delivered || r[0].TLS == "none" {
			b.Fatal(r[0])
		}
	}
	b.StopTimer()
	if sink.Conns() != 1 {
		b.Fatalf("%d connections for a pooled run", sink.Conns())
	}
}

// BenchmarkDeliverPooledParallel measures throughput with ten connections to
// one domain, the default max_per_domain.
func BenchmarkDeliverPooledParallel(b *testing.B) {
	d, _, data := benchSetup(b, 10)
	var failed atomic.Int64
	b.SetBytes(int64(len(data)))
	b.SetParallelism(5) // 10 goroutines on 2 cores
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := d.Deliver(context.Background(), "s@sender.test", []string{"u@bench.test"}, data)
			if !r[0].Delivered {
				failed.Add(1)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
	if failed.Load() > 0 {
		b.Fatalf("%d deliveries failed", failed.Load())
	}
}

// BenchmarkDeliverNewConnection is the cost without reuse (connect, EHLO,
// STARTTLS, EHLO, transaction), for comparison.
func BenchmarkDeliverNewConnection(b *testing.B) {
	d, _, data := benchSetup(b, 1)
	d.pool.maxIdle = 0
	for b.Loop() {
		r := d.Deliver(context.Background(), "s@sender.test", []string{"u@bench.test"}, data)
		if !r[0].Delivered {
			b.Fatal(r[0])
		}
	}
}
