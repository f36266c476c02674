package admin

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"regexp"
	"strings"
	"time"

	"github.com/latchkey/latchkey/queue"
)

// listNameRE is the policy's rule for suppression list names.
var listNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

func checkList(l string) error {
	if !listNameRE.MatchString(l) {
		return fmt.Errorf("list: %q is not a list name (lower-case letters, digits, - and _)", clip(l, 64))
	}
	return nil
}

// CheckAddress validates a bare email address (no display name, no angle
// brackets) and returns it in lower case, the form suppression lists use.
func CheckAddress(a string) (string, error) {
	if a == "" {
		return "", errors.New("address: empty")
	}
	if len(a) > 254 {
		return "", errors.New("address: longer than 254 characters")
	}
	p, err := mail.ParseAddress(a)
	if err != nil || p.Name != "" || p.Address != a {
		return "", fmt.Errorf("address: %q is not a bare email address", clip(a, 80))
	}
	at := strings.LastIndexByte(a, '@')
	if at < 1 || !validDomain(a[at+1:]) {
		return "", fmt.Errorf("address: %q has no valid domain", clip(a, 80))
	}
	return strings.ToLower(a), nil
}

// validDomain accepts a DNS name with at least two labels (no address
// literals: mail to them is not something a suppression list needs).
func validDomain(d string) bool {
	if len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c >= 0x80) {
				return false
			}
		}
	}
	return true
}

// SuppressRequest is the body of PUT /api/v1/suppressions/{list}/{addr}.
type SuppressRequest struct {
	Reason string `json:"reason"`
	By     string `json:"by"` // who, for the audit trail (default admin-api)
}

func (s *server) suppressList(w http.ResponseWriter, r *http.Request) {
	list := r.URL.Query().Get("list")
	if list != "" {
		if err := checkList(list); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	out, err := s.o.Queue.ListSuppressions(list)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if out == nil {
		out = []queue.Suppression{}
	}
	writeJSON(w, http.StatusOK, out)
}

// listAddr reads and checks {list} and {addr}.
func listAddr(w http.ResponseWriter, r *http.Request) (list, addr string, ok bool) {
	list = r.PathValue("list")
	if err := checkList(list); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", "", false
	}
	addr, err := CheckAddress(r.PathValue("addr"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", "", false
	}
	return list, addr, true
}

func (s *server) suppressAdd(w http.ResponseWriter, r *http.Request) {
	list, addr, ok := listAddr(w, r)
	if !ok {
		return
	}
	var req SuppressRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if err := checkText("reason", req.Reason, maxReason); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	by, ok := actor(w, req.By)
	if !ok {
		return
	}
	sup := queue.Suppression{List: list, Address: addr, Reason: strings.TrimSpace(req.Reason), Time: time.Now().UTC(), By: by}
	if err := s.o.Queue.AddSuppression(sup); err != nil {
		s.internal(w, r, err)
		return
	}
	s.o.Log.Info().Str("list", list).Str("remote", r.RemoteAddr).Msg("admin: suppression added")
	writeJSON(w, http.StatusOK, sup)
}

func (s *server) suppressRemove(w http.ResponseWriter, r *http.Request) {
	list, addr, ok := listAddr(w, r)
	if !ok {
		return
	}
	by, ok := actor(w, r.URL.Query().Get("by"))
	if !ok {
		return
	}
	found, err := s.o.Queue.RemoveSuppression(list, addr, by)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !found {
		writeError(w, http.StatusNotFound, fmt.Sprintf("%s is not on list %s", addr, list))
		return
	}
	s.o.Log.Info().Str("list", list).Str("remote", r.RemoteAddr).Msg("admin: suppression removed")
	writeJSON(w, http.StatusOK, map[string]any{"list": list, "address": addr, "removed": true})
}

// ImportResult is the answer of POST /api/v1/suppressions/{list}/import.
type ImportResult struct {
	// Error is set (with status 400) when no row could be imported.
	Error    string   `json:"error,omitempty"`
	List     string   `json:"list"`
	Rows     int      `json:"rows"`     // data rows read (not the header, blank or # lines)
	Imported int      `json:"imported"` // distinct addresses written
	BadCount int      `json:"bad_count"`
	Bad      []BadRow `json:"bad"` // the first maxBadRows bad rows
}

// BadRow is a refused row of an import, by line number (1-based).
type BadRow struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

const (
	maxBadRows  = 1000
	maxLineLen  = 4096
	maxReason   = 500
	importBatch = 256
)

// importRow is one good row of an import file.
type importRow struct {
	Line    int
	Address string
	Reason  string
}

// parseSuppressionCSV reads an import file: one row per line, columns
// address[,reason], an optional header row (first column "address" or
// "email"), blank lines and lines starting with # ignored. Every row is
// checked; bad rows are reported by line number and do not stop the rest.
// The error is only for a failure to read r.
func parseSuppressionCSV(r io.Reader) (rows []importRow, bad []BadRow, badCount, dataRows int, err error) {
	br := bufio.NewReaderSize(r, maxLineLen)
	addBad := func(line int, msg string) {
		badCount++
		if len(bad) < maxBadRows {
			bad = append(bad, BadRow{Line: line, Error: msg})
		}
	}
	seenData := false
	for line := 1; ; line++ {
		raw, tooLong, rerr := readLine(br)
		if rerr != nil && rerr != io.EOF {
			return nil, nil, 0, 0, rerr
		}
		if rerr == io.EOF && raw == nil && !tooLong {
			break
		}
		if line == 1 {
			raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")) // a BOM from spreadsheet exports
		}
		text := strings.TrimSpace(string(raw))
		switch {
		case tooLong:
			dataRows++
			addBad(line, fmt.Sprintf("line longer than %d bytes", maxLineLen))
		case text == "" || strings.HasPrefix(text, "#"):
		default:
			rec, perr := splitCSVLine(text)
			if perr != nil {
				dataRows++
				addBad(line, perr.Error())
				break
			}
			if !seenData {
				seenData = true
				if h := strings.ToLower(strings.TrimSpace(rec[0])); h == "address" || h == "email" || h == "email_address" || h == "e-mail" {
					break
				}
			}
			dataRows++
			row, rerr := checkRow(line, rec)
			if rerr != nil {
				addBad(line, rerr.Error())
				break
			}
			rows = append(rows, row)
		}
		if rerr == io.EOF {
			break
		}
	}
	return rows, bad, badCount, dataRows, nil
}

// readLine returns the next line without its end; tooLong reports a line
// over the buffer, whose rest is skipped. At the end it returns io.EOF
// (with the last line if it had no newline).
func readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	l, isPrefix, err := br.ReadLine()
	if err != nil {
		return nil, false, err
	}
	if !isPrefix {
		return l, false, nil
	}
	for isPrefix {
		if _, isPrefix, err = br.ReadLine(); err != nil {
			if err == io.EOF {
				return nil, true, io.EOF
			}
			return nil, true, err
		}
	}
	return nil, true, nil
}

func splitCSVLine(text string) ([]string, error) {
	cr := csv.NewReader(strings.NewReader(text))
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	rec, err := cr.Read()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("not CSV: %v", err)
	}
	if _, err := cr.Read(); err != io.EOF {
		// A quoted field spanning lines: rows are one line each.
		return nil, errors.New("not CSV: a quoted field runs past the end of the line")
	}
	return rec, nil
}

func checkRow(line int, rec []string) (importRow, error) {
	if len(rec) > 2 {
		return importRow{}, fmt.Errorf("%d columns; want address[,reason]", len(rec))
	}
	addr, err := CheckAddress(strings.TrimSpace(rec[0]))
	if err != nil {
		return importRow{}, err
	}
	row := importRow{Line: line, Address: addr}
	if len(rec) == 2 {
		row.Reason = strings.TrimSpace(rec[1])
		if err := checkText("reason", row.Reason, maxReason); err != nil {
			return importRow{}, err
		}
	}
	return row, nil
}

func (s *server) suppressImport(w http.ResponseWriter, r *http.Request) {
	list := r.PathValue("list")
	if err := checkList(list); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// The whole file is parsed before anything is written, so a body over
	// the limit imports nothing rather than an arbitrary prefix.
	body := http.MaxBytesReader(w, r.Body, maxImportBody)
	rows, bad, badCount, dataRows, err := parseSuppressionCSV(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("import file over %d bytes; split it", mbe.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	res := ImportResult{List: list, Rows: dataRows, BadCount: badCount, Bad: bad}
	if res.Bad == nil {
		res.Bad = []BadRow{}
	}
	// One entry per address, the last row winning, so a file with repeats
	// records one audit event per address.
	uniq := map[string]int{}
	var sups []queue.Suppression
	now := time.Now().UTC()
	for _, row := range rows {
		sup := queue.Suppression{List: list, Address: row.Address, Reason: row.Reason, Time: now}
		if i, ok := uniq[row.Address]; ok {
			sups[i] = sup
			continue
		}
		uniq[row.Address] = len(sups)
		sups = append(sups, sup)
	}
	for start := 0; start < len(sups); start += importBatch {
		batch := sups[start:min(start+importBatch, len(sups))]
		err := s.o.Store.Update(func(tx *queue.Tx) error {
			for _, sup := range batch {
				if err := queue.Suppress(tx, sup); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			s.internal(w, r, fmt.Errorf("admin: import stopped after %d addresses: %w", res.Imported, err))
			return
		}
		res.Imported += len(batch)
	}
	s.o.Log.Info().Str("list", list).Int("imported", res.Imported).Int("bad", badCount).Str("remote", r.RemoteAddr).Msg("admin: suppression import")
	if res.Imported == 0 {
		res.Error = "no row could be imported"
		if dataRows == 0 {
			res.Error = "the file has no rows"
		}
		writeJSON(w, http.StatusBadRequest, res)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
