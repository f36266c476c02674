package main

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// sendOptions configure the load generator.
type sendOptions struct {
	addr      string
	user      string
	pass      string
	startTLS  bool
	conns     int
	rate      float64 // messages per second; 0: closed loop
	n         int     // messages in all; 0: until duration
	duration  time.Duration
	size      int
	bulkShare float64 // share of bulk messages in the mix
	to        string  // recipient pattern, "{n}" replaced by the sequence number
	from      string
	runID     string
	// seqBase is added to every sequence number, so that two phases of
	// one run never share an X-Load-ID.
	seqBase int64
}

// job is one message to send; due is its scheduled send time.
type job struct {
	seq int64
	due time.Time
}

// sender runs the load and collects submission latencies.
type sender struct {
	o        sendOptions
	mu       sync.Mutex
	lat      []time.Duration
	ok, fail int
	firstErr string
}

// runSend sends the load and returns what it measured, and the time the
// first message was scheduled (the start of the end-to-end measurement).
func runSend(o sendOptions) (SendReport, time.Time) {
	s := &sender{o: o}
	jobs := make(chan job, 1024)
	start := time.Now()
	var lag time.Duration
	go func() {
		defer close(jobs)
		for i := int64(0); ; i++ {
			if o.n > 0 && i >= int64(o.n) {
				return
			}
			var due time.Time
			if o.rate > 0 {
				// Open loop: the i-th message is due at a fixed time whatever
				// happened to earlier ones, and latency is measured from that
				// time, so a stalled relay cannot hide its stall (coordinated
				// omission).
				due = start.Add(time.Duration(float64(i) / o.rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				} else {
					lag = -d
				}
			} else {
				due = time.Now()
			}
			if o.duration > 0 && due.Sub(start) >= o.duration {
				return
			}
			jobs <- job{seq: o.seqBase + i, due: due}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < o.conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(jobs)
		}()
	}
	wg.Wait()
	el := time.Since(start)
	r := SendReport{Attempted: s.ok + s.fail, Accepted: s.ok, Failed: s.fail, FirstErr: s.firstErr,
		Seconds: el.Seconds(), Submit: summarize(s.lat), LagMs: ms(lag)}
	if el > 0 {
		r.MsgPerSec = float64(s.ok) / el.Seconds()
	}
	return r, start
}

// worker keeps one connection open and sends jobs over it, reconnecting
// after an error.
func (s *sender) worker(jobs <-chan job) {
	var c *smtp.Client
	defer func() {
		if c != nil {
			c.Quit()
		}
	}()
	for j := range jobs {
		if c == nil {
			var err error
			if c, err = s.dial(); err != nil {
				s.record(j, err)
				// Do not spin on a relay that is down.
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		if j.due.IsZero() || s.o.rate == 0 {
			j.due = time.Now()
		}
		err := s.sendOne(c, j)
		s.record(j, err)
		if err != nil {
			c.Close()
			c = nil
		}
	}
}

func (s *sender) dial() (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", s.o.addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	var c *smtp.Client
	if s.o.startTLS {
		// The trial certificate is self-signed: this tool measures, it does
		// not authenticate the server.
		c, err = smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true})
	} else {
		c = smtp.NewClient(conn)
		err = c.Hello("load.example.com")
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("starttls: %w", err)
	}
	c.CommandTimeout, c.SubmissionTimeout = time.Minute, time.Minute
	if s.o.user != "" {
		if err := c.Auth(sasl.NewPlainClient("", s.o.user, s.o.pass)); err != nil {
			c.Close()
			return nil, fmt.Errorf("auth: %w", err)
		}
	}
	return c, nil
}

func (s *sender) sendOne(c *smtp.Client, j job) error {
	class := "reset"
	if s.o.bulkShare > 0 && rand.Float64() < s.o.bulkShare {
		class = "bulk"
	}
	to := strings.ReplaceAll(s.o.to, "{n}", fmt.Sprint(j.seq))
	msg := buildMessage(msgSpec{from: s.o.from, to: to, class: class, seq: j.seq, sent: j.due, size: s.o.size, runID: s.o.runID})
	if err := c.Mail(s.o.from, nil); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		c.Reset()
		return fmt.Errorf("RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		c.Reset()
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("DATA write: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return nil
}

func (s *sender) record(j job, err error) {
	d := time.Since(j.due)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.fail++
		if s.firstErr == "" {
			s.firstErr = err.Error()
		}
		return
	}
	s.ok++
	s.lat = append(s.lat, d)
}
