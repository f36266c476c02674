package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// Client calls the admin API, over the network or in process (Transport).
type Client struct {
	BaseURL string // e.g. "http://127.0.0.1:8025"; any host for in-process calls
	Token   string
	HTTP    *http.Client
}

// APIError is a non-2xx answer: the status and the API's error message.
// Body is the raw answer, for routes whose error carries more (an import's
// bad rows).
type APIError struct {
	Status  int
	Message string
	Body    []byte
}

func (e *APIError) Error() string { return e.Message }

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 1 << 20

// Do sends a request and returns the response of a 2xx answer, whose body
// the caller must close; any other status is returned as an *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	ae := &APIError{Status: resp.StatusCode, Body: b}
	var e Error
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		ae.Message = e.Error
	} else {
		ae.Message = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil, ae
}

// JSON sends in (nil: no body) as JSON and decodes a 2xx answer into out
// (nil: discarded).
func (c *Client) JSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ctype := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	resp, err := c.Do(ctx, method, path, body, ctype)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin: decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// Transport returns a RoundTripper that serves requests with h in this
// process. The handler runs in its own goroutine writing into a pipe, so a
// streamed answer (an audit export) reaches the caller as it is produced and
// is never held whole in memory.
func Transport(h http.Handler) http.RoundTripper { return inProcess{h} }

type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	r := req.Clone(ctx)
	r.RequestURI = req.URL.RequestURI()
	r.RemoteAddr = "in-process"
	if r.Body == nil {
		r.Body = http.NoBody
	}
	if r.Host == "" {
		r.Host = req.URL.Host
	}
	pr, pw := io.Pipe()
	rw := &pipeResponse{header: http.Header{}, pw: pw, ready: make(chan struct{}), head: req.Method == http.MethodHead}
	go func() {
		defer func() {
			r.Body.Close() // a RoundTripper closes the request body, as a server would
			if p := recover(); p != nil {
				err := fmt.Errorf("admin: handler failed: %v", p)
				if p == http.ErrAbortHandler {
					err = errors.New("admin: the answer was cut off by the server")
				}
				rw.abort(err)
				return
			}
			rw.finish()
		}()
		t.h.ServeHTTP(rw, r)
	}()
	select {
	case <-rw.ready:
	case <-ctx.Done():
		pr.CloseWithError(ctx.Err())
		return nil, ctx.Err()
	}
	rw.mu.Lock()
	status, header, err := rw.status, rw.sent, rw.err
	rw.mu.Unlock()
	if status == 0 {
		return nil, err
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          pr,
		ContentLength: -1,
		Request:       req,
	}, nil
}

// pipeResponse is the http.ResponseWriter of an in-process call. Writes
// block until the caller reads them: the pipe has no buffer.
type pipeResponse struct {
	mu     sync.Mutex
	header http.Header
	sent   http.Header
	status int
	err    error
	pw     *io.PipeWriter
	ready  chan struct{}
	// head drops the body, as an HTTP server does for HEAD.
	head bool
}

func (p *pipeResponse) Header() http.Header { return p.header }

func (p *pipeResponse) WriteHeader(code int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != 0 || p.err != nil {
		return
	}
	if code < 100 || code > 999 {
		code = http.StatusInternalServerError
	}
	p.status, p.sent = code, p.header.Clone()
	close(p.ready)
}

func (p *pipeResponse) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	if p.head {
		return len(b), nil
	}
	return p.pw.Write(b)
}

// Flush is a no-op: every Write already reaches the reader.
func (p *pipeResponse) Flush() {}

func (p *pipeResponse) finish() {
	p.WriteHeader(http.StatusOK)
	p.pw.Close()
}

// abort ends the call with err: as the RoundTrip error when no header was
// sent yet, else as the body's read error.
func (p *pipeResponse) abort(err error) {
	p.mu.Lock()
	if p.status == 0 && p.err == nil {
		p.err = err
		close(p.ready)
	}
	p.mu.Unlock()
	p.pw.CloseWithError(err)
}
