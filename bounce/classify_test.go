package bounce

import "testing"

func TestClassifyReply(t *testing.T) {
	tests := []struct {
		code      int
		enh, text string
		want      Verdict
	}{
		// Enhanced codes that decide on their own.
		{550, "5.1.1", "<a@b.example>: Recipient address rejected", Verdict{true, true, UserUnknown, "5.1.1"}},
		{550, "5.1.10", "null MX", Verdict{true, true, NotAccept, "5.1.10"}},
		{550, "5.1.6", "gone", Verdict{true, true, HasMoved, "5.1.6"}},
		{550, "5.1.2", "bad domain", Verdict{true, true, HostUnknown, "5.1.2"}},
		// A disabled mailbox is permanent but soft: the address exists.
		{550, "5.2.1", "mailbox disabled", Verdict{true, false, MailboxDisabled, "5.2.1"}},
		{550, "5.7.13", "", Verdict{true, false, MailboxDisabled, "5.7.13"}},
		// X.2.1 is widely sent for unknown users: the text decides.
		{550, "5.2.1", "<a@b.example>... User Unknown", Verdict{true, true, UserUnknown, "5.2.1"}},
		// A user-unknown text filed under a specific mailbox, system or
		// policy status is a refusal, not proof that the address is bad.
		{550, "5.7.1", "<a@b.example>: Recipient address rejected: User unknown", Verdict{true, false, Policy, "5.7.1"}},
		{550, "5.3.2", "Unknown user a@b.example", Verdict{true, false, Policy, "5.3.2"}},
		// A generic detail (X.Y.0, "other or undefined") files nothing:
		// the words win.
		{550, "5.2.0", "Unknown user a@b.example", Verdict{true, true, UserUnknown, "5.2.0"}},
		{550, "5.3.0", "Other mail system problem 'Unknown user'", Verdict{true, true, UserUnknown, "5.3.0"}},
		// Over quota proves the mailbox exists, whatever the code.
		{552, "5.1.1", "sorry, mailbox a@b.example is over quota", Verdict{true, false, MailboxFull, "5.1.1"}},
		// 5.1.3 (bad syntax) is also used for block-list refusals.
		{553, "5.1.3", "http://www.spamhaus.org/query/bl?ip=192.0.2.1", Verdict{true, false, Policy, "5.1.3"}},
		{553, "5.1.3", "", Verdict{true, true, UserUnknown, "5.1.3"}},
		// A server naming its own failure, or asking for authentication.
		{554, "5.3.0", "<a@b.example>: Recipient address rejected: Internal system error", Verdict{true, false, SystemError, "5.3.0"}},
		{550, "5.7.1", "RESOLVER.RST.AuthRequired; authentication required", Verdict{true, false, AuthFailure, "5.7.1"}},
		// Said outright, a disabled account outranks "user unknown".
		{550, "", "The user(s) account is disabled. 550 user unknown", Verdict{true, false, MailboxDisabled, "5.2.1"}},
		{552, "5.2.2", "", Verdict{true, false, MailboxFull, "5.2.2"}},
		{552, "5.3.4", "", Verdict{true, false, MessageTooBig, "5.3.4"}},
		{550, "5.7.26", "", Verdict{true, false, AuthFailure, "5.7.26"}},
		{421, "4.7.28", "", Verdict{false, false, RateLimited, "4.7.28"}},
		{550, "5.1.8", "Sender address rejected: Domain not found", Verdict{true, false, Policy, "5.1.8"}},
		{451, "4.4.7", "", Verdict{false, false, Expired, "4.4.7"}},
		{421, "4.4.2", "", Verdict{false, false, NetworkError, "4.4.2"}},
		// A policy rejection is permanent but says nothing against the address.
		{550, "5.7.1", "Message rejected due to local policy", Verdict{true, false, Policy, "5.7.1"}},
		{550, "5.7.1", "Service unavailable; client host blocked using Spamhaus", Verdict{true, false, Policy, "5.7.1"}},
		{550, "5.7.1", "SPF check failed", Verdict{true, false, AuthFailure, "5.7.1"}},
		{550, "5.7.1", "Unauthenticated email is not accepted due to DMARC policy", Verdict{true, false, AuthFailure, "5.7.1"}},
		{550, "5.7.1", "DKIM signature invalid", Verdict{true, false, AuthFailure, "5.7.1"}},
		{554, "5.7.1", "Message looks like spam", Verdict{true, false, SpamDetected, "5.7.1"}},
		// Generic codes: the text decides, the status is kept.
		{550, "5.0.0", "No such user here", Verdict{true, true, UserUnknown, "5.0.0"}},
		{550, "5.0.0", "Domain example.test does not exist", Verdict{true, true, HostUnknown, "5.0.0"}},
		{452, "4.0.0", "Mailbox full", Verdict{false, false, MailboxFull, "4.0.0"}},
		{550, "", "This user's account has been suspended", Verdict{true, false, MailboxDisabled, "5.2.1"}},
		// No enhanced code: the status comes from the reason and the class.
		{550, "", "User unknown", Verdict{true, true, UserUnknown, "5.1.1"}},
		{552, "", "user is over quota", Verdict{true, false, MailboxFull, "5.2.2"}},
		{552, "", "Message size exceeds fixed maximum message size", Verdict{true, false, MessageTooBig, "5.3.4"}},
		{450, "", "Too many connections, slow down", Verdict{false, false, RateLimited, "4.7.28"}},
		{421, "", "rate limit exceeded, try again later", Verdict{false, false, RateLimited, "4.7.28"}},
		{451, "", "Connection timed out", Verdict{false, false, NetworkError, "4.4.1"}},
		{550, "", "Host unknown", Verdict{true, true, HostUnknown, "5.1.2"}},
		{550, "", "Recipient has moved", Verdict{true, true, HasMoved, "5.1.6"}},
		{554, "", "Relay access denied", Verdict{true, false, Policy, "5.7.1"}},
		{554, "", "virus found in message", Verdict{true, false, SpamDetected, "5.7.1"}},
		{451, "", "retry timeout exceeded", Verdict{false, false, Expired, "4.4.7"}},
		{451, "", "Temporary local problem - please try later", Verdict{false, false, SystemError, "4.3.0"}},
		// The enhanced code found in the text counts, and outranks the
		// basic code when they disagree.
		{550, "", "5.1.1 <x@example.test>... User unknown", Verdict{true, true, UserUnknown, "5.1.1"}},
		{550, "4.2.2", "mailbox full", Verdict{false, false, MailboxFull, "4.2.2"}},
		// A temporary user-unknown is not hard: only permanent failures are.
		{450, "4.1.1", "User unknown in virtual alias table", Verdict{false, false, UserUnknown, "4.1.1"}},
		// A permanent X.4.4 (unable to route) is a domain that takes no
		// mail, whatever DNS trouble the text describes; a temporary one
		// is only a DNS failure.
		{554, "5.4.4", "Name service error for name=example.test type=MX: Malformed or unexpected name server reply", Verdict{true, true, HostUnknown, "5.4.4"}},
		{451, "4.4.4", "Name service error for name=example.test type=MX: Malformed or unexpected name server reply", Verdict{false, false, NetworkError, "4.4.4"}},
		{451, "", "example.test: host name lookup failure", Verdict{false, false, HostUnknown, "4.1.2"}},
		// A relay's generic X.1.0 around the answering server's X.7.1:
		// the remote's words, filed under policy, are not proof.
		{550, "", "5.1.0 - Unknown address error 550-'5.7.1 <a@b.example>... Access denied'", Verdict{true, false, Policy, "5.7.1"}},
		// Malformed messages are refused for their form, not their size
		// or their signature.
		{552, "5.6.0", "Headers too large (3 max)", Verdict{true, false, Policy, "5.6.0"}},
		{554, "", "Transaction failed: Duplicate header 'DKIM-Signature'.", Verdict{true, false, Policy, "5.7.1"}},
		{503, "", "Improper sequence of commands", Verdict{true, false, Policy, "5.7.1"}},
		{550, "", "domain [example.com] mismatches client ip 192.0.2.1", Verdict{true, false, Policy, "5.7.1"}},
		{550, "", "Ip frequency limited [Blocked IP 192.0.2.1]", Verdict{true, false, RateLimited, "5.7.28"}},
		{554, "", "Service currently unavailable", Verdict{true, false, SystemError, "5.3.0"}},
		// Postfix's "delivery temporarily suspended" is not a suspended
		// mailbox: the error after it decides.
		{421, "", "delivery temporarily suspended: connect to mx.example.test[192.0.2.1]: server refused to talk to me: 421 Service not available", Verdict{false, false, Policy, "4.7.1"}},
		// Unknown: temporary.
		{0, "", "", Verdict{false, false, Other, "4.0.0"}},
		{0, "", "something odd", Verdict{false, false, Other, "4.0.0"}},
		{999, "9.9.9", "", Verdict{false, false, Other, "4.0.0"}},
		{550, "", "", Verdict{true, false, Other, "5.0.0"}},
		// Success.
		{250, "2.0.0", "OK", Verdict{false, false, Delivered, "2.0.0"}},
	}
	for _, tt := range tests {
		got := ClassifyReply(tt.code, tt.enh, tt.text)
		if got != tt.want {
			t.Errorf("ClassifyReply(%d, %q, %q) = %+v, want %+v", tt.code, tt.enh, tt.text, got, tt.want)
		}
	}
}

func TestSisimaiReason(t *testing.T) {
	tests := map[string]Reason{
		"userunknown": UserUnknown, "filtered": Policy, "blocked": Policy, "rejected": Policy,
		"exceedlimit": MessageTooBig, "virusdetected": SpamDetected, "securityerror": AuthFailure,
		"toomanyconn": RateLimited, "mailererror": SystemError, "feedback": Complaint,
		"vacation": AutoReply, "onhold": Other, "undefined": Other, "notaccept": NotAccept,
	}
	for in, want := range tests {
		if got := SisimaiReason(in); got != want {
			t.Errorf("SisimaiReason(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDataPhase(t *testing.T) {
	v := ClassifyReply(550, "", "User unknown")
	got := dataPhase(v, false, "SMTP error from remote mail server after end of data: 550 User unknown", "")
	if got.Hard || got.Reason != Policy || !got.Permanent {
		t.Errorf("user unknown at end of DATA: got %+v, want permanent, soft, policy", got)
	}
	if got := dataPhase(v, false, "after RCPT TO: 550 User unknown", ""); got != v {
		t.Errorf("user unknown at RCPT: got %+v, want %+v", got, v)
	}
	// An addressing status given by the server itself stands after DATA
	// (sendmail reports pipelined RCPT replies after ">>> DATA").
	v = ClassifyReply(550, "5.1.1", "User unknown")
	if got := dataPhase(v, false, ">>> DATA\n<<< 550 5.1.1 <a@b.example>... User unknown", ""); got != v {
		t.Errorf("5.1.1 after DATA: got %+v, want %+v", got, v)
	}
	// At MAIL FROM, "does not exist" is about the sender.
	v = ClassifyReply(553, "", "neko.example.com does not exist")
	got = dataPhase(v, false, "SMTP error from remote mail server after MAIL FROM:<s@neko.example.com>: 553 neko.example.com does not exist", "")
	if got.Hard || got.Reason != Policy {
		t.Errorf("does not exist at MAIL FROM: got %+v, want soft policy", got)
	}
}

func TestDataPhaseFromReport(t *testing.T) {
	v := ClassifyReply(550, "", "Unknown user a@b.example")
	tests := []struct {
		name, text, wider string
		want              Reason
	}{
		// The recipient's own text names no phase: the report's
		// transcript, naming only DATA, decides.
		{"transcript at DATA", "550 Unknown user a@b.example", ">>> DATA\n<<< 550 Unknown user a@b.example", Policy},
		// A transcript of several sessions names several phases: it says
		// nothing about this recipient.
		{"several sessions", "550 Unknown user a@b.example", ">>> DATA\n<<< 550 redundant\n>>> RCPT To:<a@b.example>\n<<< 550 Unknown user", UserUnknown},
		// The recipient's own text outranks the report.
		{"own text at RCPT", "after RCPT TO:<a@b.example>: 550 Unknown user", ">>> DATA", UserUnknown},
		// Pipelined RCPT replies read after DATA, proven by the DATA
		// refused for want of recipients.
		{"pipelined", "550 Unknown user a@b.example", ">>> DATA\n<<< 550 Unknown user a@b.example\n<<< 554 5.5.1 Error: no valid recipients", UserUnknown},
	}
	for _, tt := range tests {
		if got := dataPhase(v, true, tt.text, tt.wider); got.Reason != tt.want || got.Hard != (tt.want == UserUnknown) {
			t.Errorf("%s: got %+v, want reason %s", tt.name, got, tt.want)
		}
	}
	// An unexplained permanent refusal at MAIL FROM is about the sender;
	// a temporary one (greylisting) is left alone.
	if got := dataPhase(ClassifyReply(550, "", "Unroutable sender address"), false, "after MAIL FROM:<s@x.example>: 550 Unroutable sender address", ""); got.Reason != Policy {
		t.Errorf("refusal at MAIL FROM: got %+v, want policy", got)
	}
	if got := dataPhase(ClassifyReply(451, "", "try later"), false, "after MAIL FROM:<s@x.example>: 451 please come back", ""); got.Reason != Other {
		t.Errorf("temporary at MAIL FROM: got %+v, want other", got)
	}
}

// TestUnknownPhase covers a "user unknown" whose report names no SMTP
// phase: the words condemn the address, whatever status came with them;
// only RFC 5321's generic "mailbox unavailable" needs an addressing
// status, the RCPT TO phase or other words of a recipient check.
func TestUnknownPhase(t *testing.T) {
	bare := ClassifyReply(550, "", "User unknown") // status 5.1.1 derived from the words
	tests := []struct {
		name        string
		given       bool
		text, wider string
		want        Reason
	}{
		{"bare words", false, "550 <a@b.example>: User unknown", "SMTP transmission failure has occurred", UserUnknown},
		{"bare words, no report", false, "550 user unknown", "", UserUnknown},
		{"user unknown under 5.2.1", true, "550 5.2.1 <a@b.example>... User Unknown", "", UserUnknown},
		{"user unknown under 5.0.0", true, "550 5.0.0 <a@b.example>... User unknown", "", UserUnknown},
		{"unknown user", false, "550 unknown user <a@b.example>", "", UserUnknown},
		{"user not found", false, "a@b.example (user not found)", "", UserUnknown},
		{"status given", true, "550 user unknown", "", UserUnknown},
		{"rcpt command", false, "after RCPT command: 550 User unknown", "", UserUnknown},
		{"rcpt tag", false, "550 User Unknown [RCPT_TO]", "", UserUnknown},
		{"reporter says address", false, "550 <a@b.example>: User unknown", "Remote SMTP server has rejected address", UserUnknown},
		{"address not found", false, "550 user unknown", "** Address not found ** the address couldn't be found", UserUnknown},
		{"directory", false, "User a (a@b.example) not listed in Domino Directory", "", UserUnknown},
		{"pipelined data refusal", false, "550 Invalid recipient", "554 5.5.1 Error: no valid recipients", UserUnknown},
		// The directory and the final delivery agent speak of the name.
		{"final delivery point", false, "a@b.example Does not have a final email delivery point", "", UserUnknown},
		{"final delivery userid", false, "Invalid final delivery userid: a@b.example", "", UserUnknown},
		{"directory match", false, "addressed, a@b.example, did not exactly match an LLNL email address", "", UserUnknown},
		{"local user", false, "User not known", "Your message has encountered delivery problems to local user a.", UserUnknown},
		{"address does not exist", false, "L'adresse de messagerie référencée ci-dessus n'existe pas.", "", UserUnknown},
		// Bare words about the user, however they put it, condemn.
		{"no such user", false, "No such user", "", UserUnknown},
		// Only an explicit after-DATA phase keeps the refusal: the reply
		// answered the end of data, the transcript shows DATA sent, or
		// it shows this RCPT TO accepted.
		{"end of data", false, "550 User unknown (in reply to end of DATA command)", "", Policy},
		{"after data in the report", false, "550 User unknown", "SMTP error from remote mail server after end of data:", Policy},
		{"rcpt accepted", false, ">>> RCPT To:<a@b.example>\n<<< 250 2.1.5 Ok\n<<< 550 5.7.1 User unknown", "", Policy},
		{"rcpt refused", false, ">>> RCPT To:<a@b.example>\n<<< 550 User unknown", "", UserUnknown},
		// RFC 5321's own text for a 550, "mailbox unavailable", is read
		// as the mailbox not found where no phase is named, as Sisimai
		// and both hand-labelled corpora read it; after DATA it is a
		// filter's refusal like any other.
		{"mailbox unavailable", false, "550 Requested action not taken: mailbox unavailable", "", UserUnknown},
		{"mailbox unavailable or not local", false, "550 Requested action not taken: mailbox unavailable or not local", "", UserUnknown},
		{"mailbox unavailable after data", false, "550 Requested action not taken: mailbox unavailable (in reply to end of DATA command)", "", Policy},
		// Weak wording: a relay's "unable to deliver to" before any
		// error, a mailbox or recipient "temporarily unavailable", the
		// 551 "user not local".
		{"mailbox temporarily unavailable", false, "550 mailbox temporarily unavailable", "", Policy},
		{"unable to deliver to", false, "Unable to deliver to domain for 12 hours. Last attempt failed because: Can't connect to host", "", Policy},
		{"recipient unavailable", false, "550 recipient temporarily unavailable", "", Policy},
		{"undeliverable address label", false, "Undeliverable Address: a@b.example\n\nReason: 550 rejected", "", Policy},
		{"user not local", false, "551 User not local; please try <a@c.example>", "", Policy},
		{"mailbox unavailable and invalid address", false, "Invalid Address, ERROR_CODE :550, ERROR_CODE :Requested action not taken: mailbox unavailable", "", UserUnknown},
		{"mailbox unavailable at RCPT", false, "RCPT TO:<a@b.example> 550 Requested action not taken: mailbox unavailable", "", UserUnknown},
		{"mailbox unavailable under 5.1.1", true, "550 5.1.1 Requested action not taken: mailbox unavailable", "", UserUnknown},
		// A provider's user look-up in its own words, whatever the phase.
		{"doesn't have an account", false, "This user doesn't have a example.org account (a@b.example) [0]", "", UserUnknown},
	}
	for _, tt := range tests {
		got := dataPhase(bare, tt.given, tt.text, tt.wider)
		if got.Reason != tt.want || got.Hard != (tt.want == UserUnknown) || !got.Permanent {
			t.Errorf("%s: got %+v, want permanent %s", tt.name, got, tt.want)
		}
	}
	// A generic status the server gave does not make it a refusal (IIS
	// sends it under Status: 5.0.0); a temporary reply is never hard.
	if got := dataPhase(ClassifyReply(550, "5.0.0", "Requested action not taken: mailbox unavailable"), true, "550 5.0.0 Requested action not taken: mailbox unavailable", ""); !got.Hard || got.Reason != UserUnknown {
		t.Errorf("mailbox unavailable under 5.0.0: got %+v, want hard userunknown", got)
	}
	if got := ClassifyReply(450, "", "Requested action not taken: mailbox unavailable"); got.Hard || got.Permanent {
		t.Errorf("450 mailbox unavailable: got %+v, want temporary and soft", got)
	}
	// Every such text is read as an unknown user in the first place.
	for _, tt := range tests {
		if r := reasonFromText(tt.text); r != UserUnknown {
			t.Errorf("%s: reasonFromText(%q) = %s", tt.name, tt.text, r)
		}
	}
	// The status the words implied follows the verdict; one the server
	// gave is kept.
	if got := dataPhase(bare, false, "550 user unknown (in reply to end of DATA command)", ""); got.Status != "5.7.1" {
		t.Errorf("implied status of a refusal: got %s, want 5.7.1", got.Status)
	}
	if got := dataPhase(bare, false, "550 user unknown", ""); got.Status != "5.1.1" {
		t.Errorf("implied status of an unknown user: got %s, want 5.1.1", got.Status)
	}
	given := ClassifyReply(550, "5.2.1", "User unknown")
	if got := dataPhase(given, true, "550 5.2.1 User unknown (in reply to end of DATA command)", ""); got.Reason != Policy || got.Status != "5.2.1" {
		t.Errorf("given status of a refusal: got %+v, want policy under 5.2.1", got)
	}
	if got := dataPhase(given, true, "550 5.2.1 User unknown", ""); got.Reason != UserUnknown || !got.Hard || got.Status != "5.2.1" {
		t.Errorf("given 5.2.1, no phase: got %+v, want hard userunknown under 5.2.1", got)
	}
	// Other reasons are left alone when the phase is unknown.
	if v := ClassifyReply(550, "", "mailbox full"); dataPhase(v, false, "550 mailbox full", "") != v {
		t.Errorf("mailbox full changed by an unknown phase")
	}
}

func TestTransient(t *testing.T) {
	tests := []struct {
		v      Verdict
		action string
		want   Reason
	}{
		// A domain not found for now is a DNS failure.
		{ClassifyReply(451, "4.1.2", "Name service error: Host not found, try again"), "failed", NetworkError},
		// A delay notice: the message may run out of time.
		{ClassifyReply(421, "4.4.1", "connect to mx.example.org: Connection timed out"), "delayed", Expired},
		{ClassifyReply(452, "4.2.2", "Mailbox full"), "delayed", MailboxFull},
		// Permanent failures are left alone.
		{ClassifyReply(550, "5.1.2", "Host not found"), "failed", HostUnknown},
	}
	for _, tt := range tests {
		if got := transient(tt.v, tt.action); got.Reason != tt.want || got.Hard != tt.v.Hard || got.Status != tt.v.Status {
			t.Errorf("transient(%+v, %q) = %+v, want reason %s and the rest unchanged", tt.v, tt.action, got, tt.want)
		}
	}
}
