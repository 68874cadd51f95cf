package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/fedsender/fedsender/internal/servername"
	"github.com/fedsender/fedsender/internal/xmatrix"
)

// TransactionResult is what a destination said about an accepted transaction.
type TransactionResult struct {
	// PDUErrors maps event ids to the error text of the 200 response's
	// "pdus" map, for the entries that have one. These rejections are
	// final: log and count them, never retry them.
	PDUErrors map[string]string
}

// SendTransaction PUTs /_matrix/federation/v1/send/{txnID} with body (the
// exact bytes sent), signed over canonicalBody (its canonical form, which the
// caller already has). A 2xx answer is success even when its body is not
// JSON. Every error is a *SendError.
func (c *Client) SendTransaction(ctx context.Context, destination, txnID string, body, canonicalBody []byte) (TransactionResult, error) {
	fail := func(class Class, err error) (TransactionResult, error) {
		return TransactionResult{}, &SendError{Destination: destination, Class: class, Err: err}
	}
	if c.closed.Load() {
		return fail(ClassNetwork, ErrClosed)
	}
	if err := servername.Validate(destination); err != nil {
		return fail(ClassRejected, err)
	}
	if !validTxnID(txnID) {
		return fail(ClassRejected, fmt.Errorf("%w: %q", ErrInvalidTxnID, txnID))
	}
	attemptCtx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()

	// The Host header must be known before the transport dials; the dialer
	// resolves again, from the resolver's cache.
	target, err := c.opts.Resolver.Resolve(attemptCtx, destination)
	if err != nil {
		return TransactionResult{}, classify(ctx, attemptCtx, destination, err)
	}
	uri := "/_matrix/federation/v1/send/" + txnID
	req, err := http.NewRequestWithContext(attemptCtx, http.MethodPut, "https://"+poolHost(destination)+uri, bytes.NewReader(body))
	if err != nil {
		return fail(ClassRejected, err)
	}
	req.Host = target.Host
	req.Header = http.Header{
		"Authorization": {xmatrix.SignRequest(c.opts.Key, c.opts.Origin, destination, http.MethodPut, uri, canonicalBody)},
		"Content-Type":  {"application/json"},
		"User-Agent":    {c.opts.UserAgent},
	}
	// Checked last, after resolving and signing, right before the request
	// goes out.
	if gate, ok := ctx.Value(gateKey{}).(func() bool); ok && !gate() {
		return fail(ClassNetwork, ErrGateClosed)
	}
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		return TransactionResult{}, classify(ctx, attemptCtx, destination, err)
	}
	defer resp.Body.Close()
	// Reading to the end (within the limit) lets the connection be reused.
	data, readErr := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// The destination has the transaction even if its body got lost.
		return TransactionResult{PDUErrors: pduErrors(data)}, nil
	}
	if readErr != nil {
		data = nil
	}
	return TransactionResult{}, statusError(destination, resp, data, time.Now())
}

type gateKey struct{}

// WithGate returns ctx with a gate that SendTransaction checks right before
// the request goes out: when it returns false the transaction is not sent
// and the error wraps ErrGateClosed. A replica's partition lease is one.
func WithGate(ctx context.Context, open func() bool) context.Context {
	return context.WithValue(ctx, gateKey{}, open)
}

// validTxnID allows what the specification allows: [0-9A-Za-z_-], which also
// needs no escaping in the path.
func validTxnID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// classify turns a failure before any HTTP status into a SendError.
// parent is the caller's context, attempt the one bounded by RequestTimeout.
func classify(parent, attempt context.Context, destination string, err error) *SendError {
	e := &SendError{Destination: destination, Err: err}
	switch {
	case errors.Is(err, servername.ErrInvalid):
		e.Class = ClassRejected
	case parent.Err() != nil:
		// The caller gave up; make sure errors.Is finds its reason.
		e.Class = ClassNetwork
		if errors.Is(parent.Err(), context.DeadlineExceeded) {
			e.Class = ClassTimeout
		}
		if !errors.Is(err, parent.Err()) {
			e.Err = fmt.Errorf("%w: %w", context.Cause(parent), err)
		}
	case attempt.Err() != nil:
		e.Class = ClassTimeout
		if !errors.Is(err, context.DeadlineExceeded) {
			e.Err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
	case isTLS(err):
		e.Class = ClassTLS
	case isTimeout(err):
		e.Class = ClassTimeout
	default:
		e.Class = ClassNetwork
	}
	return e
}

// Matrix error bodies are quoted into logs; keep them short.
const (
	maxErrcode = 128
	maxMessage = 512
)

// statusError classifies a non-2xx response.
func statusError(destination string, resp *http.Response, body []byte, now time.Time) *SendError {
	e := &SendError{
		Destination: destination,
		Status:      resp.StatusCode,
		Err:         fmt.Errorf("%w %d", ErrStatus, resp.StatusCode),
	}
	var matrixErr struct {
		Errcode      string `json:"errcode"`
		Error        string `json:"error"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	}
	_ = json.Unmarshal(body, &matrixErr) // not every error body is Matrix JSON
	e.Errcode = truncate(matrixErr.Errcode, maxErrcode)
	e.Message = truncate(matrixErr.Error, maxMessage)
	switch code := resp.StatusCode; {
	case code == http.StatusTooManyRequests:
		e.Class = ClassRateLimited
	case code >= 500:
		e.Class = ClassServer
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		e.Class = ClassUnauthorized
	default:
		e.Class = ClassRejected
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), now)
		if e.RetryAfter == 0 && matrixErr.RetryAfterMS > 0 {
			e.RetryAfter = min(time.Duration(matrixErr.RetryAfterMS)*time.Millisecond, maxRetryAfter)
		}
	}
	return e
}

// maxRetryAfter caps what a destination can ask for (Synapse's longest
// backoff), and keeps the arithmetic from overflowing.
const maxRetryAfter = 7 * 24 * time.Hour

// retryAfter reads a Retry-After value: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// pduErrors extracts {"pdus": {"$id": {"error": ...}}}; anything that does
// not parse yields no errors.
func pduErrors(body []byte) map[string]string {
	var resp struct {
		PDUs map[string]json.RawMessage `json:"pdus"`
	}
	if json.Unmarshal(body, &resp) != nil {
		return nil
	}
	var out map[string]string
	for id, raw := range resp.PDUs {
		var result map[string]json.RawMessage
		if json.Unmarshal(raw, &result) != nil {
			continue
		}
		rawErr, ok := result["error"]
		if !ok {
			continue
		}
		var text string
		if json.Unmarshal(rawErr, &text) != nil {
			text = string(rawErr) // not a string: keep the JSON
		}
		if out == nil {
			out = make(map[string]string)
		}
		out[id] = truncate(text, maxMessage)
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
