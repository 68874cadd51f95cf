package ingest

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsender/fedsender/internal/telemetry"
	"github.com/fedsender/fedsender/streams"
)

// traceIngest records one envelope's ingest span, continuing the
// publisher's trace when its headers carry one and starting a trace
// otherwise. For a valid PDU it starts the fan-out span, puts its context
// in pdu.Trace for the transactions to continue, and appends it to fanOuts
// (ended by endFanOuts once the batch is dispatched). It returns the
// context of the ingest span, for the dead-letter log. Only called when
// tracing is on.
func (r *Reader) traceIngest(ctx context.Context, msg jetstream.Msg, seq uint64, pdu *streams.PDU, invalid error, fanOuts []trace.Span) (context.Context, []trace.Span) {
	parent := telemetry.Extract(ctx, msg.Headers())
	attrs := []attribute.KeyValue{
		telemetry.KeyMessagingSystem.String("nats"),
		telemetry.KeyMessagingDestination.String(msg.Subject()),
		telemetry.KeyStreamSequence.Int64(int64(seq)),
		telemetry.KeyValid.Bool(invalid == nil),
	}
	if id := msg.Headers().Get(jetstream.MsgIDHeader); id != "" {
		attrs = append(attrs, telemetry.KeyMessagingMessageID.String(id))
	}
	if invalid != nil {
		attrs = append(attrs, telemetry.KeyInvalidReason.String(invalid.Error()))
	} else {
		attrs = append(attrs,
			telemetry.KeyEventID.String(pdu.EventID),
			telemetry.KeyRoomID.String(pdu.RoomID),
			telemetry.KeyDestinations.Int(len(pdu.Destinations)),
			telemetry.KeyDuplicateDests.Int(pdu.DuplicateDestinations))
	}
	ictx, ingest := r.opts.Tracer.Start(parent, telemetry.SpanIngest,
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
	if invalid != nil {
		ingest.SetStatus(codes.Error, "dead-lettered: "+invalid.Error())
		ingest.End()
		return ictx, fanOuts
	}
	ingest.End()
	parts := map[int]struct{}{}
	for _, d := range pdu.Destinations {
		parts[r.partitionOf(d)] = struct{}{}
	}
	_, fan := r.opts.Tracer.Start(ictx, telemetry.SpanFanOut, trace.WithAttributes(
		telemetry.KeyDestinations.Int(len(pdu.Destinations)),
		telemetry.KeyPartitions.Int(len(parts))))
	pdu.Trace = fan.SpanContext()
	return ictx, append(fanOuts, fan)
}

// endFanOuts ends the fan-out spans of a dispatched batch.
func endFanOuts(fanOuts []trace.Span) {
	for _, s := range fanOuts {
		s.End()
	}
}
