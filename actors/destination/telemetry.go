package destination

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsender/fedsender/internal/federation"
	"github.com/fedsender/fedsender/internal/telemetry"
	"github.com/fedsender/fedsender/streams"
)

// The actor's spans and metrics. Hollywood's context is per actor, so a
// transaction's span is parented on the trace context its PDUs carry
// (streams.PDU.Trace, set by the reader's fan-out span), not on a message
// context. With tracing off every function here returns at its first check.

// inflightItems returns the queued items t carries: the head of the queue
// (or of the catch-up rooms), where they stay until t succeeds.
func (a *Actor) inflightItems(t *txn) []streams.Item {
	if t.detached {
		return nil
	}
	items := a.queue
	if t.fromRooms {
		items = a.rooms
	}
	return items[:min(len(t.seqs), len(items))]
}

// startAttempt starts t's span for this attempt and returns the context to
// send with. The span is the child of the first traced PDU's fan-out span
// and links to one PDU of every other trace t carries; a catch-up
// transaction whose PDUs carry no trace is the child of its catch-up scan.
func (a *Actor) startAttempt(t *txn) context.Context {
	if !a.cfg.Tracer.Enabled() {
		return a.ctx
	}
	var parent trace.SpanContext
	var links []trace.Link
	for _, it := range a.inflightItems(t) {
		sc := it.PDU.Trace
		switch {
		case !sc.IsValid():
		case !parent.IsValid():
			parent = sc
		case sc.TraceID() != parent.TraceID() && !linked(links, sc.TraceID()):
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	if !parent.IsValid() && a.catching {
		parent = a.catchTrace
	}
	ctx := a.ctx
	if parent.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, parent)
	}
	ctx, t.span = a.cfg.Tracer.Start(ctx, telemetry.SpanTransaction, trace.WithLinks(links...), trace.WithAttributes(
		telemetry.KeyDestination.String(a.name),
		telemetry.KeyTxnID.String(t.id),
		telemetry.KeyPDUs.Int(len(t.seqs)),
		telemetry.KeyEDUs.Int(t.eduCount()),
		telemetry.KeyAttempt.Int(t.attempt),
		telemetry.KeyCatchUp.Bool(a.catching),
	))
	return ctx
}

func linked(links []trace.Link, id trace.TraceID) bool {
	for _, l := range links {
		if l.SpanContext.TraceID() == id {
			return true
		}
	}
	return false
}

// spanContext is a.ctx carrying t's span, for the logs of its outcome.
func (a *Actor) spanContext(t *txn) context.Context {
	if t.span == nil {
		return a.ctx
	}
	return trace.ContextWithSpan(a.ctx, t.span)
}

// observeSent records an accepted transaction's deliveries. It runs before
// succeeded drops t's PDUs from the queue, whose stream times give each
// delivery's latency.
func (a *Actor) observeSent(t *txn, m sendDone, dropped bool) {
	if a.met == nil || m.err != nil {
		return
	}
	a.met.Sent(a.ctx, len(t.seqs), t.eduCount(), len(m.res.PDUErrors))
	if dropped {
		return // catch-up dropped the queue meanwhile: no stream times
	}
	now := a.cfg.Now().UnixMilli()
	for _, it := range a.inflightItems(t) {
		a.met.Delivered(a.ctx, time.Duration(now-it.TS)*time.Millisecond)
	}
}

// endAttempt ends t's span with the outcome and counts a failure with the
// backoff chosen. It runs after succeeded or failed, so that a.state holds
// the retry interval chosen.
func (a *Actor) endAttempt(t *txn, m sendDone) {
	var se *federation.SendError
	class := ""
	if m.err != nil {
		class = federation.ClassNetwork.String()
		if errors.As(m.err, &se) {
			class = se.Class.String()
		}
		a.met.Failed(a.ctx, class, time.Duration(a.state.RetryInterval)*time.Millisecond)
	}
	if t.span == nil {
		return
	}
	span := t.span
	t.span = nil
	if m.err == nil {
		span.SetAttributes(telemetry.KeyResult.String(telemetry.ResultSuccess),
			telemetry.KeyHTTPStatus.Int(200), telemetry.KeyPDUErrors.Int(len(m.res.PDUErrors)))
		span.End()
		return
	}
	attrs := []attribute.KeyValue{telemetry.KeyResult.String(class),
		telemetry.KeyBackoff.Int64(a.state.RetryInterval), telemetry.KeyCatchUp.Bool(a.catching)}
	if se != nil && se.Status != 0 {
		attrs = append(attrs, telemetry.KeyHTTPStatus.Int(se.Status))
	}
	span.SetAttributes(attrs...)
	span.SetStatus(codes.Error, m.err.Error())
	span.End()
}

// scanContext starts a catch-up scan's span and returns the context to scan
// with; scanned ends it.
func (a *Actor) scanContext(from uint64) context.Context {
	a.met.CatchUp(a.ctx)
	if !a.cfg.Tracer.Enabled() {
		return a.ctx
	}
	ctx, span := a.cfg.Tracer.Start(a.ctx, telemetry.SpanCatchUp, trace.WithAttributes(
		telemetry.KeyDestination.String(a.name),
		telemetry.KeyCatchUpFrom.Int64(int64(from))))
	a.scanSpan = span
	a.catchTrace = span.SpanContext()
	return ctx
}

// endScan ends the scan's span with what it found, and returns a.ctx
// carrying it, for the logs about the scan.
func (a *Actor) endScan(m scanDone) context.Context {
	span := a.scanSpan
	if span == nil {
		return a.ctx
	}
	a.scanSpan = nil
	if m.err != nil {
		span.SetStatus(codes.Error, m.err.Error())
	} else {
		span.SetAttributes(telemetry.KeyCatchUpThrough.Int64(int64(m.res.Through)),
			telemetry.KeyCatchUpExact.Bool(m.res.Exact), telemetry.KeyCatchUpItems.Int(len(m.res.Items)))
	}
	span.End()
	return trace.ContextWithSpan(a.ctx, span)
}

// observeQueue publishes the queue's length and the stream time of its
// oldest PDU for the partition's gauges: two atomic stores per message.
func (a *Actor) observeQueue() {
	if a.gauge == nil {
		return
	}
	n, oldest := len(a.queue)+len(a.rooms), int64(0)
	if len(a.queue) > 0 {
		oldest = a.queue[0].TS
	}
	if len(a.rooms) > 0 && (oldest == 0 || a.rooms[0].TS < oldest) {
		oldest = a.rooms[0].TS
	}
	a.gauge.Set(n, oldest)
}
