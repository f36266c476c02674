package relay

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// door is the connection go-smtp serves on both listeners. It sits between
// the client's socket and go-smtp and does three things go-smtp cannot be
// told to do:
//
//   - It sees the raw bytes of DATA and BDAT, before go-smtp's DATA reader
//     removes dot-stuffing. That reader drops a "." + CR at the start of a
//     line when no LF follows (".\rX" reaches the session as "X"), so a bare
//     CR there cannot be seen from the session. The door keeps, per message,
//     what the raw bytes held (bare CR, bare LF, NUL, a lone "." line inside
//     BDAT) for the session to judge (doorScan).
//   - It answers STARTTLS itself, so that it stays above TLS and keeps seeing
//     plain text: a wrapper on the listener would see only ciphertext after
//     STARTTLS. go-smtp is given no TLS configuration, so it can never start
//     TLS under the door.
//   - It rewrites go-smtp's hard-coded replies ("Roger, accepting mail
//     from", "I'll make sure <x> gets this", …) into plain ones, which
//     Salesforce shows in its email log, and fixes the EHLO capability list
//     for the TLS state only the door knows.
//
// To know which client bytes are commands and which are message content, the
// door hands go-smtp one unit at a time (a command line, a SASL line, the
// data up to its end marker, a BDAT chunk) and, after DATA and AUTH, looks at
// go-smtp's reply before the next unit: go-smtp always answers a command
// before it reads again, so the door is in step with it without parsing
// ahead. Pipelined commands still work; they are handed over a line per read.
//
// Cost: one struct and an 8 KiB buffer per connection, one extra copy of
// each byte read, and a scan of each reply line written; no allocation per
// message (BenchmarkDoor, BenchmarkSubmit).
type door struct {
	net.Conn // the accepted TCP connection (a trackedConn): addresses, deadlines before TLS

	cfg *doorConfig

	// mu guards tr, tlsState and scan, which other goroutines read (Close,
	// the session's Data, which for BDAT runs in a goroutine of its own).
	mu       sync.Mutex
	tr       net.Conn // the TCP connection, or the TLS connection over it
	tlsState *tls.ConnectionState
	scan     doorScan // the current or last message's raw content

	// Read side: go-smtp's connection goroutine only.
	buf   []byte // buf[r:w] read from the client, not yet handed over
	r, w  int
	mode  doorMode
	pass  int  // bytes of the current unit still to hand over
	seen  int  // replies written when the last unit was handed over
	chunk bool // the unit being passed is a BDAT chunk (scanned as content)
	last  bool // that chunk is the LAST one
	bdat  bool // a BDAT message is open (its chunks share one scan)
	// pendChunk: a BDAT line is being handed over and its chunk of
	// pendSize bytes follows.
	pendChunk bool
	pendSize  int
	pendLast  bool
	// afterChunk: a chunk was handed over; go-smtp's reply to it says
	// whether its message is still open.
	afterChunk bool
	inject     []byte // bytes handed over before any client byte (the RSET after STARTTLS)
	dead       bool   // a failed TLS handshake or an overlong line: nothing more is read or written
	cs         contentState

	// Write side: go-smtp's connection goroutine only.
	wpart   []byte // a reply line written in pieces, until its LF
	replies int    // reply lines with a space after the code (the last of a reply)
	code    int    // the code of the last such line
	swallow int    // replies to drop (the one to the injected RSET)
	ehlo    bool   // the reply being written answers EHLO or HELO
}

// doorConfig is what a listener's doors share.
type doorConfig struct {
	tls      *tls.Config // nil: STARTTLS not offered
	hostname string
	// authNeedsTLS refuses AUTH before STARTTLS (the submission listener)
	// and hides it from the EHLO reply until then.
	authNeedsTLS bool
	timeout      time.Duration // for the TLS handshake and the door's own replies
	log          zerolog.Logger

	greet []byte // "250-<hostname>\r\n", the first line of an EHLO reply
	helo  []byte // "250 <hostname>\r\n", the reply to HELO
}

func newDoorConfig(tlsConf *tls.Config, hostname string, authNeedsTLS bool, timeout time.Duration, log zerolog.Logger) *doorConfig {
	return &doorConfig{tls: tlsConf, hostname: hostname, authNeedsTLS: authNeedsTLS, timeout: timeout, log: log,
		greet: []byte("250-" + hostname + "\r\n"), helo: []byte("250 " + hostname + "\r\n")}
}

type doorMode uint8

const (
	modeCmd  doorMode = iota // a command line is next
	modeSASL                 // a SASL response line is next
	modeData                 // DATA content, up to go-smtp's end marker
)

// maxCommandLine bounds a command or SASL line (RFC 5321 4.5.3.1.4 allows
// 512 octets; AUTH responses and extensions need more). go-smtp's own line
// limit is off so that message lines of any length reach the session, which
// refuses those over 998 octets with a precise reply instead of the
// connection being cut.
const maxCommandLine = 4096

// doorScan is what the raw bytes of one message held. DATA content is seen
// dot-stuffed, as sent; BDAT content as sent.
type doorScan struct {
	seq     int  // counts messages on the connection, to tell a scan from the previous one
	bareCR  bool // a CR not followed by LF
	bareLF  bool // an LF not preceded by CR
	nul     bool
	dotCR   bool // DATA: a "." + CR at the start of a line with no LF after it, which go-smtp drops
	dotLine bool // BDAT: a line holding only "." (what ends DATA)
	bdat    bool
	// truncated: the connection ended inside the message. go-smtp takes a
	// BDAT chunk cut short by the end of the connection for a whole one
	// (its io.Copy sees io.EOF as success), so a LAST chunk cut short
	// would be passed on as a complete message.
	truncated bool
}

// clean reports whether nothing in the scan is a smuggling risk.
func (s doorScan) clean() bool {
	return !s.bareCR && !s.bareLF && !s.nul && !s.dotCR && !s.dotLine
}

// contentState carries the content scan over reads and chunks.
type contentState struct {
	prevCR bool // the last byte was a CR
	// dot is go-smtp's DATA reader state, mirrored so that the door ends the
	// data exactly where go-smtp does: 0 start of line, 1 "." at the start
	// of a line, 2 "." + CR, 3 CR, 4 inside a line. For BDAT it tracks a
	// lone "." line the same way.
	dot uint8
}

const (
	dsLine uint8 = iota
	dsDot
	dsDotCR
	dsCR
	dsData
)

func newDoor(c net.Conn, cfg *doorConfig) *door {
	return &door{Conn: c, tr: c, cfg: cfg, buf: make([]byte, 8192)}
}

// doorOf returns the door under an smtp.Conn's connection, or nil.
func doorOf(c net.Conn) *door {
	d, _ := c.(*door)
	return d
}

// TLS returns the state of the TLS session started with STARTTLS.
func (d *door) TLS() (tls.ConnectionState, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tlsState == nil {
		return tls.ConnectionState{}, false
	}
	return *d.tlsState, true
}

// Scan returns what the raw bytes of the last message held.
func (d *door) Scan() doorScan {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.scan
}

func (d *door) transport() net.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tr
}

func (d *door) Close() error                  { return d.transport().Close() }
func (d *door) SetDeadline(t time.Time) error { return d.transport().SetDeadline(t) }
func (d *door) SetReadDeadline(t time.Time) error {
	return d.transport().SetReadDeadline(t)
}
func (d *door) SetWriteDeadline(t time.Time) error {
	return d.transport().SetWriteDeadline(t)
}

// Read hands go-smtp the next bytes of the current unit.
func (d *door) Read(p []byte) (int, error) {
	if d.dead {
		return 0, io.EOF
	}
	for {
		if len(d.inject) > 0 {
			n := copy(p, d.inject)
			d.inject = d.inject[n:]
			return n, nil
		}
		if d.r < d.w {
			n, err := d.next(p)
			if n > 0 || err != nil || d.dead {
				if d.dead && err == nil {
					err = io.EOF
				}
				return n, err
			}
			if len(d.inject) > 0 {
				continue
			}
		}
		if err := d.fill(); err != nil {
			if d.pass > 0 && d.chunk || d.pendChunk || d.mode == modeData {
				d.mu.Lock()
				d.scan.truncated = true
				d.mu.Unlock()
			}
			return 0, err
		}
	}
}

// fill reads more from the client; it returns an error only when none came.
func (d *door) fill() error {
	if d.r > 0 {
		d.w = copy(d.buf, d.buf[d.r:d.w])
		d.r = 0
	}
	n, err := d.transport().Read(d.buf[d.w:])
	d.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// next hands over what can be handed over of buf[r:w] in the current mode;
// 0 and no error means more input is needed (or the door answered a line
// itself).
func (d *door) next(p []byte) (int, error) {
	avail := d.buf[d.r:d.w]
	if d.pass > 0 {
		n := min(d.pass, len(avail), len(p))
		if d.chunk {
			d.scanChunk(avail[:n])
		}
		copy(p, avail[:n])
		d.r += n
		if d.pass -= n; d.pass == 0 {
			d.endUnit()
		}
		return n, nil
	}
	if d.mode == modeCmd && d.replies != d.seen {
		// go-smtp answers each unit before it reads again, so its last
		// reply says what it reads now: data after 354, a SASL line
		// after 334, else a command.
		d.seen = d.replies
		switch d.code {
		case 354:
			d.startScan(false)
			d.mode = modeData
		case 334:
			d.mode = modeSASL
		}
	}
	if d.mode == modeData {
		n := min(len(avail), len(p))
		n, end := d.scanData(avail[:n])
		copy(p, avail[:n])
		d.r += n
		if end {
			d.mode = modeCmd
		}
		return n, nil
	}
	// A command or SASL line.
	i := bytes.IndexByte(avail, '\n')
	if i < 0 && len(avail) < maxCommandLine && d.w < len(d.buf) {
		return 0, nil
	}
	if i < 0 || i >= maxCommandLine {
		d.reply("500 5.5.2 Line too long; closing connection")
		d.dead = true
		return 0, nil
	}
	line := avail[:i+1]
	if d.mode == modeSASL {
		d.mode = modeCmd
		d.unit(len(line))
		return d.next(p)
	}
	return d.command(p, line)
}

// command classifies one command line as go-smtp's parseCmd does and hands
// it over, or answers it.
func (d *door) command(p, line []byte) (int, error) {
	verb, arg := parseVerb(line)
	d.ehlo = false
	if d.afterChunk {
		// go-smtp answers a chunk it took with 250; any other reply means
		// it dropped the message (or never had one: no RCPT yet).
		d.afterChunk = false
		if d.code != 250 {
			d.bdat = false
		}
	}
	switch verb {
	case "STARTTLS":
		d.r += len(line)
		return 0, d.startTLS()
	case "AUTH":
		if d.cfg.authNeedsTLS && d.tlsOff() {
			d.r += len(line)
			d.reply("523 5.7.10 TLS is required: send STARTTLS first")
			return 0, nil
		}
	case "BDAT":
		if size, last, ok := bdatArgs(string(arg)); ok {
			// go-smtp reads the chunk after a BDAT whose arguments
			// parse, whatever its reply (it discards a refused one).
			if !d.bdat {
				d.startScan(true)
			}
			d.unit(len(line))
			d.pendChunk, d.pendSize, d.pendLast = true, size, last
			return d.next(p)
		}
	case "RSET", "EHLO", "HELO":
		// go-smtp drops an open BDAT message on these. (It refuses MAIL
		// and DATA during one and keeps it open.)
		d.bdat = false
		d.ehlo = verb == "EHLO" || verb == "HELO"
	}
	d.unit(len(line))
	return d.next(p)
}

// unit starts handing over the next n bytes as one unit.
func (d *door) unit(n int) {
	d.pass, d.chunk = n, false
}

// endUnit runs when a unit has been handed over whole: after a BDAT line,
// its chunk follows.
func (d *door) endUnit() {
	if d.chunk {
		d.afterChunk = true
	}
	if d.chunk && d.last {
		d.bdat = false
		if d.cs.prevCR {
			// A CR that ends the message has no LF after it.
			d.merge(doorScan{bareCR: true})
		}
	}
	d.chunk = false
	if d.pendChunk {
		d.pendChunk = false
		d.pass, d.chunk, d.last = d.pendSize, true, d.pendLast
		if d.pass == 0 {
			d.endUnit()
		}
	}
}

func (d *door) startScan(bdat bool) {
	d.mu.Lock()
	d.scan = doorScan{seq: d.scan.seq + 1, bdat: bdat}
	d.mu.Unlock()
	d.bdat = bdat
	d.cs = contentState{}
}

// scanData scans DATA content as go-smtp's DATA reader will read it and
// returns how much of b belongs to the data (through the end marker) and
// whether the end was reached. The state machine is go-smtp's (data.go),
// including its quirks (after CR CR, or after "." + CR + CR, no new line
// starts), so that the door and go-smtp agree on where the data ends.
func (d *door) scanData(b []byte) (int, bool) {
	var s doorScan
	st := d.cs
	for i, c := range b {
		if st.prevCR && c != '\n' {
			s.bareCR = true
		}
		switch c {
		case '\n':
			if !st.prevCR {
				s.bareLF = true
			}
		case 0:
			s.nul = true
		}
		st.prevCR = c == '\r'
		switch st.dot {
		case dsLine:
			switch c {
			case '.':
				st.dot = dsDot
			case '\r':
				st.dot = dsCR
			default:
				st.dot = dsData
			}
		case dsDot:
			if c == '\r' {
				st.dot = dsDotCR
			} else {
				st.dot = dsData
			}
		case dsDotCR:
			if c == '\n' {
				d.cs = contentState{}
				d.merge(s)
				return i + 1, true
			}
			s.dotCR = true
			st.dot = dsData
		case dsCR:
			if c == '\n' {
				st.dot = dsLine
			} else {
				st.dot = dsData
			}
		case dsData:
			if c == '\r' {
				st.dot = dsCR
			}
		}
	}
	d.cs = st
	d.merge(s)
	return len(b), false
}

// scanChunk scans BDAT content, which go-smtp passes on as it is.
func (d *door) scanChunk(b []byte) {
	var s doorScan
	st := d.cs
	for _, c := range b {
		if st.prevCR && c != '\n' {
			s.bareCR = true
		}
		switch c {
		case '\n':
			if !st.prevCR {
				s.bareLF = true
			}
		case 0:
			s.nul = true
		}
		st.prevCR = c == '\r'
		switch {
		case c == '\n' && (st.dot == dsCR || st.dot == dsDotCR):
			if st.dot == dsDotCR {
				s.dotLine = true
			}
			st.dot = dsLine
		case c == '.' && st.dot == dsLine:
			st.dot = dsDot
		case c == '\r' && st.dot == dsDot:
			st.dot = dsDotCR
		case c == '\r':
			st.dot = dsCR
		default:
			st.dot = dsData
		}
	}
	d.cs = st
	d.merge(s)
}

func (d *door) merge(s doorScan) {
	if s.clean() {
		return
	}
	d.mu.Lock()
	d.scan.bareCR = d.scan.bareCR || s.bareCR
	d.scan.bareLF = d.scan.bareLF || s.bareLF
	d.scan.nul = d.scan.nul || s.nul
	d.scan.dotCR = d.scan.dotCR || s.dotCR
	d.scan.dotLine = d.scan.dotLine || s.dotLine
	d.mu.Unlock()
}

func (d *door) tlsOff() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tlsState == nil
}

// startTLS answers STARTTLS (RFC 3207).
func (d *door) startTLS() error {
	if d.cfg.tls == nil {
		d.reply("502 5.5.1 TLS not supported")
		return nil
	}
	if !d.tlsOff() {
		d.reply("502 5.5.1 Already running in TLS")
		return nil
	}
	if d.r < d.w {
		// Anything sent after STARTTLS before the handshake would be
		// taken as sent under TLS (CVE-2011-0411): RFC 3207 says discard.
		d.r = d.w
	}
	d.reply("220 2.0.0 Ready to start TLS")
	tc := tls.Server(d.Conn, d.cfg.tls)
	d.Conn.SetDeadline(time.Now().Add(d.cfg.timeout))
	if err := tc.Handshake(); err != nil {
		d.cfg.log.Info().Err(err).Str("client", d.Conn.RemoteAddr().String()).Msg("STARTTLS handshake failed")
		d.dead = true
		return io.EOF
	}
	d.Conn.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	d.mu.Lock()
	d.tr, d.tlsState = tc, &st
	d.mu.Unlock()
	// RFC 3207 4.2: the server discards what it knew from the client
	// before TLS. go-smtp did not see STARTTLS, so it is told RSET, whose
	// reply the client does not expect.
	d.inject = []byte("RSET\r\n")
	d.swallow++
	d.bdat = false
	return nil
}

// reply writes one of the door's own replies.
func (d *door) reply(line string) {
	tr := d.transport()
	tr.SetWriteDeadline(time.Now().Add(d.cfg.timeout))
	io.WriteString(tr, line+"\r\n")
}

// Write takes go-smtp's replies, a line or more at a time, and passes them
// on rewritten where they are go-smtp's own words.
func (d *door) Write(p []byte) (int, error) {
	if d.dead {
		return 0, net.ErrClosed
	}
	total := len(p)
	if len(d.wpart) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			d.wpart = append(d.wpart, p...)
			return total, nil
		}
		d.wpart = append(d.wpart, p[:i+1]...)
		p = p[i+1:]
		if err := d.writeLine(d.wpart); err != nil {
			return 0, err
		}
		d.wpart = d.wpart[:0]
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			d.wpart = append(d.wpart, p...)
			break
		}
		if err := d.writeLine(p[:i+1]); err != nil {
			return 0, err
		}
		p = p[i+1:]
	}
	return total, nil
}

// go-smtp's replies (conn.go, v0.26.0) and what is said instead.
var (
	smtpMailOK  = []byte("250 2.0.0 Roger, accepting mail from ")
	smtpRcptOK  = []byte("250 2.0.0 I'll make sure ")
	smtpNoop    = []byte("250 2.0.0 I have successfully done nothing")
	smtpRset    = []byte("250 2.0.0 Session reset")
	smtpData    = []byte("354 Go ahead. End your data with <CR><LF>.<CR><LF>")
	smtpHello   = []byte("250-Hello ")
	smtpHeloOK  = []byte("250 2.0.0 Hello ")
	smtpAuthCap = []byte("250-AUTH ")
	smtpChunk   = []byte("250-CHUNKING\r\n")
	smtpTooMany = []byte("500 5.5.1 Too many errors. Quiting now")

	replyMailOK   = []byte("250 2.1.0 Sender OK\r\n")
	replyRcptOK   = []byte("250 2.1.5 Recipient OK\r\n")
	replyOK       = []byte("250 2.0.0 OK\r\n")
	replyData     = []byte("354 End data with <CR><LF>.<CR><LF>\r\n")
	replyStartTLS = []byte("250-STARTTLS\r\n")
	replyTooMany  = []byte("500 5.5.1 Too many errors; closing connection\r\n")
)

func (d *door) writeLine(l []byte) error {
	final := len(l) >= 4 && l[3] == ' '
	if final {
		d.replies++
		d.code, _ = strconv.Atoi(string(l[:3]))
		if d.swallow > 0 {
			d.swallow--
			return nil
		}
	} else if d.swallow > 0 {
		return nil
	}
	tr := d.transport()
	var err error
	switch {
	case bytes.HasPrefix(l, smtpMailOK):
		_, err = tr.Write(replyMailOK)
	case bytes.HasPrefix(l, smtpRcptOK):
		_, err = tr.Write(replyRcptOK)
	case bytes.HasPrefix(l, smtpNoop), bytes.HasPrefix(l, smtpRset):
		_, err = tr.Write(replyOK)
	case bytes.HasPrefix(l, smtpData):
		_, err = tr.Write(replyData)
	case bytes.HasPrefix(l, smtpTooMany):
		_, err = tr.Write(replyTooMany)
	case d.ehlo && bytes.HasPrefix(l, smtpHello):
		// RFC 5321 4.1.1.1: the reply to EHLO starts with the server's
		// name, not the client's.
		_, err = tr.Write(d.cfg.greet)
	case d.ehlo && bytes.HasPrefix(l, smtpHeloOK):
		_, err = tr.Write(d.cfg.helo)
	case d.ehlo && d.cfg.authNeedsTLS && bytes.HasPrefix(l, smtpAuthCap) && d.tlsOff():
		// AUTH is offered once TLS is on.
	case d.ehlo && d.cfg.tls != nil && bytes.Equal(l, smtpChunk) && d.tlsOff():
		if _, err = tr.Write(l); err == nil {
			_, err = tr.Write(replyStartTLS)
		}
	default:
		_, err = tr.Write(l)
	}
	if final {
		d.ehlo = false
	}
	return err
}

// parseVerb returns the verb go-smtp's parseCmd finds in a command line
// (upper case; "" for none) and its argument, without allocating for the
// verbs the door cares about.
func parseVerb(line []byte) (string, []byte) {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) >= 8 && bytes.EqualFold(line[:8], []byte("STARTTLS")) {
		return "STARTTLS", nil
	}
	if len(line) < 4 || (len(line) > 4 && line[4] != ' ') {
		return "", nil
	}
	var arg []byte
	if len(line) > 5 {
		arg = bytes.TrimSpace(line[5:])
	}
	for _, v := range doorVerbs {
		if bytes.EqualFold(line[:4], []byte(v)) {
			return v, arg
		}
	}
	return "", arg
}

var doorVerbs = [...]string{"AUTH", "BDAT", "RSET", "EHLO", "HELO", "MAIL"}

// bdatArgs parses "BDAT size [LAST]" as go-smtp does (handleBdat): when it
// fails, go-smtp reads no chunk.
func bdatArgs(arg string) (int, bool, bool) {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 {
		return 0, false, false
	}
	last := false
	if len(f) == 2 {
		if !strings.EqualFold(f[1], "LAST") {
			return 0, false, false
		}
		last = true
	}
	n, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return 0, false, false
	}
	return int(n), last, true
}
