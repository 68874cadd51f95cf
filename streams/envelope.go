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
	pdu, canonical, err := checkObject("pdu", env.PDU, MaxPDUSize)
	if err != nil {
		return nil, err
	}
	dests, refused, err := checkDestinations(env.Destinations)
	if err != nil {
		return nil, err
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

// checkObject checks a JSON object member of an envelope and returns it
// trimmed and in canonical JSON, which must fit in limit bytes.
func checkObject(key string, raw json.RawMessage, limit int) (trimmed, canonical []byte, err error) {
	trimmed = bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil, nil, fmt.Errorf("%w: %s is missing", ErrInvalidEnvelope, key)
	}
	if trimmed[0] != '{' {
		return nil, nil, fmt.Errorf("%w: %s is not a JSON object", ErrInvalidEnvelope, key)
	}
	canonical, err = canonicaljson.Canonicalize(trimmed)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s is not valid canonical JSON material: %v", ErrInvalidEnvelope, key, err)
	}
	if len(canonical) > limit {
		return nil, nil, fmt.Errorf("%w: %s is %d bytes, over the %d-byte limit", ErrInvalidEnvelope, key, len(canonical), limit)
	}
	return trimmed, canonical, nil
}

// checkDestinations splits an envelope's destinations (SplitDestinations);
// an envelope without a valid one is refused whole.
func checkDestinations(names []string) (dests []string, refused []RefusedDestination, err error) {
	if len(names) == 0 {
		return nil, nil, fmt.Errorf("%w: destinations is missing or empty", ErrInvalidEnvelope)
	}
	dests, refused = SplitDestinations(names)
	if len(dests) == 0 {
		return nil, nil, fmt.Errorf("%w: no valid destination: %s", ErrInvalidEnvelope, describeRefused(refused))
	}
	return dests, refused, nil
}
