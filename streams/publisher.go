package streams

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/telemetry"
)

// ErrTooLarge is returned for an envelope over the NATS server's
// max_payload.
var ErrTooLarge = errors.New("envelope too large")

// Publisher is the client a homeserver (or `fedsender publish`) uses to hand
// PDUs to fedsender. It validates each envelope before publishing, so an
// invalid one is an error at the caller rather than a dead letter. An
// envelope with some invalid destinations is valid (DecodePDU lists them in
// PDU.Refused): it is published, and the reader refuses those destinations
// one by one.
type Publisher struct {
	js jetstream.JetStream
}

// NewPublisher returns a publisher on a JetStream context.
func NewPublisher(js jetstream.JetStream) *Publisher {
	return &Publisher{js: js}
}

// Publish validates an envelope's JSON and publishes it unchanged, with
// Nats-Msg-Id set to the event id so that a retry is not sent twice, and the
// W3C trace context of ctx (traceparent, tracestate) in the headers, so that
// fedsender continues the caller's trace. It returns the PDU's stream
// sequence (Synapse's stream ordering) and whether JetStream recognised it
// as a duplicate.
func (p *Publisher) Publish(ctx context.Context, envelope []byte) (seq uint64, duplicate bool, err error) {
	msg, err := p.Message(ctx, envelope)
	if err != nil {
		return 0, false, err
	}
	ack, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		return 0, false, fmt.Errorf("streams: publish: %w", err)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// PublishAsync is Publish without waiting for the acknowledgement, and
// outside any trace; wait on the returned future, or on the JetStream
// context's PublishAsyncComplete.
func (p *Publisher) PublishAsync(envelope []byte) (jetstream.PubAckFuture, error) {
	// No caller context to continue: fedsender starts the PDU's trace.
	return p.PublishAsyncContext(context.Background(), envelope)
}

// PublishAsyncContext is PublishAsync carrying the trace context of ctx, as
// Publish does. ctx is not used for cancellation: the future resolves when
// JetStream answers or the JetStream context's async timeout passes.
func (p *Publisher) PublishAsyncContext(ctx context.Context, envelope []byte) (jetstream.PubAckFuture, error) {
	msg, err := p.Message(ctx, envelope)
	if err != nil {
		return nil, err
	}
	return p.js.PublishMsgAsync(msg)
}

// Message returns the message Publish would publish, without publishing
// it: the envelope validated, and with its headers within the NATS
// server's max_payload (the error wraps ErrTooLarge). Callers may change
// its headers (a replay sets its own Nats-Msg-Id).
func (p *Publisher) Message(ctx context.Context, envelope []byte) (*nats.Msg, error) {
	pdu, err := DecodePDU(envelope)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(PDUSubject)
	msg.Header.Set(jetstream.MsgIDHeader, pdu.EventID)
	telemetry.Inject(ctx, msg.Header)
	msg.Data = envelope
	// The client would refuse it with a bare "maximum payload exceeded".
	size, limit := int64(msg.Size()-len(msg.Subject)), p.js.Conn().MaxPayload()
	if size > limit {
		return nil, fmt.Errorf("%w: envelope is %d bytes with its headers, over the NATS server's max_payload of %d bytes",
			ErrTooLarge, size, limit)
	}
	return msg, nil
}
