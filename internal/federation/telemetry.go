package federation

import (
	"context"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsender/fedsender/internal/telemetry"
)

// noPropagation injects nothing: our trace ids are ours, and remote
// homeservers must never see them (nor be able to join our traces), whatever
// global propagator the process sets.
var noPropagation = propagation.NewCompositeTextMapPropagator()

// instrument wraps rt in otelhttp when tp records spans, and returns rt
// itself otherwise, so that a process without tracing pays nothing per
// request. The client spans carry no HTTP metrics (fedsender's own
// instruments count transactions, without a series per destination).
func instrument(rt *http.Transport, tp trace.TracerProvider) http.RoundTripper {
	if !telemetry.TracingOn(tp) {
		return rt
	}
	return otelhttp.NewTransport(destinationAttrs{rt},
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(noPropagation),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " /_matrix/federation/v1/send/{txnId}"
		}),
	)
}

// destinationAttrs runs inside otelhttp's span and replaces the synthetic
// pool host of the request URL (see poolHost) with the destination's real
// Host in the span's server.address and url.full.
type destinationAttrs struct{ rt http.RoundTripper }

func (d destinationAttrs) RoundTrip(r *http.Request) (*http.Response, error) {
	if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
		attrs := []attribute.KeyValue{
			telemetry.KeyServerAddress.String(r.Host),
			attribute.String("url.full", "https://"+r.Host+r.URL.EscapedPath()),
		}
		if dest, err := destinationOf(r.URL.Host + ":443"); err == nil {
			attrs = append(attrs, telemetry.KeyDestination.String(dest))
		}
		span.SetAttributes(attrs...)
	}
	return d.rt.RoundTrip(r)
}

// annotateDial records the candidate address connected to on the span of
// the request that dialed (the dial context carries the request's values).
func annotateDial(ctx context.Context, addr string) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attribute.String("network.peer.address", addr))
	}
}
