package deliver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// With a Maildir, each recipient gets one file in new/ (none left in tmp/),
// LF line ends, Return-Path and Delivered-To above the message, and no DNS
// is asked: the resolver here is an address where nothing answers.
func TestMaildirDelivery(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail")
	cfg := testConfig("127.0.0.1:1", 25)
	cfg.Maildir = dir
	d := newDeliverer(t, cfg)
	msg := "From: a@example.com\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n"
	res := d.Deliver(context.Background(), "b+x@bounce.example.com", []string{"u1@dest.test", "u2@dest.test"}, []byte(msg))
	for _, r := range res {
		if !r.Delivered || r.Code != 250 || r.Host != "maildir" || r.Err != nil {
			t.Fatalf("result %+v", r)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	if len(files) != 2 {
		t.Fatalf("%d files in new/, want 2", len(files))
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, "tmp", "*")); len(tmp) != 0 {
		t.Errorf("left in tmp/: %v", tmp)
	}
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		want := "Return-Path: <b+x@bounce.example.com>\nDelivered-To: u" + string(rune('1'+i)) + "@dest.test\n" + strings.ReplaceAll(msg, "\r\n", "\n")
		if string(b) != want {
			t.Errorf("%s:\n%q\nwant\n%q", f, b, want)
		}
		if !strings.Contains(res[i].Text, f) {
			t.Errorf("result text %q does not name %s", res[i].Text, f)
		}
	}
}

// A Maildir that cannot be written (here: a file where the directory should
// be) defers the message instead of losing or bouncing it.
func TestMaildirUnwritableDefers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail")
	os.WriteFile(dir, []byte("not a directory"), 0o600)
	cfg := testConfig("127.0.0.1:1", 25)
	cfg.Maildir = dir
	r := newDeliverer(t, cfg).Deliver(context.Background(), "s@example.com", []string{"u@dest.test"}, []byte("Subject: x\r\n\r\nx\r\n"))[0]
	if r.Delivered || r.Permanent || r.Code != 451 || r.Err == nil {
		t.Errorf("result %+v, want a temporary failure with its error", r)
	}
}
