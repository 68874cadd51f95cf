package receiver

import (
	"maps"
	"net/http"
	"time"
)

// Fault changes how the receiver answers transactions. The zero Fault is
// normal behaviour.
//
// A fault applies to requests that pass the protocol checks (path,
// signature, body, limits, one transaction in flight); breaches are
// answered as such whatever the fault. Joining an identical request already
// in flight does not consume a fault.
type Fault struct {
	// Status, when non-zero, answers this error status (500, 503, 401, 403,
	// 400, 429, ...) with a Matrix error body instead of processing the
	// transaction, which is not recorded.
	Status int
	// RetryAfter is the Retry-After header to send with Status, e.g. "2".
	RetryAfter string
	// RetryAfterMS is the retry_after_ms body field, for Status 429.
	RetryAfterMS int64
	// Body, when set, is sent raw (as text/html) instead of the Matrix error
	// JSON, like a reverse proxy's error page.
	Body string
	// Hang accepts the request and does not answer it until SetFault is
	// called again (the request is then processed normally) or the receiver
	// is stopped or closed (it is then cut off). The transaction stays in
	// flight meanwhile, as on a slow homeserver.
	Hang bool
	// Delay answers each request only after this long, then processes it
	// normally: a homeserver that is slow but up.
	Delay time.Duration
	// Times limits the fault to the next Times requests; 0 keeps it until
	// SetFault changes it.
	Times int
	// PDUErrors accepts the transaction but answers these event ids with
	// {"error": "..."}. Such an answer is final: delivering the event again
	// in another transaction is a violation.
	PDUErrors map[string]string
}

// SetFault changes the behaviour for subsequent requests and releases
// requests hung by an earlier Hang fault.
func (r *Receiver) SetFault(f Fault) {
	f.PDUErrors = maps.Clone(f.PDUErrors)
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.fault.changed)
	r.fault = faultState{f: f, left: f.Times, changed: make(chan struct{})}
	r.bumpLocked()
}

type faultState struct {
	f       Fault
	left    int           // requests still to fault when f.Times > 0
	changed chan struct{} // closed by SetFault: releases hung requests
}

// take returns the fault for one request, counting it against Times. Running
// out of Times does not release hung requests: Hang with Times 1 hangs one
// request until SetFault.
func (s *faultState) take() Fault {
	f := s.f
	if f.Times > 0 {
		s.left--
		if s.left <= 0 {
			s.f = Fault{}
		}
	}
	return f
}

// response is the answer for a Status fault.
func (f Fault) response() response {
	resp := response{status: f.Status, retryAfter: f.RetryAfter}
	if f.Body != "" {
		resp.contentType = "text/html; charset=utf-8"
		resp.body = []byte(f.Body)
		return resp
	}
	var code string
	switch {
	case f.Status == http.StatusBadRequest:
		code = "M_BAD_JSON"
	case f.Status == http.StatusUnauthorized:
		code = "M_UNAUTHORIZED"
	case f.Status == http.StatusForbidden:
		code = "M_FORBIDDEN"
	case f.Status == http.StatusNotFound:
		code = "M_UNRECOGNIZED"
	case f.Status == http.StatusTooManyRequests:
		code = "M_LIMIT_EXCEEDED"
	default:
		code = "M_UNKNOWN"
	}
	msg := http.StatusText(f.Status)
	if msg == "" {
		msg = "Fault injected by the test receiver"
	}
	resp.body = matrixError(code, msg, f.RetryAfterMS)
	return resp
}
