package receiver

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	sendPrefix = "/_matrix/federation/v1/send/"
	// maxBody bounds a request body; 50 PDUs of at most 64 KiB each and
	// 100 EDUs fit with room to spare.
	maxBody = 16 << 20
	// maxIDBytes is the spec's limit for event and room ids.
	maxIDBytes = 255
)

func (r *Receiver) serveHTTP(g *generation, w http.ResponseWriter, req *http.Request) {
	if !r.enter(g) {
		panic(http.ErrAbortHandler)
	}
	defer r.leave(g)
	rawTxnID, ok := strings.CutPrefix(req.URL.EscapedPath(), sendPrefix)
	if !ok {
		if r.opts.Fallback != nil {
			r.opts.Fallback.ServeHTTP(w, req)
			return
		}
		r.violate("unexpected request %s %s: only PUT %s{txnId} is served", req.Method, req.RequestURI, sendPrefix)
		errorResponse(http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request").write(w)
		return
	}
	resp, ok := r.handleSend(g, req, rawTxnID)
	if !ok {
		// Cut off (Stop or Close) or the client went away: no answer, as
		// from a server that died mid-request.
		panic(http.ErrAbortHandler)
	}
	resp.write(w)
}

// handleSend runs the checks in Synapse's order (route, JSON, signature,
// limits, concurrency, txnId cache) so that each breach gets the answer
// Synapse would give. ok is false when the request must be cut off.
func (r *Receiver) handleSend(g *generation, req *http.Request, rawTxnID string) (resp response, ok bool) {
	if req.Method != http.MethodPut {
		r.violate("%s %s: only PUT is allowed", req.Method, req.RequestURI)
		return errorResponse(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Unrecognized request"), true
	}
	r.requests.Add(1)
	if r.opts.KeepHeaders {
		r.keepHeaders(req.Header)
	}
	r.bump()
	txnID, resp, ok := r.txnID(req, rawTxnID)
	if ok {
		return resp, true
	}
	r.keepRequest(req.Context(), txnID)
	if r.opts.ExpectHost != "" && req.Host != r.opts.ExpectHost {
		r.violate("txn %s: Host header %q, want %q", txnID, req.Host, r.opts.ExpectHost)
	}

	body, err := io.ReadAll(http.MaxBytesReader(nil, req.Body, maxBody))
	if err != nil {
		if tooBig, ok := errors.AsType[*http.MaxBytesError](err); ok {
			r.violate("txn %s: body larger than %d bytes", txnID, tooBig.Limit)
			return errorResponse(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "Request too large"), true
		}
		return response{}, false
	}
	received := time.Now()

	wire, resp, ok := r.decode(txnID, body)
	if ok {
		return resp, true
	}
	if resp, ok := r.authenticate(req, txnID, body); ok {
		return resp, true
	}
	in, resp, ok := r.check(txnID, wire)
	if ok {
		return resp, true
	}
	in.body = body
	in.bodyHash = r.store.hashBody(body) // the seed never changes: no lock
	in.received = received
	in.peer = peerOf(req.Context())
	return r.process(g, in)
}

// txnID extracts and checks the transaction id. The spec gives the federation
// txnId no grammar of its own; the closest is the Opaque Identifier Grammar
// (spec v1.11 appendices): 1 to 255 of [0-9A-Za-z._~-]. Ids outside it are
// violations but Synapse serves them, so they are processed. Only an empty
// id (a 500 from Synapse) and a nested path (no route) are answered at once.
func (r *Receiver) txnID(req *http.Request, raw string) (id string, resp response, answered bool) {
	raw, trailing := strings.CutSuffix(raw, "/")
	if strings.Contains(raw, "/") {
		r.violate("unexpected request %s %s: a txnId cannot contain /", req.Method, req.RequestURI)
		return "", errorResponse(http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request"), true
	}
	if trailing {
		r.violate("%s %s: trailing slash after the txnId", req.Method, req.RequestURI)
	}
	id, err := url.PathUnescape(raw)
	if err != nil {
		r.violate("%s %s: bad percent-encoding in the txnId", req.Method, req.RequestURI)
		return "", errorResponse(http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request"), true
	}
	if id == "" {
		r.violate("%s %s: empty txnId", req.Method, req.RequestURI)
		return "", errorResponse(http.StatusInternalServerError, "M_UNKNOWN", "Internal server error"), true
	}
	if !validTxnID(id) {
		r.violate("txn %q: txnId must be 1-255 characters of [0-9A-Za-z._~-]", id)
	}
	return id, response{}, false
}

func validTxnID(id string) bool {
	if len(id) > 255 {
		return false
	}
	for i := range len(id) {
		c := id[i]
		ok := '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' ||
			c == '-' || c == '_' || c == '.' || c == '~'
		if !ok {
			return false
		}
	}
	return true
}
