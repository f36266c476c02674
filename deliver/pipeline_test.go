package deliver

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/testutil/dnstest"
)

// scriptMX is a raw SMTP server on loopback that offers PIPELINING and
// records, for each transaction, the commands that had arrived before it
// answered the first of them: with pipelining, MAIL, every RCPT and DATA.
type scriptMX struct {
	addr   string
	groups chan []string
	rcpt   func(string) string // reply to RCPT TO:<addr>
}

func startScriptMX(t *testing.T, rcpt func(string) string) *scriptMX {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.9:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	m := &scriptMX{addr: l.Addr().String(), groups: make(chan []string, 10), rcpt: rcpt}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go m.serve(c)
		}
	}()
	return m
}

func (m *scriptMX) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	w := func(s string) { c.Write([]byte(s)) }
	w("220 mx.pipe.test ESMTP\r\n")
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			w("250-mx.pipe.test\r\n250-PIPELINING\r\n250 SIZE 10000000\r\n")
		case strings.HasPrefix(cmd, "MAIL"):
			// Collect what arrives without waiting for an answer: a
			// client that pipelines has sent RCPT and DATA already.
			group := []string{cmd}
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			for !strings.HasPrefix(group[len(group)-1], "DATA") {
				l, err := r.ReadString('\n')
				if err != nil {
					break
				}
				group = append(group, strings.ToUpper(strings.TrimSpace(l)))
			}
			m.groups <- group
			w("250 2.1.0 Ok\r\n")
			accepted := 0
			for _, g := range group[1:] {
				if strings.HasPrefix(g, "RCPT") {
					addr := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(g, "RCPT TO:<"), ">"))
					reply := m.rcpt(addr)
					if strings.HasPrefix(reply, "250") {
						accepted++
					}
					w(reply + "\r\n")
				}
			}
			if len(group) == 1 || !strings.HasPrefix(group[len(group)-1], "DATA") {
				return // not pipelined: the client waits for the MAIL reply
			}
			if accepted == 0 {
				w("554 5.5.1 No valid recipients\r\n")
				continue
			}
			w("354 End data with <CR><LF>.<CR><LF>\r\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			w("250 2.0.0 Ok: queued as PIPE1\r\n")
		case strings.HasPrefix(cmd, "RSET"):
			w("250 2.0.0 Ok\r\n")
		case strings.HasPrefix(cmd, "QUIT"):
			w("221 2.0.0 Bye\r\n")
			return
		default:
			w("502 5.5.2 Error: command not recognized\r\n")
		}
	}
}

func pipeDeliverer(t *testing.T, m *scriptMX, pipelining bool) *Deliverer {
	t.Helper()
	host, port, _ := net.SplitHostPort(m.addr)
	dnss := dnstest.Start(t, "pipe.test. 300 IN MX 10 mx.pipe.test.\nmx.pipe.test. 300 IN A "+host+"\n")
	var p int
	for _, c := range port {
		p = p*10 + int(c-'0')
	}
	cfg := testConfig(dnss.Addr, p)
	cfg.Pipelining = pipelining
	return newDeliverer(t, cfg)
}

// MAIL, every RCPT and DATA go out before the first reply is read; the
// replies are matched to the recipients in order, and the connection stays
// usable for the next message.
func TestPipelinedTransaction(t *testing.T) {
	m := startScriptMX(t, func(addr string) string {
		if strings.HasPrefix(addr, "gone@") {
			return "550 5.1.1 <" + addr + ">: Recipient address rejected: User unknown"
		}
		return "250 2.1.5 Ok"
	})
	d := pipeDeliverer(t, m, true)
	for round := 0; round < 2; round++ {
		res := d.Deliver(t.Context(), "s@sender.test", []string{"a@pipe.test", "gone@pipe.test", "b@pipe.test"}, []byte(msg))
		group := <-m.groups
		if len(group) != 5 || !strings.HasPrefix(group[0], "MAIL FROM:<S@SENDER.TEST>") || !strings.HasPrefix(group[4], "DATA") {
			t.Fatalf("round %d: commands before the first reply: %q, want MAIL, 3 RCPT, DATA", round, group)
		}
		wantDelivered(t, res[0])
		wantPermanent(t, res[1], 550, "5.1.1")
		wantDelivered(t, res[2])
		if res[0].Enhanced != "2.0.0" || !strings.Contains(res[0].Text, "queued as PIPE1") {
			t.Errorf("round %d: delivered %+v", round, res[0])
		}
	}

	// No recipient accepted: DATA is refused, nothing is sent, and the
	// next message still goes out on a clean transaction.
	res := d.Deliver(t.Context(), "s@sender.test", []string{"gone@pipe.test"}, []byte(msg))
	<-m.groups
	wantPermanent(t, res[0], 550, "5.1.1")
	res = d.Deliver(t.Context(), "s@sender.test", []string{"c@pipe.test"}, []byte(msg))
	<-m.groups
	wantDelivered(t, res[0])
}

// With pipelining off the client waits for each reply (go-smtp's path).
func TestPipeliningOff(t *testing.T) {
	m := startScriptMX(t, func(string) string { return "250 2.1.5 Ok" })
	d := pipeDeliverer(t, m, false)
	res := d.Deliver(t.Context(), "s@sender.test", []string{"a@pipe.test"}, []byte(msg))
	group := <-m.groups
	if len(group) != 1 {
		t.Errorf("commands before the MAIL reply with pipelining off: %q", group)
	}
	wantTemporary(t, res[0]) // the script server hangs up on a client that waits
}
