package bounce

import (
	"regexp"
	"strings"
)

// This file is the one place where latchkey decides what a failure means:
// the reason table (each reason, whether it condemns the address, the
// status it implies, the Sisimai names it stands for, and why), the status
// codes that name a reason on their own, and the text patterns read from a
// diagnostic. Every reader (RFC 3464 reports, free-text bounces, replies
// met while delivering) extracts the status and the remote server's text
// for a recipient first, and only then comes here, so that the same words
// mean the same thing whatever format carried them.

// reasonRow is one row of the reason table.
type reasonRow struct {
	reason Reason
	// hard is true when a permanent failure for this reason proves the
	// address bad, so that mail to it should stop.
	hard bool
	// detail is the subject.detail of the RFC 3463 status the reason
	// implies, for a reply that gave none.
	detail string
	// sisimai are the Sisimai reason names folded into this one.
	sisimai []string
	// why is the argument for hard or soft, for the documentation.
	why string
}

// reasonTable lists every reason. Hard is kept narrow, as in Sisimai's
// corpus: only a reason that says the address itself does not exist (or no
// longer does, or its domain takes no mail) is hard. Everything that says
// something about the message, the sender, the mailbox's state or a server
// is soft, however permanent: the address still works for other mail, or
// will again.
var reasonTable = []reasonRow{
	{UserUnknown, true, "1.1", []string{"userunknown"},
		"the receiving server says the mailbox does not exist"},
	{HostUnknown, true, "1.2", []string{"hostunknown"},
		"the domain does not exist or has no mail server"},
	{NotAccept, true, "1.10", []string{"notaccept"},
		"the domain takes no mail at all (null MX, RFC 7505; no SMTP service)"},
	{HasMoved, true, "1.6", []string{"hasmoved"},
		"the mailbox has moved and mail is no longer forwarded"},
	{MailboxDisabled, false, "2.1", []string{"suspend"},
		"the mailbox exists but is disabled or suspended; its owner can have it re-enabled"},
	{MailboxFull, false, "2.2", []string{"mailboxfull"},
		"the mailbox exists (it is full); it empties"},
	{MessageTooBig, false, "3.4", []string{"mesgtoobig", "exceedlimit"},
		"this message is too big; a smaller one is delivered"},
	{Policy, false, "7.1", []string{"blocked", "rejected", "filtered", "policyviolation", "requireptr",
		"badreputation", "norelaying", "notcompliantrfc", "contenterror", "syntaxerror"},
		"the server refused the sender, its IP, or this message (filters, block lists, relaying, form); the address is not in question"},
	{SpamDetected, false, "7.1", []string{"spamdetected", "virusdetected"},
		"the content was judged spam or infected"},
	{AuthFailure, false, "7.26", []string{"authfailure", "securityerror"},
		"the sender failed SPF, DKIM, DMARC or another security check"},
	{RateLimited, false, "7.28", []string{"toomanyconn", "speeding"},
		"the sender went too fast (connections, messages, recipients per hour); it passes later"},
	{Expired, false, "4.7", []string{"expired"},
		"delivery was retried until the queue gave up; the cause was transient"},
	{NetworkError, false, "4.1", []string{"networkerror"},
		"the server could not be reached (DNS, connection, loop); nothing is said about the address"},
	{SystemError, false, "3.0", []string{"systemerror", "mailererror", "systemfull"},
		"the receiving system failed (its disk, its mailer, its configuration)"},
	{Complaint, false, "0.0", []string{"feedback"},
		"an abuse report (ARF), not a delivery failure"},
	{AutoReply, false, "0.0", []string{"vacation"},
		"an automatic reply (RFC 3834), not a delivery failure"},
	{Delivered, false, "0.0", []string{"delivered"},
		"a success notice"},
	{Other, false, "0.0", []string{"onhold", "undefined"},
		"nothing in the bounce says why; not enough to condemn an address"},
}

// rowOf returns the table row of a reason (Other's for one not listed).
func rowOf(r Reason) reasonRow {
	for _, row := range reasonTable {
		if row.reason == r {
			return row
		}
	}
	return reasonTable[len(reasonTable)-1]
}

// isHard reports whether a permanent failure for this reason condemns the
// address rather than the message.
func isHard(r Reason) bool {
	return rowOf(r).hard
}

// defaultDetail is the subject.detail of the status a reason implies, for
// replies that gave none.
func defaultDetail(r Reason) string {
	return rowOf(r).detail
}

// SisimaiReason maps a Sisimai reason name (as used in the corpus
// expectations) to the Reason latchkey gives for the same failure.
func SisimaiReason(name string) Reason {
	for _, row := range reasonTable {
		for _, n := range row.sisimai {
			if n == name {
				return row.reason
			}
		}
	}
	return Other
}

// reasonFromStatus maps an enhanced status to a reason. specific is true when
// the status alone is conclusive; otherwise the text may say more (X.0.0,
// X.7.1 and the like are used for everything).
func reasonFromStatus(enh string) (r Reason, specific bool) {
	if enh == "" {
		return "", false
	}
	sd := enh[2:] // subject.detail
	switch sd {
	case "1.1", "1.4": // bad mailbox, ambiguous
		return UserUnknown, true
	case "1.3": // bad syntax: also used for refusals that are not about it
		return UserUnknown, false
	case "1.2":
		return HostUnknown, true
	case "1.10": // RFC 7505 null MX
		return NotAccept, true
	case "1.6":
		return HasMoved, true
	case "7.13":
		return MailboxDisabled, true
	case "2.1": // also widely sent for "user unknown": the text decides
		return MailboxDisabled, false
	case "2.2":
		return MailboxFull, true
	case "2.3", "3.4":
		return MessageTooBig, true
	case "4.7":
		return Expired, true
	case "4.2", "4.6":
		return NetworkError, true
	case "4.1":
		return NetworkError, false
	case "1.7", "1.8": // the sender's address or domain: never the recipient's fault
		return Policy, true
	case "7.23", "7.24", "7.26", "7.20", "7.21", "7.22", "7.5", "7.7":
		return AuthFailure, true
	case "7.25": // reverse DNS validation failed (RFC 7372): the sender's host
		return Policy, true
	case "7.27": // the sender's domain has a null MX (RFC 7505)
		return Policy, true
	case "7.28":
		return RateLimited, true
	case "7.0", "7.1", "7.606", "7.9":
		return Policy, false
	case "4.4":
		return HostUnknown, false
	case "3.0", "3.1", "3.2", "3.5", "4.3":
		return SystemError, false
	}
	return "", false
}

// textRules are tried in order on the lower-cased diagnostic; the first match
// wins. The order matters: specific phrases before generic words ("spamhaus"
// names a block list, not spam content; "rejected" says almost nothing).
var textRules = []struct {
	r  Reason
	re *regexp.Regexp
}{
	// The recipient's own filter refused the sender (Sisimai's
	// "filtered" phrases): before "user unknown", whose words some of
	// them repeat, and before the rate and size rules.
	{recipientFilter, regexp.MustCompile(`refused due to recipient preferences|recipient is only accepting mail from|user refuses to receive|recipient refuses to receive|message rejected due to user rules|you have been blocked by the recipient|account is protected by|has restricted sms e-?mail|recipient id refuse to receive|(?:is|are) not accepting (?:any )?mail\b`)},
	// Said outright, a disabled account outranks the "user unknown" that
	// some servers add to it.
	{MailboxDisabled, regexp.MustCompile(`(?:account|mailbox|user) (?:is |has been )?(?:disabled|suspended|deactivated)|account is inactive|is not active`)},
	{HasMoved, regexp.MustCompile(`has (?:been )?moved|address (?:has )?changed|no longer (?:at|with) `)},
	{RateLimited, regexp.MustCompile(`rate limit|rate-limit|rate limited|try again slower|max(?:imum)? (?:e-?mails|messages) per (?:hour|day)|per[- ]hour|throttling failure|too many errors from your ip|trop de connexions|numerous attempts to deliver|connection (?:rate |count )?limit|too many (?:smtp )?sessions|too many (?:\S+ ){0,4}recipients|(?:daily|hourly) (?:user )?(?:sending )?(?:quota|limit)|frequency limit|ratelimit|too many (?:connections|messages|recipients|concurrent|mails|emails)|throttl|exceeded (?:the )?(?:sending|rate|message) (?:limit|rate)|sending (?:limit|quota)|try again later.*rate|receiving mail at a rate`)},
	{MailboxFull, regexp.MustCompile(`mailbox (?:is )?full|mailbox (?:\S+ ){0,4}full|exceeded storage allocation|would exceed (?:the )?maximum allowed storage|mail ?folder is full|no space left on device|not sufficient disk space|quota violation|too much mail data|(?:has|have) exceeded (?:the |their |his |her )?quota|too many messages on the server|space has been used up|(?:account|mailbox|maildir) (?:\S+ ){0,4}quota|quota (?:\S+ ){0,3}exceeded|boite du destinataire pleine|mail ?box full|over ?quota|quota (?:exceeded|exceed|full)|exceeded (?:storage|(?:his|her|their|the) quota)|disk quota|storage quota|storage (?:space )?(?:is )?full|mailbox size limit|exceeds allowed size|insufficient (?:disk |storage )?space|out of (?:storage|disk)|full mailbox|mailbox (?:has )?exceeded|too much mail|(?:inbox|mailbox) is over|their mailbox is full|user.s storage|has not enough space|not enough (?:disk |storage )?space`)},
	// A malformed message (headers too large or repeated, commands out of
	// order) is refused for its form: before the size and authentication
	// rules, whose words ("too large", "DKIM") these texts contain.
	{Policy, regexp.MustCompile(`headers? (?:is |are )?too (?:large|long|many)|too many headers|duplicated? header|improper sequence|bad sequence of commands`)},
	{MessageTooBig, regexp.MustCompile(`message (?:is )?too (?:big|large)|message size (?:exceeds|limit)|max(?:imum)? (?:message )?size (?:\S+ )?exceeded|message size (?:\S+ )?exceeded|size limit|too large|exceeds (?:the )?maximum (?:message )?size|message length exceeds|maximum message size`)},
	{AuthFailure, regexp.MustCompile(`\bspf\b|sender policy framework|\bdkim\b|domainkeys|\bdmarc\b|authentication (?:check )?fail|not authenticated|unauthenticated (?:email|mail)|sender address verification|failed (?:the )?(?:spf|dkim|dmarc)|authentication (?:is )?required|authrequired|unauthenticated senders?|(?:fails?|failed) to pass authentication|authentication checks`)},
	{NotAccept, regexp.MustCompile(`null mx|does not accept (?:e-?)?mail|no smtp service|accepts no mail`)},
	{UserUnknown, regexp.MustCompile(`(?:recipient|[0-9.#]+ ) ?address rejected(?:\.|\s*$)|@[a-z0-9.-]+>? (?:does not|doesn't) exist|user unknown|unknown user|no such (?:user|recipient|mailbox|account|person|address)|unknown (?:recipient|mailbox|local[- ]part|address|account)|recipient (?:unknown|not found|does not exist|address rejected: (?:user|undeliverable|unknown|access denied))|(?:user|mailbox|account|address|recipient|addressee) (?:\S+ )?(?:does ?n[o']t exist|not exist|not found|is unknown|unavailable|is not valid|invalid)|(?:mailbox|user) not (?:found|exist|known|listed)|not listed in|invalid (?:recipient|mailbox|user|address|e-?mail address)|(?:is not|isn't) a valid (?:user|mailbox|recipient|address)|doesn't have an? .{0,40}account|no mailbox|undeliverable address|unknown or illegal alias|not a known user|address (?:does not|doesn't) exist|no account by that name|this account does not exist|no valid recipients|not our customer|user (?:is )?not (?:here|local)|bad destination mailbox|unable to deliver to|mailbox unavailable|dosn't exist|unknown e-?mail address`)},
	// More of the ways a server says the mailbox does not exist: its
	// directory or final delivery agent found no such name, its local
	// delivery agent knows no such user, and the same in the languages
	// bounces come in. Whether the words condemn the address is decided
	// afterwards, by the SMTP phase (dataPhase).
	{UserUnknown, regexp.MustCompile(strings.Join([]string{
		// directories and final delivery
		`final (?:e-?mail )?delivery (?:point|userid|user id)`,
		`invalid (?:\S+ ){0,3}(?:userid|user id|user ?name)\b`,
		`did not (?:exactly )?match (?:an?|any) (?:\S+ )?(?:e-?mail )?address`,
		`(?:not|no match) (?:present |found |listed )?in (?:the |our |name )?(?:\S+ )?directory`,
		`no (?:\S+ ){1,3}in (?:the )?name directory`,
		`no matches to nameserver query`,
		`(?:not present|not found) in (?:the )?(?:user|address|recipient)s? (?:list|table|database)`,
		// the mailbox, account or address named and denied
		`(?:account|mailbox|user) (?:\S+ ){0,6}(?:does not|doesn't|did not) exist`,
		`(?:user|recipient|mailbox|address) (?:\S+ ){0,3}(?:was|were|is) not (?:found|known|recogni[sz]ed)`,
		`address unknown|unknown (?:e-?mail )?(?:user ?name|userid)`,
		`no such (?:local |virtual )?(?:user|recipient|mailbox|account)`,
		`non-?existent (?:user|recipient|mailbox|account|address)`,
		`not a valid (?:user|mailbox|recipient|address)`,
		`mailbox (?:is )?not (?:present|found)|mailbox path (?:is )?invalid|invalid mailbox path`,
		`there is no one at this address|no mail ?box (?:is )?available for this user|no mailbox by that name`,
		`the user's (?:e-?mail )?name is not found|email address (?:is wrong|could not be found|was not found)`,
		`this address no longer accepts mail|is not an active address`,
		`bad[-_ ]recipient|archived recipient|badrcptto|can't accept user|invalid or unknown virtual user`,
		`destination addresses? (?:was|were) unknown|destination server rejected recipients`,
		`recipnotfound|recipientnotfound|recipient not found`,
		// other languages
		`(?:adresse|destinataire|utilisateur|bo[iî]te aux lettres)\b.{0,60}n['’]existe (?:pas|plus)`,
		`(?:destinataire|utilisateur|adresse(?: e-?mail)?) (?:inconnue?|invalide|introuvable)`,
		`(?:benutzer|empf(?:ä|ae)nger|adresse|postfach|mailbox|konto) (?:\S+ ){0,3}(?:ist )?(?:unbekannt|existiert nicht|nicht gefunden|nicht vorhanden)`,
		`unbekannte[rs]? (?:benutzer|empf(?:ä|ae)nger|adresse|postfach)`,
		`(?:usuario|destinatario|buz[oó]n|cuenta|direcci[oó]n)\b.{0,40}(?:no existe|desconocid[oa]|inexistente)`,
		`no existe (?:dicha persona|ese usuario)`,
		`(?:utente|destinatario|indirizzo|casella)\b.{0,40}(?:sconosciut[oa]|inesistente|non esiste)`,
		`(?:usu[aá]rio|conta|endere[cç]o)\b.{0,40}(?:desconhecid[oa]|inexistente|n[aã]o existe)`,
		`(?:gebruiker|adres|mailbox)\b.{0,40}(?:onbekend|bestaat niet)`,
	}, "|"))},
	// A resolver that answered "try again" (DNS TRY_AGAIN, SERVFAIL) has
	// not proven the domain absent: a network error, not an unknown host.
	{NetworkError, regexp.MustCompile(`host not found, try again|temporary failure in name resolution|name service error[^\n]*try again`)},
	{HostUnknown, regexp.MustCompile(`\b[a-z0-9-]+(?:\.[a-z0-9-]+)+ (?:does not|doesn't) exist|couldn't find a mail exchanger|domain is not reachable|host unknown|unknown host|host not found|domain not found|no such domain|domain (?:\S+ )?(?:does not|doesn't) exist|unknown domain|domain (?:is )?(?:not|no longer) (?:registered|exist)|unrouteable address|unroutable address|name or service not known|nxdomain|no mx (?:record|host)|(?:dns|host ?name|mx) lookup fail|domain name not found|host or domain name not found|mx lookup fail|non-existent domain`)},
	{MailboxDisabled, regexp.MustCompile(`disabled|suspended|inactive|deactivated|account (?:is )?locked|is not active|account (?:has been )?(?:closed|terminated|blocked)|mailbox (?:is )?(?:locked|closed|frozen)|account expired|temporarily unavailable.*account`)},
	{SpamDetected, regexp.MustCompile(`virus|malware|infected|\bspam\b|spam (?:detected|message|content)|junk mail|unsolicited|blacklisted url|content (?:was )?(?:rejected|filter)|classified as (?:spam|bulk)|bulk mail|suspicious (?:content|url|link)|looked like spam|spamming`)},
	{Expired, regexp.MustCompile(`retry timeout|expired|giving up|gave up|could not deliver for the last|(?:in|on) the queue too long|could not be delivered for (?:more than )?\d+ (?:days?|hours?)|cannot send (?:this )?message for \d+|too long (?:in|on) (?:the )?queue|delivery time|has been delayed|will be retried|not (?:yet )?been delivered|message (?:was )?delayed|delivery (?:attempts|failed \d+ attempts)|failed \d+ attempts|time ?out (?:exceeded|waiting)|undeliverable for|queue time|maximum (?:time|retries)`)},
	{NetworkError, regexp.MustCompile(`connection (?:refused|timed out|reset|closed|dropped|lost)|lost connection|network (?:error|is unreachable|unreachable)|socket error|timed out|timeout|could not connect|couldn't connect|unable to connect|did not accept our requests to connect|no route to host|name service error|loop|too many hops|host not reachable|temporary failure in name resolution|dns (?:error|failure|timeout)|servfail|tls (?:handshake|negotiation)|starttls`)},
	// A server that names its own failure is not refusing the message,
	// even when it words it "recipient address rejected".
	{SystemError, regexp.MustCompile(`system error|internal error|mailer error|server error|configuration error|local error|out of memory|i/o error|temporary local problem|local delivery failed`)},
	{Policy, regexp.MustCompile(`block|blacklist|black list|denylist|spamhaus|spamcop|\brbl\b|\bdnsbl\b|barracuda|reputation|denied|refused|reject|not permitted|prohibited|not allowed|policy|relay|reverse (?:dns|lookup)|\bptr\b|rdns|banned|filter|forbidden|not authorized|unauthorized|access restricted|blocked|listed|not accepted|ip .{0,40}(?:is )?(?:on|in) .{0,20}list|sender (?:address )?rejected|mismatch|administrative prohibition|redundant|duplicated|syntax|rfc ?\d{3,4}|mime|header|permission|restrict|authoriz|client host`)},
	{SystemError, regexp.MustCompile(`system error|internal error|server error|configuration error|local error|mail loop|pipe to|mailer error|program|resources|system (?:not|is) available|out of memory|i/o error|temporary local problem|unexpected|try again later|service (?:is )?(?:currently |temporarily )?(?:not |un)available|local delivery failed`)},
}

// outranksStatus reports whether a reason read from the words outranks an
// addressing status (X.1.x) sent with them. Servers send 5.1.1 for a
// mailbox that is full, for a sender over its rate and for a recipient who
// filters the sender, and relays (sendmail) map any 550 to "5.1.1 User
// unknown" whatever the server said ("550 [SUSPEND] Mailbox currently
// suspended", "550 RCPT TO:<a@b> max message size exceeded"): a full,
// suspended or disabled mailbox exists (said outright: disabledOutrightRe),
// and a message refused for its size says nothing against the address, so
// the words win.
func outranksStatus(r Reason) bool {
	return r == MailboxFull || r == RateLimited || r == recipientFilter || r == MessageTooBig
}

// disabledOutrightRe is a mailbox or account said outright to be disabled
// or suspended, which outranks an addressing status as a full mailbox
// does. A bare "inactive" does not: iCloud's "550 5.1.1 <a@b>: inactive
// email address" is its word for an address it does not have.
var disabledOutrightRe = regexp.MustCompile(`(?i)(?:account|mailbox)\b(?:\S+ ){0,3}(?:is |has been )?(?:disabled|suspended|deactivated|discontinued)|\[suspend\]`)

// recipientFilter is the reason textRules give for a recipient's own
// filter ("refused due to recipient preferences"); reasonFromText reports
// it as Policy, but it outranks an addressing status where other policy
// words do not.
const recipientFilter Reason = "policy (recipient filter)"

// reasonFromText returns the reason the text suggests, or "".
func reasonFromText(text string) Reason {
	if text == "" {
		return ""
	}
	t := strings.ToLower(text)
	// Postfix's "delivery temporarily suspended: <last error>" says the
	// destination is being skipped for now, nothing about a suspended
	// mailbox: the error after it decides.
	t = strings.ReplaceAll(t, "delivery temporarily suspended", "delivery deferred")
	for _, rule := range textRules {
		if rule.re.MatchString(t) {
			return rule.r
		}
	}
	return ""
}
