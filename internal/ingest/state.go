package ingest

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/anthdm/hollywood/actor"

	"github.com/fedsender/fedsender/streams"
)

// readerState is what the PDU and the EDU reader both keep: their position
// in their stream, their dead-letter count, whether they run, each
// destination's partition, the refused names already warned of, and the
// supervisors of the partitions this replica owns.
type readerState struct {
	partitions  int
	parts       map[string]int
	warned      map[string]struct{} // refused names logged at warning level
	through     atomic.Uint64
	deadLetters atomic.Int64
	running     atomic.Bool
	// owned are the supervisors by partition, nil for a partition another
	// replica owns; only the reading goroutine touches it, Own and Disown
	// ask it through requests.
	owned    []*actor.PID
	requests chan ownRequest
	// begin is closed by Begin: a held reader starts reading then.
	begin     chan struct{}
	beginOnce sync.Once
	// seen is the highest sequence shown to the observers: after a rewind
	// they do not see a message twice.
	seen uint64
}

// ownRequest changes the supervisor of partition p (pid nil: no longer
// owned); from is the first sequence a new supervisor needs.
type ownRequest struct {
	p    int
	pid  *actor.PID
	from uint64
	done chan struct{}
}

func newReaderState(partitions []*actor.PID) readerState {
	return readerState{partitions: len(partitions), parts: map[string]int{}, warned: map[string]struct{}{},
		owned: append([]*actor.PID(nil), partitions...), requests: make(chan ownRequest, 64), begin: make(chan struct{})}
}

// Begin lets a reader created with Hold start reading.
func (r *readerState) Begin() { r.beginOnce.Do(func() { close(r.begin) }) }

// hold applies Own and Disown without reading until Begin, and returns
// the sequence to start from: start, or an earlier one an owned partition
// needs. ok is false when ctx ended.
func (r *readerState) hold(ctx context.Context, start uint64) (uint64, bool) {
	for {
		select {
		case <-ctx.Done():
			return 0, false
		case <-r.begin:
			return start, true
		case req := <-r.requests:
			if rewind := r.apply(req); rewind != 0 {
				start = rewind
				r.through.Store(start - 1)
			}
		}
	}
}

// Through is the last sequence handed to the supervisors.
func (r *readerState) Through() uint64 { return r.through.Load() }

// DeadLetters counts the envelopes refused since start.
func (r *readerState) DeadLetters() int64 { return r.deadLetters.Load() }

// Running reports whether the reader is consuming.
func (r *readerState) Running() bool { return r.running.Load() }

// Own makes pid the supervisor of partition p, which needs every message
// from sequence from on: if the reader is past it, it reads the stream
// again from there (the other supervisors skip what they have seen). It
// returns once the reader dispatches to pid, or with ctx's error.
func (r *readerState) Own(ctx context.Context, p int, pid *actor.PID, from uint64) error {
	return r.request(ctx, ownRequest{p: p, pid: pid, from: max(from, 1)})
}

// Disown stops dispatching to partition p's supervisor. It returns once
// the reader will send it nothing more, or with ctx's error.
func (r *readerState) Disown(ctx context.Context, p int) error {
	return r.request(ctx, ownRequest{p: p})
}

func (r *readerState) request(ctx context.Context, req ownRequest) error {
	req.done = make(chan struct{})
	select {
	case r.requests <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-req.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// apply applies req and the other requests waiting, and returns the
// sequence to read again from (0: no need).
func (r *readerState) apply(req ownRequest) uint64 {
	rewind := uint64(0)
	for {
		r.owned[req.p] = req.pid
		if req.pid != nil && req.from <= r.through.Load() && (rewind == 0 || req.from < rewind) {
			rewind = req.from
		}
		close(req.done)
		select {
		case req = <-r.requests:
		default:
			return rewind
		}
	}
}

// partitionOf returns dest's partition, computed once per destination.
func (r *readerState) partitionOf(dest string) int {
	p, ok := r.parts[dest]
	if !ok {
		p = streams.Partition(dest, r.partitions)
		r.parts[dest] = p
	}
	return p
}
