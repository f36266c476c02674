package salesforce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrNotFound is returned when no lookup object holds the address, or when a
// person has no usable backup address.
var ErrNotFound = errors.New("salesforce: not found")

// APIError is a failed REST call. Salesforce answers failures with a JSON
// array of {"message","errorCode","fields"}; only the first entry is kept
// because Salesforce puts the cause there and the rest repeat it.
type APIError struct {
	Status  int
	Code    string
	Message string
	Fields  []string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "salesforce: HTTP %d", e.Status)
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if len(e.Fields) > 0 {
		fmt.Fprintf(&b, " (fields: %s)", strings.Join(e.Fields, ", "))
	}
	return b.String()
}

// AuthError is a failed token request, with a hint in plain words when the
// cause is a known misconfiguration of the connected app or of our config.
type AuthError struct {
	Status      int    // HTTP status of the token endpoint; 0 when no answer came
	Code        string // OAuth "error", e.g. invalid_grant
	Description string // OAuth "error_description"
	Hint        string // what to change, in plain words; "" when unknown
	Err         error  // transport error, when no answer came
}

func (e *AuthError) Error() string {
	var b strings.Builder
	b.WriteString("salesforce: authentication failed")
	if e.Hint != "" {
		b.WriteString(": ")
		b.WriteString(e.Hint)
	}
	switch {
	case e.Code != "":
		fmt.Fprintf(&b, " (%s: %s)", e.Code, e.Description)
	case e.Err != nil:
		fmt.Fprintf(&b, ": %v", e.Err)
	case e.Status != 0:
		fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	}
	return b.String()
}

func (e *AuthError) Unwrap() error { return e.Err }

// tokenHint turns the token endpoint's terse OAuth errors into the change an
// administrator has to make.
func tokenHint(code, desc string) string {
	d := strings.ToLower(desc)
	switch {
	case strings.Contains(d, "request not supported on this domain"):
		return "token URL must be your My Domain, not login.salesforce.com"
	case strings.Contains(d, "no client credentials user enabled"):
		return "set a Run-As user on the connected app"
	case code == "invalid_client_id" || code == "invalid_client":
		return "bad consumer key/secret"
	case strings.Contains(d, "audience is invalid"):
		return "login_url (the JWT audience) must be https://login.salesforce.com, https://test.salesforce.com or your Experience Cloud site URL"
	case strings.Contains(d, "user hasn't approved this consumer"):
		return "pre-authorize the user: set the connected app to \"Admin approved users are pre-authorized\" and add the user's profile or permission set"
	case strings.Contains(d, "invalid assertion"):
		return "the JWT was refused: jwt_key_file must match the certificate uploaded to the connected app, and the clock must be right"
	case code == "unsupported_grant_type":
		return "the connected app does not allow this flow: enable it in the app's OAuth settings"
	}
	return ""
}

// parseTokenError reads the {"error","error_description"} body of a failed
// token request.
func parseTokenError(status int, body []byte) *AuthError {
	var v struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	e := &AuthError{Status: status}
	if json.Unmarshal(body, &v) == nil && v.Error != "" {
		e.Code = clip(v.Error, 100)
		e.Description = clip(v.Description, 300)
		e.Hint = tokenHint(v.Error, v.Description)
	}
	return e
}

// parseAPIError reads a failed REST answer. It never fails: a body that is
// not the documented array (an HTML maintenance page, say) becomes the
// message, shortened.
func parseAPIError(status int, body []byte) *APIError {
	e := &APIError{Status: status}
	type entry struct {
		Message   string   `json:"message"`
		ErrorCode string   `json:"errorCode"`
		Fields    []string `json:"fields"`
	}
	var arr []entry
	var one entry
	switch {
	case json.Unmarshal(body, &arr) == nil && len(arr) > 0:
		one = arr[0]
	case json.Unmarshal(body, &one) == nil && (one.ErrorCode != "" || one.Message != ""):
	default:
		e.Message = clip(strings.Join(strings.Fields(string(body)), " "), 200)
		return e
	}
	e.Code = clip(one.ErrorCode, 100)
	e.Message = clip(one.Message, 1000)
	for i, f := range one.Fields {
		if i == 20 {
			break
		}
		e.Fields = append(e.Fields, clip(f, 100))
	}
	return e
}

// parseLimitInfo reads "api-usage=N/M" from a Sforce-Limit-Info header, which
// may also carry per-app entries such as "per-app-api-usage=17/250(appName=x)".
func parseLimitInfo(h string) (used, limit int, ok bool) {
	for _, part := range strings.Split(h, ",") {
		part = strings.TrimSpace(part)
		v, found := strings.CutPrefix(part, "api-usage=")
		if !found {
			continue
		}
		u, l, found := strings.Cut(v, "/")
		if !found {
			return 0, 0, false
		}
		un, err1 := strconv.Atoi(strings.TrimSpace(u))
		ln, err2 := strconv.Atoi(strings.TrimSpace(l))
		if err1 != nil || err2 != nil || un < 0 || ln < 0 {
			return 0, 0, false
		}
		return un, ln, true
	}
	return 0, 0, false
}

// IsRetryable reports whether a later attempt may succeed: server errors,
// 403 REQUEST_LIMIT_EXCEEDED, timeouts and connection failures. Request
// errors such as MALFORMED_QUERY or REQUIRED_FIELD_MISSING will fail the same
// way again. Authentication errors count as retryable: they are a problem of
// the configuration, not of the item, and an escalation must not be dropped
// while an administrator fixes the connected app (max_attempts still bounds
// them).
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		switch {
		case ae.Status >= 500:
			return true
		case ae.Status == 403 && ae.Code == "REQUEST_LIMIT_EXCEEDED":
			return true
		case ae.Status == 401:
			// Still refused after a fresh token: a session revoked
			// between the two requests, worth another go later.
			return true
		}
		return false
	}
	var au *AuthError
	if errors.As(err, &au) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var ue *url.Error
	return errors.As(err, &ue)
}

// clip shortens s to at most n bytes without splitting a UTF-8 sequence and
// drops invalid UTF-8, so that error text from the wire stays printable.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// clipRunes shortens s to at most n characters; Salesforce counts field
// lengths in characters.
func clipRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n])
}
