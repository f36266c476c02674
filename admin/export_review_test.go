package admin_test

import (
	"strings"
	"testing"

	"github.com/latchkey/latchkey/admin"
)

// A window that ends before it starts is a 400 on every route that takes
// one (export, events, queue list), not an empty answer that looks like
// "nothing happened".
func TestReviewExportWindowChecked(t *testing.T) {
	e := setup(t, nil)
	const win = "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"
	for _, path := range []string{"/api/v1/audit/export?format=csv&", "/api/v1/audit/events?", "/api/v1/queue?state=all&"} {
		for _, c := range []*admin.Client{e.c, e.ip} {
			st, msg := status(t, c, "GET", path+win, nil)
			if st != 400 || !strings.HasPrefix(msg, "until:") {
				t.Errorf("%s with until before since: %d %s, want 400 until: ...", path, st, msg)
			}
		}
	}
}
