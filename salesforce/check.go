package salesforce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// CheckResult is one line of `latchkey salesforce check`.
type CheckResult struct {
	Name   string // what was checked, e.g. "read Contact"
	OK     bool
	Detail string // what was found, or what to change, in plain words
}

type describeResult struct {
	Name       string          `json:"name"`
	Createable bool            `json:"createable"`
	Fields     []describeField `json:"fields"`
}

type describeField struct {
	Name           string `json:"name"`
	Type           string `json:"type"`
	Createable     bool   `json:"createable"`
	Updateable     bool   `json:"updateable"`
	PicklistValues []struct {
		Value  string `json:"value"`
		Active bool   `json:"active"`
	} `json:"picklistValues"`
}

// Check authenticates, reads one record of each lookup object, and checks
// through describe that the fields latchkey reads and writes exist and are
// writable, and that the Case picklist values are valid. Results say in
// plain words what to change.
func (c *Client) Check(ctx context.Context) []CheckResult {
	var out []CheckResult
	add := func(name string, err error, okDetail string) bool {
		r := CheckResult{Name: name, OK: err == nil, Detail: okDetail}
		if err != nil {
			r.Detail = explain(err)
		}
		out = append(out, r)
		return err == nil
	}
	select {
	case c.tokenSem <- struct{}{}:
	case <-ctx.Done():
		return []CheckResult{{Name: "authenticate", Detail: ctx.Err().Error()}}
	}
	c.token = "" // authenticate for real, not from the cache
	<-c.tokenSem
	_, inst, err := c.session(ctx, "")
	if !add("authenticate", err, "token issued; instance "+inst) {
		return out
	}
	for _, obj := range c.cfg.LookupObjects {
		res, err := c.query(ctx, "SELECT Id FROM "+obj+" LIMIT 1")
		detail := ""
		if err == nil {
			detail = fmt.Sprintf("readable (%d record(s) seen)", len(res.Records))
		}
		add("read "+obj, err, detail)

		var d describeResult
		if err := c.do(ctx, "GET", "/sobjects/"+obj+"/describe", nil, &d); !add("describe "+obj, err, "ok") {
			continue
		}
		need := map[string]string{"Email": "read"}
		for _, f := range c.backupFields(obj) {
			need[f] = "read"
		}
		if c.cfg.SetBounceFields {
			need["EmailBouncedReason"] = "update"
			need["EmailBouncedDate"] = "update"
		}
		var problems []string
		for _, name := range sortedKeys(need) {
			f := d.field(name)
			switch {
			case f == nil:
				problems = append(problems, fmt.Sprintf("%s has no field %s (check the API name, or the field-level security of the Run-As user)", obj, name))
			case need[name] == "update" && !f.Updateable:
				problems = append(problems, fmt.Sprintf("%s.%s is not writable by the Run-As user: grant Edit on it or set set_bounce_fields = false", obj, name))
			}
		}
		add("fields of "+obj, joinProblems(problems), "all fields present")
	}

	var d describeResult
	if !add("describe Case", c.do(ctx, "GET", "/sobjects/Case/describe", nil, &d), "ok") {
		return out
	}
	var problems []string
	if !d.Createable {
		problems = append(problems, "the Run-As user cannot create Cases: grant Create on Case")
	}
	for _, pv := range []struct{ field, value, key string }{
		{"Priority", c.cfg.Case.Priority, "case.priority"},
		{"Origin", c.cfg.Case.Origin, "case.origin"},
		{"Status", c.cfg.Case.Status, "case.status"},
	} {
		f := d.field(pv.field)
		if f == nil {
			problems = append(problems, "Case has no field "+pv.field)
			continue
		}
		var values []string
		for _, v := range f.PicklistValues {
			if v.Active {
				values = append(values, v.Value)
			}
		}
		if len(values) > 0 && !slices.Contains(values, pv.value) {
			problems = append(problems, fmt.Sprintf("%s = %q is not a value of Case.%s (choose one of %s)", pv.key, pv.value, pv.field, strings.Join(values, ", ")))
		}
	}
	for _, name := range []string{"Subject", "Description", "ContactId", "SuppliedEmail"} {
		if f := d.field(name); f == nil || !f.Createable {
			problems = append(problems, "Case."+name+" is missing or not writable by the Run-As user")
		}
	}
	add("Case fields", joinProblems(problems), "Case can be created with the configured values")
	used, limit := c.APIUsage()
	if limit > 0 {
		out = append(out, CheckResult{Name: "API usage", OK: used < limit, Detail: fmt.Sprintf("%d of %d daily API calls used", used, limit)})
	}
	return out
}

func (d *describeResult) field(name string) *describeField {
	for i := range d.Fields {
		if strings.EqualFold(d.Fields[i].Name, name) {
			return &d.Fields[i]
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func joinProblems(p []string) error {
	if len(p) == 0 {
		return nil
	}
	return errors.New(strings.Join(p, "; "))
}

// explain turns an error into the change to make, where it is known.
func explain(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		switch ae.Code {
		case "INVALID_TYPE":
			return ae.Message + " The object does not exist or the Run-As user cannot see it: check lookup_objects and the user's profile."
		case "INSUFFICIENT_ACCESS", "INSUFFICIENT_ACCESS_OR_READONLY":
			return ae.Message + " Give the Run-As user's profile or permission set access."
		case "INVALID_FIELD":
			return ae.Message + " Check backup_email_fields and the field-level security of the Run-As user."
		case "REQUEST_LIMIT_EXCEEDED":
			return "the org's daily API allocation is used up; calls will work again as the 24-hour window rolls"
		case "API_DISABLED_FOR_ORG":
			return "the org's edition has no API access"
		}
	}
	if IsRetryable(err) && !errors.As(err, new(*AuthError)) {
		return err.Error() + " (Salesforce unreachable or failing; try again later)"
	}
	return err.Error()
}
