package bounce

import (
	"regexp"
	"strings"
)

// addrPat is a pragmatic e-mail address: enough for the addresses bounces
// quote, not a validator. A quoted local part ("a....b"@example.org, RFC
// 5321 4.1.2) keeps its quotes, which are part of the address; it may not
// hold spaces here, so that a quoted display name before an address is not
// taken for one.
const addrPat = `(?:"[^"\s\\]{1,64}"|[A-Za-z0-9.!#$%&'*+/=?^_{|}~-]+)@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+`

var addrRe = regexp.MustCompile(addrPat)

// recipientLineRes recognise the lines of free-text bounces that name a
// failed recipient, whatever the MTA: an address alone on its line (Exim,
// qmail, Gmail), an address followed by a colon and the error (Postfix,
// qmail), Sendmail's "<addr>... error", an SMTP transcript's RCPT TO, and an
// address after a label or a phrase such as "delivery to".
var recipientLineRes = []*regexp.Regexp{
	regexp.MustCompile(`^\s*(?:[-*•>]\s*)?[<"(\[]?(` + addrPat + `)[>")\]]?\s*:?\s*$`),
	// An address followed by its error in brackets: "a@b [User unknown]";
	// Exchange's "a@b on Fri, 4 Oct 2002 ..." (or its X.400 form,
	// "c=US;...;dda:SMTP=a@b; on Fri, ...") before the error lines.
	regexp.MustCompile(`^\s*[<"(]?(` + addrPat + `)[>")]?\s+\[[^\]]+\]\s*$`),
	regexp.MustCompile(`(?i)^\s*(?:c=[^\n]*?smtp=)?<?(` + addrPat + `)>?;?\s+on\s+(?:mon|tue|wed|thu|fri|sat|sun)`),
	regexp.MustCompile(`^\s*[<"(\[]?(` + addrPat + `)[>")\]]?\s*:\s*\S`),
	regexp.MustCompile(`<(` + addrPat + `)>\.\.\.\s*\S`),
	regexp.MustCompile(`(?i)rcpt to:\s*<?(` + addrPat + `)`),
	regexp.MustCompile(`(?i)(?:^|\s)(?:final-recipient|original-recipient|recipient(?: address)?|failed recipient|addressee|destinataire|empfänger|to|address|e-?mail address|user|mailbox|account)\b\s*:?\s*(?:rfc822;\s*)?[<"(\[]?(` + addrPat + `)`),
	regexp.MustCompile(`(?i)(?:following (?:recipients?|address(?:es)?)[^:\n]{0,40}:|delivery to|deliver(?:ed|ing)?(?: your message| the message| your mail| mail)? to|sending (?:mail |message )?to|could not be delivered to|failed to deliver to|wasn't delivered to|was not delivered to|couldn't be delivered to|message to|mail to|unable to deliver (?:message |mail )?to|for|recipient|(?:was|were) addressed)\b,?\s*[<"(\[]?(` + addrPat + `)`),
}

// sendmailAddrRule is the index in recipientLineRes of sendmail's
// "<addr>... error".
const sendmailAddrRule = 4

// ownLine reports whether the text before a sendmail-style "<addr>...
// error" leaves the line to that address: nothing, a reply code (and
// status), a transcript's "<<<", or the address itself (Zoho's "a@b
// Invalid Address, ERROR_CODE :550, ... <a@b>... User Unknown"). The same
// shape inside prose ("the error that the other server returned was: 550
// 5.7.1 <s@x>... Access denied") quotes some other address, often the
// sender's.
func ownLine(before, addr string) bool {
	b := strings.TrimSpace(before)
	b = strings.TrimSpace(strings.TrimPrefix(b, "<<<"))
	return b == "" || codeOnlyRe.MatchString(b) || strings.HasPrefix(strings.ToLower(b), strings.ToLower(addr))
}

// codeOnlyRe matches a reply code with an optional status, alone.
var codeOnlyRe = regexp.MustCompile(`^[245]\d\d(?:[ -][245]\.\d{1,3}\.\d{1,3})?$`)

// origStartRe marks where a free-text bounce starts quoting the original
// message: addresses after it belong to the original, not to the report.
var origStartRe = regexp.MustCompile(`(?i)^\s*(?:[-=_*]{2,}.*(?:original|copy of (?:the|your) message|returned (?:message|mail)|message header|headers? (?:of|follow)|below this line|undelivered message|included message|unsent message|message text follows|rfc822)|(?:-+ )?below this line is a copy|below is a copy of (?:the|your) (?:original )?message|original (?:message|mail)(?: as received)?(?: is)? (?:follows|as follows)|included is a copy of (?:the|your) (?:original )?message|unsent message follows|-+\s*original message\s*-*|content-type:\s*message/rfc822|the original message headers|the headers of the original|your message reads|original message header|message headers follow)`)

// A free-text bounce that quotes no reply code for a recipient is either
// a final failure notice (the message is returned) or a warning that
// delivery is still being retried. warningRe recognises the warning's own
// words; finalRe the words of a notice that gave up, which win where both
// appear ("could not be delivered for 5 days ... giving up"). Words inside
// the error ("try again", "temporary failure in name resolution") say
// nothing about the notice: a Postfix bounce returning a message after a
// DNS failure that it calls temporary is still a final failure.
var (
	// retryTimeoutRe is Exim's verdict on an address whose temporary
	// errors outlasted its retry rules: it says the cause was temporary
	// (Exim writes it after no permanent error), however final the
	// notice. Sisimai grades it so too.
	retryTimeoutRe = regexp.MustCompile(`(?i)retry timeout exceeded|retry time not reached for any host after a long failure period|all hosts have been failing for a long time`)
	// temporaryWordRe is the server calling its own error temporary.
	temporaryWordRe = regexp.MustCompile(`(?i)\btemporar|\bpersistent transient`)
	warningRe       = regexp.MustCompile(`(?i)will be retried|will retry|will keep trying|will continue (?:to )?(?:try|attempt)|still (?:being )?(?:retried|trying)|not yet been delivered|has been delayed|is delayed|delayed for|this is a warning|warning only|warning: could not send|temporary failure report|no action is required|do not need to re-?send|will be attempted again`)
	finalRe         = regexp.MustCompile(`(?i)giving up|gave up|given up|not going to try again|will be deleted from (?:the )?queue|failed permanently|permanent (?:fatal )?error|could not be delivered for \d+ days?|cannot send message for \d+ days?|undeliverable for \d+|envelope expired|retry timeout exceeded|has been returned|returning message to sender`)
)

// bounceTextRe recognises the body of a failure notice whose headers do not
// say what it is.
var bounceTextRe = regexp.MustCompile(`(?i)could not be delivered|couldn't be delivered|undeliverable|delivery (?:has )?failed|failed permanently|permanent error|invalid user address|following (?:address(?:es)?|recipients?) (?:failed|had)|wasn't able to deliver|was not delivered|unable to deliver|delivery to the following|returned to sender|delivery status notification|not be delivered`)

func textLooksLikeBounce(text string) bool {
	return bounceTextRe.MatchString(text) && hasCode(text)
}

// messageIDRe marks a line that quotes a Message-ID, whose value looks like
// an address but is not one.
var messageIDRe = regexp.MustCompile(`(?i)message-id\s*[:=]|^\s*(?:in-reply-to|references)\s*:`)

// helpRe marks a line that names an address to write to for help rather
// than one that failed.
var helpRe = regexp.MustCompile(`(?i)contact|assistance|help|questions|send (?:e-?)?mail to|write to|please|include this`)

type hit struct {
	addr string
	line int
	rest string // the text after the address on its line
	// header is true when the line is a header field quoted in the
	// notice ("To: a@b" in "the message you sent with the following
	// header fields"): a later mention is the better line.
	header bool
}

// quotedHeaderRe matches a header field of the original quoted in a
// notice, whose address is not where the error is.
var quotedHeaderRe = regexp.MustCompile(`(?i)^\s*(?:to|cc|bcc)\s*:`)

// labelRe matches what may stand before an address on its line without
// saying anything about it: a label ("Recipient address:", "To:") or a
// phrase that introduces it.
var labelRe = regexp.MustCompile(`(?i)^(?:(?:final|original)-recipient|recipient(?: address)?|failed recipient|addressee|destinataire|empfänger|to|address|e-?mail address|user|mailbox|account|rcpt(?: to)?)\s*:?\s*(?:rfc822\s*;)?$`)

// scanText finds failed recipients and their errors in a free-text bounce.
// subject is the bounce's Subject, which may say what kind of notice it is
// ("Warning: could not send message for past 4 hours").
func scanText(text string, exclude map[string]bool, from, xFailed, subject string) []Recipient {
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	for i, l := range lines {
		if origStartRe.MatchString(l) {
			lines = lines[:i]
			break
		}
	}
	quoted := quotedHeaderLines(lines)
	fromAddr := strings.ToLower(firstAddr(from))
	line := ""
	// Strong patterns (an address alone on its line, before its error, in
	// RCPT TO) are trusted even for the bounce's own addressee, since people
	// do mail themselves; weaker ones skip every address of the bounce.
	strong := false
	skip := func(a string) bool {
		la := strings.ToLower(a)
		local, _, _ := strings.Cut(la, "@")
		if la == fromAddr || local == "mailer-daemon" || local == "mail-daemon" {
			return true
		}
		// A postmaster address in a weak pattern is usually the one to
		// write to for help; named as a failed recipient, it counts.
		return !strong && (exclude[la] || local == "postmaster" && helpRe.MatchString(line))
	}
	var hits []hit
	seen := map[string]int{}
	add := func(a string, i int, rest string) {
		// An address quoted in prose between apostrophes ("addressed
		// to 'a@b'"): the apostrophe is legal in a local part, but not
		// at its start in any address a bounce is about.
		a = strings.TrimLeft(a, "'")
		if skip(a) {
			return
		}
		key := strings.ToLower(a)
		if len(hits) >= maxRecipients && seen[key] == 0 {
			return
		}
		header := i >= 0 && quotedHeaderRe.MatchString(lines[i])
		if j, ok := seen[key]; ok {
			switch {
			case hits[j].header && !header && i >= 0:
				// The notice quoted the original's header before it
				// named the recipient in its report.
				hits[j].line, hits[j].rest, hits[j].header = i, rest, false
			case hits[j].rest == "" && strings.TrimSpace(rest) != "":
				// A later mention with more text is a better diagnostic.
				hits[j].rest = rest
			}
			return
		}
		seen[key] = len(hits)
		hits = append(hits, hit{addr: a, line: i, rest: rest, header: header})
	}
	for _, a := range allAddrs(xFailed) {
		add(a, -1, "")
	}
	// rcptLine holds, for each line that names a recipient, that
	// recipient (lower case).
	rcptLine := make([]string, len(lines))
	for i, l := range lines {
		if len(hits) >= maxRecipients {
			break
		}
		if messageIDRe.MatchString(l) || quoted[i] {
			continue
		}
		line = l
		for k, re := range recipientLineRes {
			strong = k < 6
			if m := re.FindStringSubmatchIndex(l); m != nil {
				a := l[m[2]:m[3]]
				if skip(a) || k == sendmailAddrRule && !ownLine(l[:m[0]], a) {
					continue
				}
				rcptLine[i] = strings.ToLower(a)
				rest := l[m[3]:]
				if c := codePrefixRe.FindString(l[:m[2]]); c != "" {
					// Sendmail's "554 <addr>... error": the reply code
					// before the address belongs to its error.
					rest = strings.TrimRight(c, " \t<\"([") + " " + strings.TrimLeft(rest, ">.:,) ")
				} else if p := strings.Trim(l[:m[2]], " \t<\"([-*•>:"); p != "" && !labelRe.MatchString(p) {
					// IMail's "Unknown user: a@b": the error before the
					// address is this recipient's own.
					rest = p + " " + strings.TrimLeft(rest, ">.:,) ")
				}
				add(a, i, rest)
				break
			}
		}
	}
	strong = false
	if len(hits) == 0 {
		// A list of bare names under "the following recipients ...:",
		// the reporting system's own users (AOL names screen names):
		// they are addresses at its domain.
		for _, n := range bareNames(lines, fromAddr) {
			add(n.addr, n.line, n.rest)
		}
	}
	if len(hits) == 0 {
		// Last resort: any address the report mentions that is not its own.
		for i, l := range lines {
			if messageIDRe.MatchString(l) || len(hits) >= maxRecipients {
				continue
			}
			line = l
			for _, m := range addrRe.FindAllStringIndex(l, -1) {
				if senderBeforeRe.MatchString(l[:m[0]]) {
					// "not accepting mail from s@x": the sender, whom
					// the error is about, not a recipient.
					continue
				}
				// The line is all there is about the address: the words
				// around it are its error.
				add(l[m[0]:m[1]], i, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	// An X-Failed-Recipients address gets its line from the text: the
	// first line that names it. One pass over the lines serves them all,
	// as a search per address cost addresses times lines.
	pending := map[string][]int{}
	for j := range hits {
		if hits[j].line < 0 || hits[j].header {
			k := strings.ToLower(hits[j].addr)
			pending[k] = append(pending[k], j)
		}
	}
	for i := 0; i < len(lines) && len(pending) > 0; i++ {
		if quotedHeaderRe.MatchString(lines[i]) {
			continue
		}
		for _, m := range addrRe.FindAllStringIndex(lines[i], -1) {
			k := strings.ToLower(lines[i][m[0]:m[1]])
			for _, j := range pending[k] {
				if hits[j].header {
					// Named again outside the quoted header: that line
					// is the report's, and so is the text after it.
					if rcptLine[hits[j].line] == k {
						rcptLine[hits[j].line] = ""
					}
					hits[j].rest = strings.TrimSpace(lines[i][m[1]:])
				}
				hits[j].line = i
				rcptLine[i] = k
			}
			delete(pending, k)
		}
	}
	// An address met only in a quoted header field is the original's
	// (a list's own address, often), not the report's, once the report
	// names a recipient of its own; alone, it is the best guess left.
	own := 0
	for _, h := range hits {
		if !h.header {
			own++
		}
	}
	if own > 0 && own < len(hits) {
		kept := hits[:0]
		for _, h := range hits {
			if !h.header {
				kept = append(kept, h)
			}
		}
		hits = kept
	}
	// Each recipient's lines are its own: what the report says beside
	// them (the notice around the list) speaks for a recipient whose own
	// lines say nothing, but another recipient's error must not. In a
	// list of two, the first one's bare "Domain does not exist" would
	// otherwise take the second one's "550 5.1.1 User unknown".
	used := make([]bool, len(lines))
	copy(used, quoted)
	diags := make([]string, len(hits))
	for k, h := range hits {
		diag := strings.TrimSpace(strings.Trim(strings.TrimSpace(h.rest), ">:.)\"]"))
		if h.line >= 0 {
			used[h.line] = true
			diag = joinSpace(diag, following(lines, h.line, rcptLine, used))
		}
		diags[k] = diag
	}
	for k, h := range hits {
		if h.line >= 0 {
			diags[k] = joinSpace(diags[k], transcript(lines, h.line, rcptLine, used))
		}
	}
	var shared []string
	for i, l := range lines {
		if !used[i] {
			shared = append(shared, l)
		}
	}
	w := newWholeText(strings.Join(lines, "\n"), strings.Join(shared, "\n"), subject)
	w.single = len(hits) == 1
	rc := reasonCache{}
	var out []Recipient
	for k, h := range hits {
		out = append(out, textRecipient(h.addr, diags[k], w, rc))
	}
	return out
}

// senderBeforeRe matches the words before an address that make it the
// sender the error names ("mail from", "sent by"), not a recipient.
var senderBeforeRe = regexp.MustCompile(`(?i)(?:\bfrom|sent by|sender)\s*:?\s*[<"(\[]?$`)

// listIntroRe matches the line that opens a list of failed recipients
// and ends with a colon: "Your mail to the following recipients could
// not be delivered because ...:".
var listIntroRe = regexp.MustCompile(`(?i)\bfollowing (?:recipients?|address(?:es)?|users?)\b[^\n]*:\s*$`)

// bareNameRe matches a list item that is a local part alone, indented.
var bareNameRe = regexp.MustCompile(`^[ \t]+([A-Za-z0-9][A-Za-z0-9._+-]{0,63})\s*$`)

// bareNames returns the recipients a report lists by name alone, without
// a domain, under a line that introduces them (listIntroRe): the
// reporting system's own users, completed with the domain of the
// report's From (its MAILER-DAEMON or postmaster). The intro line, which
// says why, is each one's text. None if the report does not come from
// such an address.
func bareNames(lines []string, fromAddr string) []hit {
	local, domain, ok := strings.Cut(fromAddr, "@")
	if !ok || domain == "" || local != "mailer-daemon" && local != "postmaster" {
		return nil
	}
	var out []hit
	for i := 0; i < len(lines); i++ {
		if !listIntroRe.MatchString(lines[i]) {
			continue
		}
		intro := strings.TrimSuffix(strings.TrimSpace(lines[i]), ":")
		for j := i + 1; j < len(lines) && len(out) < maxRecipients; j++ {
			m := bareNameRe.FindStringSubmatch(lines[j])
			if m == nil {
				break
			}
			out = append(out, hit{addr: m[1] + "@" + domain, line: j, rest: intro})
		}
	}
	return out
}

// wholeText is what textRecipient reads from the whole report, found once
// per report: it is the same for every recipient, and searching it again
// for each cost recipients times the length of the text.
type wholeText struct {
	clipped string // the head of the shared text, for the reason patterns
	all     string // the head of the whole report, for the SMTP phase
	status  string // the first RFC 3463 status in the shared text
	warning bool   // the report is a delay warning, not a final failure
	shared  string // the shared text whole, for errors
	errs    *string
	single  bool // the report names a single recipient
}

// whole is the report; shared is what it says besides its recipients'
// own lines, which is all that may stand in for a recipient whose lines
// say nothing.
func newWholeText(whole, shared, subject string) *wholeText {
	kind := subject + "\n" + whole
	return &wholeText{clipped: clip(shared), all: clip(whole), status: findStatus(shared),
		warning: warningRe.MatchString(kind) && !finalRe.MatchString(kind), shared: shared}
}

// errors returns the reply lines of the shared text (errorLines), found
// on first use: most reports never need them.
func (w *wholeText) errors() string {
	if w.errs == nil {
		e := errorLines(w.shared)
		w.errs = &e
	}
	return *w.errs
}

// errorLines returns the lines of a free-text report that carry an SMTP
// reply code or status (a session transcript's "421 example.com
// (smtp)... Deferred: ..."), for a recipient that the report does not
// name on a line of its own: they are the server's words about it.
func errorLines(text string) string {
	var b []string
	for _, l := range strings.Split(text, "\n") {
		if origStartRe.MatchString(l) || len(b) == 4 {
			break
		}
		if l = strings.TrimSpace(l); l != "" && hasCode(l) && !messageIDRe.MatchString(l) && !(origDetailRe.MatchString(l) && !hasFailureCode(l)) {
			b = append(b, l)
		}
	}
	return strings.Join(b, " ")
}

// following collects the error text after a recipient line: the next lines
// up to the next recipient line, at most two paragraphs.
// Lines taken are marked in used.
func following(lines []string, i int, rcptLine []string, used []bool) string {
	self := rcptLine[i]
	var b []string
	paras, n := 0, 0
	inPara := false
	for j := i + 1; j < len(lines) && n < 12; j++ {
		// The next recipient's line ends this one's text; a line naming
		// this recipient again (its SMTP reply) is part of it.
		if rcptLine[j] != "" && rcptLine[j] != self {
			break
		}
		if used[j] && rcptLine[j] == "" {
			// The original's quoted header (quotedHeaderLines), or
			// lines another recipient took: not this one's error.
			break
		}
		l := strings.TrimSpace(lines[j])
		if boundaryLineRe.MatchString(l) {
			// A MIME boundary the parser did not split on (a broken
			// Content-Type): the part, and the report's text, ends.
			break
		}
		if origDetailRe.MatchString(l) && !hasFailureCode(l) && !strings.Contains(strings.ToLower(l), self) {
			// "Subject: Test message", "Size (in bytes): 39": the
			// notice describing the original, not the server's reply
			// (qmail's "From: <postmaster@x> RCPT: <a@b> ... does not
			// like recipient" names the recipient, and is its own).
			continue
		}
		if sendmailHostRe.MatchString(l) {
			// Sendmail's "550 host (mailer)... error" line opens the
			// report of the next host's recipients.
			break
		}
		if l == "" {
			if inPara {
				paras++
				inPara = false
				if paras >= 2 || hasCode(strings.Join(b, " ")) {
					break
				}
			}
			continue
		}
		inPara = true
		b = append(b, l)
		used[j] = true
		n++
	}
	return strings.Join(b, " ")
}

// transcript collects the later lines of a report that name the
// recipient of line i again, each with the lines above it in its
// paragraph that name no other recipient: a session transcript's
// "... while talking to mx.example.org.:", ">>> RCPT To:<a@b>", "<<< 550
// 5.1.1 <a@b>... User unknown", or a local mailer's "mail.local: unknown
// user: a" before sendmail's "550 5.1.1 <a@b>... User unknown". They are
// the receiving server's own words, where the list at the top of the
// report gave only a summary. Lines taken are marked in used.
func transcript(lines []string, i int, rcptLine []string, used []bool) string {
	self := rcptLine[i]
	var b []string
	for j := i + 1; j < len(lines) && len(b) < 12; j++ {
		if rcptLine[j] != self || used[j] || quotedHeaderRe.MatchString(lines[j]) {
			continue
		}
		start := j
		for start > 0 && !used[start-1] && rcptLine[start-1] == "" && strings.TrimSpace(lines[start-1]) != "" &&
			!strings.Contains(lines[start-1], "-----") && j-start < 3 {
			start--
		}
		for k := start; k <= j; k++ {
			used[k] = true
			b = append(b, strings.TrimSpace(lines[k]))
		}
	}
	return strings.Join(b, " ")
}

// quotedHeaderStartRe matches the first field of an original message's
// header quoted in a notice with no separator that origStartRe knows:
// Zoho's "Received:from mail.zoho.com ..." right after the error, EZweb's
// after a line of dashes. A report's own text does not start a line with
// these fields.
var quotedHeaderStartRe = regexp.MustCompile(`(?i)^[ \t>]*(?:received|return-path|dkim-signature|arc-seal)[ \t]*:`)

// headerFieldRe matches a header field line (or its continuation).
var headerFieldRe = regexp.MustCompile(`^(?:[ \t>]*[A-Za-z][A-Za-z0-9-]*[ \t]*:|[ \t])`)

// quotedHeaderLines marks the lines of each quoted original header: from
// a line quotedHeaderStartRe matches to the end of its block of header
// fields. Their addresses (Received's "for <a@b>") are the original's, and
// their text is nobody's error.
func quotedHeaderLines(lines []string) []bool {
	q := make([]bool, len(lines))
	for i := 0; i < len(lines); i++ {
		if !quotedHeaderStartRe.MatchString(lines[i]) {
			continue
		}
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != "" && headerFieldRe.MatchString(lines[i]); i++ {
			q[i] = true
		}
	}
	return q
}

// boundaryLineRe matches a MIME boundary line ("------=_Part_1_2.3--"):
// dashes, then at least one other character, no space.
var boundaryLineRe = regexp.MustCompile(`^--+[^\s-]\S*$`)

// origDetailRe matches a line in which a notice describes the original
// message (Apache James' "Message details:", MailEnable's and Zoho's
// quoted fields): its subject, sender, date, size.
var origDetailRe = regexp.MustCompile(`(?i)^(?:subject|from|cc|bcc|date|sent(?: date)?|size(?: \(in bytes\))?|number of lines)[ \t]*:`)

// codePrefixRe matches a reply code (and status) that opens a line before
// the address it is about.
var codePrefixRe = regexp.MustCompile(`^\s*[245]\d\d(?: [245]\.\d{1,3}\.\d{1,3})?\s+[<"(\[]?$`)

// sendmailHostRe matches the line sendmail writes about a host before the
// recipients delivered through it: "421 example.org (smtp)... Deferred".
var sendmailHostRe = regexp.MustCompile(`^[245]\d\d [a-zA-Z0-9.-]+ \([a-z0-9-]+\)\.\.\. `)

// hasFailureCode reports whether s quotes a failure: a 4xx or 5xx reply
// code or status.
func hasFailureCode(s string) bool {
	st := findStatus(s)
	return st != "" && st[0] != '2' || findReplyCode(s) >= 400
}

func hasCode(s string) bool {
	return findStatus(s) != "" || findReplyCode(s) != 0
}

// textRecipient classifies one recipient of a free-text bounce from the text
// about it, falling back to the whole report for what that text lacks.
func textRecipient(addr, diag string, whole *wholeText, rc reasonCache) Recipient {
	if whole.single && !hasFailureCode(diag) && whole.errors() != "" {
		// The recipient's own lines quote no reply, but the report, which
		// is about it alone, does ("Error message below: 550 - Requested
		// action not taken: no such user here"): that is the server's
		// answer about this recipient.
		diag = joinSpace(whole.errors(), diag)
	}
	enh := findStatus(diag)
	class := 0
	if enh != "" {
		class = int(enh[0] - '0')
	} else if c := findReplyCode(diag); c != 0 {
		class = c / 100
	}
	if class == 0 || class == 2 {
		if enh == "" {
			enh = whole.status
		}
		switch {
		case enh != "":
			class = int(enh[0] - '0')
		case whole.warning || temporaryWordRe.MatchString(diag) || retryTimeoutRe.MatchString(diag):
			// A delay warning, or a returned message whose error the
			// server called temporary: the status is temporary, though
			// the message may have been returned.
			class = 4
		default:
			// Absent any sign, a failure notice reports a failure.
			class = 5
		}
	}
	diag = clip(diag)
	why := diag
	if rc.reason(diag) == "" {
		// The whole report speaks for a recipient whose own lines say
		// nothing: the same text for each, so rc remembers its reason.
		why = whole.clipped
	}
	// The SMTP phase is read from the whole report: a transcript names
	// it for every recipient.
	v := dataPhase(classify(class, enh, why, enh != "" && strings.Contains(diag, enh), rc), enh != "", diag, whole.all)
	// The notice says whether delivery goes on; the reply only what the
	// server said last. A returned message whose last reply was a 4xx is
	// a failure with a temporary status.
	action := "failed"
	if class == 4 && whole.warning {
		action = "delayed"
	}
	v = transient(v, action)
	if diag == "" && whole.single {
		// Named only in X-Failed-Recipients, the recipient has no lines
		// of its own; the notice, about it alone, is the explanation
		// (Google Groups' "the group you tried to contact may not
		// exist").
		diag = strings.Join(strings.Fields(whole.shared), " ")
	}
	if len(diag) > 1000 {
		diag = diag[:1000]
	}
	return Recipient{Recipient: addr, Action: action, Status: v.Status, Permanent: v.Permanent,
		Hard: v.Hard, Reason: v.Reason, Diagnostic: diag}
}

// clip bounds the text the reason patterns run over: the explanation of a
// bounce is near its top, and the patterns are not cheap.
func clip(s string) string {
	if len(s) > 4096 {
		return s[:4096]
	}
	return s
}

func joinSpace(a, b string) string {
	if a == "" {
		return b
	}
	if b == "" {
		return a
	}
	return a + " " + b
}

// firstAddr returns the first address in s, or "".
func firstAddr(s string) string {
	return addrRe.FindString(s)
}

// allAddrs returns every address in s.
func allAddrs(s string) []string {
	return addrRe.FindAllString(s, -1)
}

var (
	tagRe   = regexp.MustCompile(`(?s)<(?:script|style)[^>]*>.*?</(?:script|style)>|<[^>]*>`)
	blockRe = regexp.MustCompile(`(?i)<(?:br|/p|/div|/tr|/li|/h\d)[^>]*>`)
)

// stripHTML reduces an HTML part to its text, keeping line breaks.
func stripHTML(s string) string {
	s = blockRe.ReplaceAllString(s, "\n")
	s = tagRe.ReplaceAllString(s, " ")
	r := strings.NewReplacer("&nbsp;", " ", "&lt;", "<", "&gt;", ">", "&amp;", "&", "&quot;", `"`, "&#39;", "'")
	return r.Replace(s)
}
