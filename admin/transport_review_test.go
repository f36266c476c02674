package admin_test

import (
	"io"
	"net/http"
	"testing"
)

// HEAD of an authenticated route answers like GET without a body, also in
// process.
func TestReviewHeadInProcess(t *testing.T) {
	e := setup(t, nil)
	req, _ := http.NewRequest("HEAD", "http://latchkey/api/v1/queue", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.ip.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(b) != 0 {
		t.Errorf("in-process HEAD: %d with %d body bytes, want 200 and none", resp.StatusCode, len(b))
	}
}
