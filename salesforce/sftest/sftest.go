// Package sftest is a fake Salesforce for tests: an httptest server that
// answers the OAuth token endpoint and the REST calls latchkey makes, with
// the documented JSON shapes, ids, errors and headers (see
// /work/shared/salesforce-api.md), and that can be told to misbehave: expire
// tokens, refuse or fail the next calls, answer slowly, drop connections, or
// be down.
package sftest

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configures the fake; zero values take the defaults.
type Options struct {
	ClientID     string // consumer key; default "3MVG9fake.consumer.key"
	ClientSecret string // consumer secret; default "fake-consumer-secret"
	// NoRunAsUser makes client credentials fail with "no client
	// credentials user enabled".
	NoRunAsUser bool
	// JWTPublicKey enables the JWT bearer flow: assertions must be RS256
	// signed by its private key.
	JWTPublicKey *rsa.PublicKey
	Username     string // JWT sub; default "integration@acme.example"
	// Audiences accepted as JWT aud; default login and test.salesforce.com.
	Audiences []string
	// LoginHosts refuse client credentials as login.salesforce.com does;
	// default login.salesforce.com and test.salesforce.com.
	LoginHosts []string
	// APILimit is the daily API allocation shown in Sforce-Limit-Info;
	// default 100000.
	APILimit int
	// LooseLike makes LIKE ignore the escapes of its wildcards (\_ and \%
	// match any character): latchkey must not trust a LIKE pre-filter
	// alone to find its own records.
	LooseLike bool
	// MaxAPIVersion is the newest REST API version served (default 68);
	// a newer one in a URL answers 404 NOT_FOUND as Salesforce does.
	MaxAPIVersion int
	// CustomFields adds text fields per object, e.g.
	// {"Contact": {"Backup_Email__c"}}.
	CustomFields map[string][]string
}

// FaultKind is a way for the next matching API calls to fail.
type FaultKind int

const (
	// Unauthorized answers 401 INVALID_SESSION_ID.
	Unauthorized FaultKind = iota + 1
	// LimitExceeded answers 403 REQUEST_LIMIT_EXCEEDED.
	LimitExceeded
	// ServerError answers 500 UNKNOWN_EXCEPTION.
	ServerError
	// Drop closes the connection without handling the request.
	Drop
	// DropAfter handles the request (a create takes effect) and then closes
	// the connection without answering: a crash between the POST and the
	// caller recording the id looks like this.
	DropAfter
)

// Fault makes the next Count API calls matching Method and PathContains
// (empty matches all) fail as Kind. Token requests are not affected.
type Fault struct {
	Kind         FaultKind
	Count        int
	Method       string
	PathContains string
}

// Record is a stored sobject: field name to value (string, bool or nil).
type Record map[string]any

// Update is one PATCH that succeeded.
type Update struct {
	Object, ID string
	Fields     Record
}

// Server is a running fake.
type Server struct {
	// URL is the base URL, used both as My Domain and as instance_url.
	URL string

	srv  *httptest.Server
	opts Options

	mu         sync.Mutex
	tokens     map[string]bool
	tokenReqs  int
	apiCalls   int
	seq        int
	order      []string          // ids in creation order
	records    map[string]Record // by id
	objOf      map[string]string // id -> object
	updates    []Update
	faults     []Fault
	delay      time.Duration
	down       bool
	caseNumber int
	cursors    map[string]cursor // query locator "<id>-<offset>" -> what is left
	queries    int

	recordFaults []RecordFault
	usageBase    int
	writes       map[string]int
}

// cursor is what remains of a query answer larger than one batch.
type cursor struct {
	ver   string
	recs  []map[string]any
	total int
}

// queryBatch is how many records Salesforce returns per query answer; the
// rest is fetched with GET nextRecordsUrl.
const queryBatch = 2000

var prefixes = map[string]string{
	"Case": "500", "Contact": "003", "Lead": "00Q", "User": "005", "Task": "00T", "Organization": "00D",
}

// OrgID is the fake org's id.
const OrgID = "00D5g000004FAKEEAW"

// Start runs a fake for the test and stops it at cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := New(opts)
	t.Cleanup(s.Close)
	return s
}

// New runs a fake on a loopback port; Close stops it.
func New(opts Options) *Server {
	if opts.ClientID == "" {
		opts.ClientID = "3MVG9fake.consumer.key"
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = "fake-consumer-secret"
	}
	if opts.Username == "" {
		opts.Username = "integration@acme.example"
	}
	if len(opts.Audiences) == 0 {
		opts.Audiences = []string{"https://login.salesforce.com", "https://test.salesforce.com"}
	}
	if len(opts.LoginHosts) == 0 {
		opts.LoginHosts = []string{"login.salesforce.com", "test.salesforce.com"}
	}
	if opts.MaxAPIVersion == 0 {
		opts.MaxAPIVersion = 68
	}
	if opts.APILimit == 0 {
		opts.APILimit = 100000
	}
	s := &Server{
		opts:       opts,
		tokens:     map[string]bool{},
		records:    map[string]Record{},
		objOf:      map[string]string{},
		caseNumber: 1000,
		cursors:    map[string]cursor{},
		writes:     map[string]int{},
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	// Loopback only, whatever the environment's defaults.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("sftest: listen on loopback: %v", err))
	}
	s.srv.Listener = l
	s.srv.Start()
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// ---- seeding and inspection ----

// AddContact stores a Contact and returns its id. fields may set more
// fields, e.g. Backup_Email__c.
func (s *Server) AddContact(email string, fields Record) string {
	return s.add("Contact", email, fields)
}

// AddLead stores a Lead and returns its id.
func (s *Server) AddLead(email string, fields Record) string {
	return s.add("Lead", email, fields)
}

func (s *Server) add(obj, email string, fields Record) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := Record{"Email": email}
	maps.Copy(r, fields)
	return s.insert(obj, r)
}

func (s *Server) insert(obj string, r Record) string {
	s.seq++
	id := makeID(prefixes[obj], s.seq)
	r["Id"] = id
	if obj == "Case" {
		s.caseNumber++
		r["CaseNumber"] = fmt.Sprintf("%08d", s.caseNumber)
	}
	s.records[id] = r
	s.objOf[id] = obj
	s.order = append(s.order, id)
	return id
}

// Records returns copies of the stored records of obj, oldest first.
func (s *Server) Records(obj string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for _, id := range s.order {
		if s.objOf[id] == obj {
			out = append(out, maps.Clone(s.records[id]))
		}
	}
	return out
}

// Cases returns the Cases created, oldest first.
func (s *Server) Cases() []Record { return s.Records("Case") }

// Get returns a copy of one record, or nil.
func (s *Server) Get(id string) Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.records[id])
}

// Updates returns the PATCHes applied, oldest first.
func (s *Server) Updates() []Update {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.updates)
}

// TokenRequests counts requests to the token endpoint, refused ones too.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenReqs
}

// APICalls counts requests to /services/data, refused ones too.
func (s *Server) APICalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiCalls
}

// ---- faults ----

// ExpireTokens invalidates every issued token, as a session timeout does.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// Inject queues a fault; faults apply in the order injected.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Count > 0 {
		s.faults = append(s.faults, f)
	}
}

// FailNext makes the next n API calls fail as kind.
func (s *Server) FailNext(kind FaultKind, n int) { s.Inject(Fault{Kind: kind, Count: n}) }

// SetDelay makes every answer wait d first (0 to stop).
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetDown makes every request, the token endpoint's too, answer 503 with an
// HTML maintenance page, as Salesforce does during an outage.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// takeFault pops the first fault matching r, if any.
func (s *Server) takeFault(r *http.Request) FaultKind {
	for i := range s.faults {
		f := &s.faults[i]
		if f.Method != "" && f.Method != r.Method {
			continue
		}
		if f.PathContains != "" && !strings.Contains(r.URL.Path, f.PathContains) {
			continue
		}
		f.Count--
		k := f.Kind
		if f.Count == 0 {
			s.faults = slices.Delete(s.faults, i, i+1)
		}
		return k
	}
	return 0
}

// ---- HTTP ----

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	delay, down := s.delay, s.down
	s.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if down {
		s.limitHeader(w)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "<html><body><h1>Service Unavailable</h1><p>Salesforce is down for maintenance.</p></body></html>")
		return
	}
	switch {
	case r.URL.Path == "/services/oauth2/token":
		s.tokenReqs++
		s.limitHeader(w)
		s.serveToken(w, r)
	case (r.URL.Path == "/services/data" || r.URL.Path == "/services/data/") && r.Method == "GET":
		// The versions served: no authentication needed.
		var vs []map[string]string
		for v := 31; v <= s.opts.MaxAPIVersion; v++ {
			vs = append(vs, map[string]string{"label": fmt.Sprintf("API %d", v), "url": fmt.Sprintf("/services/data/v%d.0", v), "version": fmt.Sprintf("%d.0", v)})
		}
		s.limitHeader(w)
		writeJSON(w, 200, vs)
	case strings.HasPrefix(r.URL.Path, "/services/data/"):
		s.apiCalls++
		switch s.takeFault(r) {
		case Unauthorized:
			s.apiError(w, 401, "INVALID_SESSION_ID", "Session expired or invalid")
			return
		case LimitExceeded:
			s.apiError(w, 403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
			return
		case ServerError:
			s.apiError(w, 500, "UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345 (-1234567890)")
			return
		case Drop:
			hijackClose(w)
			return
		case DropAfter:
			s.serveAPI(httptest.NewRecorder(), r)
			hijackClose(w)
			return
		}
		s.serveAPI(w, r)
	default:
		s.limitHeader(w)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(404)
		io.WriteString(w, "<html><body>URL No Longer Exists</body></html>")
	}
}

func hijackClose(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler) // closes the connection without an answer
}

func (s *Server) limitHeader(w http.ResponseWriter) {
	w.Header().Set("Sforce-Limit-Info", fmt.Sprintf("api-usage=%d/%d", s.apiCalls+s.usageBase, s.opts.APILimit))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

type apiErr struct {
	Message   string   `json:"message"`
	ErrorCode string   `json:"errorCode"`
	Fields    []string `json:"fields,omitempty"`
}

func (s *Server) apiError(w http.ResponseWriter, status int, code, msg string, fields ...string) {
	s.limitHeader(w)
	writeJSON(w, status, []apiErr{{Message: msg, ErrorCode: code, Fields: fields}})
}

func tokenError(w http.ResponseWriter, code, desc string) {
	writeJSON(w, 400, map[string]string{"error": code, "error_description": desc})
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != "POST" {
		tokenError(w, "invalid_request", "must use HTTP POST")
		return
	}
	if err := r.ParseForm(); err != nil {
		tokenError(w, "invalid_request", "bad request")
		return
	}
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	switch r.PostForm.Get("grant_type") {
	case "client_credentials":
		id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		if u, p, ok := r.BasicAuth(); ok {
			id, secret = u, p
		}
		switch {
		case slices.Contains(s.opts.LoginHosts, host):
			tokenError(w, "invalid_grant", "request not supported on this domain")
		case id != s.opts.ClientID:
			tokenError(w, "invalid_client_id", "client identifier invalid")
		case secret != s.opts.ClientSecret:
			tokenError(w, "invalid_client", "invalid client credentials")
		case s.opts.NoRunAsUser:
			tokenError(w, "invalid_grant", "no client credentials user enabled")
		default:
			s.issue(w)
		}
	case "urn:ietf:params:oauth:grant-type:jwt-bearer":
		if s.opts.JWTPublicKey == nil {
			tokenError(w, "unsupported_grant_type", "grant type not supported")
			return
		}
		if code, desc := s.checkAssertion(r.PostForm.Get("assertion")); code != "" {
			tokenError(w, code, desc)
			return
		}
		s.issue(w)
	default:
		tokenError(w, "unsupported_grant_type", "grant type not supported")
	}
}

// maxJWTLife is how far in the future a JWT's exp may be: Salesforce allows
// about three minutes, and a little for clock skew.
const maxJWTLife = 3*time.Minute + 30*time.Second

// checkAssertion validates a JWT bearer assertion as Salesforce does,
// answering the OAuth error code and description on failure.
func (s *Server) checkAssertion(a string) (code, desc string) {
	parts := strings.Split(a, ".")
	if len(parts) != 3 {
		return "invalid_grant", "invalid assertion"
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	cb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "RS256" {
		return "invalid_grant", "invalid assertion"
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(s.opts.JWTPublicKey, crypto.SHA256, sum[:], sig) != nil {
		return "invalid_grant", "invalid assertion"
	}
	var c struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Aud string `json:"aud"`
		Exp int64  `json:"exp"`
	}
	if json.Unmarshal(cb, &c) != nil {
		return "invalid_grant", "invalid assertion"
	}
	switch {
	case c.Iss != s.opts.ClientID:
		return "invalid_client_id", "client identifier invalid"
	case !slices.Contains(s.opts.Audiences, c.Aud):
		return "invalid_grant", "audience is invalid"
	case c.Exp == 0 || time.Unix(c.Exp, 0).Before(time.Now()) || time.Unix(c.Exp, 0).After(time.Now().Add(maxJWTLife)):
		return "invalid_grant", "expired authorization code"
	case c.Sub != s.opts.Username:
		return "invalid_grant", "user hasn't approved this consumer"
	}
	return "", ""
}

func (s *Server) issue(w http.ResponseWriter) {
	b := make([]byte, 24)
	rand.Read(b)
	tok := OrgID[:15] + "!AR8" + base64.RawURLEncoding.EncodeToString(b)
	s.tokens[tok] = true
	mac := sha256.Sum256([]byte(tok))
	writeJSON(w, 200, map[string]string{
		"access_token":     tok,
		"signature":        base64.StdEncoding.EncodeToString(mac[:]),
		"scope":            "api",
		"instance_url":     s.URL,
		"id":               "https://login.salesforce.com/id/" + OrgID + "/" + makeID("005", 1),
		"token_type":       "Bearer",
		"issued_at":        strconv.FormatInt(time.Now().UnixMilli(), 10),
		"api_instance_url": "https://api.salesforce.com",
	})
}

var dataPathRE = regexp.MustCompile(`^/services/data/(v[0-9]{2,3}\.0)(/.*)?$`)

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	m := dataPathRE.FindStringSubmatch(r.URL.Path)
	if m == nil {
		s.apiError(w, 404, "NOT_FOUND", "The requested resource does not exist")
		return
	}
	ver, rest := m[1], strings.TrimSuffix(m[2], "/")
	if n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(ver, "v"), ".0")); n < 31 || n > s.opts.MaxAPIVersion {
		s.apiError(w, 404, "NOT_FOUND", "The requested resource does not exist")
		return
	}
	auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !s.tokens[auth] {
		s.apiError(w, 401, "INVALID_SESSION_ID", "Session expired or invalid")
		return
	}
	parts := strings.Split(strings.TrimPrefix(rest, "/"), "/")
	switch {
	case rest == "/query" && r.Method == "GET":
		s.serveQuery(w, ver, r.URL.Query().Get("q"))
	case len(parts) == 2 && parts[0] == "query" && r.Method == "GET":
		s.serveMore(w, parts[1])
	case len(parts) == 2 && parts[0] == "sobjects" && r.Method == "POST":
		s.serveCreate(w, r, parts[1])
	case len(parts) == 3 && parts[0] == "sobjects" && parts[2] == "describe" && r.Method == "GET":
		s.serveDescribe(w, parts[1])
	case len(parts) == 4 && parts[0] == "sobjects" && r.Method == "PATCH":
		s.serveUpsert(w, r, parts[1], parts[2], parts[3])
	case len(parts) == 4 && parts[0] == "composite" && parts[1] == "sobjects" && r.Method == "PATCH":
		s.serveCollectionUpsert(w, r, parts[2], parts[3])
	case rest == "/composite/sobjects" && r.Method == "POST":
		s.serveCollectionCreate(w, r)
	case rest == "/composite" && r.Method == "POST":
		s.serveComposite(w, r)
	case len(parts) == 3 && parts[0] == "sobjects" && r.Method == "PATCH":
		s.serveUpdate(w, r, parts[1], parts[2])
	case len(parts) == 3 && parts[0] == "sobjects" && r.Method == "GET":
		s.serveGet(w, ver, parts[1], parts[2])
	default:
		s.apiError(w, 404, "NOT_FOUND", "The requested resource does not exist")
	}
}

func (s *Server) serveQuery(w http.ResponseWriter, ver, soql string) {
	q, err := parseSOQL(soql)
	if err != nil {
		s.apiError(w, 400, "MALFORMED_QUERY", err.Error())
		return
	}
	sch, ok := s.schema(q.object)
	if !ok {
		s.apiError(w, 400, "INVALID_TYPE", fmt.Sprintf("sObject type '%s' is not supported.", q.object))
		return
	}
	for _, f := range append(slices.Clone(q.fields), q.field) {
		if f != "" && sch.field(f) == nil {
			s.apiError(w, 400, "INVALID_FIELD", fmt.Sprintf("No such column '%s' on entity '%s'.", f, q.object))
			return
		}
	}
	var match func(Record) bool
	switch q.op {
	case "":
		match = func(Record) bool { return true }
	case "=":
		match = func(rec Record) bool {
			v, _ := rec[sch.field(q.field).Name].(string)
			return strings.EqualFold(v, q.value)
		}
	case "LIKE":
		pat := q.value
		if s.opts.LooseLike {
			pat = strings.NewReplacer(`\_`, "_", `\%`, "%").Replace(pat)
		}
		re, err := likeRE(pat)
		if err != nil {
			s.apiError(w, 400, "MALFORMED_QUERY", "invalid LIKE pattern")
			return
		}
		match = func(rec Record) bool { v, _ := rec[sch.field(q.field).Name].(string); return re.MatchString(v) }
	}
	recs := []map[string]any{}
	for _, id := range s.order {
		if s.objOf[id] != sch.Name || !match(s.records[id]) {
			continue
		}
		if q.limit >= 0 && len(recs) >= q.limit {
			break
		}
		out := map[string]any{"attributes": map[string]string{"type": sch.Name, "url": "/services/data/" + ver + "/sobjects/" + sch.Name + "/" + id}}
		for _, f := range q.fields {
			out[sch.field(f).Name] = s.records[id][sch.field(f).Name]
		}
		recs = append(recs, out)
	}
	s.queries++
	s.answerBatch(w, cursor{ver: ver, recs: recs, total: len(recs)}, makeID("01g", s.queries), 0)
}

// answerBatch writes up to queryBatch records of c starting at offset and
// keeps the rest for nextRecordsUrl, as Salesforce does.
func (s *Server) answerBatch(w http.ResponseWriter, c cursor, locator string, offset int) {
	recs := c.recs
	ans := map[string]any{"totalSize": c.total, "done": true}
	if len(recs) > queryBatch {
		next := fmt.Sprintf("%s-%d", locator, offset+queryBatch)
		s.cursors[next] = cursor{ver: c.ver, recs: recs[queryBatch:], total: c.total}
		recs = recs[:queryBatch]
		ans["done"] = false
		ans["nextRecordsUrl"] = "/services/data/" + c.ver + "/query/" + next
	}
	ans["records"] = recs
	s.limitHeader(w)
	writeJSON(w, 200, ans)
}

// serveMore answers GET nextRecordsUrl.
func (s *Server) serveMore(w http.ResponseWriter, next string) {
	c, ok := s.cursors[next]
	locator, off, found := strings.Cut(next, "-")
	offset, err := strconv.Atoi(off)
	if !ok || !found || err != nil {
		s.apiError(w, 400, "INVALID_QUERY_LOCATOR", "invalid query locator")
		return
	}
	delete(s.cursors, next)
	s.answerBatch(w, c, locator, offset)
}

func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request) (Record, bool) {
	var body Record
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	dec := json.NewDecoder(bytes.NewReader(b))
	if err != nil || dec.Decode(&body) != nil || body == nil {
		s.apiError(w, 400, "JSON_PARSER_ERROR", "Unexpected character: was expecting a JSON object")
		return nil, false
	}
	return body, true
}

// checkFields validates a create or update body against the schema as
// Salesforce does: unknown or read-only fields, lengths, restricted
// picklists and references.
func (s *Server) checkFields(w http.ResponseWriter, sch *schema, body Record, create bool) bool {
	for name, v := range body {
		f := sch.field(name)
		if f == nil {
			s.apiError(w, 400, "INVALID_FIELD", fmt.Sprintf("No such column '%s' on sobject of type %s", name, sch.Name))
			return false
		}
		if (create && !f.Createable) || (!create && !f.Updateable) {
			s.apiError(w, 400, "INVALID_FIELD_FOR_INSERT_UPDATE", fmt.Sprintf("Unable to create/update fields: %s. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", f.Name), f.Name)
			return false
		}
		if v == nil {
			continue
		}
		str, isStr := v.(string)
		if !isStr {
			if _, isBool := v.(bool); isBool && f.Type == "boolean" {
				continue
			}
			if _, isNum := v.(float64); isNum && f.Type == "double" {
				continue
			}
			s.apiError(w, 400, "JSON_PARSER_ERROR", fmt.Sprintf("Cannot deserialize instance of %s from value for field %s", f.Type, f.Name))
			return false
		}
		if f.Length > 0 && len([]rune(str)) > f.Length {
			s.apiError(w, 400, "STRING_TOO_LONG", fmt.Sprintf("%s: data value too large: %.20s... (max length=%d)", f.Label, str, f.Length), f.Name)
			return false
		}
		if len(f.Picklist) > 0 && !slices.Contains(f.Picklist, str) {
			s.apiError(w, 400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", fmt.Sprintf("%s: bad value for restricted picklist field: %s", f.Label, str), f.Name)
			return false
		}
		if f.Type == "datetime" {
			if _, err := time.Parse("2006-01-02T15:04:05.000Z0700", str); err != nil {
				s.apiError(w, 400, "JSON_PARSER_ERROR", fmt.Sprintf("Cannot deserialize instance of datetime from VALUE_STRING value %s", str))
				return false
			}
		}
		if len(f.ReferenceTo) > 0 && str != "" {
			if !slices.Contains(f.ReferenceTo, s.objOf[str]) {
				s.apiError(w, 400, "INVALID_CROSS_REFERENCE_KEY", fmt.Sprintf("%s: id value of incorrect type: %s", f.Label, str), f.Name)
				return false
			}
		}
	}
	return true
}

func (s *Server) serveCreate(w http.ResponseWriter, r *http.Request, obj string) {
	sch, ok := s.schema(obj)
	if !ok {
		s.apiError(w, 404, "NOT_FOUND", "The requested resource does not exist")
		return
	}
	body, ok := s.decodeBody(w, r)
	if !ok || !s.checkFields(w, sch, body, true) {
		return
	}
	rec := Record{}
	for k, v := range body {
		rec[sch.field(k).Name] = v
	}
	id := s.insert(sch.Name, rec)
	s.limitHeader(w)
	w.Header().Set("Location", r.URL.Path[:strings.Index(r.URL.Path, "/sobjects/")]+"/sobjects/"+sch.Name+"/"+id)
	writeJSON(w, 201, map[string]any{"id": id, "errors": []any{}, "success": true})
}

func (s *Server) serveUpdate(w http.ResponseWriter, r *http.Request, obj, id string) {
	sch, ok := s.schema(obj)
	rec := s.records[id]
	if !ok || rec == nil || s.objOf[id] != sch.Name {
		s.apiError(w, 404, "NOT_FOUND", "The requested resource does not exist")
		return
	}
	body, ok := s.decodeBody(w, r)
	if !ok || !s.checkFields(w, sch, body, false) {
		return
	}
	u := Update{Object: sch.Name, ID: id, Fields: Record{}}
	for k, v := range body {
		rec[sch.field(k).Name] = v
		u.Fields[sch.field(k).Name] = v
	}
	if sch.Name == "Contact" || sch.Name == "Lead" {
		rec["IsEmailBounced"] = rec["EmailBouncedDate"] != nil && rec["EmailBouncedDate"] != ""
	}
	s.updates = append(s.updates, u)
	s.limitHeader(w)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) serveGet(w http.ResponseWriter, ver, obj, id string) {
	sch, ok := s.schema(obj)
	rec := s.records[id]
	if !ok || rec == nil || s.objOf[id] != sch.Name {
		s.apiError(w, 404, "NOT_FOUND", "The requested resource does not exist")
		return
	}
	out := map[string]any{"attributes": map[string]string{"type": sch.Name, "url": "/services/data/" + ver + "/sobjects/" + sch.Name + "/" + id}}
	for _, f := range sch.Fields {
		out[f.Name] = rec[f.Name]
	}
	s.limitHeader(w)
	writeJSON(w, 200, out)
}

func (s *Server) serveDescribe(w http.ResponseWriter, obj string) {
	sch, ok := s.schema(obj)
	if !ok {
		s.apiError(w, 404, "NOT_FOUND", "The requested resource does not exist")
		return
	}
	fields := []map[string]any{}
	for _, f := range sch.Fields {
		pv := []map[string]any{}
		for i, v := range f.Picklist {
			pv = append(pv, map[string]any{"value": v, "label": v, "active": true, "defaultValue": i == 0})
		}
		fields = append(fields, map[string]any{
			"name": f.Name, "label": f.Label, "type": f.Type, "length": f.Length,
			"createable": f.Createable, "updateable": f.Updateable, "nillable": true,
			"custom": strings.HasSuffix(f.Name, "__c"), "picklistValues": pv, "referenceTo": orEmpty(f.ReferenceTo),
			"externalId": f.ExternalID,
		})
	}
	s.limitHeader(w)
	writeJSON(w, 200, map[string]any{
		"name": sch.Name, "label": sch.Name, "keyPrefix": prefixes[sch.Name],
		"createable": true, "updateable": true, "queryable": true, "fields": fields,
	})
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// makeID builds an 18-character id: the 3-character key prefix, a fake pod
// and counter making 15 characters, and Salesforce's case-safe suffix.
func makeID(prefix string, n int) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := []byte(prefix + "5g00000" + "00000")
	for i := len(b) - 1; n > 0 && i >= 10; i-- {
		b[i] = digits[n%62]
		n /= 62
	}
	return string(b) + idSuffix(string(b))
}

// idSuffix is the 3-character suffix that makes a 15-character id
// case-insensitive: one character per 5-character chunk, its bits the
// chunk's upper-case letters.
func idSuffix(id15 string) string {
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
	var out []byte
	for c := 0; c < 3; c++ {
		v := 0
		for i := 0; i < 5; i++ {
			ch := id15[c*5+i]
			if ch >= 'A' && ch <= 'Z' {
				v |= 1 << i
			}
		}
		out = append(out, alpha[v])
	}
	return string(out)
}
