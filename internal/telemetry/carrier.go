package telemetry

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Header adapts a nats.Header to propagation.TextMapCarrier. It writes
// lower-case keys (traceparent, tracestate), as the W3C recommends for
// carriers other than HTTP, and reads them whatever their case, since NATS
// headers are case-sensitive and a publisher may have written Traceparent.
type Header nats.Header

var _ propagation.TextMapCarrier = Header(nil)

// Get returns the first value of key, matched case-insensitively.
func (h Header) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set replaces key's values, with key lower-cased.
func (h Header) Set(key, value string) {
	h[strings.ToLower(key)] = []string{value}
}

// Keys lists the header's keys.
func (h Header) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Propagator is the W3C trace context propagator fedsender uses on NATS
// messages: traceparent and tracestate, nothing else.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Inject writes the span context of ctx into h. It writes nothing when ctx
// carries no valid span context, so publishing outside a trace costs a
// lookup in ctx.
func Inject(ctx context.Context, h nats.Header) {
	if h == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	Propagator.Inject(ctx, Header(h))
}

// Extract returns ctx with the remote span context h carries, or ctx itself
// when h carries none (or an invalid one).
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return Propagator.Extract(ctx, Header(h))
}
