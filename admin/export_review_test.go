package admin_test

import (
	"strings"
	"testing"

	"github.com/latchkey/latchkey/admin"
)

// An export window that ends before it starts is a 400, as for the events
// route, not an empty export that looks like "nothing happened".
func TestReviewExportWindowChecked(t *testing.T) {
	e := setup(t, nil)
	for _, c := range []*admin.Client{e.c, e.ip} {
		st, msg := status(t, c, "GET", "/api/v1/audit/export?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", nil)
		if st != 400 || !strings.HasPrefix(msg, "until:") {
			t.Errorf("export with until before since: %d %s, want 400 until: ...", st, msg)
		}
	}
}
