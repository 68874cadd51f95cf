package receiver

import (
	"encoding/json"
	"net/http"
)

// response is an answer, kept whole so that a request joining one in flight
// can be given the same.
type response struct {
	status      int
	retryAfter  string
	contentType string // default application/json
	body        []byte
}

func (resp response) write(w http.ResponseWriter) {
	h := w.Header()
	ct := resp.contentType
	if ct == "" {
		ct = "application/json"
	}
	h.Set("Content-Type", ct)
	if resp.retryAfter != "" {
		h.Set("Retry-After", resp.retryAfter)
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body) // the client may be gone; nothing to do about it
}

// errorResponse is a Matrix error answer: {"errcode": ..., "error": ...}.
func errorResponse(status int, code, msg string) response {
	return response{status: status, body: matrixError(code, msg, 0)}
}

func matrixError(code, msg string, retryAfterMS int64) []byte {
	body, err := json.Marshal(struct {
		Errcode      string `json:"errcode"`
		Error        string `json:"error"`
		RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
	}{code, msg, retryAfterMS})
	if err != nil { // cannot happen: strings and an integer
		return []byte(`{"errcode":"M_UNKNOWN","error":"internal error"}`)
	}
	return body
}

// appendJSONString appends s as a JSON string. s comes from encoding/json,
// which has replaced invalid UTF-8, so only quotes, backslashes and control
// characters need escaping.
func appendJSONString(dst []byte, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
