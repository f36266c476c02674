package bounce

import (
	"regexp"
	"strconv"
	"strings"
)

// enhancedRe finds an RFC 3463 status in free text. The detail may have up to
// three digits (5.7.606 and friends are in use).
var enhancedRe = regexp.MustCompile(`(?:^|[^0-9.])([245])\.(\d{1,3})\.(\d{1,3})(?:[^0-9.]|\.(?:\s|$)|$)`)

// replyCodeRe finds a basic SMTP reply code at the start of a reply line or
// after the words MTAs put in front of it ("said:", "host ... :").
var replyCodeRe = regexp.MustCompile(`(?:^|[\s:;(\[<"'>-])([245][0-5][0-9])(?:[\s\-.:;,)]|$)`)

// ClassifyReply classifies an SMTP reply met while delivering. code is the
// basic reply code (0 if unknown), enhanced the RFC 3463 status if the reply
// had one ("" otherwise; it is also looked for in text), text the reply text.
// 5xx (or 5.x.x) is permanent; 4xx and anything unknown are temporary.
func ClassifyReply(code int, enhanced string, text string) Verdict {
	class := 0
	if code >= 200 && code < 600 {
		class = code / 100
	}
	enh := normStatus(enhanced)
	if enh == "" {
		enh = specificStatus(text)
	}
	if enh != "" {
		// The enhanced code is the more deliberate statement of the two.
		class = int(enh[0] - '0')
	}
	return classify(class, enh, text, true, nil)
}

// classify builds a verdict from a status class (2, 4, 5 or 0 for unknown), a
// normalised enhanced status (may be empty) and the diagnostic text.
// own is true when the status is the answering server's own (it gave it in
// its reply) rather than one a reporting MTA put on the reply afterwards.
// rc, if not nil, remembers reasons already read from a text: the reason
// patterns are the costly part of a parse, and a report with many
// recipients gives them the same text again and again.
func classify(class int, enh, text string, own bool, rc reasonCache) Verdict {
	var v Verdict
	v.Permanent = class == 5
	if class == 2 {
		v.Reason = Delivered
		v.Status = enh
		if v.Status == "" {
			v.Status = "2.0.0"
		}
		return v
	}
	r, specific := reasonFromStatus(enh)
	if !specific {
		if tr := rc.reason(text); tr != "" {
			r = tr
			if (r == UserUnknown || r == HostUnknown) && own && enh != "" && strings.Contains("237", enh[2:3]) && enh[2:] != "2.1" && !strings.HasSuffix(enh, ".0") {
				// The server filed it under mailbox (X.2), mail system
				// (X.3) or policy (X.7), not addressing: whatever its
				// words, it refused the message, and the address is not
				// proven bad. X.2.1 is the exception: many servers send
				// it for an unknown user. A status that a reporting MTA
				// put on a plain "553 Invalid recipient" is only its
				// guess at a mapping, and does not outweigh the words.
				// Nor does a generic detail (X.2.0, X.3.0, X.7.0: "other
				// or undefined" in RFC 3463), which files nothing: the
				// words are the more specific statement, and win.
				r = Policy
			}
			if class == 5 && enh != "" && enh[2:] == "4.4" && (r == NetworkError || r == SystemError) {
				// A permanent X.4.4 (unable to route) is the MTA's
				// conclusion that the domain has no usable MX or
				// address (Postfix, qmail), whatever DNS trouble it
				// describes on the way: the domain takes no mail.
				r = HostUnknown
			}
		} else if r == "" {
			r = Other
		}
	} else if isHard(r) {
		if tr := rc.reason(text); outranksStatus(tr) || tr == MailboxDisabled && disabledOutrightRe.MatchString(text) {
			// "Over quota" proves the mailbox exists, a rate limit or
			// the recipient's own filter is about the sender, whatever
			// addressing status the server sent with it.
			r = tr
		}
	}
	if r == recipientFilter {
		r = Policy
	}
	v.Reason = r
	v.Hard = v.Permanent && isHard(r)
	v.Status = enh
	if v.Status == "" {
		c := class
		if c != 5 {
			// Unknown is treated as temporary, and says so.
			c = 4
		}
		v.Status = strconv.Itoa(c) + "." + defaultDetail(r)
	}
	return v
}

// normStatus returns s if it is a well-formed RFC 3463 status, else "".
func normStatus(s string) string {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return ""
	}
	if parts[0] != "2" && parts[0] != "4" && parts[0] != "5" {
		return ""
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 {
			return ""
		}
		for _, c := range p {
			if c < '0' || c > '9' {
				return ""
			}
		}
	}
	return s
}

// findStatus returns the first RFC 3463 status in text, or "". A success
// status (2.x.x) counts only when no failure status follows it: in a
// transcript, "250 2.1.5 Ok" is a step that went well before the one that
// failed.
func findStatus(text string) string {
	first := ""
	for _, m := range enhancedRe.FindAllStringSubmatch(text, 8) {
		st := m[1] + "." + m[2] + "." + m[3]
		if st[0] != '2' {
			return st
		}
		if first == "" {
			first = st
		}
	}
	return first
}

// specificStatus returns the failure status in text that says most: the
// first one with a detail other than 0, else the first that is not X.0.0,
// else "". Relays wrap the answering server's reply in their own generic
// code ("5.1.0 - Unknown address error 550-'5.7.1 ... Access denied'"): in
// RFC 3463 a detail of 0 means "other or undefined" within its subject, so
// a later status with a real detail is the better witness. Success
// statuses (2.x.x) are skipped: in a transcript they are the replies to
// the commands before the one that failed.
func specificStatus(text string) string {
	first := ""
	for _, m := range enhancedRe.FindAllStringSubmatch(text, 8) {
		if m[1] == "2" {
			continue
		}
		st := m[1] + "." + m[2] + "." + m[3]
		if m[3] != "0" {
			return st
		}
		if first == "" && m[2] != "0" {
			first = st
		}
	}
	return first
}

// findReplyCode returns the first failure reply code (4xx, 5xx) in text,
// else the first reply code, else 0. A transcript quotes the replies that
// went well ("250 2.1.5 Ok") before the one that ended the transaction.
func findReplyCode(text string) int {
	first := 0
	for _, m := range replyCodeRe.FindAllStringSubmatch(text, 8) {
		n, _ := strconv.Atoi(m[1])
		if n >= 400 {
			return n
		}
		if first == 0 {
			first = n
		}
	}
	return first
}

// dataPhaseRe spots a rejection given at the end of DATA, after the
// recipient was accepted at RCPT TO; mailFromRe one given at MAIL FROM,
// which is about the sender; rcptPhaseRe one given at RCPT TO.
var (
	dataPhaseRe = regexp.MustCompile(`(?i)after end of data|end of data command|>>> data|after data|in reply to end of data|after the data|data command`)
	mailFromRe  = regexp.MustCompile(`(?i)after mail from|in reply to mail from|>>> mail from`)
	// rcptPhaseRe also knows qmail's words for a reply to RCPT TO, "does
	// not like recipient".
	rcptPhaseRe = regexp.MustCompile(`(?i)\brcpt(?:[ _]to)?\b|does not like recipient`)
	// addressRe is wording that only a failed recipient check produces:
	// the reporting MTA saying it was the address that was refused or not
	// found, or the final server saying its directory has no such name.
	// The directory's and the final delivery agent's words ("Does not
	// have a final email delivery point", "Invalid final delivery
	// userid", "did not exactly match an LLNL email address", "no ... in
	// name directory"), a local delivery agent's ("delivery problems to
	// local user a") and the address said not to exist ("L'adresse ...
	// n'existe pas") come from the look-up of the name, never from a
	// content filter.
	addressRe = regexp.MustCompile(`(?i)rejected (?:the )?address|recipient address rejected|address (?:couldn't|could not|can't|cannot) be found|address not found|no valid recipients|invalid recipient|recipient name is not recognized|not listed in .{0,40}directory|address (?:is )?(?:unknown|invalid)` +
		`|final (?:e-?mail )?delivery (?:point|userid|user id)|did not (?:exactly )?match (?:an?|any) (?:\S+ )?(?:e-?mail )?address|(?:not|no match) (?:present |found |listed )?in (?:the |our |name )?(?:\S+ )?directory|in (?:the )?name directory|nameserver query` +
		`|(?:to|for) local (?:user|recipient)\b|address (?:\S+ ){0,4}(?:does not|doesn't) exist|adresse\b.{0,60}n['’]existe (?:pas|plus)`)
)

// dataPhase corrects a verdict for the SMTP phase the rejection came in.
// An address accepted at RCPT TO and then refused "user unknown" with the
// content is a content filter speaking (Japanese carriers' domain filters
// do this), unless the server gave an addressing status (X.1.x) for it;
// and a "does not exist" at MAIL FROM is about the sender. Either way the
// address is not condemned.
//
// Where no phase is named at all, the words decide: "user unknown", "no
// such user", "unknown user", "user not found" and the other userunknown
// wordings of the reason table condemn the address, as they do in every
// format, whatever generic status came with them. Only an explicit
// after-DATA phase (the reply answered DATA or the end of data, or the
// transcript shows DATA sent) keeps the filtered reading. The exception
// is weak wording (weakUnknownRe): a recipient "temporarily unavailable",
// the 551 "user not local", labels notices put before any error. Alone,
// they say nothing about the address, and condemn it only under an
// addressing status the server gave (X.1.x; given is true when v.Status
// came from the report or the reply, not from the reason), at RCPT TO,
// or beside other words that only a recipient check produces. A reply
// latchkey met itself is classified by ClassifyReply, which knows the
// phase and does not come here.
//
// text is what the report says about this recipient; wider, if not empty,
// the whole report. The phase is read from text; only where text names no
// phase at all is it read from wider, and then only if wider names a
// single one: a transcript of several sessions (sendmail's) may show DATA
// for one recipient and RCPT TO for another.
func dataPhase(v Verdict, given bool, text, wider string) Verdict {
	if v.Reason == Policy {
		return atRcpt(v, text, wider)
	}
	if v.Reason != UserUnknown && v.Reason != HostUnknown && v.Reason != Other {
		return v
	}
	if v.Reason == UserUnknown && providerUnknownRe.MatchString(text) {
		return v
	}
	mail, data, rcpt, text, ok := phaseOf(text, wider)
	if !ok {
		return v
	}
	switch {
	case mail && !rcpt && (v.Reason != Other || v.Permanent):
	case v.Reason != UserUnknown:
		return v
	case data && !addressingStatus(v.Status, text):
	case !mail && !data && !rcpt && weakUnknown(text) && !(given && isAddressing(v.Status)) && !addressRe.MatchString(text):
	default:
		return v
	}
	v.Reason, v.Hard = Policy, false
	if !given && v.Status != "" {
		// The status was the one the words implied (X.1.1 for "user
		// unknown"), not the server's: it follows the verdict, so that
		// no reader takes a refusal for a bad mailbox by its code.
		v.Status = v.Status[:2] + defaultDetail(Policy)
	}
	return v
}

// phaseOf reads the SMTP phase a rejection came in from the recipient's
// own text, or, where that names none, from the whole report if it names
// a single one; text is then the two together. ok is false when the
// report names several phases, which says nothing about this recipient.
func phaseOf(text, wider string) (mail, data, rcpt bool, both string, ok bool) {
	own := text
	mail, data, rcpt = mailFromRe.MatchString(text), dataPhaseRe.MatchString(text), rcptPhaseRe.MatchString(text)
	if !mail && !data && !rcpt && wider != "" {
		mail, data, rcpt = mailFromRe.MatchString(wider), dataPhaseRe.MatchString(wider), rcptPhaseRe.MatchString(wider)
		if mail && data || mail && rcpt || data && rcpt {
			return mail, data, rcpt, text, false
		}
		text += "\n" + wider
	}
	if rcpt && rcptAcceptedRe.MatchString(own) {
		// The recipient's own transcript shows its RCPT TO accepted:
		// the refusal came later, with the message. (Not the report's:
		// there the accepted RCPT may be another recipient's.)
		rcpt, data = false, true
	}
	if data && pipelinedRe.MatchString(text) {
		// With PIPELINING (RFC 2920) the RCPT TO replies are read after
		// DATA is sent, and sendmail's transcript puts them after
		// ">>> DATA"; a DATA refused for want of recipients proves it.
		data = false
	}
	return mail, data, rcpt, text, true
}

// atRcpt corrects a policy verdict that the status made of a "user
// unknown": classify files those words under the server's own status
// where that is about the mailbox, the system or policy (X.2, X.3, X.7),
// since the same words come from content filters. A reply to RCPT TO is
// no content filter: the server had not seen the message, only the
// address, so its words about the address decide (Sisimai reads them the
// same way).
func atRcpt(v Verdict, text, wider string) Verdict {
	if !v.Permanent {
		return v
	}
	// The phase first: it is cheaper than the reason patterns, and
	// rarely RCPT for a policy refusal.
	if mail, data, rcpt, _, ok := phaseOf(text, wider); ok && rcpt && !mail && !data && reasonFromText(text) == UserUnknown {
		v.Reason, v.Hard = UserUnknown, true
	}
	return v
}

// providerUnknownRe matches the replies of providers that refuse an
// unknown user only after DATA, in words no content filter uses: Yahoo's
// "554 delivery error: dd This user doesn't have a yahoo.com account".
// They condemn the address whatever the phase. Yahoo's account sentence
// is its user look-up's answer in its own notices too ("Message from
// yahoo.com. Unable to deliver message to the following address(es).
// <a@b>: This user doesn't have a yahoo.com account (a@b) [0]", and the
// same from the domains Yahoo hosts, sbcglobal.net and others), where it
// names no phase: it names the provider's account, which no content
// filter speaks of.
var providerUnknownRe = regexp.MustCompile(`(?i)delivery error: dd requested mailbox not found|this user doesn['’]?t have an? \S+ account\b`)

// weakUnknownRe is userunknown wording that, alone, does not say the
// address is bad: a mailbox, user or recipient said to be unavailable with
// a qualifier ("temporarily unavailable"), the 551 "user not local", and
// the bare "unable to deliver to", "undeliverable address" and "not listed
// in" that notices put before any error ("Unable to deliver to domain ...
// Can't connect to host", HotPOP's "Undeliverable Address: a@b" label). It
// is matched against what a userunknown pattern matched, whole.
//
// RFC 5321's own text for a 550, "Requested action not taken: mailbox
// unavailable", is not weak although RFC 5321 4.2.2 also gives it for "no
// access, or command rejected for policy reasons": Sisimai's userunknown
// table has it, every hand-labelled bounce carrying it in the repository's
// corpora is a missing mailbox, and a policy refusal names itself in
// words the reason table reads first (docs/bounces.md).
var weakUnknownRe = regexp.MustCompile(`^(?:(?:user|account|address|recipient|addressee) (?:\S+ )?unavailable|mailbox \S+ unavailable|unable to deliver to|undeliverable address|not listed in|user (?:is )?not local)$`)

// weakUnknown reports whether text's userunknown wording is only weak
// (weakUnknownRe): every match of the reason table's userunknown patterns
// in it is weak. A strong word anywhere ("Invalid Address ... mailbox
// unavailable", "not listed in Domino Directory") makes it false.
func weakUnknown(text string) bool {
	t := strings.ToLower(text)
	weak := false
	for _, rule := range textRules {
		if rule.r != UserUnknown {
			continue
		}
		for _, m := range rule.re.FindAllString(t, -1) {
			if !weakUnknownRe.MatchString(m) {
				return false
			}
			weak = true
		}
	}
	return weak
}

// rcptAcceptedRe matches a transcript line sending RCPT TO answered by a
// success reply on the next line (">>> RCPT To:<a@b>" then "<<< 250 2.1.5
// Ok"). With PIPELINING the reply follows the other commands sent, not
// the RCPT line, and this does not match.
var rcptAcceptedRe = regexp.MustCompile(`(?im)^>>> rcpt to:?[^\n]*\n<<< 25\d\b`)

// pipelinedRe matches the reply to a DATA sent when no recipient had been
// accepted.
var pipelinedRe = regexp.MustCompile(`(?i)need rcpt|no valid recipients|no recipients`)

// isAddressing reports whether status is an X.1.x (addressing) status.
func isAddressing(status string) bool {
	return len(status) > 3 && status[2] == '1' && status[3] == '.'
}

// addressingStatus reports whether the server itself gave an X.1.x status
// (status came from the reply, not from the reason).
func addressingStatus(status, text string) bool {
	return isAddressing(status) && strings.Contains(text, status)
}

// reasonCache maps texts to the reasons they suggest, for one report.
type reasonCache map[string]Reason

// reason is reasonFromText, remembered when c is not nil.
func (c reasonCache) reason(text string) Reason {
	if c == nil {
		return reasonFromText(text)
	}
	r, ok := c[text]
	if !ok {
		r = reasonFromText(text)
		c[text] = r
	}
	return r
}

// transient corrects the reason of a temporary failure reported in a
// bounce. A domain that cannot be resolved for now is a DNS failure, not an
// unknown host; and a delay notice reports that delivery is still being
// retried and may run out of time, whatever network trouble caused it.
func transient(v Verdict, action string) Verdict {
	if v.Permanent {
		return v
	}
	if v.Reason == HostUnknown {
		v.Reason = NetworkError
	}
	if action == "delayed" && (v.Reason == NetworkError || v.Reason == Other || v.Reason == SystemError) {
		v.Reason = Expired
	}
	return v
}
