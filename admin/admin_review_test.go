package admin_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/audit"
)

// Message-IDs with slashes, dots, "?", "#" and "%" are found by the audit
// show route, over HTTP and in process alike.
func TestReviewAuditShowOddIDs(t *testing.T) {
	e := setup(t, nil)
	now := time.Now()
	ids := []string{"<a/b@x.test>", "<../../queue@x.test>", "<a/../b@x.test>", "<q?x=1#f%2F@x.test>", "<a//b@x.test>"}
	for _, id := range ids {
		e.enqueue(t, "reset", id, now, "u@example.test")
	}
	for _, id := range ids {
		for name, c := range map[string]*admin.Client{"http": e.c, "in-process": e.ip} {
			var evs []audit.Event
			if err := c.JSON(context.Background(), "GET", "/api/v1/audit/messages/"+url.PathEscape(id), nil, &evs); err != nil {
				t.Errorf("%s: show %q: %v", name, id, err)
				continue
			}
			if len(evs) == 0 || evs[0].MessageID != id {
				t.Errorf("%s: show %q: %+v", name, id, evs)
			}
		}
	}
}

// The operator name of a suppression removal goes into the audit trail:
// like the drop route's "by", it is checked (length, control characters).
func TestReviewSuppressRemoveByChecked(t *testing.T) {
	e := setup(t, nil)
	for _, c := range []*admin.Client{e.c, e.ip} {
		call(t, c, "PUT", "/api/v1/suppressions/bulk/u@example.test", admin.SuppressRequest{Reason: "x"}, nil)
		for _, by := range []string{"evil\nPROBLEM forged", strings.Repeat("x", 5000)} {
			st, msg := status(t, c, "DELETE", "/api/v1/suppressions/bulk/u@example.test?by="+url.QueryEscape(by), nil)
			if st != 400 || !strings.HasPrefix(msg, "by:") {
				t.Errorf("remove with by=%.20q: %d %s, want 400 by: ...", by, st, msg)
			}
		}
		call(t, c, "DELETE", "/api/v1/suppressions/bulk/u@example.test?by=ops", nil, nil)
	}
}
