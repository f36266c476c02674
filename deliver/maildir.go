package deliver

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

// maildirSeq makes file names unique within one process; the time and pid
// make them unique across processes (the Maildir convention).
var maildirSeq atomic.Uint64

// deliverMaildir writes data into the Maildir dir, one file per recipient,
// instead of sending it to the recipients' MX. It is the trial's destination:
// a newcomer sees the signed message arrive without DNS and without mailing
// the internet with keys no one has published. Each file is written in tmp/,
// synced and renamed into new/, so a reader never sees half a message.
func (d *Deliverer) deliverMaildir(from string, rcpts []string, todo []int, data []byte, results []Result) {
	for _, i := range todo {
		path, err := writeMaildir(d.cfg.Maildir, d.cfg.Hostname, from, rcpts[i], data)
		if err != nil {
			// A full or read-only disk clears up: retry, as for an MX that
			// cannot take the message now.
			results[i] = Result{Rcpt: rcpts[i], Code: 451, Enhanced: "4.3.0", Host: "maildir",
				Text: "local maildir unavailable", Err: err}
			continue
		}
		results[i] = Result{Rcpt: rcpts[i], Delivered: true, Code: 250, Enhanced: "2.0.0", Host: "maildir",
			TLS: "none", Text: "delivered to the local maildir as " + path}
		d.log.Info().Str("rcpt", rcpts[i]).Str("file", path).Msg("delivered to the local maildir (not sent to the internet)")
	}
}

func writeMaildir(dir, hostname, from, rcpt string, data []byte) (string, error) {
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return "", fmt.Errorf("deliver: maildir: %w", err)
		}
	}
	name := strconv.FormatInt(time.Now().Unix(), 10) + ".P" + strconv.Itoa(os.Getpid()) +
		"Q" + strconv.FormatUint(maildirSeq.Add(1), 10) + "." + hostname
	tmp := filepath.Join(dir, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("deliver: maildir: %w", err)
	}
	// What a local delivery agent adds: above the message, so no DKIM
	// signature covers them. Maildir files end lines with LF.
	var b bytes.Buffer
	b.Grow(len(data) + 128)
	fmt.Fprintf(&b, "Return-Path: <%s>\nDelivered-To: %s\n", from, rcpt)
	b.Write(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")))
	_, err = f.Write(b.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, "new", name))
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("deliver: maildir: %w", err)
	}
	return filepath.Join(dir, "new", name), nil
}
