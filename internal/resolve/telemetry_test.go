package resolve_test

import (
	"context"
	"errors"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/fedsender/fedsender/internal/resolve"
	"github.com/fedsender/fedsender/internal/telemetry"
)

func TestResolveSpansAndFailureCount(t *testing.T) {
	e := newEnv(t)
	e.dns.Add(t, "span.test. 60 IN A 10.3.0.1")
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	m, err := telemetry.NewMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), telemetry.MetricsOptions{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := e.resolver(t, func(o *resolve.Options) {
		o.Tracer = telemetry.NewTracer(tp)
		o.Metrics = m
	})
	resolveOK(t, r, "span.test:8448")
	resolveOK(t, r, "span.test:8448")
	resolveOK(t, r, "10.3.0.9:8448")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.Resolve(ctx, "nx.test:8448"); !errors.Is(err, resolve.ErrNoAddresses) {
		t.Fatalf("Resolve(nx.test) = %v", err)
	}

	spans := rec.Ended()
	want := []struct{ cache, address string }{
		{"miss", "10.3.0.1:8448"}, {"hit", "10.3.0.1:8448"}, {"ip_literal", "10.3.0.9:8448"}, {"miss", ""},
	}
	if len(spans) != len(want) {
		t.Fatalf("%d spans, want %d", len(spans), len(want))
	}
	for i, s := range spans {
		attrs := map[string]string{}
		for _, kv := range s.Attributes() {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		if s.Name() != telemetry.SpanResolve || attrs[string(telemetry.KeyResolveCache)] != want[i].cache {
			t.Errorf("span %d: %s %v; want cache %s", i, s.Name(), attrs, want[i].cache)
		}
		if want[i].address != "" && attrs[string(telemetry.KeyResolveAddresses)] != `["`+want[i].address+`"]` {
			t.Errorf("span %d: addresses %s, want [%q]", i, attrs[string(telemetry.KeyResolveAddresses)], want[i].address)
		}
		if want[i].address == "" && s.Status().Code.String() != "Error" {
			t.Errorf("span %d: failed resolution has status %v", i, s.Status())
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	failures := int64(-1)
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name == telemetry.MetricResolveFailures {
				failures = mt.Data.(metricdata.Sum[int64]).DataPoints[0].Value
			}
		}
	}
	if failures != 1 {
		t.Errorf("%s = %d, want 1", telemetry.MetricResolveFailures, failures)
	}
}
