// Package salesforce escalates password resets that cannot be delivered to
// the Salesforce org that sent them.
//
// When a reset hard-bounces, expires or is suppressed, the relay commits an
// Escalation into the Outbox inside the same Badger transaction as the bounce
// that caused it. The outbox worker then, for each escalation:
//  1. looks the recipient up among the configured objects (Contact, Lead),
//  2. opens a high-priority Case, exactly once: the subject carries the
//     reference [latchkey:<id>] and an existing Case with that reference is
//     reused, so a crash between the POST and recording its id never opens a
//     second Case,
//  3. records the bounce on the Contact or Lead (EmailBouncedReason/Date),
//  4. optionally adds a Task,
//
// retrying with exponential backoff on errors that may pass, and moving the
// item to the dead letters after max_attempts or a permanent error.
//
// The Client authenticates with OAuth client credentials or JWT bearer. A
// Salesforce token carries no expiry, so it is cached until an API call is
// refused with 401 INVALID_SESSION_ID; then one new token is fetched and the
// call is retried exactly once.
package salesforce

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/oauth2/jwt"
)

// maxBody caps what is read of any answer; no answer we use comes near it.
const maxBody = 4 << 20

// Client talks to one org's REST API. It is safe for concurrent use.
type Client struct {
	cfg Config
	hc  *http.Client
	cc  *clientcredentials.Config
	jwt *jwt.Config

	// tokenSem (capacity 1) serialises token fetches; a channel rather
	// than a mutex so that a waiting caller gives up at its own deadline.
	tokenSem    chan struct{}
	token       string
	instanceURL string

	used, limit atomic.Int64

	cacheMu sync.Mutex
	cache   map[string]cacheEntry

	now func() time.Time
}

// cacheEntry is one person look-up: the record found, or nil for none.
type cacheEntry struct {
	person  *Person
	expires time.Time
}

// New checks cfg and reads the credentials it names. It does not contact
// Salesforce; Check does. A nil httpClient means a default client; the
// per-call timeout comes from cfg.Timeout either way.
func New(cfg Config, httpClient *http.Client) (*Client, error) {
	if !cfg.Enabled {
		return nil, errors.New("salesforce: not enabled in the configuration")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if httpClient == nil {
		httpClient = &http.Client{}
	}
	c := &Client{cfg: cfg, hc: httpClient, cache: map[string]cacheEntry{}, now: time.Now, tokenSem: make(chan struct{}, 1)}
	c.limit.Store(-1)
	c.used.Store(-1)
	id, err := readSecret("client_id", cfg.ClientIDFile, cfg.ClientIDEnv)
	if err != nil {
		return nil, err
	}
	tokenURL := strings.TrimSuffix(cfg.MyDomainURL, "/") + "/services/oauth2/token"
	switch cfg.Auth {
	case AuthClientCredentials:
		secret, err := readSecret("client_secret", cfg.ClientSecretFile, cfg.ClientSecretEnv)
		if err != nil {
			return nil, err
		}
		c.cc = &clientcredentials.Config{
			ClientID:     id,
			ClientSecret: secret,
			TokenURL:     tokenURL,
			// Salesforce accepts both; naming one skips the library's
			// probe, which would send every bad request twice.
			AuthStyle: oauth2.AuthStyleInParams,
		}
	case AuthJWT:
		key, err := os.ReadFile(cfg.JWTKeyFile)
		if err != nil {
			return nil, fmt.Errorf("salesforce: jwt_key_file: %w", err)
		}
		if err := checkRSAKey(key); err != nil {
			return nil, fmt.Errorf("salesforce: jwt_key_file %s: %w", cfg.JWTKeyFile, err)
		}
		c.jwt = &jwt.Config{
			Email:      id, // the library's name for iss
			PrivateKey: key,
			Subject:    cfg.Username,
			TokenURL:   tokenURL,
			Audience:   strings.TrimSuffix(cfg.LoginURL, "/"),
			// Salesforce allows a few minutes of validity; the
			// library's default of one hour is refused.
			Expires: 3 * time.Minute,
		}
	}
	return c, nil
}

func readSecret(name, file, env string) (string, error) {
	var v string
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("salesforce: %s_file: %w", name, err)
		}
		v = strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("salesforce: %s_file %s is empty", name, file)
		}
		return v, nil
	}
	v = strings.TrimSpace(os.Getenv(env))
	if v == "" {
		return "", fmt.Errorf("salesforce: %s_env: environment variable %s is empty or unset", name, env)
	}
	return v, nil
}

func checkRSAKey(b []byte) error {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return errors.New("not a PEM file")
	}
	if _, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return fmt.Errorf("not an RSA private key: %w", err)
	}
	if _, ok := k.(*rsa.PrivateKey); !ok {
		return errors.New("not an RSA private key (RS256 needs RSA)")
	}
	return nil
}

// APIUsage is the org's API usage from the last Sforce-Limit-Info header;
// -1, -1 before any answer carried one.
func (c *Client) APIUsage() (used, limit int) {
	return int(c.used.Load()), int(c.limit.Load())
}

// session returns the cached token, or fetches one when there is none or
// when the cached one is the stale token a 401 was answered with. Comparing
// with stale means concurrent callers refused at once share one refresh.
func (c *Client) session(ctx context.Context, stale string) (token, instance string, err error) {
	select {
	case c.tokenSem <- struct{}{}:
	case <-ctx.Done():
		return "", "", fmt.Errorf("salesforce: waiting for a token: %w", ctx.Err())
	}
	defer func() { <-c.tokenSem }()
	if c.token != "" && c.token != stale {
		return c.token, c.instanceURL, nil
	}
	c.token = ""
	tok, err := c.fetchToken(ctx)
	if err != nil {
		return "", "", err
	}
	inst, _ := tok.Extra("instance_url").(string)
	if err := checkInstanceURL(inst); err != nil {
		return "", "", &AuthError{Err: fmt.Errorf("token answer has a bad instance_url: %w", err)}
	}
	if tok.AccessToken == "" {
		return "", "", &AuthError{Err: errors.New("token answer has no access_token")}
	}
	c.token, c.instanceURL = tok.AccessToken, strings.TrimSuffix(inst, "/")
	return c.token, c.instanceURL, nil
}

func checkInstanceURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q", s)
	}
	if u.Scheme != "https" && (u.Scheme != "http" || !isLoopback(u.Hostname())) {
		return fmt.Errorf("%q is not https", s)
	}
	return nil
}

func (c *Client) fetchToken(ctx context.Context) (*oauth2.Token, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.hc)
	var tok *oauth2.Token
	var err error
	if c.cc != nil {
		tok, err = c.cc.Token(ctx)
	} else {
		tok, err = c.jwt.TokenSource(ctx).Token()
	}
	if err == nil {
		return tok, nil
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
			c.readLimit(re.Response.Header)
		}
		return nil, parseTokenError(status, re.Body)
	}
	if ctx.Err() != nil {
		return nil, &AuthError{Err: ctx.Err()}
	}
	return nil, &AuthError{Err: err}
}

func (c *Client) readLimit(h http.Header) {
	if used, limit, ok := parseLimitInfo(h.Get("Sforce-Limit-Info")); ok {
		c.used.Store(int64(used))
		c.limit.Store(int64(limit))
	}
}

// do calls the REST API at path (relative to /services/data/<version>) and
// decodes a 2xx JSON answer into out, if out is not nil.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("salesforce: encode %s %s: %w", method, path, err)
		}
	}
	stale := ""
	for try := 0; ; try++ {
		token, inst, err := c.session(ctx, stale)
		if err != nil {
			return err
		}
		status, respBody, err := c.send(ctx, method, inst+"/services/data/"+c.cfg.APIVersion+path, token, body)
		if err != nil {
			return err
		}
		if status >= 200 && status < 300 {
			if out == nil || len(respBody) == 0 {
				return nil
			}
			if err := json.Unmarshal(respBody, out); err != nil {
				return fmt.Errorf("salesforce: decode answer to %s %s: %w", method, path, err)
			}
			return nil
		}
		ae := parseAPIError(status, respBody)
		if status == http.StatusUnauthorized && try == 0 {
			stale = token
			continue
		}
		return ae
	}
}

func (c *Client) send(ctx context.Context, method, u, token string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return 0, nil, fmt.Errorf("salesforce: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = redactQuery(ue.URL)
		}
		return 0, nil, fmt.Errorf("salesforce: %s %s: %w", method, redactQuery(u), err)
	}
	defer resp.Body.Close()
	c.readLimit(resp.Header)
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, nil, fmt.Errorf("salesforce: %s %s: reading answer: %w", method, redactQuery(u), err)
	}
	return resp.StatusCode, b, nil
}

// redactQuery drops the query string from URLs put in errors: it holds the
// SOQL, and with it a recipient's address.
func redactQuery(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}
