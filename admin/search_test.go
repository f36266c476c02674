package admin_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/latchkey/latchkey/queue"
)

// The queue list searches by recipient and acceptance window and pages
// newest first with an after cursor; the depth route counts live items.
func TestQueueSearchAndDepth(t *testing.T) {
	e := setup(t, nil)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	var ids []string
	for i, r := range []string{"ana@example.test", "bob@example.test", "ana.b@example.test", "carl@example.test"} {
		class := "reset"
		if i == 3 {
			class = "bulk"
		}
		ids = append(ids, e.enqueue(t, class, "", t0.Add(time.Duration(i)*time.Minute), r)[0].ID)
	}
	get := func(q url.Values) []string {
		t.Helper()
		var items []*queue.Item
		call(t, e.c, "GET", "/api/v1/queue?"+q.Encode(), nil, &items)
		var out []string
		for _, it := range items {
			out = append(out, it.ID)
		}
		return out
	}
	eq := func(what string, got []string, want ...string) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s = %v, want %v", what, got, want)
			return
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s = %v, want %v", what, got, want)
				return
			}
		}
	}
	eq("rcpt=ana", get(url.Values{"rcpt": {"ANA"}, "order": {"newest"}}), ids[2], ids[0])
	eq("page 1", get(url.Values{"order": {"newest"}, "limit": {"2"}}), ids[3], ids[2])
	eq("page 2", get(url.Values{"order": {"newest"}, "limit": {"2"}, "after": {ids[2]}}), ids[1], ids[0])
	eq("window", get(url.Values{"since": {t0.Add(time.Minute).Format(time.RFC3339)}, "until": {t0.Add(3 * time.Minute).Format(time.RFC3339)}}), ids[1], ids[2])

	for _, bad := range []url.Values{
		{"order": {"sideways"}}, {"after": {"not-an-id"}}, {"since": {"yesterday"}},
		{"since": {t0.Format(time.RFC3339)}, "until": {t0.Add(-time.Hour).Format(time.RFC3339)}},
		{"rcpt": {"a\x00b"}},
	} {
		if code, body := status(t, e.c, "GET", "/api/v1/queue?"+bad.Encode(), nil); code != http.StatusBadRequest {
			t.Errorf("%v: %d %s, want 400", bad, code, body)
		}
	}

	var depth []queue.LaneDepth
	call(t, e.c, "GET", "/api/v1/queue/depth", nil, &depth)
	if len(depth) != 2 || depth[0].Class != "bulk" || depth[0].Live != 1 || depth[1].Class != "reset" || depth[1].Live != 3 ||
		!depth[1].Oldest.Equal(queue.AcceptedAt(ids[0])) {
		t.Errorf("depth = %+v", depth)
	}
}
