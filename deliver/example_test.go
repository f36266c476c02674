package deliver_test

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/latchkey/latchkey/deliver"
	"github.com/latchkey/latchkey/testutil/dnstest"
	"github.com/latchkey/latchkey/testutil/smtpsink"
	"github.com/rs/zerolog"
)

func Example() {
	// A receiving MX on loopback and a DNS server that points example.test at it.
	sink, err := smtpsink.New(smtpsink.Options{Addr: "127.0.0.10:0", TLS: true})
	if err != nil {
		panic(err)
	}
	defer sink.Close()
	dns, err := dnstest.New("example.test. 300 IN MX 10 mx.example.test.\nmx.example.test. 300 IN A 127.0.0.10\n")
	if err != nil {
		panic(err)
	}
	defer dns.Close()
	_, port, _ := net.SplitHostPort(sink.Addr)

	cfg := deliver.DefaultConfig()
	cfg.Hostname = "relay.latchkey.test"
	cfg.Resolver = dns.Addr
	cfg.Port, _ = strconv.Atoi(port)
	d, err := deliver.New(cfg, zerolog.Nop())
	if err != nil {
		panic(err)
	}
	defer d.Close()

	msg := []byte("From: no-reply@sender.test\r\nTo: user@example.test\r\nSubject: Reset\r\n\r\nHello.\r\n")
	for _, r := range d.Deliver(context.Background(), "bounces@sender.test", []string{"user@example.test"}, msg) {
		fmt.Println(r.Delivered, r.Permanent, r.Code, r.Host, r.TLS)
	}
	// Output: true false 250 mx.example.test TLS1.3
}
