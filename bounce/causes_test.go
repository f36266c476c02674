package bounce

import (
	"strings"
	"testing"
)

// postfixText wraps the per-recipient lines of a Postfix bounce in the
// notice Postfix writes around them.
func postfixText(lines string) string {
	return "From: MAILER-DAEMON@x.example (Mail Delivery System)\nSubject: Undelivered Mail Returned to Sender\n\n" +
		"This is the mail system at host x.example.\n\nI'm sorry to have to inform you that your message could not\n" +
		"be delivered to one or more recipients. It's attached below.\n\n                   The mail system\n\n" +
		lines + "\n"
}

// checkRecipient parses msg and compares the recipient named addr with
// the status class, hard flag and reason wanted ("" for any reason).
func checkRecipient(t *testing.T, name, msg, addr string, class byte, hard bool, reason Reason) {
	t.Helper()
	rep := parseString(t, msg)
	for _, r := range rep.Recipients {
		if r.Recipient != addr {
			continue
		}
		if r.Status == "" || r.Status[0] != class || r.Hard != hard || (reason != "" && r.Reason != reason) {
			t.Errorf("%s: %s = status %s hard %v reason %s, want class %c hard %v reason %s (diagnostic %q)",
				name, addr, r.Status, r.Hard, r.Reason, class, hard, reason, r.Diagnostic)
		}
		return
	}
	t.Errorf("%s: %s not found in %+v", name, addr, rep.Recipients)
}

// The reply that ended the transaction decides, not the replies before it
// that went well.
func TestLastReply(t *testing.T) {
	checkRecipient(t, "text transcript", postfixText("<a@b.example>: host mx.b.example[192.0.2.1] said: 250 2.1.5 Ok\n    451 4.3.0 Error: queue file write error (in reply to end of DATA command)"),
		"a@b.example", '4', false, SystemError)
	checkRecipient(t, "DSN transcript under a generic status", dsn("", "Final-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.0.0\nDiagnostic-Code: smtp; 250 2.1.5 Ok 451 4.3.0 Error: queue file write error\n"),
		"a@b.example", '4', false, SystemError)
	// The reporting MTA's specific status stands.
	checkRecipient(t, "DSN with a specific status", dsn("", "Final-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.3.0\nDiagnostic-Code: smtp; 451 4.3.0 Error: queue file write error\n"),
		"a@b.example", '5', false, SystemError)
	if got := findReplyCode("250 2.1.5 Ok 451 4.3.0 Error"); got != 451 {
		t.Errorf("findReplyCode = %d, want 451", got)
	}
	if got := findStatus("250 2.1.5 Ok"); got != "2.1.5" {
		t.Errorf("findStatus of a success alone = %q, want 2.1.5", got)
	}
}

// A free-text notice says whether delivery goes on; words inside the
// error ("try again") do not make a returned message a delay.
func TestNoticeKind(t *testing.T) {
	checkRecipient(t, "returned after a DNS failure called temporary", postfixText("<a@b.example>: Name service error for domain b.example: Host not\n    found, try again"),
		"a@b.example", '5', false, NetworkError)
	warning := "From: MAILER-DAEMON@x.example (Mail Delivery System)\nSubject: Delayed Mail (still being retried)\n\n" +
		"This is the mail system at host x.example.\n\n####################################################################\n" +
		"# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n####################################################################\n\n" +
		"Your message could not be delivered for more than 4 hour(s).\nIt will be retried until it is 5 day(s) old.\n\n" +
		"<a@b.example>: connect to b.example[192.0.2.1]:25: Connection timed out\n"
	checkRecipient(t, "delay warning", warning, "a@b.example", '4', false, Expired)
	final := "From: MAILER-DAEMON@x.example\nSubject: failure notice\n\nHi. This is the qmail-send program at x.example.\n" +
		"I'm afraid I wasn't able to deliver your message to the following addresses.\n\n" +
		"<a@b.example>:\nCould not be delivered for 5 days. Giving up.\n"
	checkRecipient(t, "final expiry", final, "a@b.example", '5', false, Expired)
	// A returned message whose error the server called temporary has a
	// temporary status, but it was returned: a failure.
	checkRecipient(t, "returned after a temporary failure", postfixText("<a@b.example>: temporary failure. Command output: avpcheck: unable to connect to avp daemon"),
		"a@b.example", '4', false, "")
	// Exim's "retry timeout exceeded" is a temporary error that ran out
	// of time: returned, with a temporary status.
	exim := "From: Mail Delivery System <Mailer-Daemon@x.example>\nSubject: Mail delivery failed: returning message to sender\n\n" +
		"A message that you sent could not be delivered to one or more of its\nrecipients. This is a permanent error. The following address(es) failed:\n\n" +
		"  a@b.example\n    retry timeout exceeded\n"
	checkRecipient(t, "exim retry timeout", exim, "a@b.example", '4', false, Expired)
	// A recipient named only by the quoted original gets the session
	// transcript as its diagnostic, reply code and all.
	sendmail := "From: Mail Delivery Subsystem <MAILER-DAEMON@x.example>\nSubject: Returned mail: Cannot send message for 4 days\n\n" +
		"   ----- Transcript of session follows -----\n421 b.example (smtp)... Deferred: Connection timed out during user open with b.example\n\n" +
		"   ----- Unsent message follows -----\nFrom: s@x.example\nTo: a@b.example\nSubject: hi\n\nhello\n"
	checkRecipient(t, "transcript of a guessed recipient", sendmail, "a@b.example", '4', false, NetworkError)
	if rep := parseString(t, sendmail); len(rep.Recipients) != 1 || rep.Recipients[0].Diagnostic == "" || rep.Recipients[0].Action != "failed" {
		t.Errorf("guessed recipient: %+v, want a failure with the transcript as diagnostic", rep.Recipients)
	}
}

// "User unknown" in a reply to RCPT TO condemns the address whatever
// generic or mailbox status the server filed it under; so do the same
// words with no phase named, under a generic status (X.Y.0) or X.2.1:
// the text wins. A server's own X.3.x or X.7.x with a detail, or the
// words after DATA, keep the refusal.
func TestUserUnknownAtRcpt(t *testing.T) {
	qmail := "From: MAILER-DAEMON@x.example\nSubject: failure notice\n\nHi. This is the qmail-send program at x.example.\n" +
		"I'm afraid I wasn't able to deliver your message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out.\n\n" +
		"<gone@b.example>:\n192.0.2.1 does not like recipient.\nRemote host said: 550 User unknown\nGiving up on 192.0.2.1.\n"
	checkRecipient(t, "qmail: does not like recipient", qmail, "gone@b.example", '5', true, UserUnknown)
	for _, st := range []string{"5.0.0", "5.2.1", "5.3.0", "5.7.1"} {
		msg := dsn("", "Final-Recipient: rfc822; gone@b.example\nAction: failed\nStatus: "+st+"\nDiagnostic-Code: smtp; 550 "+st+" <gone@b.example>... User Unknown (in reply to RCPT TO command)\n")
		checkRecipient(t, st+" at RCPT", msg, "gone@b.example", '5', true, UserUnknown)
		msg = dsn("", "Final-Recipient: rfc822; gone@b.example\nAction: failed\nStatus: "+st+"\nDiagnostic-Code: smtp; 550 "+st+" <gone@b.example>... User Unknown\n")
		checkRecipient(t, st+" with no phase", msg, "gone@b.example", '5', st != "5.7.1", map[bool]Reason{true: UserUnknown, false: Policy}[st != "5.7.1"])
		msg = dsn("", "Final-Recipient: rfc822; gone@b.example\nAction: failed\nStatus: "+st+"\nDiagnostic-Code: smtp; 550 "+st+" <gone@b.example>... User Unknown (in reply to end of DATA command)\n")
		checkRecipient(t, st+" after DATA", msg, "gone@b.example", '5', false, Policy)
	}
	// Mailbox full and rate limits prove nothing against the address,
	// whatever status came with them.
	msg := dsn("", "Final-Recipient: rfc822; full@b.example\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 <full@b.example>: Mailbox is full (in reply to RCPT TO command)\n")
	checkRecipient(t, "full under 5.1.1", msg, "full@b.example", '5', false, MailboxFull)
}

// Rate limits and full mailboxes are soft whatever status the server sent
// with them: the address works, the sender is too fast or the mailbox is
// full for now.
func TestSoftWhateverStatus(t *testing.T) {
	tests := []struct {
		status, diag string
		want         Reason
	}{
		{"5.0.0", "550 5.4.5 Daily user sending quota exceeded. You have sent to too many recipients this hour", RateLimited},
		{"5.1.1", "550 5.1.1 <a@b.example>... has sent to too many recipients this hour", RateLimited},
		{"5.7.1", "550 5.7.1 Please try again slower", RateLimited},
		{"5.1.1", "552 5.1.1 <a@b.example>... Mailbox Full", MailboxFull},
		{"5.0.0", "552 Requested mail action aborted: exceeded storage allocation", MailboxFull},
		{"5.2.2", "552 5.2.2 The email account that you tried to reach is over quota", MailboxFull},
		{"5.0.0", "550 Mailbox quota usage exceeded (in reply to RCPT TO command)", MailboxFull},
		{"5.1.1", "550 5.1.1 RCP-P2 Refused due to recipient preferences", Policy},
	}
	for _, tt := range tests {
		msg := dsn("", "Final-Recipient: rfc822; a@b.example\nAction: failed\nStatus: "+tt.status+"\nDiagnostic-Code: smtp; "+tt.diag+"\n")
		checkRecipient(t, tt.diag, msg, "a@b.example", '5', false, tt.want)
	}
}

// opensmtpd wraps recipient lines in OpenSMTPD's notice.
func opensmtpd(lines string) string {
	return "From: Mailer Daemon <MAILER-DAEMON@x.example>\nSubject: Delivery status notification: error\n\n    Hi!\n\n" +
		"    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n" +
		"    An error has occurred while attempting to deliver a message for\n    the following list of recipients:\n\n" +
		lines + "\n\n    Below is a copy of the original message:\n\nReceived: from x.example\nFrom: s@x.example\nTo: other@b.example\nSubject: hi\n\nhello\n"
}

// Each recipient of a report keeps its own error: a recipient whose line
// says little must not take the status or the words of the next one.
func TestOwnReason(t *testing.T) {
	two := opensmtpd("nohost@neko.example.jp: Domain does not exist\ngone@b.example: 550 5.1.1 <gone@b.example>... User Unknown")
	checkRecipient(t, "first of two", two, "nohost@neko.example.jp", '5', true, HostUnknown)
	checkRecipient(t, "second of two", two, "gone@b.example", '5', true, UserUnknown)
	two = opensmtpd("full@b.example: 552 5.2.2 <full@b.example>... Mailbox Full\ngone@b.example: 550 5.1.1 <gone@b.example>... User Unknown")
	checkRecipient(t, "full of two", two, "full@b.example", '5', false, MailboxFull)
	checkRecipient(t, "unknown of two", two, "gone@b.example", '5', true, UserUnknown)
	rep := parseString(t, two)
	if len(rep.Recipients) != 2 {
		t.Errorf("the quoted original's To was taken for a recipient: %+v", rep.Recipients)
	}
	for _, r := range rep.Recipients {
		if r.Diagnostic == "" || len(r.Diagnostic) > 80 {
			t.Errorf("%s: diagnostic %q, want its own line", r.Recipient, r.Diagnostic)
		}
	}
	// IMail puts the error before the address.
	imail := "From: postmaster@x.example\nSubject: Undeliverable Mail\n\nUser mailbox exceeds allowed size: full@b.example\n\n\nOriginal message follows.\n\nTo: full@b.example\n"
	checkRecipient(t, "error before the address", imail, "full@b.example", '5', false, MailboxFull)
	// An address quoted in another recipient's error (the sender, here)
	// is not a recipient.
	gmail := "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\nSubject: Delivery Status Notification (Failure)\n\n" +
		"Delivery to the following recipient failed permanently:\n\n     a@b.example\n\nTechnical details of permanent failure:\n" +
		"Google tried to deliver your message, but it was rejected by the recipient domain. The error that the other server returned was: 550 550 5.7.1 <s@gmail.example>... Access denied (state 13).\n"
	if rep := parseString(t, gmail); len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "a@b.example" {
		t.Errorf("sender quoted in the error taken for a recipient: %+v", rep.Recipients)
	}
}

// A quoted local part is part of the address.
func TestQuotedLocalPart(t *testing.T) {
	msg := postfixText(`<"a....b"@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1 <"a....b"@example.org>: Recipient address rejected: User unknown (in reply to RCPT TO command)`)
	checkRecipient(t, "postfix text", msg, `"a....b"@example.org`, '5', true, UserUnknown)
	msg = dsn("", "Final-Recipient: rfc822; \"a....b\"@example.org\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\n")
	checkRecipient(t, "DSN", msg, `"a....b"@example.org`, '5', true, UserUnknown)
	// A quoted display name is not a local part.
	if got := firstAddr(`"Kijitora" <k@example.org>`); got != "k@example.org" {
		t.Errorf("firstAddr = %q, want k@example.org", got)
	}
}

// The diagnostic is the receiving server's own reply: the transcript
// lines about the recipient, with their reply code, where the report's
// fields or its list give only a summary or nothing.
func TestDiagnosticIsTheReply(t *testing.T) {
	diagOf := func(name, msg, addr string) string {
		t.Helper()
		for _, r := range parseString(t, msg).Recipients {
			if r.Recipient == addr {
				return r.Diagnostic
			}
		}
		t.Errorf("%s: %s not found", name, addr)
		return ""
	}
	sendmail := dsn("The original message was received at Thu, 29 Apr 2010 23:34:45 +0900\nfrom localhost [127.0.0.1]\n\n"+
		"   ----- The following addresses had permanent fatal errors -----\n<k@example.jp>\n    (reason: 550 5.1.1 <k@example.jp>... User unknown)\n\n"+
		"   ----- Transcript of session follows -----\nmail.local: unknown user: k\n550 5.1.1 <k@example.jp>... User unknown\n",
		"Final-Recipient: RFC822; k@example.jp\nAction: failed\nStatus: 5.1.1\n")
	if d := diagOf("sendmail local", sendmail, "k@example.jp"); !strings.Contains(d, "mail.local: unknown user") || !strings.Contains(d, "550") {
		t.Errorf("sendmail local: diagnostic %q, want the transcript's lines", d)
	}
	remote := dsn("   ----- Transcript of session follows -----\n... while talking to mx.example.org.:\n>>> RCPT To:<k@example.org>\n<<< 550 5.1.2 <k@example.org>... Host unknown\n",
		"Final-Recipient: RFC822; k@example.org\nAction: failed\nStatus: 5.1.2\n")
	if d := diagOf("sendmail remote", remote, "k@example.org"); !strings.Contains(d, "<<< 550 5.1.2") {
		t.Errorf("sendmail remote: diagnostic %q, want the reply", d)
	}
	verizon := "From: post_master@vtext.example\nSubject: Undeliverable Message\n\nError: Invalid user address\n\nError message below:\n550 - Requested action not taken: no such user here\n\n" +
		"Message details:\n  Subject: Test\n  MAIL FROM: s@x.example\n  RCPT TO: k@vtext.example\n  Size (in bytes): 222\n"
	if d := diagOf("reply above the recipient", verizon, "k@vtext.example"); !strings.Contains(d, "550 - Requested action not taken") {
		t.Errorf("reply above the recipient: diagnostic %q, want the 550 reply", d)
	}
	exchange := "From: postmaster@x.example\nSubject: Undeliverable: hi\n\nYour message\n\n  To:      k@example.com\n  Subject: hi\n\n" +
		"did not reach the following recipient(s):\n\nk@example.com on Thu, 9 May 2005 23:34:45 +0900\n    The recipient name is not recognized\n"
	if d := diagOf("quoted header first", exchange, "k@example.com"); !strings.Contains(d, "recipient name is not recognized") || strings.Contains(d, "Subject") {
		t.Errorf("quoted header first: diagnostic %q, want the report's line", d)
	}
}

// Yahoo refuses an unknown user after DATA, in its own words: the phase
// does not make it a content filter.
func TestProviderUnknown(t *testing.T) {
	msg := postfixText("<gone@yahoo.example>: host mta5.am0.yahoodns.example[192.0.2.1] said: 554 delivery error: dd This user doesn't have a yahoo.com account (gone@yahoo.example) [0] - mta1061.mail.ne1.yahoo.com (in reply to end of DATA command)")
	checkRecipient(t, "yahoo dd", msg, "gone@yahoo.example", '5', true, UserUnknown)
	// The same sentence in Yahoo's own notice, which names no phase.
	notice := "From: MAILER-DAEMON@yahoo.example\nSubject: Delivery failure\n\nMessage from yahoo.example.\n" +
		"Unable to deliver message to the following address(es).\n\n<gone@hosted.example>:\n" +
		"This user doesn't have a hosted.example account (gone@hosted.example) [-9]\n\n--- Original message follows.\n"
	checkRecipient(t, "yahoo notice", notice, "gone@hosted.example", '5', true, UserUnknown)
	// Bare "user unknown" words in the same notice condemn too: no phase
	// is named, and the words win.
	bare := strings.Replace(notice, "This user doesn't have a hosted.example account", "550 user unknown", 1)
	checkRecipient(t, "bare words in the notice", bare, "gone@hosted.example", '5', true, UserUnknown)
	// So does RFC 5321's generic 550 text; a recipient "temporarily
	// unavailable" does not.
	generic := strings.Replace(notice, "This user doesn't have a hosted.example account", "550 Requested action not taken: mailbox unavailable", 1)
	checkRecipient(t, "generic text in the notice", generic, "gone@hosted.example", '5', true, UserUnknown)
	weak := strings.Replace(notice, "This user doesn't have a hosted.example account", "550 recipient temporarily unavailable", 1)
	checkRecipient(t, "weak text in the notice", weak, "gone@hosted.example", '5', false, Policy)
}

// A label word must end before the address: "userid: userx@b" names
// userx@b, not x@b.
func TestLabelBoundary(t *testing.T) {
	msg := "From: postmaster@x.example\nSubject: Undeliverable Mail\n\nInvalid final delivery userid: userx@b.example\n\nOriginal message follows.\n"
	rep := parseString(t, msg)
	if len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "userx@b.example" {
		t.Errorf("recipients = %+v, want userx@b.example", rep.Recipients)
	}
}

// Shapes from Mailman's corpus: a DSN's Original-Recipient is kept
// beside its Final-Recipient, senders' own Action words and a Status
// that is an SMTP reply are understood, an address in apostrophes loses
// them, and Exchange's "a@b on <date>" line names its recipient.
func TestMailmanShapes(t *testing.T) {
	rep := parseString(t, dsn("", "Original-recipient: rfc822;sent@example.ch\nFinal-recipient: rfc822;HAASM@yogi.example.ch\nAction: failed\nStatus: 5.0.0\n"))
	if len(rep.Recipients) != 1 || rep.Recipients[0].Original != "sent@example.ch" || rep.Recipients[0].Recipient != "HAASM@yogi.example.ch" {
		t.Errorf("original recipient: %+v", rep.Recipients)
	}
	checkRecipient(t, "Action: failure, Status: 553", dsn("", "Final-Recipient: rfc822; big@example.be\nAction: failure\nStatus: 553 Exceeded maximum inbound message size\n"),
		"big@example.be", '5', false, "")
	msg := "From: Mail Delivery System <MAILER-DAEMON@x.example>\nSubject: Mail delivery failure\n\nA message that you sent could not be delivered.\n\n" +
		"The following message, addressed to 'gone@example.uk',\nfailed because it has not been collected after 30 days\n"
	if rep := parseString(t, msg); len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "gone@example.uk" {
		t.Errorf("address in apostrophes: %+v", rep.Recipients)
	}
	exchange := "From: System Administrator <postmaster@x.example>\nSubject: Undeliverable: hi\n\nYour message\n\n  To:      list@lists.example\n  Subject: hi\n\n" +
		"did not reach the following recipient(s):\n\nc=US;a= ;p=IKON;o=Nexus2;dda:SMTP=gone@example.COM; on Fri, 4 Oct 2002\n17:12:28 -0400\n    The recipient name is not recognized\n"
	if rep := parseString(t, exchange); len(rep.Recipients) == 0 || rep.Recipients[0].Recipient != "gone@example.COM" {
		t.Errorf("exchange X.400 line: %+v", rep.Recipients)
	}
}

// TestUnknownUserWordings: the ways servers and their directories say a
// mailbox does not exist, in English and the other languages bounces come
// in, are read as an unknown user (whether that condemns the address is
// the SMTP phase's question).
func TestUnknownUserWordings(t *testing.T) {
	for _, text := range []string{
		"550 unknown user", "User not known", "user not found", "invalid mailbox", "No such local user",
		"Invalid final delivery userid: a@b.example", "Does not have a final email delivery point",
		"no a in name directory", "The email account that you tried to reach does not exist.",
		"550 Requested action not taken: mailbox unavailable", "RESOLVER.ADR.RecipNotFound; not found",
		"User a was not found in the directory", "non-existent user", "this address no longer accepts mail",
		"L'adresse de messagerie référencée ci-dessus n'existe pas", "550 destinataire inconnu",
		"Benutzer unbekannt", "Empfänger existiert nicht", "el usuario no existe", "utente sconosciuto",
		"usuário inexistente", "gebruiker onbekend",
	} {
		if r := reasonFromText(text); r != UserUnknown {
			t.Errorf("reasonFromText(%q) = %s, want userunknown", text, r)
		}
	}
	// Words about the user's state or the domain are not an unknown user.
	for text, want := range map[string]Reason{
		"mailbox is full":                       MailboxFull,
		"account has been disabled":             MailboxDisabled,
		"domain example.org does not exist":     HostUnknown,
		"Sender address rejected: not accepted": Policy,
	} {
		if r := reasonFromText(text); r != want {
			t.Errorf("reasonFromText(%q) = %s, want %s", text, r, want)
		}
	}
}

// TestWordsOverRelayStatus: a relay that maps every 550 to "5.1.1 User
// unknown" does not make a suspended mailbox or a message too large an
// unknown user; a bare "inactive" is still an address the server lacks.
func TestWordsOverRelayStatus(t *testing.T) {
	for text, want := range map[string]Reason{
		"550 [SUSPEND] Mailbox currently suspended - Please contact correspondent directly": MailboxDisabled,
		"550 RCPT TO:<a@b.example> max message size exceeded":                               MessageTooBig,
		"550 5.1.1 <a@b.example>: inactive email address":                                   UserUnknown,
	} {
		v := classify(5, "5.1.1", text, false, nil)
		if v.Reason != want || v.Hard != (want == UserUnknown) {
			t.Errorf("%q under 5.1.1: got %+v, want %s", text, v, want)
		}
	}
}

// TestMTAOwnFinding: a Diagnostic-Code of the reporting MTA's own type
// that quotes no remote server (Postfix's local delivery agent) is read
// for its words, with no SMTP phase to ask about; one that quotes a
// remote reply is still a remote reply.
func TestMTAOwnFinding(t *testing.T) {
	dsn := func(diag string) string {
		return "From: MAILER-DAEMON@mx.example.net\nTo: s@example.com\nSubject: Undelivered Mail Returned to Sender\n" +
			"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n" +
			"--b\nContent-Type: text/plain\n\nThe mail system\n\n--b\nContent-Type: message/delivery-status\n\n" +
			"Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; a@mx.example.net\nAction: failed\n" +
			"Status: 5.0.0\nDiagnostic-Code: " + diag + "\n\n--b--\n"
	}
	for diag, hard := range map[string]bool{
		`X-Postfix; unknown user: "a"`: true,
		`X-Postfix; host mx.example.org[192.0.2.1] said: 550 user unknown (in reply to end of DATA command)`: false,
	} {
		rep, err := Parse(strings.NewReader(dsn(diag)))
		if err != nil || len(rep.Recipients) != 1 {
			t.Fatalf("%s: %v %+v", diag, err, rep)
		}
		if r := rep.Recipients[0]; r.Hard != hard || r.Reason != UserUnknown && hard {
			t.Errorf("%s: got %+v, want hard %v", diag, r, hard)
		}
	}
}

// A notice that lists its own users by name alone, under "the following
// recipients ...:", names addresses at the domain of its MAILER-DAEMON;
// the sender the error quotes ("not accepting mail from s@x") is not a
// recipient.
func TestBareNames(t *testing.T) {
	msg := "From: \"Mail Delivery Subsystem\" <MAILER-DAEMON@Provider.example>\nSubject: Mail Delivery Problem\n\n" +
		"Your mail to the following recipients could not be delivered because they are not accepting mail from list@lists.example:\n" +
		"\tsomename\n\tother.name\n"
	rep := parseString(t, msg)
	if len(rep.Recipients) != 2 || rep.Recipients[0].Recipient != "somename@provider.example" || rep.Recipients[1].Recipient != "other.name@provider.example" {
		t.Fatalf("recipients = %+v, want somename and other.name at provider.example", rep.Recipients)
	}
	checkRecipient(t, "recipient's filter", msg, "somename@provider.example", '5', false, Policy)
	// Not from a mailer daemon: the names are not completed.
	other := strings.Replace(msg, "MAILER-DAEMON@Provider.example", "someone@provider.example", 1)
	for _, r := range parseString(t, other).Recipients {
		if strings.HasSuffix(r.Recipient, "@provider.example") {
			t.Errorf("names completed in a notice not from a mailer daemon: %+v", r)
		}
	}
	// The last resort skips the sender quoted after "from".
	last := "From: MAILER-DAEMON@x.example\nSubject: Undeliverable\n\nYour message could not be delivered: it was refused, mail from s@sender.example is not accepted here.\n"
	for _, r := range parseString(t, last).Recipients {
		if r.Recipient == "s@sender.example" {
			t.Errorf("sender taken for a recipient: %+v", r)
		}
	}
	if r := reasonFromText("they are not accepting mail from s@x.example"); r != recipientFilter {
		t.Errorf("not accepting mail from: %s, want the recipient's filter", r)
	}
}

// A recipient named only in X-Failed-Recipients has no lines of its own;
// the notice, about it alone, is its diagnostic.
func TestNoticeAsDiagnostic(t *testing.T) {
	msg := "From: Mail Delivery Subsystem <mailer-daemon@x.example>\nSubject: Delivery Status Notification (Failure)\nX-Failed-Recipients: grp@groups.example\n\n" +
		"Hello s@sender.example,\n\nThe group you tried to contact (grp) may not exist, or you may not have permission to post to it.\n\n" +
		"----- Original message -----\n\nSubject: hi\n"
	rep := parseString(t, msg)
	if len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "grp@groups.example" {
		t.Fatalf("recipients = %+v", rep.Recipients)
	}
	if d := rep.Recipients[0].Diagnostic; !strings.Contains(d, "may not exist, or you may not have permission") || strings.Contains(d, "Subject") {
		t.Errorf("diagnostic %q, want the notice's words and not the original", d)
	}
}
