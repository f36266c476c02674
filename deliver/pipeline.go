package deliver

import (
	"bufio"
	"errors"
	"fmt"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// RFC 2920 PIPELINING: MAIL FROM, every RCPT TO and DATA go out in one write
// (one TLS record) and their replies are read after, instead of a round trip
// for each. go-smtp's client waits for each reply, so the transaction is
// written here, on the connection go-smtp was handed; go-smtp still says
// EHLO, RSET and QUIT, which is safe because a server sends nothing between
// transactions: neither reader holds bytes the other needs.

// pipe is the connection's own reader and writer for pipelined transactions,
// made on first use.
type pipe struct {
	r        *textproto.Reader
	w        *bufio.Writer
	lastText string // text of the last positive reply
}

func (cn *conn) pipe() *pipe {
	if cn.p == nil {
		cn.p = &pipe{r: textproto.NewReader(bufio.NewReader(cn.wire)), w: bufio.NewWriterSize(cn.wire, 8<<10)}
	}
	return cn.p
}

// reply reads one reply: nil for 2xx and 3xx (with its text kept in
// lastText), an *smtp.SMTPError otherwise, or the I/O or protocol error
// that prevented reading it.
func (p *pipe) reply() (*smtp.SMTPError, error) {
	code, msg, err := p.r.ReadResponse(0)
	if err != nil {
		return nil, err
	}
	if code >= 200 && code < 400 {
		p.lastText = msg
		return nil, nil
	}
	se := &smtp.SMTPError{Code: code, Message: msg}
	if ec, rest, ok := splitEnhanced(msg); ok {
		se.EnhancedCode, se.Message = ec, rest
	}
	return se, nil
}

// mailParams are the MAIL FROM parameters go-smtp would send.
func mailParams(cn *conn, opts *smtp.MailOptions) string {
	var b strings.Builder
	if opts.Size > 0 {
		if ok, _ := cn.c.Extension("SIZE"); ok {
			fmt.Fprintf(&b, " SIZE=%d", opts.Size)
		}
	}
	if opts.UTF8 {
		b.WriteString(" SMTPUTF8")
	}
	if ok, _ := cn.c.Extension("8BITMIME"); ok {
		b.WriteString(" BODY=8BITMIME")
	}
	return b.String()
}

// transactPipelined is transact's MAIL–RCPT–DATA for a server that offers
// PIPELINING, with the same results and the same reuse rules.
func (d *Deliverer) transactPipelined(cn *conn, from string, opts *smtp.MailOptions, rcpts, wire []string, todo []int, data []byte,
	results []Result, base Result, cnErr func(stage, enhanced string, err error) *attemptError) (*attemptError, bool) {
	// A CR or LF would end the command early and start one of its own:
	// a local error, never a server's verdict (go-smtp refuses the same).
	if strings.ContainsAny(from, "\r\n") || anyLineBreak(wire, todo) {
		return cnErr("mail", "4.4.2", errors.New("smtp: a line must not contain CR or LF")), true
	}
	p := cn.pipe()
	cn.raw.SetDeadline(time.Now().Add(d.cfg.CommandTimeout))
	defer cn.raw.SetDeadline(time.Time{})
	fmt.Fprintf(p.w, "MAIL FROM:<%s>%s\r\n", from, mailParams(cn, opts))
	for _, i := range todo {
		fmt.Fprintf(p.w, "RCPT TO:<%s>\r\n", wire[i])
	}
	p.w.WriteString("DATA\r\n")
	if err := p.w.Flush(); err != nil {
		return cnErr("mail", "4.4.2", err), false
	}
	// From here the server has a transaction open or refused: every reply
	// must be read before the connection can be used again.
	cn.dirty = true
	mailErr, err := p.reply()
	if err != nil {
		return cnErr("mail", "4.4.2", err), false
	}
	if mailErr != nil && mailErr.Code == 421 {
		// The server is closing: the other replies will not come.
		return cnErr("mail", "4.4.2", mailErr), false
	}
	var accepted []int
	var closing *attemptError
	rcptErrs := make(map[int]*smtp.SMTPError)
	for _, i := range todo {
		se, err := p.reply()
		if err != nil {
			return cnErr("rcpt", "4.4.2", err), false
		}
		if se == nil {
			accepted = append(accepted, i)
			continue
		}
		if se.Code == 421 && closing == nil {
			closing = cnErr("rcpt", "4.4.2", se)
		}
		rcptErrs[i] = se
	}
	dataErr, err := p.reply()
	if err != nil {
		return cnErr("data", "4.4.2", err), false
	}
	if mailErr != nil {
		if dataErr == nil {
			// A server that takes DATA after refusing MAIL: nothing sane
			// can follow on this connection.
			return cnErr("mail", "4.4.2", mailErr), false
		}
		if mailErr.Code/100 == 5 && mailErr.Code != 421 {
			// The sender is refused: the same on every MX, so final.
			for _, i := range todo {
				results[i] = replyResult(base, rcpts[i], mailErr)
			}
			cn.dirty = false
			return nil, true
		}
		return cnErr("mail", "4.4.2", mailErr), mailErr.Code != 421
	}
	if closing != nil {
		return closing, false
	}
	for i, se := range rcptErrs {
		results[i] = replyResult(base, rcpts[i], se)
		if se.Code == 552 {
			// RFC 5321 4.5.3.1.10: 552 to RCPT is temporary, as 452.
			r := &results[i]
			r.Permanent, r.Code = false, 452
			if strings.HasPrefix(r.Enhanced, "5.") {
				r.Enhanced = "4" + r.Enhanced[1:]
			}
		}
	}
	if len(accepted) == 0 {
		if dataErr == nil {
			// 354 with no recipient (RFC 2920 3.1 forbids it): ending the
			// message empty could deliver it to nobody or to anybody.
			return nil, false
		}
		return nil, true // the transaction stays open: RSET before the next one
	}
	if dataErr != nil {
		if dataErr.Code == 421 {
			return cnErr("data", "4.4.2", dataErr), false
		}
		for _, i := range accepted {
			results[i] = replyResult(base, rcpts[i], dataErr)
		}
		return nil, true
	}
	cn.raw.SetDeadline(time.Now().Add(d.cfg.DataTimeout))
	dw := textproto.NewWriter(p.w).DotWriter()
	if _, err := dw.Write(data); err != nil {
		lost(base, rcpts, accepted, results, err)
		return nil, false
	}
	if err := dw.Close(); err != nil {
		lost(base, rcpts, accepted, results, err)
		return nil, false
	}
	se, err := p.reply()
	if err != nil {
		lost(base, rcpts, accepted, results, err)
		return nil, false
	}
	cn.dirty = false
	if se != nil {
		for _, i := range accepted {
			results[i] = replyResult(base, rcpts[i], se)
		}
		return nil, se.Code != 421
	}
	cn.msgs++
	ok := base
	ok.Delivered, ok.Code, ok.Text = true, 250, p.lastText
	if code, rest, found := splitEnhanced(p.lastText); found {
		ok.Enhanced = fmt.Sprintf("%d.%d.%d", code[0], code[1], code[2])
		ok.Text = rest
	}
	for _, i := range accepted {
		ok.Rcpt = rcpts[i]
		results[i] = ok
	}
	return nil, true
}

func anyLineBreak(wire []string, todo []int) bool {
	for _, i := range todo {
		if strings.ContainsAny(wire[i], "\r\n") {
			return true
		}
	}
	return false
}
