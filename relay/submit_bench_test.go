package relay

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

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

// BenchmarkDoor isolates the door's cost: one plain connection to a go-smtp
// server with a session that only reads the message, with and without a door
// in between, sending 4 KB resets one after another.
func BenchmarkDoor(b *testing.B) {
	for _, withDoor := range []bool{false, true} {
		name := "plain"
		if withDoor {
			name = "door"
		}
		b.Run(name, func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var ln net.Listener = l
			if withDoor {
				ln = &doorListener{Listener: l, cfg: newDoorConfig(nil, "bench.test", false, time.Minute, zerolog.Nop())}
			}
			srv := newSMTPServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return discardSession{}, nil }), "bench.test", zerolog.Nop())
			if !withDoor {
				srv.MaxLineLength = 2000
			}
			go srv.Serve(ln)
			defer srv.Close()
			c, err := smtp.Dial(l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := resetMsg("jane@dest.test", "door")
			msg = append(msg, bytes.Repeat([]byte("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n"), 60)...)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := send(c, "noreply@example.com", []string{"jane@dest.test"}, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type doorListener struct {
	net.Listener
	cfg *doorConfig
}

func (l *doorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newDoor(c, l.cfg), nil
}

type discardSession struct{}

func (discardSession) Mail(string, *smtp.MailOptions) error { return nil }
func (discardSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (discardSession) Reset()                               {}
func (discardSession) Logout() error                        { return nil }
func (discardSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
