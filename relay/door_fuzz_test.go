package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"
)

// recConn records what go-smtp read through the door.
type recConn struct {
	*door
	mu   sync.Mutex
	got  bytes.Buffer
	errs []string
	last int // the scan seq of the last message, to see each gets its own
	done chan struct{}
	once sync.Once
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.door.Read(p)
	c.mu.Lock()
	c.got.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.door.Close()
}

func (c *recConn) fail(f string, a ...any) {
	c.mu.Lock()
	c.errs = append(c.errs, fmt.Sprintf(f, a...))
	c.mu.Unlock()
}

type recListener struct {
	net.Listener
	cfg   *doorConfig
	conns chan *recConn
}

func (l *recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recConn{door: newDoor(c, l.cfg), done: make(chan struct{})}
	l.conns <- rc
	return rc, nil
}

// fuzzSession takes any envelope and checks each message against what the
// door saw of it.
type fuzzSession struct{ c *recConn }

func (s *fuzzSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *fuzzSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *fuzzSession) Reset()                               {}
func (s *fuzzSession) Logout() error                        { return nil }
func (s *fuzzSession) Data(r io.Reader) error {
	content, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	scan := s.c.door.Scan()
	if scan.truncated {
		return errConnLost
	}
	if scan.seq == s.c.last {
		s.c.fail("message with content %q has the previous message's scan", content)
	}
	s.c.last = scan.seq
	if scan.clean() && !checkLineEndings(content) {
		s.c.fail("go-smtp passed on a bare CR/LF/NUL the door did not see: %q", content)
	}
	if scan.bdat && scan.clean() && (bytes.HasPrefix(content, []byte(".\r\n")) || bytes.Contains(content, []byte("\r\n.\r\n"))) {
		s.c.fail("BDAT content with a lone \".\" line the door did not see: %q", content)
	}
	return nil
}

// FuzzDoor drives a door with go-smtp behind it, over loopback, with any
// client bytes. It checks that the door hands go-smtp the client's bytes
// unchanged and in order (a prefix: go-smtp may stop reading), never hangs,
// never lets go-smtp's own replies out, and that every message go-smtp
// passes on carries a scan of its own that saw whatever bare CR, bare LF,
// NUL or lone "." line it holds. Run with
//
//	go test -run='^$' -fuzz=FuzzDoor -fuzztime=60s ./relay/
func FuzzDoor(f *testing.F) {
	for _, s := range []string{
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\rMAIL FROM:<e@f>\r\n.\r\nNOOP\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\r\ny\r\n.\r\nRSET\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 8\r\nx\r\n.\r\nyBDAT 3 LAST\r\nz\r\nNOOP\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT x\r\nBDAT 0 LAST\r\nDATA\r\n..\r\n.\r\n",
		"EHLO a\r\nAUTH PLAIN\r\nDATA\r\n*\r\nMAIL FROM:<a@b>\r\n",
		"HELO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\r\n\n.\n\r\r\n.\r\n",
	} {
		f.Add([]byte(s))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	rl := &recListener{Listener: l, cfg: newDoorConfig(nil, "fuzz.test", false, 5*time.Second, zerolog.Nop()),
		conns: make(chan *recConn, 1)}
	srv := newSMTPServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &fuzzSession{c: c.Conn().(*recConn)}, nil
	}), "fuzz.test", zerolog.Nop())
	srv.MaxMessageBytes = 1 << 16
	srv.ReadTimeout = 5 * time.Second
	srv.WriteTimeout = 5 * time.Second
	go srv.Serve(rl)
	f.Cleanup(func() { srv.Close() })

	f.Fuzz(func(t *testing.T, in []byte) {
		if bytes.Contains(bytes.ToUpper(in), []byte("STARTTLS")) {
			t.Skip("the door answers STARTTLS itself; its bytes are not handed over")
		}
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rc := <-rl.conns
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(in)
			c.(*net.TCPConn).CloseWrite()
		}()
		out, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("no end to the session: the door or go-smtp hangs on %q", in)
		}
		select {
		case <-rc.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("the server did not close the connection for %q", in)
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for _, e := range rc.errs {
			t.Error(e)
		}
		if got := rc.got.Bytes(); !bytes.HasPrefix(in, got) {
			t.Errorf("go-smtp read %q\nfrom the client's %q", got, in)
		}
		for _, line := range strings.SplitAfter(string(out), "\n") {
			if line == "" {
				continue
			}
			if len(line) < 5 || line[0] < '2' || line[0] > '5' || !strings.HasSuffix(line, "\r\n") {
				t.Errorf("reply line %q", line)
			}
			for _, joke := range []string{"Roger", "I'll make sure", "successfully done nothing"} {
				if strings.Contains(line, joke) {
					t.Errorf("go-smtp's reply got out: %q", line)
				}
			}
		}
	})
}
