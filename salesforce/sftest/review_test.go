package sftest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// token gets a client-credentials token from the fake over HTTP.
func getToken(t *testing.T, s *Server) string {
	t.Helper()
	resp, err := http.PostForm(s.URL+"/services/oauth2/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {s.opts.ClientID}, "client_secret": {s.opts.ClientSecret}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.AccessToken == "" {
		t.Fatalf("token: %v", err)
	}
	return v.AccessToken
}

func call(t *testing.T, s *Server, tok, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, s.URL+path, r)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// Query answers come in batches of 2,000 with nextRecordsUrl, as the
// reference says.
func TestQueryBatchesWithNextRecordsURL(t *testing.T) {
	s := Start(t, Options{})
	for i := range 2500 {
		s.AddContact(fmt.Sprintf("p%d@example.com", i), nil)
	}
	tok := getToken(t, s)
	type page struct {
		TotalSize      int              `json:"totalSize"`
		Done           bool             `json:"done"`
		NextRecordsURL string           `json:"nextRecordsUrl"`
		Records        []map[string]any `json:"records"`
	}
	_, b := call(t, s, tok, "GET", "/services/data/v67.0/query?q="+url.QueryEscape("SELECT Id FROM Contact"), "")
	var p1 page
	if err := json.Unmarshal(b, &p1); err != nil {
		t.Fatal(err)
	}
	if p1.TotalSize != 2500 || p1.Done || len(p1.Records) != 2000 || !strings.HasPrefix(p1.NextRecordsURL, "/services/data/v67.0/query/01g") {
		t.Fatalf("first batch: total %d done %v records %d next %q", p1.TotalSize, p1.Done, len(p1.Records), p1.NextRecordsURL)
	}
	resp, b := call(t, s, tok, "GET", p1.NextRecordsURL, "")
	var p2 page
	if err := json.Unmarshal(b, &p2); err != nil || resp.StatusCode != 200 {
		t.Fatalf("next: %d %s", resp.StatusCode, b)
	}
	if p2.TotalSize != 2500 || !p2.Done || len(p2.Records) != 500 || p2.NextRecordsURL != "" {
		t.Errorf("second batch: total %d done %v records %d next %q", p2.TotalSize, p2.Done, len(p2.Records), p2.NextRecordsURL)
	}
}

// PATCH of an unknown record and the Location of a create follow the
// reference: NOT_FOUND "The requested resource does not exist", and the
// version the call used.
func TestNotFoundAndLocation(t *testing.T) {
	s := Start(t, Options{})
	tok := getToken(t, s)
	resp, b := call(t, s, tok, "PATCH", "/services/data/v68.0/sobjects/Contact/003000000000000AAA", `{"EmailBouncedReason":"x"}`)
	if resp.StatusCode != 404 || string(b) != `[{"message":"The requested resource does not exist","errorCode":"NOT_FOUND"}]`+"\n" {
		t.Errorf("PATCH unknown: %d %s", resp.StatusCode, b)
	}
	if resp.Header.Get("Sforce-Limit-Info") == "" {
		t.Error("no Sforce-Limit-Info on an error")
	}
	resp, b = call(t, s, tok, "POST", "/services/data/v66.0/sobjects/Case/", `{"Subject":"s"}`)
	if resp.StatusCode != 201 || !strings.HasPrefix(resp.Header.Get("Location"), "/services/data/v66.0/sobjects/Case/500") {
		t.Errorf("create: %d %s Location %q", resp.StatusCode, b, resp.Header.Get("Location"))
	}
}

// A JWT whose exp is far beyond the three minutes Salesforce allows is
// refused.
func TestJWTExpiryWindow(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s := Start(t, Options{JWTPublicKey: &key.PublicKey})
	sign := func(exp time.Duration) int {
		enc := base64.RawURLEncoding.EncodeToString
		hdr := enc([]byte(`{"alg":"RS256","typ":"JWT"}`))
		claims, _ := json.Marshal(map[string]any{"iss": s.opts.ClientID, "sub": s.opts.Username,
			"aud": "https://login.salesforce.com", "exp": time.Now().Add(exp).Unix()})
		sum := sha256.Sum256([]byte(hdr + "." + enc(claims)))
		sig, _ := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
		resp, err := http.PostForm(s.URL+"/services/oauth2/token", url.Values{
			"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {hdr + "." + enc(claims) + "." + enc(sig)}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := sign(3 * time.Minute); c != 200 {
		t.Errorf("exp in 3 minutes: HTTP %d, want 200", c)
	}
	if c := sign(9 * time.Minute); c != 400 {
		t.Errorf("exp in 9 minutes: HTTP %d, want 400", c)
	}
}
