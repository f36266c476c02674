package sftest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"

	"github.com/latchkey/latchkey/salesforce/metadata"
)

// customPrefixes are the key prefixes of the custom objects the fake knows.
var customPrefixes = map[string]string{metadata.Object: "a0L"}

// customSchema builds obj's schema from the SFDX source in
// salesforce/metadata, so that the fake refuses exactly what a deployed org
// would: a field the source does not define, a value too long, a status
// outside the picklist.
func customSchema(obj string) (*schema, bool) {
	fields, err := metadata.Fields(obj)
	if err != nil {
		return nil, false
	}
	sch := &schema{Name: obj, Fields: []fieldDef{ro("Id", "id", 18), ro("Name", "string", 80)}}
	for _, f := range fields {
		var d fieldDef
		switch f.Type {
		case "Text":
			d = rw(f.Name, "string", f.Length)
		case "Email":
			d = rw(f.Name, "email", 80)
		case "DateTime":
			d = rw(f.Name, "datetime", 0)
		case "Checkbox":
			d = rw(f.Name, "boolean", 0)
		case "Number":
			d = rw(f.Name, "double", 0)
		case "Picklist":
			d = pick(f.Name, f.Picklist...)
		case "Lookup":
			d = ref(f.Name, f.ReferenceTo)
		default:
			d = rw(f.Name, "string", 255)
		}
		d.Label = f.Label
		d.ExternalID = f.ExternalID
		sch.Fields = append(sch.Fields, d)
	}
	return sch, true
}

// RecordFault makes the next Count records written by an upsert (single or
// in a collection) fail with Code: "UNABLE_TO_LOCK_ROW" (a lock another
// transaction holds; retry) or "DUPLICATE_VALUE" (a unique field's value is
// on another record).
type RecordFault struct {
	Code  string
	Count int
}

// FailRecords queues a record fault.
func (s *Server) FailRecords(code string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordFaults = append(s.recordFaults, RecordFault{Code: code, Count: n})
}

// SetAPIUsage makes Sforce-Limit-Info report used calls (plus those made
// from now on), to bring the org near its daily limit.
func (s *Server) SetAPIUsage(used int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usageBase = used - s.apiCalls
}

// ByExternalID returns a copy of obj's record whose field has value, or nil.
func (s *Server) ByExternalID(obj, field, value string) Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id := s.findExternal(obj, field, value); id != "" {
		return cloneRecord(s.records[id])
	}
	return nil
}

// Writes counts the record writes (creates and updates) of obj.
func (s *Server) Writes(obj string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes[obj]
}

func cloneRecord(r Record) Record {
	out := Record{}
	for k, v := range r {
		out[k] = v
	}
	return out
}

func (s *Server) findExternal(obj, field, value string) string {
	for _, id := range s.order {
		if s.objOf[id] == obj && s.records[id][field] == value {
			return id
		}
	}
	return ""
}

func (s *Server) takeRecordFault() string {
	for i := range s.recordFaults {
		f := &s.recordFaults[i]
		f.Count--
		code := f.Code
		if f.Count <= 0 {
			s.recordFaults = append(s.recordFaults[:i], s.recordFaults[i+1:]...)
		}
		return code
	}
	return ""
}

// saveResult is one record's answer in an upsert, as the REST API gives it.
type saveResult struct {
	ID      string      `json:"id,omitempty"`
	Success bool        `json:"success"`
	Errors  []saveError `json:"errors"`
	Created bool        `json:"created"`
}

// saveError is the collections' per-record error: statusCode, not
// errorCode as in the error arrays of a failed call.
type saveError struct {
	StatusCode string   `json:"statusCode"`
	Message    string   `json:"message"`
	Fields     []string `json:"fields"`
}

// upsertOne validates and writes one record; it returns the result and, for
// a refused one, the HTTP status a single upsert would answer.
func (s *Server) upsertOne(sch *schema, extField, extValue string, body Record) (saveResult, int) {
	fail := func(status int, code, msg string, fields ...string) (saveResult, int) {
		if fields == nil {
			fields = []string{}
		}
		return saveResult{Errors: []saveError{{StatusCode: code, Message: msg, Fields: fields}}}, status
	}
	// checkFields answers an error array; record it and translate.
	rec := httptest.NewRecorder()
	if !s.checkFields(rec, sch, body, true) {
		var errs []apiErr
		json.Unmarshal(rec.Body.Bytes(), &errs)
		if len(errs) == 0 {
			return fail(400, "UNKNOWN_EXCEPTION", "invalid record")
		}
		return fail(rec.Code, errs[0].ErrorCode, errs[0].Message, errs[0].Fields...)
	}
	id := s.findExternal(sch.Name, extField, extValue)
	switch s.takeRecordFault() {
	case "UNABLE_TO_LOCK_ROW":
		return fail(400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records: "+id)
	case "DUPLICATE_VALUE":
		return fail(400, "DUPLICATE_VALUE", fmt.Sprintf("duplicate value found: %s duplicates value on record with id: %s", extField, id), extField)
	}
	s.writes[sch.Name]++
	if id != "" {
		for k, v := range body {
			s.records[id][sch.field(k).Name] = v
		}
		return saveResult{ID: id, Success: true, Errors: []saveError{}}, 200
	}
	r := Record{extField: extValue}
	for k, v := range body {
		r[sch.field(k).Name] = v
	}
	s.seq++
	id = makeID(customPrefixes[sch.Name], s.seq)
	r["Id"] = id
	r["Name"] = fmt.Sprintf("PR-%08d", s.seq)
	s.records[id] = r
	s.objOf[id] = sch.Name
	s.order = append(s.order, id)
	return saveResult{ID: id, Success: true, Errors: []saveError{}, Created: true}, 201
}

// externalField checks that field is an External ID of sch, answering the
// API's error itself.
func (s *Server) externalField(w http.ResponseWriter, sch *schema, field string) (string, bool) {
	f := sch.field(field)
	if f == nil || !f.ExternalID {
		s.apiError(w, 404, "NOT_FOUND", "Provided external ID field does not exist or is not accessible: "+field)
		return "", false
	}
	return f.Name, true
}

// serveUpsert is PATCH /sobjects/{obj}/{extField}/{value}: 201 with
// created true for a new record, 200 with created false for an update
// (API 46.0 on), an error array for a refused one.
func (s *Server) serveUpsert(w http.ResponseWriter, r *http.Request, obj, field, value string) {
	sch, ok := s.schema(obj)
	if !ok {
		s.apiError(w, 404, "NOT_FOUND", "The requested resource does not exist")
		return
	}
	field, ok = s.externalField(w, sch, field)
	if !ok {
		return
	}
	body, ok := s.decodeBody(w, r)
	if !ok {
		return
	}
	if _, has := body[field]; has {
		s.apiError(w, 400, "INVALID_FIELD", fmt.Sprintf("Unable to create/update fields: %s. The External ID field is given in the URL.", field), field)
		return
	}
	res, status := s.upsertOne(sch, field, value, body)
	if !res.Success {
		e := res.Errors[0]
		s.apiError(w, status, e.StatusCode, e.Message, e.Fields...)
		return
	}
	s.limitHeader(w)
	writeJSON(w, status, res)
}

// collectionMax is the sObject Collections limit per request.
const collectionMax = 200

// serveCollectionUpsert is PATCH /composite/sobjects/{obj}/{extField}: up
// to 200 records, one result per record in order, always 200 unless the
// request itself is wrong.
func (s *Server) serveCollectionUpsert(w http.ResponseWriter, r *http.Request, obj, field string) {
	sch, ok := s.schema(obj)
	if !ok {
		s.apiError(w, 404, "NOT_FOUND", "The requested resource does not exist")
		return
	}
	field, ok = s.externalField(w, sch, field)
	if !ok {
		return
	}
	var req struct {
		AllOrNone bool     `json:"allOrNone"`
		Records   []Record `json:"records"`
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err := json.Unmarshal(b, &req); err != nil {
		s.apiError(w, 400, "JSON_PARSER_ERROR", "Unexpected character: was expecting a JSON object")
		return
	}
	if len(req.Records) > collectionMax {
		s.apiError(w, 400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call")
		return
	}
	// allOrNone: a failure rolls back the others; keep a copy to restore.
	var saved map[string]Record
	var savedOrder []string
	if req.AllOrNone {
		saved = map[string]Record{}
		for id, rec := range s.records {
			saved[id] = cloneRecord(rec)
		}
		savedOrder = append([]string(nil), s.order...)
	}
	out := make([]saveResult, len(req.Records))
	failed := false
	for i, rec := range req.Records {
		attrs, _ := rec["attributes"].(map[string]any)
		delete(rec, "attributes")
		if t, _ := attrs["type"].(string); !strings.EqualFold(t, sch.Name) {
			out[i] = saveResult{Errors: []saveError{{StatusCode: "INVALID_TYPE", Message: "Must send a concrete entity type.", Fields: []string{}}}}
			failed = true
			continue
		}
		v, _ := rec[field].(string)
		if v == "" {
			out[i] = saveResult{Errors: []saveError{{StatusCode: "MISSING_ARGUMENT", Message: field + " not specified", Fields: []string{}}}}
			failed = true
			continue
		}
		delete(rec, field)
		out[i], _ = s.upsertOne(sch, field, v, rec)
		failed = failed || !out[i].Success
	}
	if req.AllOrNone && failed {
		s.records, s.order = saved, savedOrder
		for i := range out {
			if out[i].Success {
				out[i] = saveResult{Errors: []saveError{{StatusCode: "ALL_OR_NONE_OPERATION_ROLLED_BACK", Message: "Record rolled back because not all records were valid and the request was using AllOrNone header", Fields: []string{}}}}
			}
		}
	}
	s.limitHeader(w)
	writeJSON(w, 200, out)
}

// serveCollectionCreate is POST /composite/sobjects: up to 200 new records
// of any types, one result per record in order.
func (s *Server) serveCollectionCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AllOrNone bool     `json:"allOrNone"`
		Records   []Record `json:"records"`
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err := json.Unmarshal(b, &req); err != nil {
		s.apiError(w, 400, "JSON_PARSER_ERROR", "Unexpected character: was expecting a JSON object")
		return
	}
	if len(req.Records) > collectionMax {
		s.apiError(w, 400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call")
		return
	}
	out := make([]saveResult, len(req.Records))
	for i, rec := range req.Records {
		attrs, _ := rec["attributes"].(map[string]any)
		delete(rec, "attributes")
		t, _ := attrs["type"].(string)
		sch, ok := s.schema(t)
		if !ok {
			out[i] = saveResult{Errors: []saveError{{StatusCode: "INVALID_TYPE", Message: "Must send a concrete entity type.", Fields: []string{}}}}
			continue
		}
		rw := httptest.NewRecorder()
		if !s.checkFields(rw, sch, rec, true) {
			var errs []apiErr
			json.Unmarshal(rw.Body.Bytes(), &errs)
			e := saveError{StatusCode: "UNKNOWN_EXCEPTION", Fields: []string{}}
			if len(errs) > 0 {
				e.StatusCode, e.Message, e.Fields = errs[0].ErrorCode, errs[0].Message, append([]string{}, errs[0].Fields...)
			}
			out[i] = saveResult{Errors: []saveError{e}}
			continue
		}
		nr := Record{}
		for k, v := range rec {
			nr[sch.field(k).Name] = v
		}
		s.writes[sch.Name]++
		out[i] = saveResult{ID: s.insert(sch.Name, nr), Success: true, Errors: []saveError{}, Created: true}
	}
	s.limitHeader(w)
	writeJSON(w, 200, out)
}

var refRE = regexp.MustCompile(`@\{([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\}`)

// serveComposite is POST /composite: up to 25 subrequests run in order, each
// may name an earlier one's answer as @{ref.field}; the call answers 200
// with every subrequest's status, headers and body; with allOrNone a failed
// one makes the rest (and, in Salesforce, the earlier ones) fail.
func (s *Server) serveComposite(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AllOrNone bool `json:"allOrNone"`
		Requests  []struct {
			Method      string          `json:"method"`
			URL         string          `json:"url"`
			ReferenceID string          `json:"referenceId"`
			Body        json.RawMessage `json:"body"`
		} `json:"compositeRequest"`
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err := json.Unmarshal(b, &req); err != nil || len(req.Requests) == 0 {
		s.apiError(w, 400, "JSON_PARSER_ERROR", "Unexpected character: was expecting a JSON object")
		return
	}
	if len(req.Requests) > 25 {
		s.apiError(w, 400, "INVALID_BATCH_REQUEST", "Composite request exceeds the limit of 25 subrequests")
		return
	}
	type sub struct {
		Body        any               `json:"body"`
		HTTPHeaders map[string]string `json:"httpHeaders"`
		Status      int               `json:"httpStatusCode"`
		ReferenceID string            `json:"referenceId"`
	}
	// Faults aimed at a path hit the subrequest to it: a Drop (before
	// anything is done) or a DropAfter closes the whole call's connection,
	// the others fail that subrequest alone, as Salesforce answers a
	// failed subrequest inside a 200.
	subFault := make([]FaultKind, len(req.Requests))
	dropAfter := false
	for i, sr := range req.Requests {
		probe, err := http.NewRequest(sr.Method, sr.URL, nil)
		if err != nil {
			continue
		}
		subFault[i] = s.takeFault(probe)
		switch subFault[i] {
		case Drop:
			hijackClose(w)
			return
		case DropAfter:
			dropAfter = true
		}
	}
	answers := map[string]map[string]any{}
	var out []sub
	broken := false
	for i, sr := range req.Requests {
		var faulted *apiErr
		status := 0
		switch subFault[i] {
		case ServerError:
			faulted, status = &apiErr{Message: "An unexpected error occurred.", ErrorCode: "UNKNOWN_EXCEPTION"}, 500
		case LimitExceeded:
			faulted, status = &apiErr{Message: "TotalRequests Limit exceeded.", ErrorCode: "REQUEST_LIMIT_EXCEEDED"}, 403
		case Unauthorized:
			faulted, status = &apiErr{Message: "Session expired or invalid", ErrorCode: "INVALID_SESSION_ID"}, 401
		}
		if faulted != nil && !broken {
			out = append(out, sub{Body: []apiErr{*faulted}, HTTPHeaders: map[string]string{}, Status: status, ReferenceID: sr.ReferenceID})
			broken = req.AllOrNone
			continue
		}
		if broken {
			out = append(out, sub{Body: []apiErr{{Message: "The transaction was rolled back since another operation in the same transaction failed.", ErrorCode: "PROCESSING_HALTED"}},
				HTTPHeaders: map[string]string{}, Status: 400, ReferenceID: sr.ReferenceID})
			continue
		}
		resolve := func(s string) string {
			return refRE.ReplaceAllStringFunc(s, func(m string) string {
				p := refRE.FindStringSubmatch(m)
				if v, ok := answers[p[1]][p[2]].(string); ok {
					return v
				}
				return m
			})
		}
		u := resolve(sr.URL)
		body := resolve(string(sr.Body))
		inner, err := http.NewRequest(sr.Method, u, bytes.NewReader([]byte(body)))
		if err != nil || !strings.HasPrefix(inner.URL.Path, "/services/data/") {
			out = append(out, sub{Body: []apiErr{{Message: "Invalid subrequest url: " + sr.URL, ErrorCode: "INVALID_URL"}},
				HTTPHeaders: map[string]string{}, Status: 400, ReferenceID: sr.ReferenceID})
			broken = broken || req.AllOrNone
			continue
		}
		inner.Header.Set("Authorization", r.Header.Get("Authorization"))
		rec := httptest.NewRecorder()
		s.serveAPI(rec, inner)
		var v any
		json.Unmarshal(rec.Body.Bytes(), &v)
		if m, ok := v.(map[string]any); ok {
			answers[sr.ReferenceID] = m
		}
		hdr := map[string]string{}
		if loc := rec.Header().Get("Location"); loc != "" {
			hdr["Location"] = loc
		}
		out = append(out, sub{Body: v, HTTPHeaders: hdr, Status: rec.Code, ReferenceID: sr.ReferenceID})
		if rec.Code >= 400 && req.AllOrNone {
			broken = true
		}
	}
	if dropAfter {
		hijackClose(w)
		return
	}
	s.limitHeader(w)
	writeJSON(w, 200, map[string]any{"compositeResponse": out})
}
