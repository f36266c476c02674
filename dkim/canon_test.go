package dkim_test

import (
	"bytes"
	"strings"
	"testing"
)

// Messages whose canonicalisation is easy to get wrong: each must verify in
// go-msgauth and in Debian's python3-dkim, neither of which shares code with
// latchkey's signer.
func TestSignCanonicalisationCases(t *testing.T) {
	t.Parallel()
	kr, _ := dualKeyring(t, t.TempDir())
	recs := records(kr)
	head := "From: Acme <noreply@example.test>\r\nTo: u@example.net\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\nMessage-ID: <c@example.test>\r\n"
	for name, msg := range map[string]string{
		"folded subject with tabs":    head + "Subject:   Reset\r\n\t  your \t password  \r\n\r\nbody\r\n",
		"upper-case names":            strings.ReplaceAll(head, "From:", "FROM:") + "SUBJECT: x\r\n\r\nbody\r\n",
		"trailing blank lines":        head + "Subject: x\r\n\r\nline one\r\n\r\n\r\n\r\n",
		"no final CRLF":               head + "Subject: x\r\n\r\nno newline at the end",
		"empty body":                  head + "Subject: x\r\n\r\n",
		"whitespace-only lines":       head + "Subject: x\r\n\r\n  \t \r\na  \t b \t\r\n \r\nend\r\n",
		"leading whitespace":          head + "Subject: x\r\n\r\n   indented\r\n\tTabbed\r\n",
		"two To fields":               head + "To: second@example.net\r\nSubject: x\r\n\r\nbody\r\n",
		"empty value":                 head + "Subject:\r\n\r\nbody\r\n",
		"long body line of 990":       head + "Subject: x\r\n\r\n" + strings.Repeat("y", 990) + "\r\n",
		"unsigned headers in between": head + "X-Other: 1\r\nSubject: x\r\nX-More:  2 \r\n\r\nbody\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			wantAllOK(t, signed(t, kr, "example.test", []byte(msg)), recs, ours)
		})
	}
}

// Whatever latchkey signs, go-msgauth's verifier (an independent
// implementation) accepts; a change in the body afterwards it refuses.
func FuzzSignVerifies(f *testing.F) {
	f.Add("Subject: hello\r\n", "body\r\n")
	f.Add("Subject:  a\r\n\tb \r\nTo: x@y\r\n", " \r\n\r\nx  y\t\r\n\r\n")
	f.Add("Subject: x\r\n", "")
	f.Add("subject: x\r\nSUBJECT: y\r\n", "no end")
	kr, _ := dualKeyring(f, f.TempDir())
	recs := records(kr)
	f.Fuzz(func(t *testing.T, hdr, body string) {
		if strings.Contains(hdr, "\r\n\r\n") || strings.ContainsAny(hdr+body, "\x00") {
			return
		}
		// Keep to what the relay would sign: CRLF lines in the header.
		if strings.Contains(strings.ReplaceAll(hdr, "\r\n", ""), "\n") || strings.Contains(strings.ReplaceAll(hdr, "\r\n", ""), "\r") {
			return
		}
		body = strings.ReplaceAll(strings.ReplaceAll(body, "\r", ""), "\n", "\r\n")
		msg := []byte("From: a@example.test\r\n" + hdr + "\r\n" + body)
		out, err := kr.Sign("example.test", msg)
		if err != nil {
			return
		}
		full := append(out, msg...)
		for _, r := range goVerify(t, full, recs) {
			if r.Err != nil {
				t.Fatalf("go-msgauth refused %s/%s: %v\n%q", r.Domain, r.Selector, r.Err, full)
			}
		}
		tampered := append(bytes.Clone(full), []byte("x\r\n")...)
		for _, r := range goVerify(t, tampered, recs) {
			if r.Err == nil {
				t.Fatalf("go-msgauth accepted an appended body line for %s", r.Selector)
			}
		}
	})
}
