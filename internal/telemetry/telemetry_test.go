package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

func recordingTracer(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tp, rec
}

func TestInjectExtractLowerCaseHeaders(t *testing.T) {
	tp, _ := recordingTracer(t)
	ctx, span := tp.Tracer("test").Start(context.Background(), "publish")
	defer span.End()

	h := nats.Header{}
	Inject(ctx, h)
	if len(h["traceparent"]) != 1 {
		t.Fatalf("no lower-case traceparent header: %v", h)
	}
	if _, ok := h["Traceparent"]; ok {
		t.Fatalf("header written with a capital: %v", h)
	}
	got := trace.SpanContextFromContext(Extract(context.Background(), h))
	if got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() || !got.IsRemote() {
		t.Fatalf("extracted %v, want the remote context of %v", got, span.SpanContext())
	}

	// A publisher that wrote Traceparent (nats.Header.Set keeps the case).
	mixed := nats.Header{"Traceparent": h["traceparent"]}
	if got := trace.SpanContextFromContext(Extract(context.Background(), mixed)); got.TraceID() != span.SpanContext().TraceID() {
		t.Fatalf("Traceparent not read: %v", got)
	}
}

func TestInjectWithoutSpanWritesNothing(t *testing.T) {
	h := nats.Header{}
	Inject(context.Background(), h)
	if len(h) != 0 {
		t.Fatalf("headers written outside a trace: %v", h)
	}
	if ctx := Extract(context.Background(), nats.Header{"traceparent": {"garbage"}}); trace.SpanContextFromContext(ctx).IsValid() {
		t.Fatal("an invalid traceparent gave a valid span context")
	}
}

func TestTracerOffCostsNothing(t *testing.T) {
	for _, tp := range []trace.TracerProvider{nil, noop.NewTracerProvider()} {
		tr := NewTracer(tp)
		if tr.Enabled() {
			t.Fatalf("%T: tracing on", tp)
		}
		ctx := context.Background()
		allocs := testing.AllocsPerRun(100, func() {
			c, span := tr.Start(ctx, "x")
			span.End()
			_ = c
		})
		if allocs != 0 {
			t.Errorf("%T: Start allocates %v times", tp, allocs)
		}
	}
	tp, rec := recordingTracer(t)
	tr := NewTracer(tp)
	if !tr.Enabled() {
		t.Fatal("SDK provider: tracing off")
	}
	_, span := tr.Start(context.Background(), "x")
	span.End()
	if len(rec.Ended()) != 1 {
		t.Fatalf("%d spans recorded, want 1", len(rec.Ended()))
	}
}

func TestLogHandlerAddsTraceAndSpanIDs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewLogHandler(slog.NewJSONHandler(&buf, nil))).With("destination", "d.example")
	tp, _ := recordingTracer(t)
	ctx, span := tp.Tracer("test").Start(context.Background(), "txn")
	log.InfoContext(ctx, "inside")
	span.End()
	log.Info("outside")

	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("want 2 records, got %q", buf.String())
	}
	var in, out map[string]any
	if err := json.Unmarshal(lines[0], &in); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(lines[1], &out); err != nil {
		t.Fatal(err)
	}
	if in[LogTraceID] != span.SpanContext().TraceID().String() || in[LogSpanID] != span.SpanContext().SpanID().String() || in["destination"] != "d.example" {
		t.Errorf("record inside the span: %v", in)
	}
	if _, ok := out[LogTraceID]; ok {
		t.Errorf("record outside a span has a trace id: %v", out)
	}
}

func TestMetricsGaugesAndCounters(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	m, err := NewMetrics(mp, MetricsOptions{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	d := m.Destination("a.example")
	d.Sent(ctx, 3, 0, 1)
	d.Delivered(ctx, 20*time.Millisecond)
	d.Failed(ctx, "server", 10*time.Minute)
	p := m.Partition(1)
	p.Healthy.Store(4)
	p.BackingOff.Store(1)
	p.Pending.Store(7)
	p.OldestPendingTS.Store(time.Now().Add(-3 * time.Second).UnixMilli())

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			switch data := mt.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range data.DataPoints {
					if _, ok := dp.Attributes.Value(AttrDestination); ok {
						t.Errorf("%s: destination label without PerDestination", mt.Name)
					}
					got[mt.Name+label(dp.Attributes)] += float64(dp.Value)
				}
			case metricdata.Gauge[int64]:
				for _, dp := range data.DataPoints {
					got[mt.Name+label(dp.Attributes)] = float64(dp.Value)
				}
			case metricdata.Gauge[float64]:
				for _, dp := range data.DataPoints {
					got[mt.Name+label(dp.Attributes)] = dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range data.DataPoints {
					got[mt.Name] += float64(dp.Count)
				}
			}
		}
	}
	for name, want := range map[string]float64{
		MetricSentTransactions:                1,
		MetricSentPDUs:                        3,
		MetricPDUErrors:                       1,
		MetricFailedTransactions + "{server}": 1,
		MetricDeliveryLatency:                 1,
		MetricBackoff:                         1,
		MetricDestinations + "{healthy}":      4,
		MetricDestinations + "{backing_off}":  1,
		MetricDestinations + "{catching_up}":  0,
		MetricPendingPDUs + "{1}":             7,
		MetricPendingPDUs + "{0}":             0,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], want, got)
		}
	}
	if age := got[MetricOldestPending+"{1}"]; age < 3 || age > 60 {
		t.Errorf("oldest pending age %v s, want about 3", age)
	}
}

// label renders an attribute set's values as {v1,v2}; "" for none.
func label(s attribute.Set) string {
	if s.Len() == 0 {
		return ""
	}
	out := "{"
	for i, kv := range s.ToSlice() {
		if i > 0 {
			out += ","
		}
		out += kv.Value.Emit()
	}
	return out + "}"
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	ctx := context.Background()
	m.Queued(ctx, 1, 2)
	m.DeadLetter(ctx)
	m.ResolveFailure(ctx)
	d := m.Destination("x")
	d.Sent(ctx, 1, 0, 0)
	d.Delivered(ctx, time.Second)
	d.Failed(ctx, "server", time.Minute)
	if m.Partition(0) != nil {
		t.Fatal("nil Metrics has partition gauges")
	}
	var g *QueueGauge
	g.Set(1, 2)
}

func BenchmarkDeliveredShared(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	m, err := NewMetrics(mp, MetricsOptions{Partitions: 64})
	if err != nil {
		b.Fatal(err)
	}
	d := m.Destination("a.example")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		d.Delivered(ctx, time.Millisecond)
	}
}

func TestPerDestinationLabels(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	m, err := NewMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), MetricsOptions{Partitions: 1, PerDestination: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, b := m.Destination("a.example"), m.Destination("b.example")
	a.Sent(ctx, 2, 0, 0)
	b.Sent(ctx, 3, 0, 0)
	b.Failed(ctx, "timeout", time.Minute)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if sum, ok := mt.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					got[mt.Name+label(dp.Attributes)] = dp.Value
				}
			}
		}
	}
	for k, want := range map[string]int64{
		MetricSentPDUs + "{a.example}":                   2,
		MetricSentPDUs + "{b.example}":                   3,
		MetricFailedTransactions + "{timeout,b.example}": 1,
	} {
		if got[k] != want {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], want, got)
		}
	}
}
