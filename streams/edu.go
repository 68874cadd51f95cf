package streams

import (
	"bytes"
	"encoding/json"
	"fmt"

	"go.opentelemetry.io/otel/trace"
)

// MaxEDUSize bounds an EDU's content in canonical JSON: Synapse's target
// size for one EDU (SOFT_MAX_EDU_SIZE), which it also splits to-device
// messages to.
const MaxEDUSize = 65536

// MaxEDUTypeLength bounds edu_type and key.
const MaxEDUTypeLength = 255

// EDUEnvelope is what a homeserver publishes on EDUSubject for each EDU, as
// JSON: {"edu_type", "content": {...}, "destinations": [...], "key"}. The
// content is opaque (but for filling a device-list update's prev_id) and
// sent as given. Key, optional, is the coalescing key: a newer droppable EDU
// with the same type and key replaces one not yet sent.
type EDUEnvelope struct {
	EDUType      string          `json:"edu_type"`
	Content      json.RawMessage `json:"content"`
	Destinations []string        `json:"destinations"`
	Key          string          `json:"key,omitempty"`
}

// EDU is a validated EDU envelope.
type EDU struct {
	Type string
	Key  string
	// Content is the content in canonical JSON, which is what is sent (the
	// signature covers the canonical body, so sending it as is costs
	// nothing).
	Content []byte
	// Destinations, Refused and DuplicateDestinations are as in PDU.
	Destinations          []string
	Refused               []RefusedDestination
	DuplicateDestinations int
	// Trace is the span context of the EDU's ingest span (zero when
	// tracing is off).
	Trace trace.SpanContext
	// Units, when set (by the reader, before it hands the EDU to its
	// destinations), is what the sender derived from Content once: a
	// droppable EDU's coalescing units (internal/edu.Prepare), shared
	// read-only by every destination's outbox.
	Units any
}

// EDUItem is an EDU read from the EDU stream: its sequence, when the stream
// stored it, and the EDU.
type EDUItem struct {
	Seq uint64
	TS  int64 // ms since the epoch
	EDU *EDU
	// NotBefore (ms since the epoch; 0: now) paces a droppable EDU for one
	// destination: it is not worth a transaction of its own before then,
	// but goes with any transaction sent earlier.
	NotBefore int64
}

// IsEDU reports whether a JSON line is an EDU envelope: an object with an
// edu_type member. Anything else is taken for a PDU envelope (and refused
// as one if it is not).
func IsEDU(data []byte) bool {
	var probe struct {
		EDUType json.RawMessage `json:"edu_type"`
	}
	return json.Unmarshal(data, &probe) == nil && probe.EDUType != nil
}

// DecodeEDU parses and validates an EDU envelope. The error wraps
// ErrInvalidEnvelope and says what is wrong. Invalid destinations do not
// make it invalid unless no valid one is left: they are in EDU.Refused.
func DecodeEDU(data []byte) (*EDU, error) {
	var env EDUEnvelope
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, fmt.Errorf("%w: not a JSON EDU envelope: %v", ErrInvalidEnvelope, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidEnvelope)
	}
	return env.validate()
}

func (env EDUEnvelope) validate() (*EDU, error) {
	switch {
	case env.EDUType == "":
		return nil, fmt.Errorf("%w: edu_type is missing", ErrInvalidEnvelope)
	case len(env.EDUType) > MaxEDUTypeLength:
		return nil, fmt.Errorf("%w: edu_type is %d bytes, over %d", ErrInvalidEnvelope, len(env.EDUType), MaxEDUTypeLength)
	case len(env.Key) > MaxEDUTypeLength:
		return nil, fmt.Errorf("%w: key is %d bytes, over %d", ErrInvalidEnvelope, len(env.Key), MaxEDUTypeLength)
	}
	_, canonical, err := checkObject("content", env.Content, MaxEDUSize)
	if err != nil {
		return nil, err
	}
	dests, refused, err := checkDestinations(env.Destinations)
	if err != nil {
		return nil, err
	}
	return &EDU{Type: env.EDUType, Key: env.Key, Content: canonical, Destinations: dests, Refused: refused,
		DuplicateDestinations: len(env.Destinations) - len(refused) - len(dests)}, nil
}

// Validate checks a PDU or EDU envelope (an EDU when IsEDU) as the reader
// will, and returns its invalid destinations, which do not make it
// invalid: fedsender refuses them one by one and delivers to the others.
func Validate(envelope []byte) (refused []RefusedDestination, err error) {
	if IsEDU(envelope) {
		edu, err := DecodeEDU(envelope)
		if err != nil {
			return nil, err
		}
		return edu.Refused, nil
	}
	pdu, err := DecodePDU(envelope)
	if err != nil {
		return nil, err
	}
	return pdu.Refused, nil
}
