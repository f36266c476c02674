package salesforce

import (
	"context"
	"encoding/json"
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

// checkVersion asks the org which REST API versions it serves
// (GET /services/data) and reports api_version if it is not one of them.
func (c *Client) checkVersion(ctx context.Context, inst, token string) error {
	status, body, err := c.send(ctx, "GET", inst+"/services/data/", token, nil)
	if err != nil {
		return err
	}
	if status != 200 {
		return parseAPIError(status, body)
	}
	var vs []struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(body, &vs); err != nil || len(vs) == 0 {
		return fmt.Errorf("salesforce: GET /services/data: no version list in the answer")
	}
	for _, v := range vs {
		if "v"+v.Version == c.cfg.APIVersion {
			return nil
		}
	}
	return fmt.Errorf("api_version %q is not served by this org, which serves v%s to v%s: set [salesforce] api_version to one of them (e.g. \"v%s\")",
		c.cfg.APIVersion, vs[0].Version, vs[len(vs)-1].Version, vs[len(vs)-1].Version)
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
	ExternalID     bool   `json:"externalId"`
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
	tok, inst, err := c.session(ctx, "")
	if !add("authenticate", err, "token issued; instance "+inst) {
		return out
	}
	// A version the org does not serve answers 404 to every call: say so
	// once, naming the setting, instead of on every line below.
	if !add("API version", c.checkVersion(ctx, inst, tok), c.cfg.APIVersion+" is served") {
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
	if lc := c.cfg.Lifecycle; lc.Enabled {
		c.checkLifecycle(ctx, lc, add)
	}
	used, limit := c.APIUsage()
	if limit > 0 {
		out = append(out, CheckResult{Name: "API usage", OK: used < limit, Detail: fmt.Sprintf("%d of %d daily API calls used", used, limit)})
	}
	return out
}

// checkLifecycle checks that the reset object is deployed and that every
// field latchkey writes exists, is writable, and that the External ID is one.
func (c *Client) checkLifecycle(ctx context.Context, lc LifecycleConfig, add func(string, error, string) bool) {
	var d describeResult
	err := c.do(ctx, "GET", "/sobjects/"+lc.Object+"/describe", nil, &d)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == 404 {
		err = fmt.Errorf("%s is not deployed in this org: deploy salesforce/metadata (docs/salesforce.md, part 3) or set [salesforce.lifecycle] object", lc.Object)
	}
	if !add("describe "+lc.Object, err, "ok") {
		return
	}
	l := &Lifecycle{cfg: lc}
	var problems []string
	for _, logical := range sortedKeys(DefaultLifecycleFields) {
		name := l.apiName(logical)
		if name == "" {
			continue
		}
		f := d.field(name)
		switch {
		case f == nil:
			problems = append(problems, fmt.Sprintf("%s has no field %s (%s): deploy salesforce/metadata, map it in [salesforce.lifecycle.fields] or set it to \"\" to leave it out", lc.Object, name, logical))
		case !f.Createable || !f.Updateable:
			problems = append(problems, fmt.Sprintf("%s.%s is not writable by the Run-As user: assign the Latchkey_Relay permission set", lc.Object, name))
		case logical == FieldLatchkeyID && !f.ExternalID:
			problems = append(problems, fmt.Sprintf("%s.%s is not an External ID: upserts need one (mark it External ID and Unique)", lc.Object, name))
		}
	}
	add("fields of "+lc.Object, joinProblems(problems), "all fields present and writable")
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
