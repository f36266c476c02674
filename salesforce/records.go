package salesforce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Person is the Contact or Lead that holds an address.
type Person struct {
	Object string   // "Contact", "Lead", …
	ID     string   // 18-character record id
	Email  string   // as stored in Salesforce
	Backup []string // non-empty backup addresses, in backup_email_fields order
}

// soqlQuote escapes s for use inside a SOQL string literal.
func soqlQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '\'':
			b.WriteString(`\'`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// soqlLike escapes s for a LIKE pattern: as soqlQuote, and the wildcards
// too, so that s matches only itself.
func soqlLike(s string) string {
	s = soqlQuote(s)
	s = strings.ReplaceAll(s, "%", `\%`)
	return strings.ReplaceAll(s, "_", `\_`)
}

// backupFields lists the backup fields that apply to obj.
func (c *Client) backupFields(obj string) []string {
	var out []string
	for _, f := range c.cfg.BackupEmailFields {
		o, field, qualified := strings.Cut(f, ".")
		switch {
		case !qualified:
			out = append(out, f)
		case strings.EqualFold(o, obj):
			out = append(out, field)
		}
	}
	return out
}

type queryResult struct {
	TotalSize int                          `json:"totalSize"`
	Done      bool                         `json:"done"`
	Records   []map[string]json.RawMessage `json:"records"`
}

func (c *Client) query(ctx context.Context, soql string) (*queryResult, error) {
	var res queryResult
	if err := c.do(ctx, "GET", "/query?q="+url.QueryEscape(soql), nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// str reads a string field of a record; null, absent and non-string values
// read as "". The name matches without case: Salesforce keys the answer by
// the field's own API name, whatever case the configuration wrote it in.
func str(rec map[string]json.RawMessage, field string) string {
	var s string
	raw, ok := rec[field]
	if !ok {
		for k, v := range rec {
			if strings.EqualFold(k, field) {
				raw, ok = v, true
				break
			}
		}
	}
	if ok {
		_ = json.Unmarshal(raw, &s)
	}
	return s
}

func checkAddress(email string) error {
	if email == "" || len(email) > 254 || !strings.Contains(email, "@") || strings.ContainsAny(email, "\r\n\x00") {
		return fmt.Errorf("salesforce: %q is not an email address", clip(email, 100))
	}
	return nil
}

// plainAddress reports whether s is one bare address, local@domain. Backup
// fields are often free text ("call her mobile", "a@x; b@y", "Jane <j@x>"),
// and what is returned becomes the reset's recipient.
func plainAddress(s string) bool {
	if checkAddress(s) != nil || strings.ContainsAny(s, " \t<>,;") {
		return false
	}
	a, err := mail.ParseAddress("<" + s + ">")
	if err != nil || a.Address != s {
		return false
	}
	i := strings.LastIndexByte(s, '@')
	return i > 0 && i < len(s)-1
}

// FindPerson returns the first record of the lookup objects, in order, whose
// Email is email (Salesforce compares without case). It returns ErrNotFound
// when none has it.
func (c *Client) FindPerson(ctx context.Context, email string) (*Person, error) {
	if err := checkAddress(email); err != nil {
		return nil, err
	}
	for _, obj := range c.cfg.LookupObjects {
		backup := c.backupFields(obj)
		fields := append([]string{"Id", "Email"}, backup...)
		q := fmt.Sprintf("SELECT %s FROM %s WHERE Email = '%s' LIMIT 1",
			strings.Join(fields, ", "), obj, soqlQuote(email))
		res, err := c.query(ctx, q)
		if err != nil {
			return nil, err
		}
		if len(res.Records) == 0 {
			continue
		}
		rec := res.Records[0]
		p := &Person{Object: obj, ID: str(rec, "Id"), Email: str(rec, "Email")}
		// The configuration may spell the object in any case ("contact");
		// the answer names it as Salesforce does, which the outbox
		// compares with "Contact" to link the Case.
		var attr struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(rec["attributes"], &attr) == nil && strings.EqualFold(attr.Type, obj) {
			p.Object = attr.Type
		}
		if p.ID == "" {
			return nil, fmt.Errorf("salesforce: %s record without Id in query answer", obj)
		}
		for _, f := range backup {
			if v := strings.TrimSpace(str(rec, f)); v != "" {
				p.Backup = append(p.Backup, v)
			}
		}
		return p, nil
	}
	return nil, ErrNotFound
}

// LookupPerson is FindPerson with its answers, found or not, cached for
// backup_cache_ttl: the backup look-up at the bounce and the escalation that
// follows it ask about the same address, and a burst of bounces to one
// address costs one query per object.
func (c *Client) LookupPerson(ctx context.Context, email string) (*Person, error) {
	key := strings.ToLower(email)
	now := c.now()
	c.cacheMu.Lock()
	e, ok := c.cache[key]
	c.cacheMu.Unlock()
	if ok && now.Before(e.expires) {
		if e.person == nil {
			return nil, ErrNotFound
		}
		p := *e.person
		return &p, nil
	}
	p, err := c.FindPerson(ctx, email)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if c.cfg.BackupCacheTTL > 0 {
		c.cacheMu.Lock()
		if len(c.cache) >= 10000 {
			for k, v := range c.cache {
				if !now.Before(v.expires) {
					delete(c.cache, k)
				}
			}
			if len(c.cache) >= 10000 {
				c.cache = map[string]cacheEntry{}
			}
		}
		c.cache[key] = cacheEntry{person: p, expires: now.Add(c.cfg.BackupCacheTTL)}
		c.cacheMu.Unlock()
	}
	if p == nil {
		return nil, ErrNotFound
	}
	cp := *p
	return &cp, nil
}

// BackupAddress returns the first backup address on file for email that is
// a plain address and not email itself, or ErrNotFound (cached as
// LookupPerson is).
func (c *Client) BackupAddress(ctx context.Context, email string) (string, error) {
	p, err := c.LookupPerson(ctx, email)
	if err != nil {
		return "", err
	}
	for _, b := range p.Backup {
		if !strings.EqualFold(b, email) && plainAddress(b) {
			return b, nil
		}
	}
	return "", ErrNotFound
}

// CaseRequest is one Case to open.
type CaseRequest struct {
	// Ref is the unique reference (the escalation id); the subject carries
	// it as [latchkey:<Ref>] and it makes CreateCase idempotent.
	Ref string
	// Subject is the headline; the configured prefix goes before it and
	// the reference after it, and it is shortened to fit 255 characters.
	Subject string
	// Description is the detail, shortened to 32,000 characters.
	Description string
	// ContactID links the Case to a Contact; empty when none was found.
	ContactID string
	// SuppliedEmail is the undeliverable address ("Web Email"). Left out
	// when longer than the field's 80 characters: a cut address is wrong.
	SuppliedEmail string
}

var refRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Field limits of Case.
const (
	maxSubject       = 255
	maxDescription   = 32000
	maxSuppliedEmail = 80
)

func (c *Client) caseSubject(r CaseRequest) string {
	ref := " [latchkey:" + r.Ref + "]"
	head := strings.TrimSpace(strings.Join(strings.Fields(c.cfg.Case.SubjectPrefix+" "+r.Subject), " "))
	return clipRunes(head, maxSubject-len(ref)) + ref
}

// CreateCase opens the Case for r and returns its id. It first looks for a
// Case whose subject already carries r's reference and returns that one, so
// that retrying after a lost answer (or a crash before the id was stored)
// never opens a second Case.
func (c *Client) CreateCase(ctx context.Context, r CaseRequest) (string, error) {
	if !refRE.MatchString(r.Ref) {
		return "", fmt.Errorf("salesforce: case reference %q must be 1-64 of [A-Za-z0-9._-]", clip(r.Ref, 80))
	}
	if id, err := c.FindByRef(ctx, "Case", r.Ref); err != nil || id != "" {
		return id, err
	}
	return c.create(ctx, "Case", c.caseBody(r))
}

// FindByRef returns the id of the obj (Case or Task) whose Subject carries
// [latchkey:<ref>], or "". The LIKE query is only a pre-filter: the Subject
// each answer holds is checked for the reference itself, so a Case an
// admin titled with a similar text, or an org whose search treats the
// escaped wildcards loosely, is never taken for latchkey's.
func (c *Client) FindByRef(ctx context.Context, obj, ref string) (string, error) {
	if !refRE.MatchString(ref) {
		return "", fmt.Errorf("salesforce: reference %q must be 1-64 of [A-Za-z0-9._-]", clip(ref, 80))
	}
	tag := "[latchkey:" + ref + "]"
	res, err := c.query(ctx, "SELECT Id, Subject FROM "+obj+" WHERE Subject LIKE '%"+soqlLike(tag)+"%' LIMIT 10")
	if err != nil {
		return "", err
	}
	for _, rec := range res.Records {
		if id := str(rec, "Id"); id != "" && strings.Contains(str(rec, "Subject"), tag) {
			return id, nil
		}
	}
	return "", nil
}

// caseBody is the Case's fields for r.
func (c *Client) caseBody(r CaseRequest) map[string]string {
	body := map[string]string{
		"Subject":     c.caseSubject(r),
		"Description": clipRunes(r.Description, maxDescription),
		"Priority":    c.cfg.Case.Priority,
		"Origin":      c.cfg.Case.Origin,
		"Status":      c.cfg.Case.Status,
	}
	if r.ContactID != "" {
		body["ContactId"] = r.ContactID
	}
	if r.SuppliedEmail != "" && len([]rune(r.SuppliedEmail)) <= maxSuppliedEmail {
		body["SuppliedEmail"] = r.SuppliedEmail
	}
	if c.cfg.Case.RecordTypeID != "" {
		body["RecordTypeId"] = c.cfg.Case.RecordTypeID
	}
	return body
}

type createResult struct {
	ID      string          `json:"id"`
	Success bool            `json:"success"`
	Errors  json.RawMessage `json:"errors"`
}

func (c *Client) create(ctx context.Context, obj string, body any) (string, error) {
	var res createResult
	if err := c.do(ctx, "POST", "/sobjects/"+obj+"/", body, &res); err != nil {
		return "", err
	}
	if !res.Success || res.ID == "" {
		return "", fmt.Errorf("salesforce: create %s: success=false: %s", obj, clip(string(res.Errors), 300))
	}
	return res.ID, nil
}

// RecordBounce writes EmailBouncedReason and EmailBouncedDate on the
// person's record, so the bounce shows in Salesforce's own UI.
func (c *Client) RecordBounce(ctx context.Context, p *Person, reason string, at time.Time) error {
	if p == nil || !sfIDRE.MatchString(p.ID) || !apiNameRE.MatchString(p.Object) {
		return errors.New("salesforce: RecordBounce needs a person found by FindPerson")
	}
	return c.do(ctx, "PATCH", "/sobjects/"+p.Object+"/"+p.ID, bounceBody(reason, at), nil)
}

// TaskRequest is one Task to add to the activity timeline.
type TaskRequest struct {
	// Ref makes CreateTask safe to replay: the subject carries
	// [latchkey:<Ref>] and a Task that already does is reused.
	Ref         string
	Subject     string // up to 255 characters
	Description string // up to 32,000 characters
	WhoID       string // Contact or Lead id; may be empty
	WhatID      string // Case id; may be empty
}

// CreateTask adds a high-priority Task and returns its id; with a Ref, a
// Task already created for it (an answer lost, a crash) is returned instead.
func (c *Client) CreateTask(ctx context.Context, t TaskRequest) (string, error) {
	if t.Ref != "" {
		if id, err := c.FindByRef(ctx, "Task", t.Ref); err != nil || id != "" {
			return id, err
		}
	}
	return c.create(ctx, "Task", taskBody(t))
}

func taskBody(t TaskRequest) map[string]string {
	subject := clipRunes(t.Subject, 255)
	if t.Ref != "" {
		tag := " [latchkey:" + t.Ref + "]"
		subject = clipRunes(t.Subject, 255-len(tag)) + tag
	}
	body := map[string]string{
		"Subject":     subject,
		"Description": clipRunes(t.Description, maxDescription),
		"Priority":    "High",
		"Status":      "Not Started",
		"TaskSubtype": "Task",
	}
	if t.WhoID != "" {
		body["WhoId"] = t.WhoID
	}
	if t.WhatID != "" {
		body["WhatId"] = t.WhatID
	}
	return body
}

// bounceBody is what RecordBounce writes.
func bounceBody(reason string, at time.Time) map[string]string {
	return map[string]string{
		"EmailBouncedReason": clipRunes(strings.Join(strings.Fields(reason), " "), 255),
		"EmailBouncedDate":   at.UTC().Format("2006-01-02T15:04:05.000Z"),
	}
}
