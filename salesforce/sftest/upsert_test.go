package sftest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func apiCall(t *testing.T, s *Server, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL+"/services/data/v62.0"+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer test-token")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Sforce-Limit-Info") == "" {
		t.Errorf("%s %s: no Sforce-Limit-Info", method, path)
	}
	return resp.StatusCode, string(b)
}

// The upsert routes answer with the REST API's shapes: created true/false,
// per-record errors with statusCode in collections, error arrays with
// errorCode for a refused call.
func TestUpsertShapes(t *testing.T) {
	s := Start(t, Options{})
	s.tokens["test-token"] = true
	const obj = "/sobjects/Latchkey_Reset__c/Latchkey_Id__c/"

	st, body := apiCall(t, s, "PATCH", obj+"aaaaaaaaaaaaaaaaaa", `{"Status__c":"Accepted","Recipient__c":"a@example.org"}`)
	if st != 201 || !strings.Contains(body, `"created":true`) || !strings.Contains(body, `"success":true`) {
		t.Errorf("first upsert: %d %s", st, body)
	}
	st, body = apiCall(t, s, "PATCH", obj+"aaaaaaaaaaaaaaaaaa", `{"Status__c":"Delivered","Delivery_Seconds__c":1.5}`)
	if st != 200 || !strings.Contains(body, `"created":false`) {
		t.Errorf("second upsert: %d %s", st, body)
	}
	if r := s.ByExternalID("Latchkey_Reset__c", "Latchkey_Id__c", "aaaaaaaaaaaaaaaaaa"); r["Status__c"] != "Delivered" || r["Recipient__c"] != "a@example.org" {
		t.Errorf("record after two upserts: %v", r)
	}
	if n := len(s.Records("Latchkey_Reset__c")); n != 1 {
		t.Errorf("%d records after two upserts of one id", n)
	}
	for _, c := range []struct{ path, body, code string }{
		{obj + "b", `{"Status__c":"Lost"}`, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"},
		{obj + "b", `{"No_Such__c":"x"}`, "INVALID_FIELD"},
		{"/sobjects/Latchkey_Reset__c/Status__c/x", `{}`, "NOT_FOUND"},
		{obj + "b", `{"Requested_At__c":"yesterday"}`, "JSON_PARSER_ERROR"},
	} {
		st, body := apiCall(t, s, "PATCH", c.path, c.body)
		var errs []apiErr
		if json.Unmarshal([]byte(body), &errs) != nil || len(errs) != 1 || errs[0].ErrorCode != c.code || st < 400 {
			t.Errorf("PATCH %s %s: %d %s, want %s", c.path, c.body, st, body, c.code)
		}
	}

	// A collection: per-record results in order; a lock on one record fails
	// only that one.
	s.FailRecords("UNABLE_TO_LOCK_ROW", 1)
	recs := `{"allOrNone":false,"records":[` +
		`{"attributes":{"type":"Latchkey_Reset__c"},"Latchkey_Id__c":"c1","Status__c":"Sent"},` +
		`{"attributes":{"type":"Latchkey_Reset__c"},"Latchkey_Id__c":"c2","Status__c":"Sent"},` +
		`{"attributes":{"type":"Latchkey_Reset__c"},"Latchkey_Id__c":"c3","Status__c":"Nope"}]}`
	st, body = apiCall(t, s, "PATCH", "/composite/sobjects/Latchkey_Reset__c/Latchkey_Id__c", recs)
	var res []saveResult
	if st != 200 || json.Unmarshal([]byte(body), &res) != nil || len(res) != 3 {
		t.Fatalf("collection: %d %s", st, body)
	}
	if res[0].Success || res[0].Errors[0].StatusCode != "UNABLE_TO_LOCK_ROW" || !res[1].Success || !res[1].Created ||
		res[2].Success || res[2].Errors[0].StatusCode != "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" {
		t.Errorf("collection results: %s", body)
	}
	// allOrNone: one bad record rolls the others back.
	st, body = apiCall(t, s, "PATCH", "/composite/sobjects/Latchkey_Reset__c/Latchkey_Id__c", strings.Replace(recs, `"allOrNone":false`, `"allOrNone":true`, 1))
	if st != 200 || !strings.Contains(body, "ALL_OR_NONE_OPERATION_ROLLED_BACK") || s.ByExternalID("Latchkey_Reset__c", "Latchkey_Id__c", "c1") != nil {
		t.Errorf("allOrNone collection: %d %s", st, body)
	}
	var many []string
	for i := 0; i < 201; i++ {
		many = append(many, fmt.Sprintf(`{"attributes":{"type":"Latchkey_Reset__c"},"Latchkey_Id__c":"m%d"}`, i))
	}
	st, body = apiCall(t, s, "PATCH", "/composite/sobjects/Latchkey_Reset__c/Latchkey_Id__c", `{"records":[`+strings.Join(many, ",")+`]}`)
	if st != 400 || !strings.Contains(body, "EXCEEDED_ID_LIMIT") {
		t.Errorf("201 records: %d %s", st, body)
	}

	// Composite: a Case, then a Task naming it by reference; one API call.
	before := s.APICalls()
	st, body = apiCall(t, s, "POST", "/composite", `{"allOrNone":true,"compositeRequest":[`+
		`{"method":"POST","url":"/services/data/v62.0/sobjects/Case","referenceId":"refCase","body":{"Subject":"s","Priority":"High"}},`+
		`{"method":"POST","url":"/services/data/v62.0/sobjects/Task","referenceId":"refTask","body":{"Subject":"t","WhatId":"@{refCase.id}"}}]}`)
	var cr struct {
		CompositeResponse []struct {
			Body        map[string]any `json:"body"`
			Status      int            `json:"httpStatusCode"`
			ReferenceID string         `json:"referenceId"`
		} `json:"compositeResponse"`
	}
	if st != 200 || json.Unmarshal([]byte(body), &cr) != nil || len(cr.CompositeResponse) != 2 ||
		cr.CompositeResponse[0].Status != 201 || cr.CompositeResponse[1].Status != 201 {
		t.Fatalf("composite: %d %s", st, body)
	}
	task := s.Get(cr.CompositeResponse[1].Body["id"].(string))
	if task["WhatId"] != cr.CompositeResponse[0].Body["id"] {
		t.Errorf("composite reference not resolved: task %v", task)
	}
	if s.APICalls()-before != 1 {
		t.Errorf("composite counted %d API calls, want 1", s.APICalls()-before)
	}
}
