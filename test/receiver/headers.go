package receiver

import "net/http"

func (r *Receiver) keepHeaders(h http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.headers = append(r.headers, h.Clone())
}

// RequestHeaders returns the headers of every PUT /send request seen, in
// arrival order, when Options.KeepHeaders is set (nil otherwise). The
// caller owns the copies.
func (r *Receiver) RequestHeaders() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]http.Header, len(r.headers))
	for i, h := range r.headers {
		out[i] = h.Clone()
	}
	return out
}
