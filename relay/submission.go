package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/bounce"
	"github.com/latchkey/latchkey/policy"
	"github.com/latchkey/latchkey/queue"
)

// Replies of the submission listener. They say what is wrong in plain words
// but nothing of the relay's internals.
var (
	errAuthRequired   = smtpErr(530, [3]int{5, 7, 0}, "Authentication required")
	errTLSRequired    = smtpErr(523, [3]int{5, 7, 10}, "TLS is required: send STARTTLS first")
	errNotAllowed     = smtpErr(530, [3]int{5, 7, 0}, "Your address is not allowed to submit mail here")
	errAuthFailed     = smtpErr(535, [3]int{5, 7, 8}, "Authentication failed")
	errTooManyAuth    = smtpErr(421, [3]int{4, 7, 0}, "Too many failed authentication attempts; closing")
	errBareLineEnding = smtpErr(554, [3]int{5, 6, 0}, "Message contains a bare CR, bare LF or NUL; send CRLF line endings only")
	errBadHeader      = smtpErr(554, [3]int{5, 6, 0}, "Message header is malformed")
	errDotLine        = smtpErr(554, [3]int{5, 6, 0}, `Message sent with BDAT contains a line holding only "." (the end of DATA); send it with DATA, dot-stuffed`)
	errLongHeaderLine = smtpErr(554, [3]int{5, 6, 0}, "Message header line longer than 998 octets (RFC 5322 section 2.1.1); fold the field")
	errLongBodyLine   = smtpErr(554, [3]int{5, 6, 0}, "Message body line longer than 998 octets (RFC 5322 section 2.1.1); use quoted-printable or base64")
	errConnLost       = smtpErr(451, [3]int{4, 4, 2}, "Connection lost in the middle of the message")
	errTempFailure    = smtpErr(451, [3]int{4, 3, 0}, "Temporary failure queueing the message; try again")
	errRateLimited    = smtpErr(451, [3]int{4, 7, 1}, "Too many messages for this recipient; try again later")
	errBacklog        = smtpErr(451, [3]int{4, 3, 2}, "Delivery backlog full for this class of mail; try again later")
)

type submission struct {
	s       *Server
	conn    *smtp.Conn
	ip      netip.Addr
	allowed bool
	user    string
	from    string
	rcpts   []string
	log     zerolog.Logger
}

func (s *Server) newSubmission(c *smtp.Conn) (smtp.Session, error) {
	ip := remoteIP(c)
	// One session per connection: the door answers STARTTLS, and go-smtp
	// keeps its session across it (reset, as RFC 3207 asks).
	if s.Observe != nil {
		s.Observe.Session()
	}
	if s.fails.blocked(ip.String()) {
		s.reject("auth_blocked")
		return nil, errTooManyAuth
	}
	allowed := len(s.cfg.Submission.Prefixes) == 0
	for _, p := range s.cfg.Submission.Prefixes {
		if p.Contains(ip) {
			allowed = true
			break
		}
	}
	return &submission{s: s, conn: c, ip: ip, allowed: allowed,
		log: s.log.With().Str("client", ip.String()).Logger()}, nil
}

func (s *Server) reject(reason string) {
	if s.Observe != nil {
		s.Observe.Rejected(reason)
	}
}

func (ss *submission) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (ss *submission) Auth(mech string) (sasl.Server, error) {
	if _, on := connTLS(ss.conn); !on {
		// The door refuses AUTH before STARTTLS already; this holds if
		// the session is ever served without one.
		return nil, errTLSRequired
	}
	check := func(identity, user, pass string) error {
		if !ss.allowed {
			ss.s.reject("not_allowed")
			return errNotAllowed
		}
		if identity != "" && identity != user {
			return errAuthFailed
		}
		if ss.s.users.check(user, pass) {
			ss.user = user
			return nil
		}
		if ss.s.Observe != nil {
			ss.s.Observe.AuthFailed()
		}
		ss.log.Warn().Str("user", user).Msg("authentication failed")
		if ss.s.fails.fail(ss.ip.String()) {
			if tc := ss.s.tracked(ss.conn); tc != nil {
				tc.closeNext.Store(true)
			}
			return errTooManyAuth
		}
		return errAuthFailed
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(check), nil
	case sasl.Login:
		return &loginServer{auth: func(u, p string) error { return check("", u, p) }}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (ss *submission) Mail(from string, _ *smtp.MailOptions) error {
	if !ss.allowed {
		ss.s.reject("not_allowed")
		return errNotAllowed
	}
	if ss.user == "" {
		ss.s.reject("auth_required")
		return errAuthRequired
	}
	dom := domainOf(from)
	if from == "" || ss.s.cfg.Domain(dom) == nil {
		ss.s.reject("sender_domain")
		return smtpErr(550, [3]int{5, 7, 1}, fmt.Sprintf("Sender domain %q is not a transactional domain of this relay; it would fail SPF and DMARC alignment", dom))
	}
	ss.from = from
	return nil
}

func (ss *submission) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.user == "" || !ss.allowed {
		return errAuthRequired
	}
	if _, err := mail.ParseAddress("<" + to + ">"); err != nil || domainOf(to) == "" {
		return smtpErr(501, [3]int{5, 1, 3}, "Bad recipient address syntax")
	}
	if len(to) > maxAddrLen {
		// RFC 5321 4.5.3.1.3 (a path is at most 256 octets with its <>);
		// longer ones cannot be delivered, nor stored in Salesforce.
		return smtpErr(501, [3]int{5, 1, 3}, "Recipient address too long")
	}
	if hasAddr(ss.rcpts, to) {
		// One copy per address: a second would be a second reset, and
		// count twice against the recipient's rate limit.
		return nil
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

// hasAddr reports whether addrs holds addr, ignoring case.
func hasAddr(addrs []string, addr string) bool {
	for _, a := range addrs {
		if strings.EqualFold(a, addr) {
			return true
		}
	}
	return false
}

// maxAddrLen is the longest address RFC 5321 allows in a path.
const maxAddrLen = 254

func (ss *submission) Data(r io.Reader) error {
	if ss.user == "" || !ss.allowed || ss.from == "" || len(ss.rcpts) == 0 {
		return errAuthRequired
	}
	if dt := ss.s.cfg.Submission.DataTimeout; dt > 0 {
		ss.conn.Conn().SetReadDeadline(time.Now().Add(dt))
		defer ss.conn.Conn().SetReadDeadline(time.Time{})
	}
	data, err := io.ReadAll(r)
	if err != nil {
		if errors.Is(err, smtp.ErrDataTooLarge) {
			ss.s.refuse(ss, &refusal{reason: "too_large"}, nil)
		}
		return err
	}
	// The door saw the bytes as sent, before go-smtp removed the
	// dot-stuffing (and, with it, a "." + CR line start).
	var raw doorScan
	if d := doorOf(ss.conn.Conn()); d != nil {
		raw = d.Scan()
	}
	if raw.truncated {
		// Nobody is left to answer; what matters is that the half
		// message is not queued.
		ss.s.reject("truncated")
		ss.log.Warn().Int("bytes", len(data)).Msg("connection lost in the middle of a message; nothing queued")
		return errConnLost
	}
	return ss.s.accept(ss, data, raw)
}

func (ss *submission) Reset() {
	ss.from = ""
	ss.rcpts = nil
}

func (ss *submission) Logout() error { return nil }

func domainOf(addr string) string {
	addr = strings.Trim(addr, "<>")
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return ""
}

// checkLineEndings finds bare CR, bare LF and NUL: the raw material of SMTP
// smuggling (a second message hidden in the first, ended by a sequence that
// another server takes for the end of DATA).
func checkLineEndings(b []byte) bool {
	if bytes.IndexByte(b, 0) >= 0 {
		return false
	}
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				return false
			}
			i++
		case '\n':
			return false
		}
	}
	return true
}

// isGroup reports whether an address header value uses group syntax
// ("name: addresses;"): a colon outside quoted strings, comments and angle
// brackets (where an obsolete source route may hold one).
func isGroup(v string) bool {
	quoted, angle, comment := false, false, 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case quoted || comment > 0:
			switch {
			case c == '\\':
				i++
			case quoted && c == '"':
				quoted = false
			case !quoted && c == '(':
				comment++
			case !quoted && c == ')':
				comment--
			}
		case c == '"':
			quoted = true
		case c == '(':
			comment++
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ':' && !angle:
			return true
		}
	}
	return false
}

// maxLine is RFC 5322's limit on a line, without its CRLF.
const maxLine = 998

// longLine finds a line over maxLine octets in a message with CRLF line
// endings and says whether it is in the header.
func longLine(b []byte) (inHeader, found bool) {
	inHeader = true
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			i = len(b)
		}
		n := i
		if n > 0 && b[n-1] == '\r' {
			n--
		}
		if n > maxLine {
			return inHeader, true
		}
		if n == 0 {
			inHeader = false
		}
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return false, false
}

// normalizeLineEndings rewrites bare CR and bare LF to CRLF and drops NUL.
func normalizeLineEndings(b []byte) []byte {
	out := make([]byte, 0, len(b)+64)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case 0:
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

// connTLS returns the TLS state of a session's connection: the door's, which
// answers STARTTLS (go-smtp's own state says no TLS behind a door).
func connTLS(c *smtp.Conn) (tls.ConnectionState, bool) {
	if d := doorOf(c.Conn()); d != nil {
		return d.TLS()
	}
	return c.TLSConnectionState()
}

// refusal describes a message refused after DATA, for the audit trail.
type refusal struct {
	reason    string // short code, as in the metrics
	class     string // "" when the message was refused before it could be classified
	messageID string
	from      string // the From header's address
	bodySum   string
	sfdc      map[string]string
}

// refuse counts a message refused after DATA and records it in the audit
// trail: a reset that Salesforce sent and latchkey refused is part of that
// reset's story, and the auditor must see it next to the accepted ones.
// Refusals before DATA (no AUTH, a network not allowed, a sender domain not
// ours) come before any message exists and are in the metrics and the log
// only, so that the trail never grows from a session that sent nothing.
// reply is the answer the client gets (nil for one go-smtp gives itself).
func (s *Server) refuse(ss *submission, r *refusal, reply *smtp.SMTPError) error {
	var answer error // never a typed nil
	if reply != nil {
		answer = reply
	}
	s.reject(r.reason)
	log := ss.log.Warn().Str("reason", r.reason)
	if r.class != "" {
		log = log.Str("class", r.class).Str("message_id", r.messageID)
	}
	if reply != nil {
		log = log.Int("code", reply.Code).Str("reply", reply.Message)
	}
	log.Msg("message refused")
	if s.Store == nil || s.Store.Audit == nil {
		return answer
	}
	ev := &audit.Event{Time: s.now(), Type: audit.Rejected, MessageID: r.messageID, Class: r.class,
		Recipient: strings.Join(ss.rcpts, ","), Sender: ss.from, Fields: map[string]string{
			"reason": r.reason, "client_ip": ss.ip.String(), "auth_user": ss.user,
		}}
	if reply != nil {
		ev.Fields["code"] = strconv.Itoa(reply.Code)
		ev.Fields["enhanced"] = fmt.Sprintf("%d.%d.%d", reply.EnhancedCode[0], reply.EnhancedCode[1], reply.EnhancedCode[2])
		ev.Fields["reply"] = reply.Message
	}
	if r.from != "" {
		ev.Fields["from"] = r.from
	}
	if r.bodySum != "" {
		ev.Fields["body_sha256"] = r.bodySum
	}
	for k, v := range r.sfdc {
		ev.Fields[k] = v
	}
	if err := s.Store.Update(func(tx *queue.Tx) error { return tx.Audit(ev) }); err != nil {
		// The refusal stands either way; the log line above keeps it.
		ss.log.Error().Err(err).Msg("recording a refused message in the audit trail failed")
	}
	return answer
}

// accept runs the accept path for one message and answers it. raw is what
// the door saw of the message as sent.
func (s *Server) accept(ss *submission, data []byte, raw doorScan) error {
	now := s.now()
	if s.cfg.Submission.BareLineEndings != "normalize" {
		switch {
		case raw.dotLine:
			return s.refuse(ss, &refusal{reason: "bdat_dot_line", bodySum: sha256Hex(data)}, errDotLine)
		case !raw.clean() || !checkLineEndings(data):
			return s.refuse(ss, &refusal{reason: "bare_line_ending", bodySum: sha256Hex(data)}, errBareLineEnding)
		}
	} else if !checkLineEndings(data) {
		// (A "." + CR that go-smtp dropped is not restored: rewriting
		// it to CRLF would make an end of DATA.)
		data = normalizeLineEndings(data)
	}
	if len(data) < 2 || !bytes.HasSuffix(data, []byte("\r\n")) {
		data = append(data, '\r', '\n')
	}
	if !bytes.HasPrefix(data, []byte("\r\n")) && !bytes.Contains(data, []byte("\r\n\r\n")) {
		// All header and no body (RFC 5322 allows it): the empty line
		// that ends the header is what the signer needs to find the
		// header's end. It changes no body hash, in either canonicalisation.
		data = append(data, '\r', '\n')
	}
	hdr, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(data)))
	if err != nil {
		return s.refuse(ss, &refusal{reason: "bad_header", bodySum: sha256Hex(data)}, errBadHeader)
	}
	body := data
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		body = data[i+4:]
	}
	bodyHex := sha256Hex(body)

	// Classified first, so that a refused reset is recorded as a reset.
	pol := s.Policy.Get()
	meta := &policy.Meta{EnvelopeFrom: ss.from, AuthUser: ss.user, Rcpts: ss.rcpts, Header: hdr}
	class := pol.Classify(meta)
	refused := &refusal{class: class.Name, messageID: strings.TrimSpace(hdr.Get("Message-Id")), bodySum: bodyHex, sfdc: sfdcFields(hdr)}
	refuse := func(reason string, reply *smtp.SMTPError) error {
		refused.reason = reason
		return s.refuse(ss, refused, reply)
	}
	if hdr.Has("Message-Id") && refused.messageID == "" {
		// Adding ours above an empty one would make two, which RFC 5322
		// forbids; rewriting it would break Salesforce's signature.
		return refuse("bad_header", errBadHeader)
	}
	// RFC 5322 3.6: one Date and at most one Message-ID. A missing Date is
	// added below; an empty or second one cannot be mended without
	// rewriting the header.
	for _, f := range [...]string{"Date", "Message-ID"} {
		if vs := hdr.Values(f); len(vs) > 1 || (len(vs) == 1 && strings.TrimSpace(vs[0]) == "") {
			return refuse("bad_header", smtpErr(554, [3]int{5, 6, 0}, "Message must have at most one "+f+": header, not empty (RFC 5322 section 3.6)"))
		}
	}
	// The other fields RFC 5322 3.6 allows at most once: receivers such as
	// Gmail refuse a message with two, after our 250.
	for _, f := range [...]string{"Subject", "To", "Cc", "Bcc", "Reply-To", "Sender", "In-Reply-To", "References"} {
		if len(hdr.Values(f)) > 1 {
			return refuse("bad_header", smtpErr(554, [3]int{5, 6, 0}, "Message must have at most one "+f+": header (RFC 5322 section 3.6)"))
		}
	}
	// RFC 5322 2.1.1 (and RFC 5321 4.5.3.1.6): a line is at most 998
	// octets. A longer one is refused here rather than accepted and
	// refused by the recipient's MX ("500 Line too long"), which would
	// bounce the reset and escalate it. Folding the header field instead
	// could break a signature already on the message (simple header
	// canonicalisation), and a long body line cannot be re-encoded without
	// breaking its body hash.
	if hl, long := longLine(data); long {
		if hl {
			return refuse("line_too_long", errLongHeaderLine)
		}
		return refuse("line_too_long", errLongBodyLine)
	}

	// The From header decides the signing domain, so it must be one of ours
	// and there must be exactly one (RFC 5322; DMARC refuses several).
	froms := hdr.Values("From")
	if len(froms) != 1 {
		return refuse("from_header", smtpErr(550, [3]int{5, 7, 1}, "Message must have exactly one From: header"))
	}
	fromAddr, err := mail.ParseAddress(froms[0])
	if err != nil {
		return refuse("from_header", smtpErr(550, [3]int{5, 7, 1}, "From: header is not a valid address"))
	}
	if isGroup(froms[0]) {
		// net/mail takes "Team: a@example.com;" for a@example.com, but
		// RFC 5322 3.6.2 allows only mailboxes in From:, and receivers
		// refuse such a message after our 250.
		return refuse("from_header", smtpErr(550, [3]int{5, 7, 1}, "From: header must be a mailbox, not a group (RFC 5322 section 3.6.2)"))
	}
	refused.from = fromAddr.Address
	dom := s.cfg.Domain(domainOf(fromAddr.Address))
	if dom == nil {
		return refuse("from_domain", smtpErr(550, [3]int{5, 7, 1}, fmt.Sprintf("From: domain %q is not a transactional domain of this relay; its mail would fail DMARC", domainOf(fromAddr.Address))))
	}
	if ids := s.cfg.Submission.OrgIDs; len(ids) > 0 {
		org := hdr.Get("X-SFDC-LK")
		if org == "" {
			org = hdr.Get("X-SFDCOrgRelay")
		}
		if !orgMatch(ids, org) {
			return refuse("org_id", smtpErr(550, [3]int{5, 7, 1}, "Message is not from an allowed Salesforce org"))
		}
	}

	deadline, warn := class.Deadline(meta, now)
	if warn != "" {
		ss.log.Warn().Str("class", class.Name).Msg(warn)
	}
	cutoff := class.Cutoff(deadline)

	msgID := queue.NewMsgID(now)
	// msg_id, not queue_id: the operator commands take the items' ids
	// (msg_id + two letters), which the "queued" line lists.
	log := ss.log.With().Str("msg_id", msgID).Str("class", class.Name).Logger()

	// Prepend, never rewrite: Salesforce may have signed the message, and
	// its signature must still verify after us.
	var pre bytes.Buffer
	tlsVer := "none"
	if st, ok := connTLS(ss.conn); ok {
		tlsVer = tls.VersionName(st.Version)
	}
	fmt.Fprintf(&pre, "Received: from %s ([%s])\r\n\tby %s (latchkey) with ESMTPSA id %s\r\n\t(%s); %s\r\n",
		sanitizeHelo(ss.conn.Hostname()), ss.ip, s.cfg.Hostname, msgID, tlsVer, now.Format(time.RFC1123Z))
	messageID := strings.TrimSpace(hdr.Get("Message-Id"))
	if messageID == "" {
		messageID = "<" + msgID + "@" + s.cfg.Hostname + ">"
		fmt.Fprintf(&pre, "Message-ID: %s\r\n", messageID)
	}
	if !hdr.Has("Date") {
		// RFC 5322 3.6 requires one; added before signing, so it is
		// signed (Date is in every signature's h=).
		fmt.Fprintf(&pre, "Date: %s\r\n", now.Format(time.RFC1123Z))
	}
	unsigned := make([]byte, 0, pre.Len()+len(data))
	unsigned = append(append(unsigned, pre.Bytes()...), data...)
	t0 := time.Now()
	sig, err := s.Keys.Sign(dom.Name, unsigned)
	if err != nil {
		log.Error().Err(err).Msg("DKIM signing failed")
		return errTempFailure
	}
	if s.Observe != nil {
		s.Observe.Signed(time.Since(t0))
	}
	signed := make([]byte, 0, len(sig)+len(unsigned))
	signed = append(append(signed, sig...), unsigned...)

	m := &queue.Message{MsgID: msgID, Body: signed, DedupeWindow: class.DedupeWindow}
	recv := &audit.Event{Time: now, Type: audit.Received, MessageID: messageID, Class: class.Name,
		Recipient: strings.Join(ss.rcpts, ","), Sender: ss.from, Fields: map[string]string{
			"client_ip": ss.ip.String(), "auth_user": ss.user, "tls": tlsVer,
			"deadline": deadline.UTC().Format(time.RFC3339), "body_sha256": bodyHex, "queue_id": msgID,
			"from": fromAddr.Address,
		}}
	for k, v := range refused.sfdc {
		recv.Fields[k] = v
	}
	if s.Store.Audit != nil {
		hs, digests := s.Store.Audit.LinkHashes(data) // the whole message: its parts need its Content-Type
		if len(hs) > 0 {
			recv.Fields["url_hashes"] = strings.Join(hs, ",")
		}
		m.LinkDigests = digests
	}
	m.Events = append(m.Events, recv, &audit.Event{Time: now, Type: audit.Signed, MessageID: messageID, Class: class.Name,
		Fields: map[string]string{"domain": dom.Name, "selectors": strings.Join(s.Keys.Selectors(dom.Name), ","), "queue_id": msgID}})

	var escalations []Escalation
	for i, rcpt := range ss.rcpts {
		it := &queue.Item{
			ID: queue.ItemID(msgID, i), MsgID: msgID, Class: class.Name, Priority: class.Priority,
			From: ss.from, Rcpt: rcpt, Domain: dom.Name, MessageID: messageID,
			AuthUser: ss.user, ClientIP: ss.ip.String(),
			Accepted: now, Deadline: deadline, Cutoff: cutoff, Due: now,
			SupersedeKey: class.SupersedeKeyFor(meta, rcpt),
			Backup:       strings.TrimSpace(hdr.Get(s.cfg.Inbound.BackupHeader)),
		}
		it.Sender = bounce.EncodeVERP(s.verpKey, it.ID, dom.Name)
		// Suppression lists of the class: marketing opt-outs never apply
		// to resets (the policy lists only "bounce" for them); a bounced
		// address is sent to its backup, and the reset escalated.
		// Dedupe keys are for every recipient, queued or not: a
		// resubmission of a message whose only recipient was suppressed
		// must not be escalated a second time.
		m.DedupeKeys = append(m.DedupeKeys, class.DedupeKeys(messageID, bodyHex, rcpt)...)
		sup, err := s.Queue.Suppressed(rcpt, class.Suppression)
		if err != nil {
			log.Error().Err(err).Msg("suppression look-up failed")
			return errTempFailure
		}
		if len(sup) > 0 {
			ev := &audit.Event{Time: now, Type: audit.Suppressed, QueueID: it.ID, MessageID: messageID, Class: class.Name,
				Recipient: rcpt, Fields: map[string]string{"list": sup[0].List, "reason": sup[0].Reason}}
			m.Events = append(m.Events, ev)
			if class.Escalate.Suppressed {
				escalations = append(escalations, Escalation{Trigger: "suppressed", Item: it, Reason: "address on the " + sup[0].List + " suppression list: " + sup[0].Reason})
			}
			backup := it.Backup
			if backup == "" && sup[0].List == "bounce" && s.BackupLookup != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				backup, _ = s.BackupLookup(ctx, rcpt)
				cancel()
			}
			if backup == "" || sup[0].List != "bounce" || strings.EqualFold(backup, rcpt) || hasAddr(ss.rcpts, backup) {
				// (A backup that is a recipient of this message already
				// gets its own copy.)
				continue
			}
			// A backup address that is itself suppressed would only bounce
			// again (or send marketing to an opt-out).
			if bsup, err := s.Queue.Suppressed(backup, class.Suppression); err != nil {
				log.Error().Err(err).Msg("suppression look-up failed")
				return errTempFailure
			} else if len(bsup) > 0 {
				m.Events = append(m.Events, &audit.Event{Time: now, Type: audit.Suppressed, QueueID: it.ID, MessageID: messageID,
					Class: class.Name, Recipient: backup, Fields: map[string]string{"list": bsup[0].List, "reason": bsup[0].Reason, "backup_for": rcpt}})
				continue
			}
			it.OrigRcpt, it.Rcpt, it.BackupTried = rcpt, backup, true
			m.Events = append(m.Events, &audit.Event{Time: now, Type: audit.RetriedBackup, QueueID: it.ID, MessageID: messageID,
				Class: class.Name, Recipient: backup, Fields: map[string]string{"original": rcpt}})
		}
		m.Items = append(m.Items, it)
		if class.RateLimit > 0 {
			m.Rate = append(m.Rate, queue.RateCheck{Key: class.Name + ":" + strings.ToLower(rcpt), Limit: class.RateLimit, Window: class.RateWindow})
		}
	}
	if len(escalations) > 0 {
		m.Extra = func(tx *queue.Tx) error {
			for _, e := range escalations {
				if err := s.recordEscalation(tx, e, now); err != nil {
					return err
				}
			}
			return nil
		}
	}
	if len(m.Items) == 0 {
		// Every recipient was suppressed: nothing to deliver, but the
		// decision is on record.
		m.Body = nil
	}
	if class.BacklogRefuse > 0 && len(m.Items) > 0 && s.Queue.Backlog(class.Name, class.BacklogRefuse) >= class.BacklogRefuse {
		// Only for classes that can wait at the sender (bulk): better
		// refused now than queued behind hours of backlog.
		s.reject("backlog")
		log.Warn().Int("backlog", class.BacklogRefuse).Msg("refused: delivery backlog full for the class")
		return errBacklog
	}
	if s.Cluster != nil {
		// Stored on a quorum of nodes (and decided for all of them)
		// before it is queued here and acknowledged.
		stop, err := s.admitCluster(m, class.Name)
		if err != nil {
			log.Error().Err(err).Msg("cluster admission failed")
			return errTempFailure
		}
		if stop != nil {
			return stop
		}
	}
	res, err := s.Queue.Enqueue(m)
	switch {
	case errors.Is(err, queue.ErrRateLimited):
		s.reject("rate_limited")
		log.Warn().Msg("rate limit exceeded for recipient")
		return errRateLimited
	case err != nil:
		log.Error().Err(err).Msg("enqueue failed")
		return errTempFailure
	case res.Duplicate:
		s.outcome(class.Name, "deduplicated", "")
		log.Info().Str("original", res.MsgID).Msg("duplicate submission")
		return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK already queued as " + res.MsgID}
	}
	if s.Cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.Cluster.Admitted(ctx, m)
		cancel()
	}
	var suppressed []string
	for _, ev := range m.Events {
		if ev.Type == audit.Suppressed {
			s.outcome(class.Name, "suppressed", ev.Fields["list"])
			suppressed = append(suppressed, ev.Recipient)
		}
	}
	ids := make([]string, len(m.Items))
	for i, it := range m.Items {
		ids[i] = it.ID
	}
	if len(suppressed) > 0 {
		log.Warn().Strs("suppressed", suppressed).Int("escalated", len(escalations)).Msg("recipients on a suppression list")
	}
	if len(m.Items) == 0 {
		log.Info().Msg("nothing queued: every recipient is suppressed")
	} else {
		log.Info().Strs("queue_ids", ids).Time("deadline", deadline).Strs("superseded", res.Superseded).Msg("queued")
		s.holdForBacklog(pol, class)
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK queued as " + msgID}
}

// sfdcFields returns the Salesforce org, user and record the headers name,
// as audit fields.
func sfdcFields(hdr textproto.Header) map[string]string {
	out := map[string]string{}
	for k, h := range map[string]string{"sfdc_org": "X-SFDC-LK", "sfdc_user": "X-SFDC-User", "sfdc_entity": "X-SFDC-EntityId"} {
		if v := hdr.Get(h); v != "" {
			out[k] = v
		}
	}
	return out
}

// sha256Hex is the hex SHA-256 of b: how the trail names a body without
// holding it.
func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// holdForBacklog is acceptance's back-pressure. The message is on disk
// already; holding its 250 while delivery has fallen behind slows a sender
// on kept-open connections to the rate the relay delivers, so that the CPU
// goes to delivery and no backlog builds in which every message waits. A
// message is held while its own class, or a class of higher priority, has
// more due messages than its backlog limit waiting for a worker: bulk
// yields to resets, never the other way round. At most class.BacklogDelay;
// a reset is held, never refused.
func (s *Server) holdForBacklog(pol *policy.Policy, class *policy.Class) {
	if class.BacklogDelay <= 0 {
		return
	}
	var full *policy.Class
	for _, c := range pol.Classes() {
		if c.Priority > class.Priority {
			break
		}
		if c.Backlog > 0 && s.Queue.Backlog(c.Name, c.Backlog+1) > c.Backlog {
			full = c
			break
		}
	}
	if full == nil {
		return
	}
	start := time.Now()
	ok := s.Queue.WaitBacklog(context.Background(), full.Name, full.Backlog, class.BacklogDelay)
	if s.Observe != nil {
		s.Observe.Held(class.Name, time.Since(start), !ok)
	}
}

// outcome counts a decision taken at acceptance (not a queue item's end).
func (s *Server) outcome(class, what, reason string) {
	if s.Observe != nil {
		s.Observe.Outcome(class, what, reason, 0)
	}
}

func orgMatch(ids []string, org string) bool {
	org = strings.TrimSpace(org)
	for _, id := range ids {
		// Salesforce shows 15- and 18-character forms of the same id. The
		// 15-character form is case-sensitive (…ABCD and …abcd are two
		// orgs); the 3-character suffix of the 18-character form is not.
		switch {
		case org == "":
		case id == org:
			return true
		case len(id) >= 15 && len(org) >= 15 && id[:15] == org[:15]:
			if len(id) < 18 || len(org) < 18 || strings.EqualFold(id[15:], org[15:]) {
				return true
			}
		}
	}
	return false
}

// sanitizeHelo keeps a client-chosen name from breaking the header.
func sanitizeHelo(h string) string {
	h = strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e || r == '(' || r == ')' || r == ';' {
			return -1
		}
		return r
	}, h)
	if len(h) > 100 {
		h = h[:100]
	}
	if h == "" {
		return "unknown"
	}
	return h
}
