package bounce

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/emersion/go-message"
)

// Fuzz targets for each extractor: the RFC 3464 field reader, the
// free-text scanner, the ARF reader, the search for a delivery-status
// part in broken MIME and the reply classifier. FuzzParse (parse_test.go)
// covers the whole. Each is seeded with the parts of the same kind found
// in the repository's corpora, so that the fuzzer starts from real
// shapes. Run one with
//
//	go test -run='^$' -fuzz='^FuzzReadDSN$' -fuzztime=20s ./bounce

// maxSeed bounds a seed: the fuzzer minimises every input that finds new
// coverage, and multi-kilobyte seeds make that slow (see FuzzParse).
const maxSeed = 4096

// corpusParts walks every corpus message and returns the bodies of its
// parts: delivery-status, feedback-report and text.
func corpusParts(f *testing.F) (status, feedback, texts [][]byte) {
	var files []string
	for _, pat := range []string{filepath.Join(corpusDir, "*.eml"), filepath.Join(fluflDir, "*.txt"), filepath.Join(bounceParserDir, "*.msg")} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	if len(files) == 0 {
		f.Fatal("no corpus files in " + corpusDir)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		ent, err := message.Read(bytes.NewReader(b))
		if ent == nil {
			continue
		}
		_ = err
		p := &parts{top: ent.Header, raw: b}
		p.walk(ent, 0)
		add := func(dst *[][]byte, v []byte) {
			if len(v) > 0 && len(v) <= maxSeed {
				*dst = append(*dst, v)
			}
		}
		for _, s := range p.status {
			add(&status, s)
		}
		for _, s := range p.feedback {
			add(&feedback, s)
		}
		for _, s := range p.texts {
			add(&texts, []byte(s))
		}
	}
	return status, feedback, texts
}

// checkRecipients holds for every extractor's output.
func checkRecipients(t *testing.T, rs []Recipient) {
	if len(rs) > maxRecipients {
		t.Fatalf("%d recipients, more than the bound %d", len(rs), maxRecipients)
	}
	for _, r := range rs {
		if r.Hard && !r.Permanent {
			t.Fatalf("hard but not permanent: %+v", r)
		}
		if r.Reason != Complaint && r.Reason != AutoReply && normStatus(r.Status) == "" {
			t.Fatalf("malformed status %q: %+v", r.Status, r)
		}
		if r.Permanent != (r.Status != "" && r.Status[0] == '5') && r.Reason != Complaint && r.Reason != AutoReply {
			t.Fatalf("permanent %v disagrees with status %q", r.Permanent, r.Status)
		}
	}
}

func FuzzReadDSN(f *testing.F) {
	status, _, texts := corpusParts(f)
	for i, s := range status {
		text := []byte{}
		if i < len(texts) {
			text = texts[i]
		}
		f.Add(s, text)
	}
	f.Add([]byte("Final-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1\n"), []byte(""))
	f.Fuzz(func(t *testing.T, b, text []byte) {
		rep := &Report{}
		said := func(string) string { return "" }
		unnamed := readDSN(b, rep, string(text), said)
		for _, i := range unnamed {
			if i < 0 || i >= len(rep.Recipients) {
				t.Fatalf("unnamed index %d out of %d recipients", i, len(rep.Recipients))
			}
		}
		checkRecipients(t, rep.Recipients)
	})
}

func FuzzScanText(f *testing.F) {
	_, _, texts := corpusParts(f)
	for _, s := range texts {
		f.Add(s, "")
	}
	f.Add([]byte("<a@b.example>: host mx said: 550 5.1.1 User unknown (in reply to RCPT TO command)\n"), "Undelivered Mail Returned to Sender")
	f.Fuzz(func(t *testing.T, b []byte, subject string) {
		rs := scanText(string(b), map[string]bool{}, "MAILER-DAEMON@x.example", "", subject)
		checkRecipients(t, rs)
		for _, r := range rs {
			if !strings.Contains(r.Recipient, "@") || !utf8.ValidString(r.Recipient) && utf8.ValidString(string(b)) {
				t.Fatalf("recipient %q is not an address", r.Recipient)
			}
			// A name listed without its domain (bareNames) is completed
			// with the From's.
			local, domain, _ := strings.Cut(r.Recipient, "@")
			bare := domain == "x.example" && strings.Contains(string(b), local)
			if !strings.Contains(string(b), r.Recipient) && !strings.Contains(string(b), "'"+r.Recipient) && !bare {
				t.Fatalf("recipient %q is not in the text", r.Recipient)
			}
		}
	})
}

func FuzzReadARF(f *testing.F) {
	_, feedback, _ := corpusParts(f)
	for _, s := range feedback {
		f.Add(s)
	}
	f.Add([]byte("Feedback-Type: abuse\nUser-Agent: x/1\nVersion: 1\nOriginal-Rcpt-To: <a@b.example>\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := &parts{feedback: [][]byte{b}}
		rep := &Report{}
		p.readARF(rep)
		if !rep.IsComplaint || len(rep.Recipients) > maxRecipients*8 {
			t.Fatalf("report %+v", rep)
		}
		for _, r := range rep.Recipients {
			if r.Reason != Complaint || r.Hard || r.Permanent {
				t.Fatalf("complaint recipient %+v", r)
			}
		}
	})
}

func FuzzRawStatusPart(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil && len(b) <= maxSeed && bytes.Contains(b, []byte("delivery-status")) {
			f.Add(b)
		}
	}
	f.Add([]byte("Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a@b\nStatus: 5.1.1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if body := rawStatusPart(b); body != nil && !bytes.Contains(b, body) {
			t.Fatalf("status part is not a piece of the input")
		}
		if body := inlineStatus(string(b)); body != nil && !bytes.Contains(b, body) {
			t.Fatalf("inline status block is not a piece of the input")
		}
	})
}

func FuzzClassifyReply(f *testing.F) {
	for _, s := range []struct {
		code      int
		enh, text string
	}{
		{550, "5.1.1", "User unknown"}, {452, "4.2.2", "Mailbox full"}, {250, "", "2.1.5 Ok 451 4.3.0 Error"},
		{0, "", ""}, {550, "5.7.1", "<a@b>: Recipient address rejected: User unknown"}, {999, "9.9.9", "x"},
	} {
		f.Add(s.code, s.enh, s.text)
	}
	f.Fuzz(func(t *testing.T, code int, enh, text string) {
		v := ClassifyReply(code, enh, text)
		if v.Hard && !v.Permanent {
			t.Fatalf("hard but not permanent: %+v", v)
		}
		if normStatus(v.Status) == "" {
			t.Fatalf("malformed status: %+v", v)
		}
		if v.Permanent != (v.Status[0] == '5') {
			t.Fatalf("permanent %v disagrees with status %q", v.Permanent, v.Status)
		}
	})
}
