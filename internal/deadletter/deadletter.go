// Package deadletter reads and replays the records of the dead-letter
// stream (streams.DeadLetterStream): the envelopes the PDU reader refused
// whole, and the destinations it refused one by one. It backs the
// `fedsender deadletter` command; nothing in the delivery path uses it.
//
// A replay republishes the record's envelope on the PDU subject (a refused
// destination's record holds the envelope with only that destination) and
// deletes the record once JetStream has acknowledged the republish. The
// republish carries Nats-Msg-Id "replay-" plus the record's own id
// (pdu-<seq>[-<index>]), not the event id: the event id may still be in the
// PDU stream's duplicate window, which would drop the replay, while an id
// derived from the record makes a retried replay (acknowledged, but the
// record not yet deleted) a duplicate that JetStream drops.
package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/streams"
)

var (
	// ErrNotFound: the stream has no record with that sequence.
	ErrNotFound = errors.New("deadletter: no such record")
	// ErrStillInvalid: the record's envelope would be refused again.
	ErrStillInvalid = errors.New("deadletter: still refused")
)

// Record is one dead letter.
type Record struct {
	Seq  uint64    // in the dead-letter stream
	Time time.Time // when it was recorded
	// ID is its Nats-Msg-Id: pdu-<source seq>, or pdu-<source seq>-<index>
	// for a refused destination.
	ID     string
	Reason string
	// SourceSeq is the envelope's sequence in the PDU stream (0: unknown).
	SourceSeq uint64
	// DestinationIndex is the refused destination's index in the
	// envelope's destinations; -1 when the whole envelope was refused.
	DestinationIndex int
	// Destination is that destination, as the envelope gave it.
	Destination string
	// Envelope is the envelope as published, or for a refused destination
	// the envelope with only that destination: what a replay republishes.
	Envelope []byte
}

func record(seq uint64, at time.Time, h nats.Header, data []byte) Record {
	r := Record{Seq: seq, Time: at, ID: h.Get(jetstream.MsgIDHeader), Reason: h.Get(streams.HeaderReason),
		DestinationIndex: -1, Envelope: data}
	r.SourceSeq, _ = strconv.ParseUint(h.Get(streams.HeaderSourceSeq), 10, 64)
	if i, err := strconv.Atoi(h.Get(streams.HeaderDestinationIndex)); err == nil && i >= 0 {
		r.DestinationIndex = i
		r.Destination = h.Get(streams.HeaderDestination) // quoted; replaced by the exact name below
		var env streams.Envelope
		if json.Unmarshal(data, &env) == nil && len(env.Destinations) == 1 {
			r.Destination = env.Destinations[0]
		}
	}
	return r
}

// List returns every record the stream holds, oldest first.
func List(ctx context.Context, js jetstream.JetStream) ([]Record, error) {
	s, err := js.Stream(ctx, streams.DeadLetterStream)
	if err != nil {
		return nil, fmt.Errorf("deadletter: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("deadletter: %w", err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("deadletter: %w", err)
	}
	var out []Record
	for {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("deadletter: read %s: %w", streams.DeadLetterStream, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("deadletter: %w", err)
		}
		out = append(out, record(md.Sequence.Stream, md.Timestamp, msg.Headers(), msg.Data()))
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			return out, nil
		}
	}
}

// Get returns the record with sequence seq.
func Get(ctx context.Context, js jetstream.JetStream, seq uint64) (Record, error) {
	s, err := js.Stream(ctx, streams.DeadLetterStream)
	if err != nil {
		return Record{}, fmt.Errorf("deadletter: %w", err)
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Record{}, fmt.Errorf("%w: %d", ErrNotFound, seq)
	}
	if err != nil {
		return Record{}, fmt.Errorf("deadletter: get %d: %w", seq, err)
	}
	return record(m.Sequence, m.Time, m.Header, m.Data), nil
}

// Replayed is what a replay did.
type Replayed struct {
	// PDUSeq is the republished envelope's sequence in the PDU stream.
	PDUSeq uint64
	// Duplicate: JetStream had it already (a retried replay).
	Duplicate bool
}

// Replay republishes a record's envelope on the PDU subject, checked as
// streams.Publisher checks it (the error wraps ErrStillInvalid when it
// would be refused again: the record is kept), and then deletes the record.
func Replay(ctx context.Context, js jetstream.JetStream, r Record) (Replayed, error) {
	msg, err := streams.NewPublisher(js).Message(ctx, r.Envelope)
	if err != nil {
		return Replayed{}, fmt.Errorf("%w: %w", ErrStillInvalid, err)
	}
	msg.Header.Set(jetstream.MsgIDHeader, "replay-"+recordID(r))
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return Replayed{}, fmt.Errorf("deadletter: republish record %d: %w", r.Seq, err)
	}
	s, err := js.Stream(ctx, streams.DeadLetterStream)
	if err != nil {
		return Replayed{}, fmt.Errorf("deadletter: %w", err)
	}
	if err := s.DeleteMsg(ctx, r.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return Replayed{}, fmt.Errorf("deadletter: republished record %d as PDU %d but could not delete it (replay again: it will not be sent twice): %w",
			r.Seq, ack.Sequence, err)
	}
	return Replayed{PDUSeq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// recordID is the record's id, or one made of its sequence for a record
// written without one.
func recordID(r Record) string {
	if r.ID != "" {
		return r.ID
	}
	return "deadletter-" + strconv.FormatUint(r.Seq, 10)
}
