// Package federation is fedsender's outgoing Matrix federation HTTP client:
// it signs transactions with X-Matrix, resolves each destination's server
// name (package resolve), connects only to addresses the netguard.Guard
// allows, verifies the destination's certificate, and classifies every
// failure into one typed error, SendError, that the per-destination sender
// turns into backoff decisions.
//
// All destinations share one HTTP/1.1 keep-alive transport whose connection
// pool is keyed per destination: a request's URL host is a synthetic name
// encoding the destination, and the transport's TLS dialer decodes it,
// resolves the destination and tries its candidate addresses in order. The
// Host header carries the real value the specification requires.
package federation
