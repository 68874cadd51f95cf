package service

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/telemetry"
	"github.com/fedsender/fedsender/streams"
)

// observability is the process's telemetry: the tracer and meter providers
// (from Deps, or from the OTEL_* environment and metrics.listen), the
// instruments built on them, and what must be flushed at the end.
type observability struct {
	tp      trace.TracerProvider
	tracer  telemetry.Tracer
	mp      metric.MeterProvider // nil: metrics off
	metrics *telemetry.Metrics   // nil: metrics off
	// gatherer feeds /metrics; nil when metrics.listen is empty or Deps
	// supplied the meter provider.
	gatherer prometheus.Gatherer
	closers  []func(context.Context) error
	log      *slog.Logger
}

// newObservability sets up tracing and metrics. Tracing is on only when
// Deps.TracerProvider is set or OTEL_TRACES_EXPORTER names an exporter
// (otlp, console): unset or "none" gives the no-op provider, which the
// pipeline checks once and then skips, so tracing off costs nothing.
// Metrics are on when metrics.listen is set (a Prometheus registry served
// on /metrics), OTEL_METRICS_EXPORTER names a push exporter, or Deps
// supplies a meter provider.
func newObservability(ctx context.Context, cfg config.Config, instance string, deps Deps, log *slog.Logger) (*observability, error) {
	o := &observability{tp: deps.TracerProvider, mp: deps.MeterProvider, log: log}
	var res *resource.Resource
	if o.tp == nil || o.mp == nil {
		var err error
		// Later options win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
		// override the defaults.
		res, err = resource.New(ctx,
			resource.WithAttributes(attribute.String("service.name", "fedsender")),
			resource.WithTelemetrySDK(), resource.WithHost(), resource.WithFromEnv())
		if err != nil && res == nil {
			return nil, fmt.Errorf("opentelemetry resource: %w", err)
		}
	}
	if o.tp == nil {
		if err := o.tracesFromEnv(ctx, res); err != nil {
			return nil, err
		}
	}
	o.tracer = telemetry.NewTracer(o.tp)
	if o.mp == nil {
		if err := o.metricsFromConfig(ctx, cfg, res); err != nil {
			o.close()
			return nil, err
		}
	}
	m, err := telemetry.NewMetrics(o.mp, telemetry.MetricsOptions{
		Partitions: cfg.Queue.Partitions, PerDestination: cfg.Metrics.PerDestinationLabels, Instance: instance})
	if err != nil {
		o.close()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if m != nil {
		o.metrics = m
		o.closers = append(o.closers, func(context.Context) error { return m.Close() })
	}
	if o.tracer.Enabled() {
		log.Info("tracing on", "exporter", os.Getenv("OTEL_TRACES_EXPORTER"))
	}
	return o, nil
}

func sdkDisabled() bool {
	return strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true")
}

// tracesFromEnv builds the tracer provider the OTEL_* variables describe
// (exporter, endpoint, protocol, headers, sampler via OTEL_TRACES_SAMPLER).
func (o *observability) tracesFromEnv(ctx context.Context, res *resource.Resource) error {
	name := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER"))
	if name == "" || name == "none" || sdkDisabled() {
		o.tp = tracenoop.NewTracerProvider()
		return nil
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return fmt.Errorf("OTEL_TRACES_EXPORTER=%s: %w", name, err)
	}
	if autoexport.IsNoneSpanExporter(exp) {
		o.tp = tracenoop.NewTracerProvider()
		return nil
	}
	// Export failures (an unreachable collector) go to our log, not to the
	// standard logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		o.log.Warn("opentelemetry export failed", "error", err)
	}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	o.tp = tp
	o.closers = append(o.closers, tp.Shutdown)
	return nil
}

// metricsFromConfig builds the meter provider: a Prometheus reader when
// metrics.listen is set, and a push reader when OTEL_METRICS_EXPORTER names
// one (otlp, console; "prometheus" would open a second endpoint: use
// metrics.listen instead).
func (o *observability) metricsFromConfig(ctx context.Context, cfg config.Config, res *resource.Resource) error {
	var opts []sdkmetric.Option
	if cfg.Metrics.Listen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
		if err != nil {
			return fmt.Errorf("metrics: prometheus exporter: %w", err)
		}
		opts = append(opts, sdkmetric.WithReader(exp))
		o.gatherer = reg
	}
	if name := strings.TrimSpace(os.Getenv("OTEL_METRICS_EXPORTER")); name != "" && name != "none" && !sdkDisabled() {
		r, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return fmt.Errorf("OTEL_METRICS_EXPORTER=%s: %w", name, err)
		}
		if !autoexport.IsNoneMetricReader(r) {
			opts = append(opts, sdkmetric.WithReader(r))
		}
	}
	if len(opts) == 0 {
		return nil // metrics off: every instrument is a nil *Metrics
	}
	mp := sdkmetric.NewMeterProvider(append(opts, sdkmetric.WithResource(res))...)
	o.mp = mp
	o.closers = append(o.closers, mp.Shutdown)
	return nil
}

// serveMetrics serves /metrics on metrics.listen until ctx ends, with run
// (the service's runner), and returns the address it listens on ("" when
// metrics are not served).
func (o *observability) serveMetrics(cfg config.Config, run func(string, func(context.Context) error)) (string, error) {
	if cfg.Metrics.Listen == "" || o.gatherer == nil {
		return "", nil
	}
	ln, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		return "", fmt.Errorf("metrics.listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(o.log.Handler(), slog.LevelWarn),
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	run("metrics", func(ctx context.Context) error { return serveHTTP(ctx, srv, ln) })
	o.log.Info("metrics listening", "address", ln.Addr().String(), "path", "/metrics")
	return ln.Addr().String(), nil
}

// observeProjectionLag registers fedsender_projection_lag_events: the
// revisions of the destinations bucket that the read model's index
// (applied returns the newest it applied) has not applied yet.
func (o *observability) observeProjectionLag(js jetstream.JetStream, applied func() uint64) error {
	return o.observeGauge(telemetry.MetricProjectionLag,
		"Revisions of the destinations bucket the admin read model has not applied yet.", "{revision}",
		func(ctx context.Context, obs metric.Observer, lag metric.Int64ObservableGauge) {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			s, err := js.Stream(ctx, "KV_"+streams.DestinationBucket)
			if err != nil {
				return // not created yet, or NATS busy: no observation this time
			}
			last := s.CachedInfo().State.LastSeq
			obs.ObserveInt64(lag, int64(last-min(applied(), last)))
		})
}

// observePostgresLag registers fedsender_postgres_projection_lag_messages:
// the messages of each stream the PostgreSQL projector's consumers had yet
// to deliver at their last fetch.
func (o *observability) observePostgresLag(behind func() (events, pdus uint64)) error {
	eventsAttr := metric.WithAttributes(attribute.String("stream", streams.EventStream))
	pdusAttr := metric.WithAttributes(attribute.String("stream", streams.PDUStream))
	return o.observeGauge(telemetry.MetricPostgresLag,
		"Messages the PostgreSQL read model's projector has not applied yet, by stream.", "{message}",
		func(_ context.Context, obs metric.Observer, lag metric.Int64ObservableGauge) {
			events, pdus := behind()
			obs.ObserveInt64(lag, int64(min(events, 1<<63-1)), eventsAttr)
			obs.ObserveInt64(lag, int64(min(pdus, 1<<63-1)), pdusAttr)
		})
}

// observeGauge registers an integer gauge whose values observe gives at
// each collection, unregistered by close; nothing without metrics.
func (o *observability) observeGauge(name, description, unit string,
	observe func(context.Context, metric.Observer, metric.Int64ObservableGauge)) error {
	if o.mp == nil {
		return nil
	}
	meter := o.mp.Meter(telemetry.ScopeName)
	gauge, err := meter.Int64ObservableGauge(name, metric.WithDescription(description), metric.WithUnit(unit))
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	reg, err := meter.RegisterCallback(func(ctx context.Context, obs metric.Observer) error {
		observe(ctx, obs, gauge)
		return nil
	}, gauge)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	o.closers = append(o.closers, func(context.Context) error { return reg.Unregister() })
	return nil
}

// close flushes and stops the providers fedsender built (spans still
// buffered are exported, within 5 s).
func (o *observability) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := len(o.closers) - 1; i >= 0; i-- {
		if err := o.closers[i](ctx); err != nil {
			o.log.Warn("stopping telemetry", "error", err)
		}
	}
}
