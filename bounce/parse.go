package bounce

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"
)

// MaxBytes is how much of a message Parse reads. Bounces that quote a huge
// original are cut; the report itself is always near the top.
const MaxBytes = 10 << 20

// Walking limits, so that a hostile message cannot make Parse do unbounded
// work.
const (
	maxDepth = 8
	maxParts = 200
	// maxRecipients bounds the recipients of one report: each costs a
	// classification, and no real bounce lists more.
	maxRecipients = 500
	// maxScan bounds the text read by patterns in a free-text bounce: the
	// report is at its top, and the patterns are not cheap.
	maxScan = 256 << 10
	// maxNest bounds how deep Parse looks into attached messages for a
	// wrapped bounce (a gateway's notice around a relay's bounce around
	// ...); maxInner and maxInnerMsgs bound the bytes and the number of
	// attached messages kept at each level, so nesting cannot multiply
	// the work of a hostile message beyond a small constant.
	maxNest      = 3
	maxInner     = 1 << 20
	maxInnerMsgs = 4
)

// ErrNotMessage is returned (wrapped) when the input has no parseable header.
var ErrNotMessage = errors.New("bounce: not a mail message")

// Report is what Parse found in one message.
type Report struct {
	// IsBounce is true when at least one recipient failed or was delayed.
	IsBounce bool
	// IsComplaint is true for an RFC 5965 feedback report.
	IsComplaint bool
	// IsAutoReply is true for an RFC 3834 automatic reply (vacation and the
	// like): not a failure, but the sender is told who replied.
	IsAutoReply bool
	// FeedbackType is the ARF Feedback-Type (abuse, fraud, opt-out, ...).
	FeedbackType string
	// Recipients are the recipients the report is about, in order.
	Recipients []Recipient
	// OriginalMessageID is the Message-ID of the message that bounced, if
	// quoted; OriginalEnvelopeID is the RFC 3461 ENVID.
	OriginalMessageID, OriginalEnvelopeID string
	// ReportingMTA is the MTA that wrote the report, without its type.
	ReportingMTA string
	// Format says how the report was read: "rfc3464", "arf", "autoreply" or
	// "text" (a free-text bounce, read by patterns).
	Format string
}

// Recipient is one recipient's outcome.
type Recipient struct {
	Recipient string // the final recipient address
	// Original is the DSN's Original-Recipient where it names another
	// mailbox than Recipient: the address the sender gave in RCPT TO
	// (the Final-Recipient may be where a forward sent it).
	Original  string
	Action    string // failed, delayed, delivered, relayed, expanded (lower case)
	Status    string // RFC 3463 status
	Permanent bool
	Hard      bool
	Reason    Reason
	RemoteMTA string // the remote host that answered, without its type
	// Diagnostic is the remote server's text (for DSNs the Diagnostic-Code
	// without its type), or the text of a free-text bounce about this
	// recipient.
	Diagnostic string
}

// parts is what the MIME walk collects.
type parts struct {
	top       message.Header
	reportTyp string
	status    [][]byte // message/delivery-status bodies
	feedback  [][]byte // message/feedback-report bodies
	texts     []string // human-readable parts, in order
	orig      *textproto.MIMEHeader
	inner     [][]byte // attached messages, which may be wrapped bounces
	raw       []byte
	n         int
	depth     int // nesting level of this message (0 for the one given to Parse)
	// guessed is set when the recipients were taken from the quoted
	// original's To for want of any named in the report.
	guessed bool
}

// Parse reads a message and reports whether it is a bounce, a complaint or
// neither, and about which recipients. A message that is none of these gives
// a Report with IsBounce false and no error. Broken MIME is read as far as it
// goes; an error is returned only when there is no message to speak of.
func Parse(r io.Reader) (*Report, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxBytes))
	if err != nil {
		return nil, fmt.Errorf("bounce: reading message: %w", err)
	}
	return parse(data, 0)
}

// parse parses one message; depth is how many attached messages deep it
// is.
func parse(data []byte, depth int) (*Report, error) {
	// An mbox separator line ("From sender date") is not a header.
	if bytes.HasPrefix(data, []byte("From ")) {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	ent, err := message.Read(bytes.NewReader(data))
	if ent == nil {
		if fixed := repairHeader(data); fixed != nil {
			data = fixed
			ent, err = message.Read(bytes.NewReader(data))
		}
	}
	if ent == nil {
		return nil, fmt.Errorf("%w: %w", ErrNotMessage, err)
	}
	p := &parts{top: ent.Header, raw: data, depth: depth}
	if _, params, err := ent.Header.ContentType(); err == nil {
		p.reportTyp = strings.ToLower(params["report-type"])
	}
	p.walk(ent, 0)
	if len(p.texts) == 0 && len(p.status) == 0 && len(p.feedback) == 0 {
		// The MIME structure gave nothing readable (a boundary lost to a
		// badly folded header, a malformed part header): the raw body is
		// still worth reading as text.
		if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
			p.texts = append(p.texts, string(data[i+2:]))
		}
	}
	rep := p.report()
	p.unwrap(rep)
	return rep, nil
}

// repairHeader drops the lines of a message's header that are not fields
// (a stray line of text, a quoted ">From " line, a continuation with no
// field to continue), for one of which go-message refuses the whole
// message, report and all. It returns nil when there is nothing to drop or
// no field to keep.
func repairHeader(data []byte) []byte {
	var out []byte
	rest := data
	kept, dropped, inField := false, false, false
	for len(rest) > 0 {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		text := bytes.TrimRight(line, "\r\n")
		if len(text) == 0 {
			out = append(out, line...)
			out = append(out, rest...)
			break
		}
		if text[0] == ' ' || text[0] == '\t' {
			if inField {
				out = append(out, line...)
			} else {
				dropped = true
			}
			continue
		}
		name, _, ok := bytes.Cut(text, []byte(":"))
		inField = ok && len(name) > 0 && !bytes.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r > '~' })
		if inField {
			kept = true
			out = append(out, line...)
		} else {
			dropped = true
		}
	}
	if !kept || !dropped {
		return nil
	}
	return out
}

// walk visits the MIME tree and keeps the parts that matter. Errors inside
// the tree end the walk of that branch only: what was read so far is kept.
func (p *parts) walk(e *message.Entity, depth int) {
	p.n++
	if p.n > maxParts || depth > maxDepth {
		return
	}
	mt, params, err := e.Header.ContentType()
	if err != nil {
		mt = "text/plain"
	}
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		mr := e.MultipartReader()
		if mr == nil {
			return
		}
		if p.reportTyp == "" && mt == "multipart/report" {
			p.reportTyp = strings.ToLower(params["report-type"])
		}
		for {
			part, err := mr.NextPart()
			if part == nil || (err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err)) {
				return
			}
			p.walk(part, depth+1)
		}
	case mt == "message/delivery-status" || mt == "message/global-delivery-status":
		p.status = append(p.status, readBody(e.Body))
	case mt == "message/feedback-report":
		p.feedback = append(p.feedback, readBody(e.Body))
	case mt == "message/rfc822" || mt == "message/global" || isMessageAttachment(e.Header):
		// A whole attached message: usually the original, but a gateway
		// may attach the bounce it received instead, so it is kept for
		// unwrap.
		b, _ := io.ReadAll(io.LimitReader(e.Body, maxInner))
		if len(p.inner) < maxInnerMsgs {
			p.inner = append(p.inner, b)
		}
		if p.orig == nil {
			p.readOrig(bytes.NewReader(b))
		}
	case mt == "text/rfc822-headers" || mt == "text/rfc822-header" || mt == "message/rfc822-headers" ||
		mt == "message/global-headers":
		if p.orig == nil {
			p.readOrig(io.LimitReader(e.Body, 1<<20))
		}
	case strings.HasPrefix(mt, "text/") || mt == "":
		b := readBody(e.Body)
		if isAttachment(e.Header) && headerBlockRe.Match(b) {
			// A text file attached beside the report that holds the
			// original's header ("mailheaders.txt"): its Received and
			// To lines are not the report's.
			if p.orig == nil {
				p.readOrig(bytes.NewReader(b))
			}
			return
		}
		s := string(b)
		if mt == "text/html" {
			s = stripHTML(s)
		}
		p.texts = append(p.texts, s)
	}
}

// headerBlockRe matches the start of a message header block.
var headerBlockRe = regexp.MustCompile(`(?i)^(?:\s*\n)?(?:received|return-path|message-id|from|to|date|subject|dkim-signature|x-[a-z0-9-]+|mime-version|delivered-to):[ \t]`)

// isAttachment reports whether a part is marked as an attachment.
func isAttachment(h message.Header) bool {
	d, _, err := h.ContentDisposition()
	return err == nil && d == "attachment"
}

// readOrig keeps the header of the quoted original message.
func (p *parts) readOrig(r io.Reader) {
	h, err := textproto.NewReader(bufio.NewReader(r)).ReadMIMEHeader()
	if len(h) > 0 || err == nil {
		p.orig = &h
	}
}

// isMessageAttachment reports whether a part that is not typed
// message/rfc822 is still a whole message: an attachment named *.eml,
// which is how some gateways and clients attach a bounce.
func isMessageAttachment(h message.Header) bool {
	_, params, err := h.ContentDisposition()
	if err != nil {
		return false
	}
	name := params["filename"]
	if name == "" {
		_, ctp, _ := h.ContentType()
		name = ctp["name"]
	}
	return strings.HasSuffix(strings.ToLower(name), ".eml")
}

// unwrap completes an inconclusive report from a bounce attached to it.
// Security gateways and some relays do not report a failure themselves:
// they send a notice of their own ("unable to deliver message to <x>") and
// attach the bounce they received, which alone says why. So where the
// report found no recipient, or left one without a reason (Other), each
// attached message that is itself a bounce is parsed in turn, and its
// verdict for the same address is taken: the inner report is nearer to the
// server that refused. An inner recipient the outer report does not name
// is taken only when the outer named none (or only guessed from the
// attachment's To), since an attachment naming
// others may be about another message. Attachments that are not bounces
// (the usual quoted original) change nothing.
func (p *parts) unwrap(rep *Report) {
	if p.depth >= maxNest || len(p.inner) == 0 || rep.IsComplaint || rep.IsAutoReply {
		return
	}
	if len(rep.Recipients) == 0 || p.guessed {
		// With no recipient of its own, only a message that presents
		// itself as a failure notice may speak through its attachment: a
		// person forwarding a bounce is not reporting one.
		text := strings.Join(p.texts, "\n")
		if len(text) > maxScan {
			text = text[:maxScan]
		}
		if !p.looksLikeBounce() && !textLooksLikeBounce(text) {
			return
		}
	}
	open := len(rep.Recipients) == 0 || p.guessed
	for _, r := range rep.Recipients {
		if r.Reason == Other {
			open = true
		}
	}
	if !open {
		return
	}
	for _, b := range p.inner {
		in, err := parse(b, p.depth+1)
		if err != nil || !in.IsBounce {
			continue
		}
		if len(rep.Recipients) == 0 || p.guessed {
			// The To of an attached bounce is the sender it went back
			// to, not a recipient: its own report names them.
			rep.Recipients = in.Recipients
			rep.IsBounce = true
			rep.Format = in.Format
			if rep.ReportingMTA == "" {
				rep.ReportingMTA = in.ReportingMTA
			}
			return
		}
		for i := range rep.Recipients {
			r := &rep.Recipients[i]
			if r.Reason != Other {
				continue
			}
			for _, ir := range in.Recipients {
				if !strings.EqualFold(ir.Recipient, r.Recipient) || ir.Reason == Other ||
					(ir.Action != "failed" && ir.Action != "delayed") {
					continue
				}
				r.Action, r.Status, r.Permanent, r.Hard, r.Reason = ir.Action, ir.Status, ir.Permanent, ir.Hard, ir.Reason
				if ir.Diagnostic != "" {
					r.Diagnostic = ir.Diagnostic
				}
				if ir.RemoteMTA != "" {
					r.RemoteMTA = ir.RemoteMTA
				}
				break
			}
		}
	}
	for _, r := range rep.Recipients {
		if r.Action == "failed" || r.Action == "delayed" {
			rep.IsBounce = true
		}
	}
}

func readBody(r io.Reader) []byte {
	b, _ := io.ReadAll(io.LimitReader(r, MaxBytes))
	return b
}

// report turns the collected parts into a Report.
func (p *parts) report() *Report {
	rep := &Report{}
	if p.orig != nil {
		rep.OriginalMessageID = strings.Trim(strings.TrimSpace(p.orig.Get("Message-Id")), "<>")
	}
	switch {
	case len(p.feedback) > 0 || p.reportTyp == "feedback-report":
		p.readARF(rep)
		return rep
	case len(p.status) > 0 || rawStatusPart(p.raw) != nil:
		if len(p.status) == 0 {
			// Broken MIME (no Content-Type, a wrong boundary) still often
			// carries an intact delivery-status block.
			p.status = append(p.status, rawStatusPart(p.raw))
		}
		text := strings.Join(p.texts, "\n")
		var unnamed []int
		for _, b := range p.status {
			unnamed = append(unnamed, readDSN(b, rep, text, p.saidAbout(text))...)
		}
		if len(unnamed) > 0 {
			p.nameFromText(rep, unnamed, text)
		}
		if len(rep.Recipients) > 0 {
			rep.Format = "rfc3464"
			break
		}
		fallthrough
	default:
		if p.isAutoReply() && !p.looksLikeFailure() {
			rep.IsAutoReply = true
			rep.Format = "autoreply"
			if a := firstAddr(p.top.Get("From")); a != "" {
				rep.Recipients = []Recipient{{Recipient: a, Action: "autoreplied", Reason: AutoReply, Status: ""}}
			}
			return rep
		}
		text := strings.Join(p.texts, "\n")
		if len(text) > maxScan {
			text = text[:maxScan]
		}
		if !p.looksLikeBounce() && !textLooksLikeBounce(text) {
			return rep
		}
		if b := inlineStatus(text); b != nil {
			// A delivery-status block pasted into the text (a report
			// whose MIME parts were never marked): read it as a DSN.
			if unnamed := readDSN(b, rep, text, nil); len(unnamed) > 0 {
				p.nameFromText(rep, unnamed, text)
			}
			if len(rep.Recipients) > 0 {
				rep.Format = "rfc3464"
				break
			}
		}
		subject := decodeWords(p.top.Get("Subject"))
		rep.Recipients = scanText(text, p.exclude(), p.top.Get("From"), p.top.Get("X-Failed-Recipients"), subject)
		if len(rep.Recipients) == 0 {
			// Nothing in the report names the recipient: the quoted
			// original's To is the best remaining witness.
			var to []string
			if p.orig != nil {
				to = allAddrs(p.orig.Get("To"))
			} else {
				to = quotedTo(text)
			}
			rc := reasonCache{}
			p.guessed = len(to) > 0
			w := newWholeText(text, text, subject)
			for _, a := range to {
				rep.Recipients = append(rep.Recipients, textRecipient(a, w.errors(), w, rc))
			}
		}
		if len(rep.Recipients) > 0 {
			rep.Format = "text"
		}
	}
	for _, rc := range rep.Recipients {
		if rc.Action == "failed" || rc.Action == "delayed" {
			rep.IsBounce = true
		}
	}
	return rep
}

// saidAbout returns a lookup of what the free-text part of a report says
// about each address it names, read once on first use.
func (p *parts) saidAbout(text string) func(string) string {
	var said map[string]string
	return func(addr string) string {
		if said == nil {
			said = map[string]string{}
			t := text
			if len(t) > maxScan {
				t = t[:maxScan]
			}
			for _, r := range scanText(t, p.exclude(), p.top.Get("From"), "", "") {
				k := strings.ToLower(r.Recipient)
				if _, ok := said[k]; !ok {
					said[k] = r.Diagnostic
				}
			}
		}
		return said[strings.ToLower(addr)]
	}
}

// nameFromText names the DSN recipients whose address was not a mailbox
// (a source route, a bare domain), in order, from the addresses the text of
// the report gives as failed, or else from the quoted original's To. One
// that cannot be named keeps what the DSN said.
func (p *parts) nameFromText(rep *Report, unnamed []int, text string) {
	have := map[string]bool{}
	for _, r := range rep.Recipients {
		have[strings.ToLower(r.Recipient)] = true
	}
	if len(text) > maxScan {
		// As for a free-text bounce: the failed addresses are at the top.
		text = text[:maxScan]
	}
	var cands []Recipient
	cands = append(cands, scanText(text, p.exclude(), p.top.Get("From"), p.top.Get("X-Failed-Recipients"), "")...)
	if p.orig != nil {
		for _, a := range allAddrs(p.orig.Get("To")) {
			cands = append(cands, Recipient{Recipient: a})
		}
	}
	for _, i := range unnamed {
		for len(cands) > 0 && have[strings.ToLower(cands[0].Recipient)] {
			cands = cands[1:]
		}
		if len(cands) == 0 {
			return
		}
		r := &rep.Recipients[i]
		r.Recipient = cands[0].Recipient
		if r.Diagnostic == "" {
			// The text's lines about the address it names are the
			// diagnostic the fields did not give.
			r.Diagnostic = cands[0].Diagnostic
		}
		have[strings.ToLower(r.Recipient)] = true
		cands = cands[1:]
	}
}

// isAutoReply recognises RFC 3834 auto-replies, which are not bounces even
// though some MTAs send them to the envelope sender.
func (p *parts) isAutoReply() bool {
	as := strings.ToLower(p.top.Get("Auto-Submitted"))
	subj := strings.ToLower(decodeWords(p.top.Get("Subject")))
	if strings.HasPrefix(as, "auto-replied") {
		return true
	}
	return p.top.Get("X-Autoreply") != "" || p.top.Get("X-Autorespond") != "" ||
		strings.HasPrefix(subj, "auto:") || autoReplySubjectRe.MatchString(subj)
}

// autoReplySubjectRe recognises the subjects auto-responders give their
// replies ("Auto reply:", "Automatic reply:", "Out of Office:", ...).
var autoReplySubjectRe = regexp.MustCompile(`out of (?:the )?office|auto[- ]?(?:matic )?(?:reply|replied|response|responder)|automatische antwort|réponse automatique|respuesta automática|vacation|abwesenheit`)

// looksLikeFailure is looksLikeBounce without the null Return-Path, which
// RFC 3834 asks auto-replies to use too.
func (p *parts) looksLikeFailure() bool {
	if p.top.Get("X-Failed-Recipients") != "" || p.reportTyp == "delivery-status" {
		return true
	}
	s := strings.ToLower(p.top.Get("From") + " " + decodeWords(p.top.Get("Subject")))
	for _, w := range bounceSignals {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// bounceSignals are words in a sender or subject that mark a failure notice.
var bounceSignals = []string{
	"mailer-daemon", "postmaster", "mail delivery", "delivery status", "undeliver", "undelivered",
	"returned mail", "delivery fail", "failure notice", "delivery notification", "non remis",
	"could not be delivered", "not delivered", "delivery problem", "nondeliverable", "delivery has failed",
	"warning: could not send", "delayed mail", "mail system error", "failed delivery", "rejected",
	"error", "bounce", "mail could not", "delivery report", "notification", "message blocked",
	"unzustellbar", "non-remis", "no entregado", "fehlgeschlagen", "undeliverable", "loop alert", "mail loop", "loop detected",
}

// looksLikeBounce keeps ordinary mail out of the free-text scan: the message
// must come from a mailer or call itself a failure notice.
func (p *parts) looksLikeBounce() bool {
	if p.top.Get("X-Failed-Recipients") != "" || p.reportTyp == "delivery-status" {
		return true
	}
	s := strings.ToLower(p.top.Get("From") + " " + p.top.Get("Return-Path") + " " + decodeWords(p.top.Get("Subject")))
	if strings.TrimSpace(p.top.Get("Return-Path")) == "<>" {
		return true
	}
	for _, w := range bounceSignals {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// inlineStatusRe finds the start of a delivery-status block written into
// the text of a report.
var inlineStatusRe = regexp.MustCompile(`(?im)^(?:reporting-mta|final-recipient|original-recipient):[ \t]*[a-z0-9-]+;`)

// inlineStatus returns the delivery-status block in text, or nil. It must
// name a recipient and say what became of it.
func inlineStatus(text string) []byte {
	loc := inlineStatusRe.FindStringIndex(text)
	if loc == nil {
		return nil
	}
	b := text[loc[0]:]
	lb := strings.ToLower(b)
	if !strings.Contains(lb, "final-recipient:") || !(strings.Contains(lb, "\nstatus:") || strings.Contains(lb, "\naction:")) {
		return nil
	}
	return []byte(b)
}

// quotedToRe finds the To field of an original message quoted as text.
var quotedToRe = regexp.MustCompile(`(?im)^[ \t>]*to:[ \t]*([^\n]*)`)

// quotedTo returns the addresses of the To field of the original message
// quoted in a free-text bounce (after the line that starts the copy).
func quotedTo(text string) []string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if !origStartRe.MatchString(l) {
			continue
		}
		end := min(len(lines), i+100)
		if m := quotedToRe.FindStringSubmatch(strings.Join(lines[i+1:end], "\n")); m != nil {
			return allAddrs(m[1])
		}
		return nil
	}
	return nil
}

// rawStatusRe finds a delivery-status part in a message whose MIME
// structure did not parse.
var rawStatusRe = regexp.MustCompile(`(?im)^content-type:\s*message/(?:global-)?delivery-status[^\n]*\n(?:[ \t][^\n]*\n|[a-z-]+:[^\n]*\n)*\r?\n`)

// rawStatusPart returns the body of the first delivery-status part found by
// text search, up to the next MIME boundary, or nil.
func rawStatusPart(raw []byte) []byte {
	// The pattern is costly over megabytes: run it only at the lines where
	// a plain search finds the media type.
	lower := bytes.ToLower(raw)
	var body []byte
	for off, tries := 0, 0; body == nil; tries++ {
		if tries == 8 {
			return nil
		}
		i := bytes.Index(lower[off:], []byte("delivery-status"))
		if i < 0 {
			return nil
		}
		i += off
		off = i + 1
		ls := bytes.LastIndexByte(raw[:i], '\n') + 1
		win := raw[ls:min(len(raw), ls+4<<10)]
		if loc := rawStatusRe.FindIndex(win); loc != nil && loc[0] == 0 {
			body = raw[ls+loc[1]:]
		}
	}
	if i := bytes.Index(body, []byte("\n--")); i >= 0 {
		body = body[:i]
	}
	if !bytes.Contains(bytes.ToLower(body), []byte("recipient")) {
		return nil
	}
	return body
}

// exclude lists addresses that appear in a bounce but are not recipients:
// the bounce's own sender and addressee.
func (p *parts) exclude() map[string]bool {
	m := map[string]bool{}
	for _, f := range []string{"From", "To", "Reply-To", "Return-Path", "Sender", "Cc"} {
		for _, a := range allAddrs(p.top.Get(f)) {
			m[strings.ToLower(a)] = true
		}
	}
	if p.orig != nil {
		for _, f := range []string{"From", "Return-Path", "Sender", "Reply-To"} {
			for _, a := range allAddrs(p.orig.Get(f)) {
				m[strings.ToLower(a)] = true
			}
		}
	}
	return m
}

// readARF fills a complaint report from a feedback-report part.
func (p *parts) readARF(rep *Report) {
	rep.IsComplaint = true
	rep.Format = "arf"
	var rcpts []string
	for _, b := range p.feedback {
		for _, f := range readFields(b) {
			switch f.name {
			case "feedback-type":
				if rep.FeedbackType == "" {
					rep.FeedbackType = strings.ToLower(f.value)
				}
			case "original-rcpt-to", "removal-recipient":
				if a := mailboxOf(f.value); a != "" {
					rcpts = append(rcpts, a)
				}
			case "reporting-mta":
				rep.ReportingMTA = stripType(f.value)
			case "original-envelope-id":
				rep.OriginalEnvelopeID = f.value
			}
		}
	}
	if len(rcpts) == 0 && p.orig != nil {
		rcpts = allAddrs(p.orig.Get("To"))
	}
	text := strings.TrimSpace(strings.Join(p.texts, "\n"))
	if len(text) > 500 {
		text = text[:500]
	}
	for _, a := range rcpts {
		rep.Recipients = append(rep.Recipients, Recipient{Recipient: a, Action: "", Reason: Complaint, Diagnostic: text})
	}
}

// field is one header-style field of a report part; blank marks a blank line.
type field struct {
	name, value string
	blank       bool
}

// maxFieldLen bounds an unfolded field value: real diagnostics are a few
// hundred bytes, and appending continuation lines without a bound made a
// hostile field of many short lines cost quadratic time.
const maxFieldLen = 4096

// readFields reads RFC 822-style fields, unfolding continuation lines and
// keeping blank lines as separators.
func readFields(b []byte) []field {
	var out []field
	for _, line := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n") {
		if strings.TrimSpace(line) == "" {
			out = append(out, field{blank: true})
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(out) > 0 && !out[len(out)-1].blank {
			if last := &out[len(out)-1]; len(last.value) < maxFieldLen {
				last.value += " " + strings.TrimSpace(line)
			}
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || strings.ContainsAny(name, " \t") {
			continue
		}
		out = append(out, field{name: strings.ToLower(name), value: strings.TrimSpace(value)})
	}
	return out
}

// readDSN adds the recipients of one delivery-status part to rep. Fields are
// read as a stream rather than strictly by blank-line groups because real
// MTAs both omit and add blank lines.
//
// It returns the indexes in rep.Recipients of recipients whose address the
// report did not give in usable form, for the caller to name from the text.
//
// said, if not nil, returns what the text of the report says about an
// address (its lines in the free-text notice), for a recipient whose
// fields give no Diagnostic-Code.
func readDSN(b []byte, rep *Report, text string, said func(string) string) (unnamed []int) {
	type rcpt struct {
		Recipient
		orig, final string
		diagType    string
		// described is true once a per-recipient field came after the
		// recipient's address: a further address starts a new recipient.
		described bool
	}
	var list []*rcpt
	var cur *rcpt
	rc := reasonCache{}
	closed := false // a blank line ended cur's group
	// group returns the recipient that a per-recipient field belongs to:
	// some MTAs put Action, Status or Diagnostic-Code before the recipient
	// field of their group, so a new group starts at whichever comes first.
	group := func() *rcpt {
		if cur == nil || closed {
			cur, closed = &rcpt{}, false
			list = append(list, cur)
		}
		cur.described = cur.orig != "" || cur.final != ""
		return cur
	}
	for _, f := range readFields(b) {
		if f.blank {
			closed = cur != nil
			continue
		}
		switch f.name {
		case "reporting-mta":
			if rep.ReportingMTA == "" {
				rep.ReportingMTA = stripType(f.value)
			}
		case "original-envelope-id":
			rep.OriginalEnvelopeID = f.value
		case "original-recipient":
			if cur == nil || closed || cur.orig != "" || (cur.final != "" && cur.described) {
				cur, closed = &rcpt{}, false
				list = append(list, cur)
			}
			cur.orig = dsnAddr(f.value)
		case "final-recipient":
			if cur == nil || closed || cur.final != "" || (cur.orig != "" && cur.described) {
				cur, closed = &rcpt{}, false
				list = append(list, cur)
			}
			cur.final = dsnAddr(f.value)
		case "action":
			group().Action = strings.ToLower(strings.Fields(f.value + " x")[0])
		case "status":
			group().Status = f.value
		case "remote-mta":
			group().RemoteMTA = stripType(f.value)
		case "diagnostic-code":
			c := group()
			c.Diagnostic = stripType(f.value)
			if t, _, ok := strings.Cut(f.value, ";"); ok {
				c.diagType = strings.ToLower(strings.TrimSpace(t))
			}
		}
	}
	for _, r := range list {
		if len(rep.Recipients) >= maxRecipients {
			break
		}
		// The final recipient is the one to report, unless it is not a
		// mailbox at all: Sun's "@host:user@server" source routes and
		// sendmail's bare "@domain" name a route, and the original
		// recipient or the text of the report names the address.
		r.Recipient.Recipient = r.final
		if !isMailbox(r.final) {
			switch {
			case isMailbox(r.orig):
				r.Recipient.Recipient = r.orig
			case r.final == "" && r.orig == "":
				continue
			default:
				unnamed = append(unnamed, len(rep.Recipients))
			}
		}
		if isMailbox(r.orig) && !strings.EqualFold(r.orig, r.Recipient.Recipient) {
			r.Recipient.Original = r.orig
		}
		// A local mailer (a pipe, procmail) that failed speaks of this
		// system, whatever words it used, not of the address.
		local := r.diagType == "x-unix" || r.diagType == "x-local"
		// A Diagnostic-Code of the reporting MTA's own type (Postfix's
		// "X-Postfix; unknown user: \"a\"" from its local delivery agent)
		// that quotes no remote server is that MTA's own finding, made
		// where the mailboxes are: no remote content filter speaks there,
		// so the SMTP phase does not come into it.
		own := r.diagType != "" && r.diagType != "smtp" && !local && r.Diagnostic != "" && !remoteReplyRe.MatchString(r.Diagnostic)
		// For a recipient without a Diagnostic-Code the report's text
		// stands in. Its lines about the address are the server's words
		// that the fields left out (sendmail's transcript: "550 5.1.2
		// <a@b>... Host unknown"), and the diagnostic to show; the
		// reason is still read from the whole text where the report is
		// about this recipient alone, since the notice around those lines
		// may say more ("The user(s) account is disabled."), but from the
		// lines alone where it lists several, lest one take another's.
		whole := r.Diagnostic == "" && len(list) == 1
		if r.Diagnostic == "" && said != nil && r.final != "" && !strings.Contains(r.Status, "(") {
			r.Diagnostic = said(r.final)
		}
		rep.Recipients = append(rep.Recipients, finish(r.Recipient, text, whole, local, own, rc))
	}
	return unnamed
}

// isMailbox reports whether s is a plain local@domain address.
func isMailbox(s string) bool {
	return s != "" && (addrRe.FindString(s) == s || utf8Mailbox(s) == s)
}

// remoteReplyRe matches a diagnostic that quotes a remote server's reply.
var remoteReplyRe = regexp.MustCompile(`(?i)\bsaid:|in reply to|remote (?:host|server|mta)|<<<|\bhost \S+\[`)

// finish classifies a DSN recipient from its Status, Action and diagnostic.
// whole is true when the reason is to be read from the report's text
// rather than from the diagnostic; mtaOwn when the diagnostic is the
// reporting MTA's own finding, not a remote server's reply.
func finish(r Recipient, text string, whole, local, mtaOwn bool, rc reasonCache) Recipient {
	enh := normStatus(r.Status)
	if enh == "" {
		enh = findStatus(r.Status)
	}
	expired := false
	switch r.Action {
	case "expired":
		// Not an RFC 3464 action, but what some senders (SendGrid among
		// them) write when they gave up after retrying: a failure.
		r.Action = "failed"
		expired = true
	case "failure", "error", "fail":
		// Other senders' words for "failed" (OpenSMTPD's "error").
		r.Action = "failed"
	}
	diag := r.Diagnostic
	// A generic Status often hides the specific one the remote server gave
	// in its reply, and a reporting MTA sometimes guesses a Status that the
	// reply contradicts: the remote server's own code at the head of its
	// reply is the better witness. So is its 5xx where the report says the
	// delivery failed but gives a 4.x.x Status (the last transient error
	// before a permanent refusal). A Status of X.0.0 says only the class
	// the reporting MTA chose, so the server's own status stands even in
	// another class where its reply code agrees with it: a "451 4.3.0"
	// that ended the transaction is a temporary failure, whatever
	// "5.0.0" the report put on it.
	if d := specificStatus(diag); d != "" && d != enh {
		sameClass := enh == "" || d[0] == enh[0]
		gaveUp := enh != "" && r.Action == "failed" && enh[0] == '4' && d[0] == '5'
		undecided := strings.HasSuffix(enh, ".0.0") && findReplyCode(diag)/100 == int(d[0]-'0')
		if sameClass && (enh == "" || genericStatus(enh) || replyHeadRe.MatchString(diag)) || gaveUp || undecided {
			enh = d
		}
	}
	// The status is the answering server's own when its reply gives it, or
	// when there is no reply and the reporting MTA speaks for itself.
	own := enh != "" && (diag == "" || strings.Contains(diag, enh))
	if diag == "" {
		// Without a Diagnostic-Code, the comment some MTAs put after the
		// Status ("4.0.0 (example.net: host name lookup failure)") is this
		// recipient's own explanation, better than the report's text,
		// which may be about another recipient.
		if _, c, ok := strings.Cut(r.Status, "("); ok {
			diag = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(c), ")"))
		}
	}
	class := 0
	if enh != "" {
		class = int(enh[0] - '0')
	} else if c := findReplyCode(diag); c != 0 {
		class = c / 100
	} else if c := findReplyCode(r.Status); c != 0 {
		// A Status that is an SMTP reply ("553 Exceeded maximum
		// inbound message size"): its code gives the class.
		class = c / 100
	}
	if class == 0 {
		switch r.Action {
		case "failed":
			class = 5
		case "delayed":
			class = 4
		case "delivered", "relayed", "expanded":
			class = 2
		}
	}
	why := clip(diag)
	if why == "" || whole {
		// The report's text stands in for every recipient without a
		// diagnostic: the same string each time, so rc remembers it.
		why = clip(text)
	}
	v := classify(class, enh, why, own, rc)
	if !mtaOwn {
		v = dataPhase(v, enh != "", why, clip(text))
	}
	if local && v.Reason != Delivered && v.Reason != MailboxFull {
		v.Reason, v.Hard = SystemError, false
	}
	if r.Action == "" {
		switch class {
		case 5:
			r.Action = "failed"
		case 4:
			r.Action = "delayed"
		}
	}
	if !local {
		// A local mailer that failed is this system's own fault, not a
		// delivery that ran out of time.
		v = transient(v, r.Action)
	}
	if expired && (v.Reason == NetworkError || v.Reason == SystemError || v.Reason == Other) {
		v.Reason, v.Hard = Expired, false
		if enh == "" {
			v.Status = "5." + defaultDetail(Expired)
		}
	}
	if r.Diagnostic == "" {
		r.Diagnostic = diag
	}
	r.Status, r.Permanent, r.Hard, r.Reason = v.Status, v.Permanent, v.Hard, v.Reason
	return r
}

// genericStatus reports whether a status has detail 0, which RFC 3463
// defines as "other or undefined" within its subject (X.0.0, X.1.0, ...).
func genericStatus(st string) bool {
	return strings.HasSuffix(st, ".0")
}

// replyHeadRe matches a diagnostic that is an SMTP reply with its
// enhanced status up front ("550 5.7.1 ...").
var replyHeadRe = regexp.MustCompile(`^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}\b`)

// stripType removes the "rfc822;" / "dns;" / "smtp;" type of a DSN field.
func stripType(s string) string {
	if t, v, ok := strings.Cut(s, ";"); ok && !strings.ContainsAny(t, " <@") {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(s)
}

// utf8XtextRe matches an escape of RFC 6533's utf-8-addr-xtext: \x{F6}.
var utf8XtextRe = regexp.MustCompile(`\\x\{([0-9A-Fa-f]{1,6})\}`)

// dsnAddr returns the address of a DSN recipient field: "rfc822; a@b", or
// "utf-8; " with RFC 6533 escapes or raw UTF-8 (an address latchkey sent
// over SMTPUTF8).
func dsnAddr(value string) string {
	v := stripType(value)
	if t, _, ok := strings.Cut(value, ";"); ok && strings.EqualFold(strings.TrimSpace(t), "utf-8") {
		v = utf8XtextRe.ReplaceAllStringFunc(v, func(m string) string {
			n, err := strconv.ParseUint(m[3:len(m)-1], 16, 32)
			if err != nil || !utf8.ValidRune(rune(n)) {
				return m
			}
			return string(rune(n))
		})
	}
	if a := utf8Mailbox(v); a != "" {
		return a
	}
	return addrOf(v)
}

// mailboxOf is firstAddr, but keeps a non-ASCII address whole.
func mailboxOf(s string) string {
	if a := utf8Mailbox(s); a != "" {
		return a
	}
	return firstAddr(s)
}

// utf8Mailbox returns the address that s starts with when it has
// non-ASCII characters, or "". addrRe is ASCII only, and would take a
// piece of it ("e@example.com" of "jöe@example.com") for the address.
func utf8Mailbox(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	a := strings.Trim(f[0], "<>")
	local, domain, ok := strings.Cut(a, "@")
	if !ok || local == "" || !strings.Contains(domain, ".") || strings.ContainsAny(a, "<>:;,()[]\"\\") ||
		strings.Contains(domain, "@") || !utf8.ValidString(a) || !strings.ContainsFunc(a, func(r rune) bool { return r > '~' }) {
		return ""
	}
	return a
}

// addrOf returns the bare address of a DSN recipient value.
func addrOf(s string) string {
	if a := firstAddr(s); a != "" {
		return a
	}
	return strings.Trim(strings.TrimSpace(s), "<>")
}

func decodeWords(s string) string {
	d, err := new(mime.WordDecoder).DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}
