package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
	"github.com/latchkey/latchkey/salesforce"
)

func init() {
	register("queue list", "list queue items (-class, -state queued|delivered|…|all)", cmdQueueList)
	register("queue show", "show the items an id names (message id, queue item id or Message-ID)", cmdQueueShow)
	register("queue retry", "make the queued items an id names due now", cmdQueueRetry)
	register("queue drop", "end the queued items an id names with outcome dropped (recorded with -by)", cmdQueueDrop)
	register("suppress add", "put an address on a suppression list (default list: unsubscribe)", cmdSuppressAdd)
	register("suppress remove", "take an address off a suppression list", cmdSuppressRemove)
	register("suppress list", "list suppressed addresses", cmdSuppressList)
	register("suppress import", "import address[,reason] rows from a CSV file; bad rows are listed and exit 1", cmdSuppressImport)
	register("audit show", "one message's whole timeline by message id, queue item id or Message-ID", cmdAuditShow)
	register("audit query", "audit events by recipient, class, type, Salesforce user/org, time", cmdAuditQuery)
	register("audit export", "export audit events as csv or jsonl (streamed)", cmdAuditExport)
	register("audit verify", "walk the audit hash chain and name every changed, inserted or missing event", cmdAuditVerify)
	register("outbox list", "list Salesforce escalations (pending and dead by default)", cmdOutboxList)
	register("outbox retry", "send a dead-lettered escalation again", cmdOutboxRetry)
}

const timeFmt = "2006-01-02T15:04:05Z07:00"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(timeFmt)
}

func writeIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdQueueList(args []string, stdout, stderr io.Writer) int {
	c := newOp("queue list", stdout, stderr)
	class := c.fs.String("class", "", "only this class")
	state := c.fs.String("state", "", "queued (default: the live items), delivered, bounced, expired, superseded, dropped or all")
	limit := c.fs.Int("limit", 1000, "at most this many items")
	asJSON := c.fs.Bool("json", false, "JSON array")
	if _, ok := c.parse(args, 0, "[-config FILE] [-class C] [-state S] [-limit N] [-json]"); !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		v := url.Values{}
		if *class != "" {
			v.Set("class", *class)
		}
		if *state != "" {
			v.Set("state", *state)
		}
		v.Set("limit", strconv.Itoa(*limit))
		var items []queue.Item
		if err := a.JSON(ctx, "GET", "/api/v1/queue?"+v.Encode(), nil, &items); err != nil {
			return err
		}
		if *asJSON {
			return writeIndented(stdout, items)
		}
		return printQueue(stdout, items, *state, *limit)
	})
}

// printQueue lists items the way postqueue -p does: one row per recipient
// with its message's arrival, size and sender, then a summary line.
func printQueue(w io.Writer, items []queue.Item, state string, limit int) error {
	if len(items) == 0 {
		if state == "" || state == queue.StateQueued {
			_, err := fmt.Fprintln(w, "queue is empty")
			return err
		}
		_, err := fmt.Fprintf(w, "no %s items\n", state)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCLASS\tARRIVAL\tSIZE\tSENDER\tRECIPIENT\tSTATE\tLAST REASON")
	msgs := map[string]bool{}
	var octets int
	for _, it := range items {
		if !msgs[it.MsgID] {
			msgs[it.MsgID] = true
			octets += it.Size
		}
		size := "-"
		if it.Size > 0 {
			size = strconv.Itoa(it.Size)
		}
		sender := it.From
		if sender == "" {
			sender = "<>"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.ID, it.Class, fmtTime(it.Accepted), size, sender,
			it.Rcpt, it.State, lastReason(&it))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	plural := func(n int, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %ss", n, one)
	}
	kb := (octets + 1023) / 1024
	line := fmt.Sprintf("%s (%s), %d KB", plural(len(msgs), "message"), plural(len(items), "queue item"), kb)
	if len(items) == limit {
		line += fmt.Sprintf("; the first %d only (raise -limit)", limit)
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

// lastReason is why an item ended (its reason) or, while it is queued, why
// it was last deferred: the reply it got, with its codes, as postqueue shows.
func lastReason(it *queue.Item) string {
	r := it.Reason
	if a := it.Last; a != nil && (r == "" || !queue.Final(it.State)) {
		switch {
		case a.Code != 0:
			r = strings.TrimSpace(fmt.Sprintf("%d %s %s", a.Code, a.Enhanced, a.Text))
		case a.Error != "":
			r = a.Error
		}
	}
	if r == "" {
		return "-"
	}
	r = strings.Join(strings.Fields(r), " ")
	if len(r) > 80 {
		r = r[:77] + "..."
	}
	return r
}

func printItem(w io.Writer, it *queue.Item) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("id", it.ID)
	row("state", it.State)
	row("class", it.Class)
	row("recipient", it.Rcpt)
	row("original recipient", it.OrigRcpt)
	row("from", it.From)
	row("message-id", it.MessageID)
	row("accepted", fmtTime(it.Accepted))
	row("deadline", fmtTime(it.Deadline))
	if !queue.Final(it.State) {
		row("due", fmtTime(it.Due))
	} else {
		row("finished", fmtTime(it.Finished))
	}
	row("attempts", strconv.Itoa(it.Attempts))
	row("reason", it.Reason)
	row("superseded by", it.SupersededBy)
	if a := it.Last; a != nil {
		last := fmt.Sprintf("%s %s", fmtTime(a.Time), a.Host)
		if a.Code != 0 {
			last += fmt.Sprintf(" %d %s %s", a.Code, a.Enhanced, a.Text)
		}
		if a.Error != "" {
			last += " " + a.Error
		}
		row("last attempt", strings.TrimSpace(last))
	}
	tw.Flush()
}

func cmdQueueShow(args []string, stdout, stderr io.Writer) int {
	c := newOp("queue show", stdout, stderr)
	asJSON := c.fs.Bool("json", false, "JSON")
	pos, ok := c.parse(args, 1, "[-config FILE] [-json] ID")
	if !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		var items []queue.Item
		if err := a.JSON(ctx, "GET", "/api/v1/queue/"+url.PathEscape(pos[0]), nil, &items); err != nil {
			return err
		}
		if *asJSON {
			return writeIndented(stdout, items)
		}
		for i := range items {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			printItem(stdout, &items[i])
		}
		return nil
	})
}

func cmdQueueRetry(args []string, stdout, stderr io.Writer) int {
	c := newOp("queue retry", stdout, stderr)
	pos, ok := c.parse(args, 1, "[-config FILE] ID")
	if !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		var items []queue.Item
		if err := a.JSON(ctx, "POST", "/api/v1/queue/"+url.PathEscape(pos[0])+"/retry", admin.RetryRequest{By: operator()}, &items); err != nil {
			return err
		}
		for _, it := range items {
			if queue.Final(it.State) {
				fmt.Fprintf(stdout, "%s: %s, left as it is\n", it.ID, it.State)
			} else {
				fmt.Fprintf(stdout, "%s: due now\n", it.ID)
			}
		}
		return nil
	})
}

// operator names who did something, for the audit trail.
func operator() string {
	for _, k := range []string{"SUDO_USER", "USER", "LOGNAME"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return "cli"
}

func cmdQueueDrop(args []string, stdout, stderr io.Writer) int {
	c := newOp("queue drop", stdout, stderr)
	by := c.fs.String("by", operator(), "who drops it (recorded in the audit trail)")
	reason := c.fs.String("reason", "", "why (recorded in the audit trail)")
	pos, ok := c.parse(args, 1, "[-config FILE] [-by NAME] [-reason TEXT] ID")
	if !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		var items []queue.Item
		err := a.JSON(ctx, "POST", "/api/v1/queue/"+url.PathEscape(pos[0])+"/drop", admin.DropRequest{By: *by, Reason: *reason}, &items)
		if err != nil {
			return err
		}
		for _, it := range items {
			fmt.Fprintf(stdout, "%s: %s: %s\n", it.ID, it.State, it.Reason)
		}
		return nil
	})
}

func suppressPath(list, addr string) string {
	return "/api/v1/suppressions/" + url.PathEscape(list) + "/" + url.PathEscape(addr)
}

func cmdSuppressAdd(args []string, stdout, stderr io.Writer) int {
	c := newOp("suppress add", stdout, stderr)
	list := c.fs.String("list", "unsubscribe", "suppression list (the shipped policy reads bounce and unsubscribe)")
	reason := c.fs.String("reason", "", "why (e.g. unsubscribed)")
	pos, ok := c.parse(args, 1, "[-config FILE] [-list L] [-reason R] ADDRESS")
	if !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		var s queue.Suppression
		if err := a.JSON(ctx, "PUT", suppressPath(*list, pos[0]), admin.SuppressRequest{Reason: *reason}, &s); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s added to %s\n", s.Address, s.List)
		return nil
	})
}

func cmdSuppressRemove(args []string, stdout, stderr io.Writer) int {
	c := newOp("suppress remove", stdout, stderr)
	list := c.fs.String("list", "unsubscribe", "suppression list (the shipped policy reads bounce and unsubscribe)")
	pos, ok := c.parse(args, 1, "[-config FILE] [-list L] ADDRESS")
	if !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		if err := a.JSON(ctx, "DELETE", suppressPath(*list, pos[0])+"?by="+url.QueryEscape(operator()), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s removed from %s\n", strings.ToLower(pos[0]), *list)
		return nil
	})
}

func cmdSuppressList(args []string, stdout, stderr io.Writer) int {
	c := newOp("suppress list", stdout, stderr)
	list := c.fs.String("list", "", "only this list (default: all)")
	asJSON := c.fs.Bool("json", false, "JSON array")
	if _, ok := c.parse(args, 0, "[-config FILE] [-list L] [-json]"); !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		path := "/api/v1/suppressions"
		if *list != "" {
			path += "?list=" + url.QueryEscape(*list)
		}
		var sups []queue.Suppression
		if err := a.JSON(ctx, "GET", path, nil, &sups); err != nil {
			return err
		}
		if *asJSON {
			return writeIndented(stdout, sups)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "LIST\tADDRESS\tSINCE\tREASON")
		for _, s := range sups {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.List, s.Address, fmtTime(s.Time), s.Reason)
		}
		return tw.Flush()
	})
}

func cmdSuppressImport(args []string, stdout, stderr io.Writer) int {
	c := newOp("suppress import", stdout, stderr)
	list := c.fs.String("list", "unsubscribe", "suppression list (the shipped policy reads bounce and unsubscribe)")
	pos, ok := c.parse(args, 1, "[-config FILE] [-list L] FILE.csv")
	if !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		var res admin.ImportResult
		resp, err := a.Do(ctx, "POST", "/api/v1/suppressions/"+url.PathEscape(*list)+"/import", f, "text/csv")
		var ae *admin.APIError
		switch {
		case err == nil:
			defer resp.Body.Close()
			if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
				return fmt.Errorf("decode the answer: %w", err)
			}
		case errors.As(err, &ae) && ae.Status == 400 && json.Unmarshal(ae.Body, &res) == nil && res.Rows > 0:
			// Nothing importable: the answer still lists the bad rows.
		default:
			return err
		}
		fmt.Fprintf(stdout, "%s: imported %d addresses into %s from %d rows\n", pos[0], res.Imported, res.List, res.Rows)
		for _, b := range res.Bad {
			fmt.Fprintf(stderr, "%s:%d: %s\n", pos[0], b.Line, b.Error)
		}
		if more := res.BadCount - len(res.Bad); more > 0 {
			fmt.Fprintf(stderr, "%s: … and %d more bad rows\n", pos[0], more)
		}
		if res.BadCount > 0 {
			fmt.Fprintf(stderr, "latchkey suppress import: %d bad rows not imported\n", res.BadCount)
			return errReported
		}
		return nil
	})
}

func printEvents(w io.Writer, evs []audit.Event, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, ev := range evs {
			if err := enc.Encode(ev); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tEVENT\tQUEUE ID\tRECIPIENT\tDETAILS")
	for _, ev := range evs {
		var b strings.Builder
		audit.FormatDetails(&b, ev.Fields)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, ev.Time.UTC().Format(time.RFC3339Nano), ev.Type,
			ev.QueueID, ev.Recipient, b.String())
	}
	return tw.Flush()
}

func cmdAuditShow(args []string, stdout, stderr io.Writer) int {
	c := newOp("audit show", stdout, stderr)
	asJSON := c.fs.Bool("json", false, "JSON lines")
	pos, ok := c.parse(args, 1, "[-config FILE] [-json] MSG-ID|ITEM-ID|MESSAGE-ID")
	if !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		var evs []audit.Event
		if err := a.JSON(ctx, "GET", "/api/v1/audit/messages/"+url.PathEscape(pos[0]), nil, &evs); err != nil {
			return err
		}
		return printEvents(stdout, evs, *asJSON)
	})
}

func cmdAuditQuery(args []string, stdout, stderr io.Writer) int {
	c := newOp("audit query", stdout, stderr)
	filters := map[string]*string{}
	for _, f := range []struct{ flag, param, help string }{
		{"recipient", "recipient", "recipient address (any case)"},
		{"class", "class", "policy class"},
		{"type", "type", "event type, e.g. delivered, bounced, expired, clicked"},
		{"queue-id", "queue_id", "queue item id"},
		{"sfdc-user", "sfdc_user", "Salesforce user id"},
		{"sfdc-org", "sfdc_org", "Salesforce org id"},
	} {
		filters[f.param] = c.fs.String(f.flag, "", f.help)
	}
	since := c.fs.String("since", "", "RFC 3339 time or duration ago (e.g. 24h)")
	until := c.fs.String("until", "", "RFC 3339 time or duration ago")
	limit := c.fs.Int("limit", 1000, "at most this many events")
	asJSON := c.fs.Bool("json", false, "JSON lines")
	if _, ok := c.parse(args, 0, "[-config FILE] [-recipient A] [-class C] [-type T] [-queue-id ID] [-sfdc-user U] [-sfdc-org O] [-since T] [-until T] [-limit N] [-json]"); !ok {
		return 2
	}
	v := url.Values{}
	for k, p := range filters {
		if *p != "" {
			v.Set(k, *p)
		}
	}
	if !c.timeParams(v, *since, *until) {
		return 2
	}
	v.Set("limit", strconv.Itoa(*limit))
	return c.run(func(ctx context.Context, a *adminConn) error {
		var evs []audit.Event
		if err := a.JSON(ctx, "GET", "/api/v1/audit/events?"+v.Encode(), nil, &evs); err != nil {
			return err
		}
		return printEvents(stdout, evs, *asJSON)
	})
}

// timeParams puts -since and -until into v as RFC 3339.
func (c *opCmd) timeParams(v url.Values, since, until string) bool {
	for _, p := range []struct{ name, val string }{{"since", since}, {"until", until}} {
		t, err := parseWhen(p.val)
		if err != nil {
			fmt.Fprintf(c.stderr, "latchkey %s: -%s: %v\n", c.name, p.name, err)
			return false
		}
		if !t.IsZero() {
			v.Set(p.name, t.UTC().Format(time.RFC3339Nano))
		}
	}
	return true
}

func cmdAuditExport(args []string, stdout, stderr io.Writer) int {
	c := newOp("audit export", stdout, stderr)
	format := c.fs.String("format", "csv", "csv or jsonl")
	since := c.fs.String("since", "", "RFC 3339 time or duration ago (e.g. 720h)")
	until := c.fs.String("until", "", "RFC 3339 time or duration ago")
	if _, ok := c.parse(args, 0, "[-config FILE] [-format csv|jsonl] [-since T] [-until T]"); !ok {
		return 2
	}
	v := url.Values{"format": {*format}}
	if !c.timeParams(v, *since, *until) {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		resp, err := a.Do(ctx, "GET", "/api/v1/audit/export?"+v.Encode(), nil, "")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(stdout, resp.Body); err != nil {
			return fmt.Errorf("export incomplete: %w", err)
		}
		return nil
	})
}

func cmdAuditVerify(args []string, stdout, stderr io.Writer) int {
	c := newOp("audit verify", stdout, stderr)
	asJSON := c.fs.Bool("json", false, "JSON")
	if _, ok := c.parse(args, 0, "[-config FILE] [-json]"); !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		var r admin.VerifyResult
		if err := a.JSON(ctx, "GET", "/api/v1/audit/verify", nil, &r); err != nil {
			return err
		}
		if *asJSON {
			writeIndented(stdout, r)
		} else {
			fmt.Fprintf(stdout, "events %d, seq %d..%d, signed head at %d\n", r.Events, r.FirstSeq, r.LastSeq, r.HeadSeq)
			if r.HeadHash != "" {
				fmt.Fprintf(stdout, "head hash %s\n", r.HeadHash)
			}
			if p := r.Pruned; p != nil {
				fmt.Fprintf(stdout, "pruned before %s: %d events; verified from the signed checkpoint at seq %d\n", fmtTime(p.Before), p.Removed, p.Seq)
			}
			for _, p := range r.Problems {
				fmt.Fprintf(stdout, "PROBLEM %s\n", p.Text)
			}
			if r.Truncated {
				fmt.Fprintln(stdout, "(more problems not listed)")
			}
		}
		if !r.OK {
			fmt.Fprintln(stderr, "latchkey audit verify: FAIL: the audit trail does not verify")
			return errReported
		}
		if !*asJSON {
			fmt.Fprintln(stdout, "OK: the chain verifies")
		}
		return nil
	})
}

func cmdOutboxList(args []string, stdout, stderr io.Writer) int {
	c := newOp("outbox list", stdout, stderr)
	state := c.fs.String("state", "", "pending, dead, done or all (default: pending and dead)")
	asJSON := c.fs.Bool("json", false, "JSON array")
	if _, ok := c.parse(args, 0, "[-config FILE] [-state S] [-json]"); !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		path := "/api/v1/outbox"
		if *state != "" {
			path += "?state=" + url.QueryEscape(*state)
		}
		var items []salesforce.Item
		if err := a.JSON(ctx, "GET", path, nil, &items); err != nil {
			return err
		}
		if *asJSON {
			return writeIndented(stdout, items)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tTRIGGER\tRECIPIENT\tQUEUE ID\tATTEMPTS\tNEXT TRY\tCASE\tLAST ERROR")
		for _, it := range items {
			caseID := it.CaseID
			if it.HandedTo != "" {
				caseID = "(handed to cluster node " + it.HandedTo + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", it.ID, it.State, it.Trigger, it.Recipient, it.QueueID,
				it.Attempts, fmtTime(it.NextTry), caseID, it.LastError)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		// The reset records ([salesforce.lifecycle]), when they are sent.
		var rec admin.RecordsAnswer
		err := a.JSON(ctx, "GET", "/api/v1/outbox/records", nil, &rec)
		var ae *admin.APIError
		if errors.As(err, &ae) && ae.Status == 404 {
			return nil
		}
		if err != nil {
			return err
		}
		line := fmt.Sprintf("\nreset records for Salesforce: %d waiting to be sent, %d refused", rec.Pending, rec.Dead)
		if rec.Throttled {
			line += " (slowed: the org is near its daily API limit)"
		}
		fmt.Fprintln(stdout, line)
		if len(rec.DeadRecords) > 0 {
			tw = tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "QUEUE ID\tREFUSED AT\tERROR")
			for _, d := range rec.DeadRecords {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", d.ID, fmtTime(d.At), d.Error)
			}
			return tw.Flush()
		}
		return nil
	})
}

func cmdOutboxRetry(args []string, stdout, stderr io.Writer) int {
	c := newOp("outbox retry", stdout, stderr)
	pos, ok := c.parse(args, 1, "[-config FILE] ID")
	if !ok {
		return 2
	}
	return c.run(func(ctx context.Context, a *adminConn) error {
		if err := a.JSON(ctx, "POST", "/api/v1/outbox/"+url.PathEscape(pos[0])+"/retry", nil, nil); err != nil {
			return err
		}
		msg := "pending again; the relay's worker sends it"
		if !a.Remote {
			msg = "pending again; sent when the relay runs"
		}
		fmt.Fprintf(stdout, "%s: %s\n", pos[0], msg)
		return nil
	})
}
