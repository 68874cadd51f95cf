package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsender/fedsender/internal/telemetry"
	"github.com/fedsender/fedsender/test/receiver"
)

// spans records the spans of one fedsender.
type spans struct {
	t   *testing.T
	rec *tracetest.SpanRecorder
	tp  *sdktrace.TracerProvider
}

func newSpans(t *testing.T) *spans {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return &spans{t: t, rec: rec, tp: tp}
}

// find waits for an ended span named name whose attributes include want
// (compared as emitted strings) and returns it.
func (s *spans) find(name string, want map[string]string) sdktrace.ReadOnlySpan {
	s.t.Helper()
	var found sdktrace.ReadOnlySpan
	eventually(s.t, 10*time.Second, func() bool {
		for _, sp := range s.rec.Ended() {
			if sp.Name() == name && hasAttrs(sp, want) {
				found = sp
				return true
			}
		}
		return false
	}, "no ended %s span with %v; ended: %s", name, want, s.describe())
	return found
}

func (s *spans) describe() string {
	out := ""
	for _, sp := range s.rec.Ended() {
		out += fmt.Sprintf("\n  %s %v", sp.Name(), attrs(sp))
	}
	return out
}

func attrs(sp sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, kv := range sp.Attributes() {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

func hasAttrs(sp sdktrace.ReadOnlySpan, want map[string]string) bool {
	got := attrs(sp)
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func childOf(t *testing.T, child, parent sdktrace.ReadOnlySpan) {
	t.Helper()
	if child.Parent().SpanID() != parent.SpanContext().SpanID() || child.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("%s (trace %s, parent %s) is not the child of %s (trace %s, span %s)",
			child.Name(), child.SpanContext().TraceID(), child.Parent().SpanID(),
			parent.Name(), parent.SpanContext().TraceID(), parent.SpanContext().SpanID())
	}
}

func noTraceHeaders(t *testing.T, r *receiver.Receiver) {
	t.Helper()
	hs := r.RequestHeaders()
	if len(hs) == 0 {
		t.Fatal("the receiver kept no request headers")
	}
	for i, h := range hs {
		for _, name := range []string{"Traceparent", "Tracestate", "Baggage"} {
			if v := h.Values(name); len(v) > 0 {
				t.Errorf("request %d to %s carried %s: %q", i, r.ServerName(), name, v)
			}
		}
	}
}

func TestOnePDUIsOneConnectedTrace(t *testing.T) {
	sp := newSpans(t)
	h := newObservedHarness(t, nil, sp.tp, nil)
	r := h.receiver(func(o *receiver.Options) { o.KeepHeaders = true })
	d := r.ServerName()
	id := h.publish("!a:origin.test", 1, d, d) // a duplicate destination, dropped
	r.WaitPDUs(t, 1)

	txnID := r.Transactions()[0].TxnID
	txn := sp.find(telemetry.SpanTransaction, map[string]string{
		"fedsender.destination": d, "fedsender.txn_id": txnID, "fedsender.pdus": "1", "fedsender.edus": "0",
		"fedsender.attempt": "1", "fedsender.result": "success", "http.response.status_code": "200",
	})
	ingest := sp.find(telemetry.SpanIngest, map[string]string{
		"matrix.event_id": id, "messaging.message.id": id, "messaging.system": "nats",
		"fedsender.valid": "true", "fedsender.stream_sequence": "1",
		"fedsender.destinations": "1", "fedsender.destinations.duplicates": "1",
	})
	fanOut := sp.find(telemetry.SpanFanOut, map[string]string{"fedsender.destinations": "1", "fedsender.partitions": "1"})
	client := sp.find("PUT /_matrix/federation/v1/send/{txnId}", map[string]string{"server.address": d})
	resolution := sp.find(telemetry.SpanResolve, map[string]string{"fedsender.destination": d, "fedsender.resolve.cache": "ip_literal"})

	if ingest.Parent().IsValid() {
		t.Errorf("without a publisher's trace, the ingest span should start one; its parent is %v", ingest.Parent())
	}
	if ingest.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("ingest span kind %v, want consumer", ingest.SpanKind())
	}
	childOf(t, fanOut, ingest)
	childOf(t, txn, fanOut)
	childOf(t, client, txn)
	childOf(t, resolution, txn)
	if len(txn.Links()) != 0 {
		t.Errorf("a transaction of one trace has links: %v", txn.Links())
	}
	noTraceHeaders(t, r)
}

func TestPublishersTraceIsContinuedAndFailuresAreSpans(t *testing.T) {
	sp := newSpans(t)
	h := newObservedHarness(t, nil, sp.tp, nil)
	r := h.receiver(func(o *receiver.Options) { o.KeepHeaders = true })
	d := r.ServerName()
	r.SetFault(receiver.Fault{Status: http.StatusServiceUnavailable})

	ctx, homeserver := sp.tp.Tracer("homeserver").Start(context.Background(), "send_event")
	id := h.publishContext(ctx, "!a:origin.test", 1, d)
	homeserver.End()

	failed := sp.find(telemetry.SpanTransaction, map[string]string{
		"fedsender.destination": d, "fedsender.attempt": "1", "fedsender.result": "server",
		"http.response.status_code": "503", "fedsender.backoff_ms": "600000",
	})
	r.SetFault(receiver.Fault{})
	h.reset(d)
	r.WaitPDUs(t, 1)
	ok := sp.find(telemetry.SpanTransaction, map[string]string{"fedsender.destination": d, "fedsender.attempt": "2", "fedsender.result": "success"})
	ingest := sp.find(telemetry.SpanIngest, map[string]string{"matrix.event_id": id})
	fanOut := sp.find(telemetry.SpanFanOut, nil)

	childOf(t, ingest, homeserver.(sdktrace.ReadOnlySpan))
	if !ingest.Parent().IsRemote() {
		t.Error("the ingest span's parent should be the publisher's remote span context")
	}
	childOf(t, fanOut, ingest)
	childOf(t, failed, fanOut)
	childOf(t, ok, fanOut)
	if failed.Status().Code.String() != "Error" {
		t.Errorf("failed attempt's status %v, want Error", failed.Status())
	}
	noTraceHeaders(t, r)
}

func TestTransactionLinksEveryTraceItCarries(t *testing.T) {
	sp := newSpans(t)
	reader := sdkmetric.NewManualReader()
	h := newObservedHarness(t, nil, sp.tp, sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	r := h.receiver(nil)
	d := r.ServerName()
	r.SetFault(receiver.Fault{Hang: true})
	h.publish("!a:origin.test", 0, d)
	r.WaitFor(t, "the first transaction in flight", func() bool { return r.InFlight() == 1 })

	tracer := sp.tp.Tracer("homeserver")
	ctxA, a := tracer.Start(context.Background(), "send A")
	ctxB, b := tracer.Start(context.Background(), "send B")
	h.publishContext(ctxA, "!a:origin.test", 1, d)
	h.publishContext(ctxB, "!a:origin.test", 2, d)
	a.End()
	b.End()
	// Both queued behind the hung transaction: they go out together.
	m := &metrics{t: t, reader: reader}
	m.waitFor(func() bool { return m.sum(telemetry.MetricPendingPDUs, "") == 3 }, "3 PDUs pending")
	r.SetFault(receiver.Fault{})
	r.WaitPDUs(t, 3)

	txn := sp.find(telemetry.SpanTransaction, map[string]string{"fedsender.destination": d, "fedsender.pdus": "2", "fedsender.result": "success"})
	if txn.SpanContext().TraceID() != a.SpanContext().TraceID() {
		t.Errorf("the transaction is in trace %s, want the first PDU's, %s", txn.SpanContext().TraceID(), a.SpanContext().TraceID())
	}
	links := txn.Links()
	if len(links) != 1 || links[0].SpanContext.TraceID() != b.SpanContext().TraceID() {
		t.Errorf("links %v; want one link into the second PDU's trace %s", links, b.SpanContext().TraceID())
	}
}

// metrics reads one fedsender's metrics through a manual reader.
type metrics struct {
	t      *testing.T
	reader *sdkmetric.ManualReader
}

// collect returns every data point as name{attribute values} -> value
// (histograms: their count).
func (m *metrics) collect() map[string]float64 {
	m.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		m.t.Fatal(err)
	}
	out := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			switch data := mt.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range data.DataPoints {
					out[key(mt.Name, dp.Attributes.ToSlice())] = float64(dp.Value)
				}
			case metricdata.Gauge[int64]:
				for _, dp := range data.DataPoints {
					out[key(mt.Name, dp.Attributes.ToSlice())] = float64(dp.Value)
				}
			case metricdata.Gauge[float64]:
				for _, dp := range data.DataPoints {
					out[key(mt.Name, dp.Attributes.ToSlice())] = dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range data.DataPoints {
					out[key(mt.Name, dp.Attributes.ToSlice())] = float64(dp.Count)
				}
			}
		}
	}
	return out
}

func key(name string, kvs []attribute.KeyValue) string {
	if len(kvs) == 0 {
		return name
	}
	s := name + "{"
	for i, kv := range kvs {
		if i > 0 {
			s += ","
		}
		s += string(kv.Key) + "=" + kv.Value.Emit()
	}
	return s + "}"
}

// sum adds the points of name whose key contains sel.
func (m *metrics) sum(name, sel string) float64 {
	total := 0.0
	for k, v := range m.collect() {
		if (k == name || strings.HasPrefix(k, name+"{")) && strings.Contains(k, sel) {
			total += v
		}
	}
	return total
}

func (m *metrics) waitFor(cond func() bool, what string) {
	m.t.Helper()
	eventually(m.t, 10*time.Second, cond, "metrics never showed %s: %v", what, m.collect())
}

func TestMetricsFollowFailureRecoveryAndReset(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	h := newObservedHarness(t, nil, nil, sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	m := &metrics{t: t, reader: reader}
	r := h.receiver(nil)
	d := r.ServerName()
	healthy := h.receiver(nil)

	r.SetFault(receiver.Fault{Status: http.StatusInternalServerError})
	h.publish("!a:origin.test", 1, d, healthy.ServerName())
	healthy.WaitPDUs(t, 1)
	m.waitFor(func() bool {
		return m.sum(telemetry.MetricFailedTransactions, "class=server") == 1 &&
			m.sum(telemetry.MetricDestinations, "state=backing_off") == 1 &&
			m.sum(telemetry.MetricDestinations, "state=healthy") == 1 &&
			m.sum(telemetry.MetricPendingPDUs, "") == 1 &&
			m.sum(telemetry.MetricBackoff, "") == 1
	}, "one failure, one destination backing off with one PDU pending")
	if got := m.sum(telemetry.MetricSentTransactions, ""); got != 1 {
		t.Errorf("%s = %v while one of two destinations fails, want 1", telemetry.MetricSentTransactions, got)
	}
	if age := m.sum(telemetry.MetricOldestPending, ""); age <= 0 {
		t.Errorf("%s = %v with a PDU waiting, want > 0", telemetry.MetricOldestPending, age)
	}

	r.SetFault(receiver.Fault{})
	h.reset(d)
	r.WaitPDUs(t, 1)
	m.waitFor(func() bool {
		return m.sum(telemetry.MetricSentTransactions, "") == 2 &&
			m.sum(telemetry.MetricSentPDUs, "") == 2 &&
			m.sum(telemetry.MetricDeliveryLatency, "") == 2 &&
			m.sum(telemetry.MetricResets, "") == 1 &&
			m.sum(telemetry.MetricDestinations, "state=backing_off") == 0 &&
			m.sum(telemetry.MetricDestinations, "state=healthy") == 2 &&
			m.sum(telemetry.MetricPendingPDUs, "") == 0 &&
			m.sum(telemetry.MetricOldestPending, "") == 0
	}, "both destinations healthy, nothing pending, the reset counted")
	if got := m.sum(telemetry.MetricFailedTransactions, ""); got != 1 {
		t.Errorf("%s = %v, want still 1", telemetry.MetricFailedTransactions, got)
	}
	if q, pd := m.sum(telemetry.MetricQueuedPDUs, ""), m.sum(telemetry.MetricPDUDestinations, ""); q != 1 || pd != 2 {
		t.Errorf("queued %v PDUs for %v deliveries, want 1 and 2", q, pd)
	}

	// An invalid envelope is dead-lettered and counted.
	if _, err := h.js.Publish(context.Background(), "fedsender.pdu", []byte(`{"not": "an envelope"}`)); err != nil {
		t.Fatal(err)
	}
	m.waitFor(func() bool { return m.sum(telemetry.MetricDeadLetters, "") == 1 }, "one dead letter")
	m.waitFor(func() bool { return m.sum(telemetry.MetricProjectionLag, "") == 0 }, "the read model caught up")
}

// reset resets d's retry timings through the admin API, once the read
// model shows d failing.
func (h *harness) reset(d string) {
	h.t.Helper()
	eventually(h.t, 10*time.Second, func() bool { return h.destination(d).RetryLastTS != 0 }, "admin API never showed %s failing", d)
	if code := h.admin("POST", "/_synapse/admin/v1/federation/destinations/"+d+"/reset_connection", nil); code != http.StatusOK {
		h.t.Fatalf("reset_connection of %s answered %d", d, code)
	}
}
