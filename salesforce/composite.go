package salesforce

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// subrequest is one step of a Composite call.
type subrequest struct {
	Method      string `json:"method"`
	URL         string `json:"url"`
	ReferenceID string `json:"referenceId"`
	Body        any    `json:"body,omitempty"`
}

// subresult is its answer.
type subresult struct {
	Body        json.RawMessage `json:"body"`
	Status      int             `json:"httpStatusCode"`
	ReferenceID string          `json:"referenceId"`
}

// err is the subrequest's failure as an *APIError, or nil for a 2xx.
func (r subresult) err() error {
	if r.Status >= 200 && r.Status < 300 {
		return nil
	}
	return parseAPIError(r.Status, r.Body)
}

// id reads the id of a created record.
func (r subresult) id() string {
	var v struct {
		ID string `json:"id"`
	}
	json.Unmarshal(r.Body, &v)
	return v.ID
}

// composite runs subs in one API call (POST /composite, allOrNone false:
// each step stands on its own) and returns their answers in order.
func (c *Client) composite(ctx context.Context, subs []subrequest) ([]subresult, error) {
	if len(subs) == 0 || len(subs) > 25 {
		return nil, fmt.Errorf("salesforce: composite: %d subrequests; a call takes 1 to 25", len(subs))
	}
	var out struct {
		Results []subresult `json:"compositeResponse"`
	}
	if err := c.do(ctx, "POST", "/composite", map[string]any{"allOrNone": false, "compositeRequest": subs}, &out); err != nil {
		return nil, fmt.Errorf("salesforce: composite: %w", err)
	}
	if len(out.Results) != len(subs) {
		return nil, fmt.Errorf("salesforce: composite: %d answers to %d subrequests", len(out.Results), len(subs))
	}
	return out.Results, nil
}

// sobjectURL is the full path of an sObject resource, as subrequests need.
func (c *Client) sobjectURL(rest string) string {
	return "/services/data/" + c.cfg.APIVersion + "/sobjects/" + rest
}

// EscalationPlan is what one escalation writes in one Composite call.
type EscalationPlan struct {
	Case   CaseRequest
	Bounce *Person // record the bounce on this Contact or Lead; nil: skip
	Reason string
	At     time.Time
	Task   *TaskRequest // nil: no Task; WhatID is set to the new Case
}

// EscalationResult says what each step did: an id, or the error of a step
// that failed (the Case's error makes the others moot).
type EscalationResult struct {
	CaseID, TaskID      string
	CaseErr, BounceErr  error
	TaskErr             error
	BounceDone, TaskRan bool
}

// Escalate opens the Case, records the bounce on the person and adds the
// Task in one API call. Steps after the Case run even when one fails
// (allOrNone false); the caller retries only what failed.
func (c *Client) Escalate(ctx context.Context, p EscalationPlan) (*EscalationResult, error) {
	if !refRE.MatchString(p.Case.Ref) {
		return nil, fmt.Errorf("salesforce: case reference %q must be 1-64 of [A-Za-z0-9._-]", clip(p.Case.Ref, 80))
	}
	subs := []subrequest{{Method: "POST", URL: c.sobjectURL("Case"), ReferenceID: "latchkeyCase", Body: c.caseBody(p.Case)}}
	if p.Bounce != nil {
		if !sfIDRE.MatchString(p.Bounce.ID) || !apiNameRE.MatchString(p.Bounce.Object) {
			return nil, fmt.Errorf("salesforce: escalate: %q %q is not a record", p.Bounce.Object, p.Bounce.ID)
		}
		subs = append(subs, subrequest{Method: "PATCH", URL: c.sobjectURL(p.Bounce.Object + "/" + p.Bounce.ID),
			ReferenceID: "latchkeyBounce", Body: bounceBody(p.Reason, p.At)})
	}
	if p.Task != nil {
		t := *p.Task
		t.WhatID = "@{latchkeyCase.id}"
		subs = append(subs, subrequest{Method: "POST", URL: c.sobjectURL("Task"), ReferenceID: "latchkeyTask", Body: taskBody(t)})
	}
	res, err := c.composite(ctx, subs)
	if err != nil {
		return nil, err
	}
	out := &EscalationResult{}
	if out.CaseErr = res[0].err(); out.CaseErr == nil {
		if out.CaseID = res[0].id(); out.CaseID == "" {
			out.CaseErr = fmt.Errorf("salesforce: create Case: no id in %s", clip(string(res[0].Body), 300))
		}
	}
	i := 1
	if p.Bounce != nil {
		out.BounceErr, out.BounceDone = res[i].err(), res[i].err() == nil
		i++
	}
	if p.Task != nil {
		out.TaskRan = true
		if out.TaskErr = res[i].err(); out.TaskErr == nil {
			out.TaskID = res[i].id()
		}
	}
	return out, nil
}
