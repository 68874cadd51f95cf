package kvprojection

import (
	"encoding/json"
	"fmt"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
)

// Document is the JSON value of a destination in the bucket.
type Document struct {
	Destination   string `json:"destination"`
	RetryLastTS   int64  `json:"retry_last_ts"`
	RetryInterval int64  `json:"retry_interval"`
	// FailureTS is null when the destination is not failing.
	FailureTS *int64 `json:"failure_ts"`
	// LastSuccessfulStreamOrdering is null when nothing was ever sent.
	LastSuccessfulStreamOrdering *uint64 `json:"last_successful_stream_ordering"`
	CatchingUp                   bool    `json:"catching_up"`
	// EventSequence is the event log sequence of the newest event folded in.
	EventSequence uint64 `json:"event_sequence"`
	// PendingEDUs counts the must-deliver EDUs (to-device, device lists,
	// signing keys) the destination has not acknowledged yet, as its
	// owner last saved it (at each checkpoint); PendingEDUsRevision is
	// that count's revision in the fedsender-edu-pending bucket.
	PendingEDUs         uint64 `json:"pending_edus"`
	PendingEDUsRevision uint64 `json:"pending_edus_revision,omitempty"`
}

// documentOf is the document of a state as of the event at eventSeq.
func documentOf(s destination.State, eventSeq uint64) Document {
	s = projection.Shown(s)
	d := Document{
		Destination:   s.Destination,
		RetryLastTS:   s.RetryLastTS,
		RetryInterval: s.RetryInterval,
		CatchingUp:    s.CatchingUp,
		EventSequence: eventSeq,
	}
	if s.FailureTS != 0 {
		d.FailureTS = &s.FailureTS
	}
	if s.Offset != 0 {
		d.LastSuccessfulStreamOrdering = &s.Offset
	}
	return d
}

// State is the destination's state as the document shows it.
func (d Document) State() destination.State {
	s := destination.State{
		Destination:   d.Destination,
		RetryLastTS:   d.RetryLastTS,
		RetryInterval: d.RetryInterval,
		CatchingUp:    d.CatchingUp,
	}
	if d.FailureTS != nil {
		s.FailureTS = *d.FailureTS
	}
	if d.LastSuccessfulStreamOrdering != nil {
		s.Offset = *d.LastSuccessfulStreamOrdering
	}
	return s
}

func (d Document) offset() uint64 {
	if d.LastSuccessfulStreamOrdering == nil {
		return 0
	}
	return *d.LastSuccessfulStreamOrdering
}

// merge returns what a writer holding ours stores over cur: the fields of
// the newer event, and the larger stream ordering (offsets only move
// forward). The result equals cur when ours adds nothing.
func merge(cur, ours Document) Document {
	out := ours
	if cur.EventSequence > ours.EventSequence {
		out = cur
	}
	if off := max(cur.offset(), ours.offset()); off != 0 {
		out.LastSuccessfulStreamOrdering = &off
	}
	// The newer count wins, whichever document had the newer event.
	out.PendingEDUs, out.PendingEDUsRevision = ours.PendingEDUs, ours.PendingEDUsRevision
	if cur.PendingEDUsRevision > ours.PendingEDUsRevision {
		out.PendingEDUs, out.PendingEDUsRevision = cur.PendingEDUs, cur.PendingEDUsRevision
	}
	return out
}

// equal compares documents by value.
func (d Document) equal(o Document) bool {
	return d.Destination == o.Destination && d.RetryLastTS == o.RetryLastTS &&
		d.RetryInterval == o.RetryInterval && eqPtr(d.FailureTS, o.FailureTS) &&
		eqPtr(d.LastSuccessfulStreamOrdering, o.LastSuccessfulStreamOrdering) &&
		d.CatchingUp == o.CatchingUp && d.EventSequence == o.EventSequence &&
		d.PendingEDUs == o.PendingEDUs && d.PendingEDUsRevision == o.PendingEDUsRevision
}

func eqPtr[T comparable](a, b *T) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// decodeDocument parses a document stored under the key of name.
func decodeDocument(name string, data []byte) (Document, error) {
	var d Document
	if err := json.Unmarshal(data, &d); err != nil {
		return Document{}, fmt.Errorf("kvprojection: document of %q: %w", name, err)
	}
	if d.Destination != name {
		return Document{}, fmt.Errorf("kvprojection: document under the key of %q names %q", name, d.Destination)
	}
	return d, nil
}
