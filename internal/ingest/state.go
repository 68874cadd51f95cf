package ingest

import (
	"sync/atomic"

	"github.com/fedsender/fedsender/streams"
)

// readerState is what the PDU and the EDU reader both keep: their position
// in their stream, their dead-letter count, whether they run, each
// destination's partition, and the refused names already warned of.
type readerState struct {
	partitions  int
	parts       map[string]int
	warned      map[string]struct{} // refused names logged at warning level
	through     atomic.Uint64
	deadLetters atomic.Int64
	running     atomic.Bool
}

func newReaderState(partitions int) readerState {
	return readerState{partitions: partitions, parts: map[string]int{}, warned: map[string]struct{}{}}
}

// Through is the last sequence handed to the supervisors.
func (r *readerState) Through() uint64 { return r.through.Load() }

// DeadLetters counts the envelopes refused since start.
func (r *readerState) DeadLetters() int64 { return r.deadLetters.Load() }

// Running reports whether the reader is consuming.
func (r *readerState) Running() bool { return r.running.Load() }

// partitionOf returns dest's partition, computed once per destination.
func (r *readerState) partitionOf(dest string) int {
	p, ok := r.parts[dest]
	if !ok {
		p = streams.Partition(dest, r.partitions)
		r.parts[dest] = p
	}
	return p
}
