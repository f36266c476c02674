package smtpsink

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestSinkReceives(t *testing.T) {
	s := Start(t, Options{Addr: "127.0.0.2:0", TLS: true, Rcpt: func(rcpt string) *smtp.SMTPError {
		if strings.HasPrefix(rcpt, "bad") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}})
	c, err := smtp.DialStartTLS(s.Addr, &tls.Config{RootCAs: s.CertPool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@x.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("good@y.test", nil); err != nil {
		t.Fatal(err)
	}
	var se *smtp.SMTPError
	if err := c.Rcpt("bad@y.test", nil); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("rcpt bad: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: hi\r\n\r\nbody\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	msgs := s.Wait(1, 5*time.Second)
	if len(msgs) != 1 || !msgs[0].TLS || msgs[0].From != "a@x.test" || len(msgs[0].To) != 1 || msgs[0].To[0] != "good@y.test" {
		t.Fatalf("messages = %+v", msgs)
	}
	if !strings.Contains(string(msgs[0].Data), "body") {
		t.Fatalf("data = %q", msgs[0].Data)
	}
	if s.Conns() != 1 || s.MaxConcurrent() != 1 {
		t.Fatalf("conns %d, max concurrent %d", s.Conns(), s.MaxConcurrent())
	}

	s.SetData(func(string, []string, []byte) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "rejected"}
	})
	c.Mail("a@x.test", nil)
	c.Rcpt("good@y.test", nil)
	w, _ = c.Data()
	w.Write([]byte("x\r\n"))
	if err := w.Close(); !errors.As(err, &se) || se.Code != 554 {
		t.Fatalf("data rejected: %v", err)
	}
	if s.Count() != 1 {
		t.Fatalf("count = %d after a rejected message", s.Count())
	}
}

func TestSinkRefusesNonLoopback(t *testing.T) {
	if _, err := New(Options{Addr: "0.0.0.0:0"}); err == nil {
		t.Fatal("listening on 0.0.0.0 was allowed")
	}
}

func TestSinkDropMidData(t *testing.T) {
	s := Start(t, Options{DropMidData: true})
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Mail("a@x.test", nil)
	c.Rcpt("b@y.test", nil)
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(strings.Repeat("line of text\r\n", 100)))
	if err := w.Close(); err == nil {
		t.Fatal("no error after the sink dropped the connection")
	}
	if s.Count() != 0 {
		t.Fatal("a dropped message was kept")
	}
}
