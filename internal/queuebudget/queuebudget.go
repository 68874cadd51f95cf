// Package queuebudget bounds how many PDU entries the healthy destinations of
// a replica may hold in their in-memory queues together, and so how far the
// reader of the PDU stream may run ahead of them.
//
// The bound is relative by nature: one slow server can hold at most its own
// queue.max_pending entries before it overflows into catch-up, so it never
// holds the others back; the budget fills only when many healthy destinations
// are behind at once, that is when the machine itself is saturated, and then
// the reader waits instead of pushing every queue into catch-up. Failing and
// catching-up destinations hold no budget.
package queuebudget

import (
	"context"
	"sync"
	"sync/atomic"
)

// Budget counts queued entries against a limit.
type Budget struct {
	limit  int64
	queued atomic.Int64
	mu     sync.Mutex
	freed  chan struct{} // closed and replaced when entries are released
}

// New returns a budget of limit entries.
func New(limit int64) *Budget {
	return &Budget{limit: limit, freed: make(chan struct{})}
}

// Queued is the number of entries held now.
func (b *Budget) Queued() int64 { return b.queued.Load() }

// Acquire waits until n more entries fit (or nothing at all is queued, so a
// batch larger than the limit still goes through), then takes them. It
// returns ctx's error if ctx ends first.
func (b *Budget) Acquire(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		freed := b.freed
		b.mu.Unlock()
		q := b.queued.Load()
		if q == 0 || q+n <= b.limit {
			b.queued.Add(n)
			return nil
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Release gives back n entries.
func (b *Budget) Release(n int64) {
	if n <= 0 {
		return
	}
	b.queued.Add(-n)
	b.mu.Lock()
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}
