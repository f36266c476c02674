package relay

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/latchkey/latchkey/testutil/smtpsink"
)

// BenchmarkSubmit measures the submission path as Salesforce drives it: four
// connections (STARTTLS + AUTH once each) submitting resets one after
// another, each answered only after its durable commit. It is the number to
// compare before and after a change to the listener. Run with e.g.
//
//	go test -run='^$' -bench=Submit -benchtime=2000x -count=5 ./relay/
func BenchmarkSubmit(b *testing.B) {
	e := newEnv(b, envOpts{quiet: true, sink: smtpsink.Options{Discard: true}})
	const conns = 4
	clients := make(chan *smtp.Client, conns)
	for i := 0; i < conns; i++ {
		clients <- e.client("PLAIN")
	}
	var n atomic.Int64
	b.SetParallelism(2) // 2×GOMAXPROCS goroutines, one per connection on this 2-core machine
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := <-clients
		defer func() { clients <- c }()
		for pb.Next() {
			i := n.Add(1)
			to := fmt.Sprintf("user%d@dest.test", i)
			if _, err := send(c, "noreply@example.com", []string{to}, resetMsg(to, fmt.Sprintf("bench%d", i))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}
