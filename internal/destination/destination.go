// Package destination is the domain model of one remote server fedsender
// delivers to: its State (the columns of Synapse's destinations table plus
// catch-up) and the Events that change it. State is a fold of events; every
// stored event also carries the state after it, so the newest event of a
// destination is its snapshot.
package destination

import (
	"errors"
	"time"
)

// ErrNotFailing: a reset of a destination that is not backing off has
// nothing to clear (Synapse answers it 400).
var ErrNotFailing = errors.New("destination: not backing off")

// State is what fedsender knows of a destination between transactions.
type State struct {
	Destination string `json:"destination"`
	// Offset is last_successful_stream_ordering: the PDU stream sequence of
	// the newest PDU the destination acknowledged (or that catch-up skipped);
	// 0 when nothing was ever sent.
	Offset uint64 `json:"last_successful_stream_ordering"`
	// FailureTS is when the current run of failures began, in ms; 0 if none.
	FailureTS int64 `json:"failure_ts"`
	// RetryLastTS is the last failed attempt, in ms; 0 when not failing.
	RetryLastTS int64 `json:"retry_last_ts"`
	// RetryInterval is the wait after RetryLastTS, in ms; 0 when not failing.
	RetryInterval int64 `json:"retry_interval"`
	// CatchingUp: the in-memory queue was dropped; pending PDUs are found by
	// reading the PDU stream from Offset.
	CatchingUp bool `json:"catching_up"`
	// CatchUpNewest: the catch-up may send only the newest PDU of each room
	// (the destination was down past catch_up_after, as Synapse does). When
	// false (the queue overflowed, the actor failed) every PDU is sent.
	CatchUpNewest bool `json:"catch_up_newest,omitempty"`
}

// Failing reports whether the destination is backing off.
func (s State) Failing() bool { return s.RetryLastTS != 0 }

// RetryAt is when the next attempt may start; the zero time if not failing.
func (s State) RetryAt() time.Time {
	if !s.Failing() {
		return time.Time{}
	}
	return time.UnixMilli(s.RetryLastTS + s.RetryInterval)
}

// EventType names what happened to a destination.
type EventType string

// The events of a destination's log.
const (
	// Failed: an attempt failed; Interval is the new retry interval.
	Failed EventType = "failed"
	// Recovered: a transaction succeeded after failures.
	Recovered EventType = "recovered"
	// CatchUpStarted: the in-memory queue was dropped (Reason says why).
	CatchUpStarted EventType = "catch_up_started"
	// CatchUpFinished: nothing older than Offset is pending any more.
	CatchUpFinished EventType = "catch_up_finished"
	// Reset: an operator cleared the retry timings.
	Reset EventType = "reset"
)

// Reasons for CatchUpStarted.
const (
	ReasonBackoff  = "backoff"  // the retry interval passed catch_up_after
	ReasonOverflow = "overflow" // the in-memory queue overflowed
	ReasonRecover  = "recover"  // the actor failed and was restarted
)

// Event is one change to a destination.
type Event struct {
	Type EventType `json:"type"`
	At   int64     `json:"at"` // ms since the epoch
	// Offset is the destination's offset when the event happened.
	Offset   uint64 `json:"offset,omitempty"`
	Interval int64  `json:"interval,omitempty"` // Failed: new retry interval, ms
	CatchUp  bool   `json:"catch_up,omitempty"` // Failed: the interval starts catch-up
	Status   int    `json:"status,omitempty"`   // Failed: HTTP status, 0 if none
	Reason   string `json:"reason,omitempty"`
	// State is the destination's state after this event.
	State State `json:"state"`
}

// Apply folds one event into the state.
func (s State) Apply(e Event) State {
	if e.Offset > s.Offset {
		s.Offset = e.Offset
	}
	switch e.Type {
	case Failed:
		if s.FailureTS == 0 {
			s.FailureTS = e.At
		}
		s.RetryLastTS = e.At
		s.RetryInterval = e.Interval
		if e.CatchUp {
			s.CatchingUp, s.CatchUpNewest = true, true
		}
	case Recovered, Reset:
		s.FailureTS, s.RetryLastTS, s.RetryInterval = 0, 0, 0
	case CatchUpStarted:
		s.CatchingUp = true
		s.CatchUpNewest = s.CatchUpNewest || e.Reason == ReasonBackoff
	case CatchUpFinished:
		s.CatchingUp, s.CatchUpNewest = false, false
	}
	return s
}

// Record applies an event to the state and returns the event with the new
// state attached, ready to store.
func (s *State) Record(e Event) Event {
	*s = s.Apply(e)
	e.State = *s
	return e
}
