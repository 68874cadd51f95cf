package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of fedsender's spans and metrics.
const ScopeName = "github.com/fedsender/fedsender"

// Tracer starts fedsender's spans when tracing is on. The zero Tracer is
// off: Start then returns ctx unchanged and a span that records nothing,
// without allocating, and hot paths check Enabled before they build
// attributes.
type Tracer struct {
	t trace.Tracer
}

// offSpan is what Start returns when tracing is off: one interface value,
// so that returning it allocates nothing.
var offSpan trace.Span = noop.Span{}

// NewTracer returns a Tracer of tp, which is off when tp is nil or a
// no-op provider (tracing disabled).
func NewTracer(tp trace.TracerProvider) Tracer {
	if !TracingOn(tp) {
		return Tracer{}
	}
	return Tracer{t: tp.Tracer(ScopeName)}
}

// TracingOn reports whether tp records anything: false for nil and for the
// no-op provider.
func TracingOn(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case nil, noop.TracerProvider, *noop.TracerProvider:
		return false
	}
	return true
}

// Enabled reports whether spans are recorded.
func (t Tracer) Enabled() bool { return t.t != nil }

// Start starts a span as trace.Tracer.Start does; when t is off it returns
// ctx and a span that does nothing (never the span already in ctx, which
// the caller's End must not end).
func (t Tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t.t == nil {
		return ctx, offSpan
	}
	return t.t.Start(ctx, name, opts...)
}
