package bounce

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const eximBounce = `From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: sender@example.com
Subject: Mail delivery failed: returning message to sender
Auto-Submitted: auto-replied
X-Failed-Recipients: gone@example.org

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  gone@example.org
    host mx.example.org [192.0.2.1]
    SMTP error from remote mail server after RCPT TO:<gone@example.org>:
    550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown

------ This is a copy of the message, including all the headers. ------

To: gone@example.org
From: sender@example.com
Subject: hi
`

const qmailBounce = `From: MAILER-DAEMON@mx.example.net
To: sender@example.com
Subject: failure notice

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<full@example.org>:
192.0.2.1 does not like recipient.
Remote host said: 552 mailbox is over quota
Giving up on 192.0.2.1.

--- Below this line is a copy of the message.

To: full@example.org
`

const arfReport = `From: fbl@isp.example
To: abuse@example.com
Subject: complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b1"

--b1
Content-Type: text/plain

This is an abuse report.
--b1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: FBL/1.0
Version: 1
Original-Rcpt-To: <victim@isp.example>

--b1
Content-Type: text/rfc822-headers

From: noreply@example.com
To: victim@isp.example
Message-ID: <orig-1@example.com>

--b1--
`

const plainMail = `From: Alice <alice@example.com>
To: bob@example.org
Subject: lunch?

Are you free on Tuesday? Write to carol@example.net too.
`

func parseString(t *testing.T, s string) *Report {
	t.Helper()
	rep, err := Parse(strings.NewReader(s))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return rep
}

func TestParseFreeText(t *testing.T) {
	tests := []struct {
		name, msg string
		want      Recipient
	}{
		{"exim", eximBounce, Recipient{Recipient: "gone@example.org", Action: "failed", Status: "5.1.1", Permanent: true, Hard: true, Reason: UserUnknown}},
		{"qmail", qmailBounce, Recipient{Recipient: "full@example.org", Action: "failed", Status: "5.2.2", Permanent: true, Reason: MailboxFull}},
	}
	for _, tt := range tests {
		rep := parseString(t, tt.msg)
		if !rep.IsBounce || rep.Format != "text" || len(rep.Recipients) != 1 {
			t.Fatalf("%s: report = %+v", tt.name, rep)
		}
		got := rep.Recipients[0]
		if got.Diagnostic == "" {
			t.Errorf("%s: no diagnostic", tt.name)
		}
		got.Diagnostic = ""
		if got != tt.want {
			t.Errorf("%s: recipient = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestParseARF(t *testing.T) {
	rep := parseString(t, arfReport)
	if !rep.IsComplaint || rep.IsBounce || rep.FeedbackType != "abuse" || rep.Format != "arf" ||
		rep.OriginalMessageID != "orig-1@example.com" {
		t.Fatalf("report = %+v", rep)
	}
	if len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "victim@isp.example" || rep.Recipients[0].Reason != Complaint {
		t.Errorf("recipients = %+v", rep.Recipients)
	}
}

func TestParseNotBounce(t *testing.T) {
	rep := parseString(t, plainMail)
	if rep.IsBounce || rep.IsComplaint || len(rep.Recipients) != 0 {
		t.Errorf("ordinary mail: report = %+v", rep)
	}
	vac := "From: Bob <bob@example.org>\nTo: alice@example.com\nSubject: Out of office\nAuto-Submitted: auto-replied\n\nI am away until Monday.\n"
	rep = parseString(t, vac)
	if rep.IsBounce || !rep.IsAutoReply || len(rep.Recipients) != 1 || rep.Recipients[0].Reason != AutoReply {
		t.Errorf("auto-reply: report = %+v", rep)
	}
}

func TestParseMalformed(t *testing.T) {
	if _, err := Parse(strings.NewReader("\x00\x01 not a header\n\n")); !errors.Is(err, ErrNotMessage) {
		t.Errorf("garbage: error = %v, want ErrNotMessage", err)
	}
	// A multipart report whose boundary never comes, and one cut short in
	// the middle of its delivery-status part: best effort, no error.
	broken := "From: MAILER-DAEMON@x.example\nContent-Type: multipart/report; report-type=delivery-status; boundary=zz\n\nno parts here\n"
	if rep, err := Parse(strings.NewReader(broken)); err != nil || rep.IsBounce {
		t.Errorf("no parts: %+v, %v", rep, err)
	}
	b, _ := BuildDSN(DSNOptions{To: "s@example.com", Recipients: []DSNRecipient{{Recipient: "a@example.org", Action: "failed", Status: "5.1.1"}}})
	cut := b[:bytes.Index(b, []byte("Status:"))+len("Status: 5.1.1")]
	rep, err := Parse(bytes.NewReader(cut))
	if err != nil || len(rep.Recipients) != 1 || rep.Recipients[0].Status != "5.1.1" {
		t.Errorf("truncated DSN: %+v, %v", rep, err)
	}
}

// Parse reads at most MaxBytes, however much is offered.
func TestParseBounded(t *testing.T) {
	r := &countingReader{r: strings.NewReader(eximBounce + strings.Repeat("x", MaxBytes+1<<20))}
	rep, err := Parse(r)
	if err != nil || !rep.IsBounce {
		t.Fatalf("Parse = %+v, %v", rep, err)
	}
	if r.n > MaxBytes {
		t.Errorf("read %d bytes, more than MaxBytes %d", r.n, MaxBytes)
	}
}

type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestWriteTextAndJSON(t *testing.T) {
	rep := parseString(t, eximBounce)
	var buf bytes.Buffer
	if err := rep.WriteText(&buf, "exim.eml"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"exim.eml: bounce, text", "recipient  gone@example.org", "status     5.1.1 (permanent, hard)", "reason     userunknown"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, buf.String())
		}
	}
	buf.Reset()
	if err := rep.WriteJSON(&buf, "exim.eml"); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["file"] != "exim.eml" || got["bounce"] != true || got["complaint"] != false {
		t.Errorf("JSON = %s", buf.String())
	}
	rcpts, _ := got["recipients"].([]any)
	if len(rcpts) != 1 {
		t.Fatalf("JSON recipients = %v", got["recipients"])
	}
	r0 := rcpts[0].(map[string]any)
	for _, k := range []string{"recipient", "action", "status", "permanent", "hard", "reason", "remote_mta", "diagnostic"} {
		if _, ok := r0[k]; !ok {
			t.Errorf("JSON recipient lacks %q: %v", k, r0)
		}
	}
	if r0["hard"] != true || r0["reason"] != "userunknown" {
		t.Errorf("JSON recipient = %v", r0)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{eximBounce, qmailBounce, arfReport, plainMail, "", "\n\n", "Content-Type: multipart/report; boundary=a\n\n--a\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; x@y.z\nStatus: 5.1.1\n--a--\n"} {
		f.Add([]byte(s))
	}
	// A notice wrapping a bounce, so that the fuzzer reaches unwrap.
	f.Add([]byte(wrapped("Unable to deliver message to <a@b.example>.", "Content-Type: message/rfc822", qmailBounce)))
	// Only small corpus files seed the fuzzer. Each input that finds new
	// coverage is minimised in the worker (up to -fuzzminimizetime, 60 s by
	// default) before the exec count moves, and minimising a multi-KB input
	// at about 1 ms a parse is what looked like "30 execs in 21 s". Run
	// with -fuzzminimizetime=3s to spend the time fuzzing instead.
	files, _ := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	more, _ := filepath.Glob(filepath.Join(bounceParserDir, "*.msg"))
	files = append(files, more...)
	for i, file := range files {
		if i%10 != 0 {
			continue
		}
		if b, err := os.ReadFile(file); err == nil && len(b) <= 2500 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := Parse(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, r := range rep.Recipients {
			if r.Hard && !r.Permanent {
				t.Fatalf("hard but not permanent: %+v", r)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	files, _ := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	if len(files) == 0 {
		b.Fatal("bounce corpus not found at " + corpusDir)
	}
	var msgs [][]byte
	size := 0
	for _, f := range files {
		m, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, m)
		size += len(m)
	}
	b.SetBytes(int64(size / len(msgs)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := Parse(bytes.NewReader(msgs[i%len(msgs)])); err != nil {
			b.Fatal(err)
		}
	}
}

// Report shapes met in the real corpus, reduced to what each rule needs.
func TestParseShapes(t *testing.T) {
	tests := []struct {
		name, msg, rcpt string
		hard            bool
	}{
		{"fields before the recipient", "From: MAILER-DAEMON@x.example\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.example\n\nDiagnostic-Code: smtp; 550 5.1.1 Recipient address does not exist\nStatus: 5.1.1\nFinal-Recipient: rfc822; gone@example.org\nAction: failed\n\n--b--\n", "gone@example.org", true},
		{"source-routed final recipient", "From: postmaster@x.example\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nOriginal-recipient: rfc822;full@example.net\nFinal-recipient: rfc822;@smtp.example.net:full@server\nAction: failed\nStatus: 5.2.0\nDiagnostic-code: smtp;522 5.2.0 Over quota\n\n--b--\n", "full@example.net", false},
		{"bare-domain final recipient named from the text", "From: MAILER-DAEMON@x.example\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n\n   ----- The following addresses had permanent fatal errors -----\n<nohost@example.org>\n    (reason: 550 Host unknown)\n\n--b\nContent-Type: message/delivery-status\n\nFinal-Recipient: RFC822; @mx.example.org\nAction: failed\nStatus: 5.1.2\n\n--b--\n", "nohost@example.org", true},
		{"delivery-status pasted as text", "From: Mail Delivery Subsystem <MAILER-DAEMON@x.example>\nSubject: Returned mail\n\nSomething failed.\n\nReporting-MTA: dns; x.example\n\nFinal-Recipient: RFC822; pipe@example.edu\nAction: failed\nStatus: 5.5.0\n", "pipe@example.edu", false},
		{"quoted original's To", "From: Mail Delivery Subsystem <MAILER-DAEMON@x.example>\nSubject: Returned mail: Cannot send message for 4 days\n\n   ----- Transcript of session follows -----\n421 example.com (smtp)... Deferred: Connection timed out\n\n   ----- Unsent message follows -----\nFrom: s@example.co.jp\nTo: late@example.com\nSubject: hi\n", "late@example.com", false},
		{"postmaster as the failed recipient", "From: MAILER-DAEMON <>\nTo: s@x.example\nSubject: Mail delivery failed\n\nThere was an error delivering your mail to <postmaster@gone.example>.\n\nDNS lookup failure: host gone.example not found\n", "postmaster@gone.example", true},
		{"address after Message-ID words", "From: list-admin@example.co.jp\nSubject: Loop Alert: Duplicated Message-ID\n\nDuplicated Message-ID in <member@example.co.jp>.\n\nOriginal mail as follows:\n\n   To: <other@example.org>\n", "member@example.co.jp", false},
		{"multipart whose boundary was lost", "From: post_master@vtext.example\nSubject: Re:Test\nContent-Type: multipart/mixed; boundary=\"o\"\n\n--o\nContent-Type: multipart/alternative;\nboundary=\"i\"\n\n--i\nContent-Type: text/plain\n\nError: Invalid user address\n\nError message below:\n550 - Requested action not taken: no such user here\n\n  RCPT TO: nobody@vtext.example\n--i--\n--o--\n", "nobody@vtext.example", true},
	}
	for _, tt := range tests {
		rep := parseString(t, tt.msg)
		if len(rep.Recipients) == 0 || rep.Recipients[0].Recipient != tt.rcpt || rep.Recipients[0].Hard != tt.hard {
			t.Errorf("%s: recipients = %+v, want %s hard=%v", tt.name, rep.Recipients, tt.rcpt, tt.hard)
		}
	}
	// An auto-reply with a null Return-Path and an "Automatic reply" subject.
	rep := parseString(t, "Return-path: <>\nFrom: K <k@example.org>\nTo: n@example.com\nSubject: Automatic reply: hi\n\nI am away.\n")
	if !rep.IsAutoReply || rep.IsBounce || len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "k@example.org" {
		t.Errorf("automatic reply: %+v", rep)
	}
}

// dsn wraps delivery-status fields (and a text part) in a report.
func dsn(text, fields string) string {
	return "From: MAILER-DAEMON@x.example\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: text/plain\n\n" +
		text + "\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.example\n\n" + fields + "\n--b--\n"
}

// How a DSN's fields are weighed against each other and against the text.
func TestParseDSNRules(t *testing.T) {
	tests := []struct {
		name, msg string
		want      Recipient
	}{
		// A relay's generic code wraps the answering server's own.
		{"relay-wrapped status", dsn("failed", "Final-Recipient: rfc822;a@b.example\nAction: failed\nStatus: 5.0.0 (permanent failure)\nDiagnostic-Code: smtp; 5.1.0 - Unknown address error 550-'5.7.1 <x@relay.example>... Access denied'\n"),
			Recipient{Recipient: "a@b.example", Action: "failed", Status: "5.7.1", Permanent: true, Reason: Policy}},
		// Failed with a 4.x.x Status, but the server said 550 5.5.0.
		{"failed with a temporary status", dsn("failed", "Final-Recipient: rfc822;a@b.example\nAction: failed\nStatus: 4.5.0\nDiagnostic-Code: smtp; 550 5.5.0 Service refused\n"),
			Recipient{Recipient: "a@b.example", Action: "failed", Status: "5.5.0", Permanent: true, Reason: Policy}},
		// The reporting MTA's 5.7.1 on a plain "553 Invalid recipient" at
		// RCPT TO is its guess: the words decide.
		{"reporter's status on a plain reply", dsn(">>> RCPT TO:<a@b.example>\n<<< 553 Invalid recipient a@b.example", "Final-Recipient: rfc822;a@b.example\nAction: failed\nStatus: 5.7.1\nDiagnostic-Code: smtp; 553 Invalid recipient a@b.example (Mode: normal)\n"),
			Recipient{Recipient: "a@b.example", Action: "failed", Status: "5.7.1", Permanent: true, Hard: true, Reason: UserUnknown}},
		// The server's own 5.7.1 on the same words is a refusal.
		{"server's own policy status", dsn("failed", "Final-Recipient: rfc822;a@b.example\nAction: failed\nStatus: 5.7.1\nDiagnostic-Code: smtp; 550 5.7.1 Invalid recipient a@b.example\n"),
			Recipient{Recipient: "a@b.example", Action: "failed", Status: "5.7.1", Permanent: true, Reason: Policy}},
		// Without a Diagnostic-Code the Status comment explains this
		// recipient; the report's text is about another.
		{"status comment", dsn("b@c.example: 550 user unknown", "Final-Recipient: rfc822;a@b.example\nAction: delayed\nStatus: 4.0.0 (b.example: host name lookup failure)\n\nFinal-Recipient: rfc822;b@c.example\nAction: failed\nStatus: 5.0.0\nDiagnostic-Code: smtp; 550 user unknown\n"),
			Recipient{Recipient: "a@b.example", Action: "delayed", Status: "4.0.0", Reason: Expired}},
		// "expired" is not an RFC 3464 action, but means the sender gave up.
		{"expired action", dsn("failed", "Final-Recipient: rfc822;a@b.example\nAction: expired\nStatus: \nDiagnostic-Code: Connection timed out\n"),
			Recipient{Recipient: "a@b.example", Action: "failed", Status: "5.4.7", Permanent: true, Reason: Expired}},
		// A local mailer's failure is this system's, even in a delay notice.
		{"local mailer delayed", dsn("Warning: message still undelivered after 4 hours", "Final-Recipient: rfc822;a@b.example\nAction: delayed\nStatus: 4.5.0\nDiagnostic-Code: X-Unix; 71\n"),
			Recipient{Recipient: "a@b.example", Action: "delayed", Status: "4.5.0", Reason: SystemError}},
	}
	for _, tt := range tests {
		rep := parseString(t, tt.msg)
		if len(rep.Recipients) == 0 {
			t.Errorf("%s: no recipient", tt.name)
			continue
		}
		got := rep.Recipients[0]
		if got.Diagnostic == "" {
			t.Errorf("%s: no diagnostic", tt.name)
		}
		got.Diagnostic, got.RemoteMTA = "", ""
		if got != tt.want {
			t.Errorf("%s: recipient = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// A sendmail transcript of several hosts: each recipient keeps its own
// error, with the reply code written before its address.
func TestParseSendmailTranscript(t *testing.T) {
	msg := "From: Mail Delivery Subsystem <MAILER-DAEMON@x.example>\nSubject: Returned mail: User unknown\n\n" +
		"   ----- Transcript of session follows -----\nWhile talking to example.edu:\n>>> DATA\n<<< 550 Your E-Mail is redundant.\n" +
		"554 <a@example.edu>... Remote protocol error: Connection reset by peer\n" +
		"550 example.org (smtp)... 550 Host unknown\n554 <b@example.org>... 550 Host unknown (Authoritative answer from name server)\n" +
		"While talking to mail.example.net:\n>>> RCPT To:<c@example.net>\n<<< 550 Requested User Mailbox not found. No such user here.\n550 <c@example.net>... User unknown\n\n" +
		"   ----- Unsent message follows -----\nTo: a@example.edu\n"
	want := map[string]struct {
		hard bool
		perm bool
	}{"a@example.edu": {false, true}, "b@example.org": {true, true}, "c@example.net": {true, true}}
	rep := parseString(t, msg)
	if len(rep.Recipients) != len(want) {
		t.Fatalf("recipients = %+v", rep.Recipients)
	}
	for _, r := range rep.Recipients {
		w, ok := want[r.Recipient]
		if !ok || r.Hard != w.hard || r.Permanent != w.perm {
			t.Errorf("%s: %+v, want hard=%v permanent=%v", r.Recipient, r, w.hard, w.perm)
		}
	}
}

// hostile are inputs that once cost the parser super-linear time: a field
// folded over many lines, many recipients sharing one long text, many false
// starts of a delivery-status part.
func hostile() map[string]string {
	return map[string]string{
		"folded field":    "Content-Type: multipart/report; boundary=a\n\n--a\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; x@y.z\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550" + strings.Repeat("\n x", 200000) + "\n--a--\n",
		"many recipients": "Content-Type: multipart/report; boundary=a\n\n--a\n\n" + strings.Repeat("blah ", 2000) + "\n--a\nContent-Type: message/delivery-status\n\n" + strings.Repeat("Final-Recipient: rfc822; x@y.z\nStatus: 5.0.0\n\n", 3000) + "\n--a--\n",
		"false starts":    "From: MAILER-DAEMON@x.example\n\n" + strings.Repeat("content-type: message/delivery-status\nx: y\n", 50000),
	}
}

func TestParseHostileBounded(t *testing.T) {
	for name, msg := range hostile() {
		rep := parseString(t, msg)
		if len(rep.Recipients) > maxRecipients {
			t.Errorf("%s: %d recipients, more than %d", name, len(rep.Recipients), maxRecipients)
		}
	}
}

func BenchmarkParseHostile(b *testing.B) {
	for name, msg := range hostile() {
		b.Run(strings.ReplaceAll(name, " ", "-"), func(b *testing.B) {
			for b.Loop() {
				if _, err := Parse(strings.NewReader(msg)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// wrapped builds a gateway's notice about rcpt with inner attached as the
// given part type (and, for an attachment, file name).
func wrapped(notice, partHeader, inner string) string {
	return wrappedB("w", notice, partHeader, inner)
}

// wrappedB is wrapped with the MIME boundary b.
func wrappedB(b, notice, partHeader, inner string) string {
	return "From: postmaster@gw.example\nTo: s@example.com\nSubject: Mail could not be delivered\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=" + b + "\n\n--" + b + "\nContent-Type: text/plain\n\n" +
		notice + "\n--" + b + "\n" + partHeader + "\n\n" + inner + "\n--" + b + "--\n"
}

// A bounce attached to an inconclusive notice gives the verdict; an
// attachment that is not a bounce, or one about another address, does not.
func TestParseWrappedBounce(t *testing.T) {
	const notice = "The following mail could not be delivered.\nReason: Unable to deliver message to <a@b.example> (and other recipients in the same domain).\n"
	const innerText = "From: s@example.com\nTo: a@b.example\nSubject: hi\n\n----- The following addresses had permanent fatal errors -----\n<a@b.example>\n\n----- Transcript of the session follows -----\n>>> RCPT To:<a@b.example>\n<<< 550 5.1.1 <a@b.example>... Invalid recipient\n"
	innerDSN := strings.Replace(dsn("failed", "Final-Recipient: rfc822;a@b.example\nAction: failed\nStatus: 5.2.2\nDiagnostic-Code: smtp; 552 5.2.2 Mailbox full\n"), "From:", "To: s@example.com\nFrom:", 1)
	tests := []struct {
		name, msg string
		want      Recipient // Diagnostic and RemoteMTA not compared
	}{
		{"free-text bounce as message/rfc822", wrapped(notice, "Content-Type: message/rfc822", innerText),
			Recipient{Recipient: "a@b.example", Action: "failed", Status: "5.1.1", Permanent: true, Hard: true, Reason: UserUnknown}},
		{"DSN as an .eml attachment", wrapped(notice, "Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"bounce.eml\"", innerDSN),
			Recipient{Recipient: "a@b.example", Action: "failed", Status: "5.2.2", Permanent: true, Reason: MailboxFull}},
		// A notice that names no recipient takes the inner one.
		{"notice naming nobody", wrapped("Your mail could not be delivered.", "Content-Type: message/rfc822", innerDSN),
			Recipient{Recipient: "a@b.example", Action: "failed", Status: "5.2.2", Permanent: true, Reason: MailboxFull}},
		// The usual quoted original is not a bounce: the outer verdict stands.
		{"quoted original", wrapped(notice, "Content-Type: message/rfc822", "From: s@example.com\nTo: a@b.example\nSubject: hi\n\nhello\n"),
			Recipient{Recipient: "a@b.example", Action: "failed", Status: "5.0.0", Permanent: true, Reason: Other}},
		// An inner bounce about another address says nothing about this one.
		{"inner about another address", wrapped(notice, "Content-Type: message/rfc822", strings.ReplaceAll(innerText, "a@b.example", "z@b.example")),
			Recipient{Recipient: "a@b.example", Action: "failed", Status: "5.0.0", Permanent: true, Reason: Other}},
		// A conclusive outer report is not second-guessed by its attachment.
		{"conclusive outer", wrapped("Unable to deliver message to <a@b.example>: 550 5.7.1 message refused by policy", "Content-Type: message/rfc822", innerText),
			Recipient{Recipient: "a@b.example", Action: "failed", Status: "5.7.1", Permanent: true, Reason: Policy}},
	}
	for _, tt := range tests {
		rep := parseString(t, tt.msg)
		if len(rep.Recipients) != 1 || !rep.IsBounce {
			t.Errorf("%s: bounce=%v recipients = %+v", tt.name, rep.IsBounce, rep.Recipients)
			continue
		}
		got := rep.Recipients[0]
		got.Diagnostic, got.RemoteMTA = "", ""
		if got != tt.want {
			t.Errorf("%s: recipient = %+v, want %+v", tt.name, got, tt.want)
		}
	}
	// A person forwarding a bounce is not reporting one.
	fwd := "From: alice@example.org\nTo: s@example.com\nSubject: look at this\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=w\n\n--w\nContent-Type: text/plain\n\nFYI\n--w\nContent-Type: message/rfc822\n\n" + innerText + "\n--w--\n"
	if rep := parseString(t, fwd); rep.IsBounce || len(rep.Recipients) != 0 {
		t.Errorf("forwarded bounce: %+v", rep)
	}
}

// Nesting is bounded: a bounce wrapped deeper than maxNest is not reached,
// and a hostile chain of wrappers costs no more than that.
func TestParseWrappedDepth(t *testing.T) {
	// A free-text bounce: a delivery-status block would also be found by
	// the raw search meant for broken MIME, at any depth.
	msg := "From: MAILER-DAEMON@x.example\nTo: s@example.com\nSubject: failure notice\n\nI wasn't able to deliver your message to the following addresses.\n\n<a@b.example>:\n550 5.1.1 user unknown\n"
	for i := 0; i <= maxNest; i++ {
		msg = wrappedB("w"+strconv.Itoa(i), "Your mail could not be delivered.", "Content-Type: message/rfc822", msg)
		if rep := parseString(t, msg); i < maxNest && (len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "a@b.example" || !rep.Recipients[0].Hard) {
			t.Fatalf("wrapped %d times: %+v", i+1, rep.Recipients)
		}
	}
	// Too deep: the outermost notice is left to what it says itself.
	for _, r := range parseString(t, msg).Recipients {
		if r.Recipient == "a@b.example" || r.Reason != Other {
			t.Errorf("wrapped %d times: %+v, want the inner bounce unread", maxNest+1, r)
		}
	}
}

// TestDiagnosticIsNotQuotedHeader: the diagnostic is the server's reply,
// not the original's header that the notice quotes after it (with no
// separator, or as a list of its fields) nor a MIME boundary left in a part
// whose Content-Type did not parse.
func TestDiagnosticIsNotQuotedHeader(t *testing.T) {
	for name, msg := range map[string]string{
		"header after the error": "From: MAILER-DAEMON@mx.example.net\nTo: s@example.com\nSubject: Undelivered Mail\n\n" +
			"A message that you sent could not be delivered to one or more of its recipients. This is a permanent error.\n\n" +
			"gone@example.org Invalid Address, ERROR_CODE :550, ERROR_CODE :5.2.2 Mailbox Full\n\n\n" +
			"Received:from mail.example.com by mx.example.net\n    with SMTP id 1; Fri, 12 Dec 2014 02:49:25 -0800\n" +
			"Message-ID:<1@example.com>\nSubject:TEST\nTo:<gone@example.org>\n",
		"details of the original": "From: postmaster@example.org\nTo: s@example.com\nSubject: Re: hi\n\n" +
			"Error: Invalid user address\n\nError message below:\n550 - Requested action not taken: no such user here\n\n" +
			"Message details:\n  Subject: hi\n  Sent date: Wed Jun 12 02:21:53 GMT 2013\n  MAIL FROM: s@example.com\n" +
			"  RCPT TO: gone@example.org\n  From: s@example.com\n  CC: recipient list not shown: ;\n  Size (in bytes): 250\n" +
			"  Number of lines: 2\n\n------=_Part_1_2.3--\n",
	} {
		rep, err := Parse(strings.NewReader(msg))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "gone@example.org" {
			t.Fatalf("%s: recipients %+v", name, rep.Recipients)
		}
		d := rep.Recipients[0].Diagnostic
		for _, bad := range []string{"Received", "Message-ID", "Subject", "Size", "CC:", "=_Part"} {
			if strings.Contains(d, bad) {
				t.Errorf("%s: diagnostic %q holds %q", name, d, bad)
			}
		}
		if !strings.Contains(d, "550") {
			t.Errorf("%s: diagnostic %q lost the reply", name, d)
		}
	}
}
