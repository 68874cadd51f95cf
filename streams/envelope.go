package streams

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/trace"

	"github.com/fedsender/fedsender/internal/canonicaljson"
)

// Limits on what an envelope may carry.
const (
	// MaxPDUSize is the Matrix limit on a PDU's canonical size.
	MaxPDUSize = 65536
	// MaxIDLength bounds room and event ids.
	MaxIDLength = 255
)

// ErrInvalidEnvelope is wrapped by every reason an envelope is refused.
var ErrInvalidEnvelope = errors.New("invalid envelope")

// Envelope is what a homeserver publishes on PDUSubject for each PDU, as
// JSON: {"room_id", "event_id", "pdu": {...}, "destinations": ["server", ...]}.
// The PDU is opaque and sent byte for byte as given.
type Envelope struct {
	RoomID       string          `json:"room_id"`
	EventID      string          `json:"event_id"`
	PDU          json.RawMessage `json:"pdu"`
	Destinations []string        `json:"destinations"`
}

// PDU is a validated envelope, ready to send.
type PDU struct {
	RoomID    string
	EventID   string
	Raw       []byte // the PDU exactly as published
	Canonical []byte // its canonical JSON, which signatures cover
	// Destinations are the envelope's valid server names, normalised
	// (servername.Normalize), without duplicates, in the envelope's order.
	Destinations []string
	// Refused are the envelope's invalid destinations: the PDU is sent to
	// the others, and the reader dead-letters each of these.
	Refused []RefusedDestination
	// DuplicateDestinations counts the destinations the envelope named
	// more than once (after normalising); the duplicates were dropped.
	DuplicateDestinations int
	// Trace is the span context of the PDU's fan-out span, which the
	// transactions carrying the PDU continue (or link to): actor messages
	// carry it because hollywood's context is per actor. Zero when
	// tracing is off.
	Trace trace.SpanContext
}

// Item is a PDU read from the PDU stream: its sequence (Synapse's stream
// ordering), when the stream stored it, and the PDU.
type Item struct {
	Seq uint64
	TS  int64 // ms since the epoch
	PDU *PDU
}

// DecodePDU parses and validates an envelope. The error wraps
// ErrInvalidEnvelope and says what is wrong. Invalid destinations do not
// make the envelope invalid, unless no valid one is left: they are listed
// in PDU.Refused.
func DecodePDU(data []byte) (*PDU, error) {
	var env Envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, fmt.Errorf("%w: not a JSON envelope: %v", ErrInvalidEnvelope, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidEnvelope)
	}
	return env.validate()
}

func (env Envelope) validate() (*PDU, error) {
	if err := checkID("room_id", env.RoomID, '!'); err != nil {
		return nil, err
	}
	if err := checkID("event_id", env.EventID, '$'); err != nil {
		return nil, err
	}
	pdu := bytes.TrimSpace(env.PDU)
	if len(pdu) == 0 || string(pdu) == "null" {
		return nil, fmt.Errorf("%w: pdu is missing", ErrInvalidEnvelope)
	}
	if pdu[0] != '{' {
		return nil, fmt.Errorf("%w: pdu is not a JSON object", ErrInvalidEnvelope)
	}
	canonical, err := canonicaljson.Canonicalize(pdu)
	if err != nil {
		return nil, fmt.Errorf("%w: pdu is not valid canonical JSON material: %v", ErrInvalidEnvelope, err)
	}
	if len(canonical) > MaxPDUSize {
		return nil, fmt.Errorf("%w: pdu is %d bytes, over the %d-byte limit", ErrInvalidEnvelope, len(canonical), MaxPDUSize)
	}
	if len(env.Destinations) == 0 {
		return nil, fmt.Errorf("%w: destinations is missing or empty", ErrInvalidEnvelope)
	}
	dests, refused := SplitDestinations(env.Destinations)
	if len(dests) == 0 {
		return nil, fmt.Errorf("%w: no valid destination: %s", ErrInvalidEnvelope, describeRefused(refused))
	}
	return &PDU{RoomID: env.RoomID, EventID: env.EventID, Raw: pdu, Canonical: canonical, Destinations: dests,
		Refused: refused, DuplicateDestinations: len(env.Destinations) - len(refused) - len(dests)}, nil
}

func checkID(key, v string, sigil byte) error {
	switch {
	case v == "":
		return fmt.Errorf("%w: %s is missing", ErrInvalidEnvelope, key)
	case len(v) > MaxIDLength:
		return fmt.Errorf("%w: %s is %d bytes, over %d", ErrInvalidEnvelope, key, len(v), MaxIDLength)
	case v[0] != sigil:
		return fmt.Errorf("%w: %s %q does not start with %q", ErrInvalidEnvelope, key, v, sigil)
	}
	return nil
}
