// Package telemetry is the OpenTelemetry plumbing the pipeline's packages
// share: the W3C trace context carried in NATS headers (Header, Inject,
// Extract), a Tracer that costs one nil check when tracing is off, the slog
// handler that stamps trace_id and span_id on records logged inside a span,
// and fedsender's metric instruments (Metrics), created once per process.
//
// It depends on the OpenTelemetry API only. Providers and exporters (the
// OTEL_* environment, the Prometheus endpoint) are set up by
// internal/service; docs/OBSERVABILITY.md describes every span and metric.
package telemetry
