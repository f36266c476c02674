package bounce

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
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
	files, _ := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	for i, file := range files {
		if i%20 != 0 {
			continue
		}
		if b, err := os.ReadFile(file); err == nil {
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
		b.Skip("bounce corpus not found at " + corpusDir)
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
