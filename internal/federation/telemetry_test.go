package federation_test

import (
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsender/fedsender/internal/federation"
	"github.com/fedsender/fedsender/test/pki"
)

// TestTracedSendSendsNoTraceHeaders: with tracing on, and even with a
// global propagator that would inject, the remote server sees no trace
// context, while our client span is the child of the caller's span and
// names the destination.
func TestTracedSendSendsNoTraceHeaders(t *testing.T) {
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ca := pki.MustCA(t)
	key := newKey(t)
	h, requests := recordingHandler(key, matrixError(200, `{"pdus": {}}`))
	rv := newReceiver(t, ca, h)
	c := newClient(t, ca, key, func(o *federation.Options) { o.TracerProvider = tp })

	ctx, parent := tp.Tracer("test").Start(testContext(t), "transaction")
	if _, err := c.SendTransaction(ctx, rv.dest, "txn-traced", []byte(txnBody), []byte(txnCanonical)); err != nil {
		t.Fatalf("SendTransaction: %v", err)
	}
	parent.End()

	got := requests()
	if len(got) != 1 {
		t.Fatalf("receiver saw %d requests, want 1", len(got))
	}
	for name := range got[0].header {
		switch name {
		case "Traceparent", "Tracestate", "Baggage":
			t.Errorf("remote server received %s: %q", name, got[0].header.Get(name))
		}
	}
	var client trace.SpanContext
	for _, s := range rec.Ended() {
		if s.SpanKind() != trace.SpanKindClient {
			continue
		}
		client = s.SpanContext()
		if s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("client span's parent is %v, want the caller's span", s.Parent())
		}
		attrs := map[string]string{}
		for _, kv := range s.Attributes() {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		if attrs["server.address"] != rv.dest || attrs["fedsender.destination"] != rv.dest || attrs["http.response.status_code"] != "200" {
			t.Errorf("client span attributes %v; want server.address and fedsender.destination %s, status 200", attrs, rv.dest)
		}
		if attrs["network.peer.address"] != rv.dest {
			t.Errorf("network.peer.address = %q, want %s", attrs["network.peer.address"], rv.dest)
		}
	}
	if !client.IsValid() {
		t.Fatal("no client span recorded")
	}
}
