// Package bounce classifies delivery failures: SMTP replies met while
// delivering (ClassifyReply), and bounce messages received on the bounce
// domain (Parse), which may be RFC 3464 delivery status notifications, RFC
// 5965 feedback reports (complaints) or the free-text formats that many MTAs
// still send. It also signs and checks the VERP envelope senders that let an
// inbound bounce be matched to a queued message (EncodeVERP, DecodeVERP), and
// writes RFC 3464 notifications of its own (BuildDSN).
//
// Each failure gets a Verdict: whether it is permanent (retrying will not
// help), whether it is hard (the address itself is bad, so mail to it should
// stop), a Reason and an RFC 3463 status code. The two are distinct on
// purpose: a 5.7.1 policy rejection is permanent for that message but says
// nothing against the address. Hard is kept narrow, as in Sisimai's corpus:
// an unknown user or domain, a moved address, a domain that takes no mail.
// A disabled or suspended mailbox is permanent but soft: the address exists,
// its owner can have it re-enabled (an inactive account reactivated, a
// suspended one paid for), so suppressing it would lose a working address,
// while the failed message itself is still reported as permanent. A
// "user unknown" that the server filed under a mailbox, system or
// policy status of its own (X.2.x other than X.2.1, X.3.x, X.7.x), or gave at MAIL FROM
// or after DATA without an addressing status, is a refusal, not proof.
package bounce

// Reason is why a delivery failed, in a vocabulary close to Sisimai's so that
// results can be compared with its corpus. Where Sisimai has several names for
// what latchkey treats alike, they are folded into one (see SisimaiReason).
type Reason string

// Reasons. The comment after each gives the Sisimai names it stands for.
const (
	UserUnknown     Reason = "userunknown"  // userunknown
	MailboxFull     Reason = "mailboxfull"  // mailboxfull
	HostUnknown     Reason = "hostunknown"  // hostunknown
	NotAccept       Reason = "notaccept"    // notaccept: the domain accepts no mail (null MX, RFC 7505)
	MailboxDisabled Reason = "suspend"      // suspend
	HasMoved        Reason = "hasmoved"     // hasmoved
	MessageTooBig   Reason = "mesgtoobig"   // mesgtoobig, exceedlimit
	Policy          Reason = "policy"       // blocked, rejected, filtered, policyviolation, requireptr, badreputation, norelaying, notcompliantrfc, contenterror, syntaxerror
	SpamDetected    Reason = "spamdetected" // spamdetected, virusdetected
	AuthFailure     Reason = "authfailure"  // authfailure, securityerror
	RateLimited     Reason = "ratelimited"  // toomanyconn, speeding
	Expired         Reason = "expired"      // expired
	NetworkError    Reason = "networkerror" // networkerror
	SystemError     Reason = "systemerror"  // systemerror, mailererror, systemfull
	Complaint       Reason = "feedback"     // feedback: an ARF report, not a failure
	AutoReply       Reason = "vacation"     // vacation: an RFC 3834 auto-reply, not a failure
	Delivered       Reason = "delivered"    // delivered: a success DSN
	Other           Reason = "other"        // onhold, undefined and anything unrecognised
)

// Verdict is the classification of one failed delivery.
type Verdict struct {
	// Permanent is true when retrying the same message will not help (5xx).
	Permanent bool
	// Hard is true when the address itself is proven bad: unknown user or
	// domain, moved, a domain that takes no mail. A disabled or suspended
	// mailbox is not hard: the address exists and may come back. Only
	// permanent failures can be hard.
	Hard bool
	// Reason is the kind of failure.
	Reason Reason
	// Status is the RFC 3463 status (class.subject.detail), taken from the
	// reply where it has one and derived from the reason where it has not.
	Status string
}
