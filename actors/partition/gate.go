package partition

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
)

// Gate paces the reader: it may dispatch a PDU only while the PDU's sequence
// is within ReadAhead of the slowest healthy destination. Destinations that
// fail, catch up, or make no progress for a while do not count, so a dead
// server never slows the others; their queues overflow into catch-up instead.
type Gate struct {
	readAhead uint64
	slots     []atomic.Uint64
	mu        sync.Mutex
	wake      chan struct{}
}

// NewGate returns a gate for n partitions.
func NewGate(n int, readAhead uint64) *Gate {
	g := &Gate{readAhead: readAhead, slots: make([]atomic.Uint64, n), wake: make(chan struct{})}
	for i := range g.slots {
		g.slots[i].Store(math.MaxUint64)
	}
	return g
}

// set records the lowest done-through sequence of partition p's healthy busy
// destinations (math.MaxUint64: none).
func (g *Gate) set(p int, v uint64) {
	if old := g.slots[p].Swap(v); v > old {
		g.mu.Lock()
		close(g.wake)
		g.wake = make(chan struct{})
		g.mu.Unlock()
	}
}

func (g *Gate) floor() uint64 {
	m := uint64(math.MaxUint64)
	for i := range g.slots {
		m = min(m, g.slots[i].Load())
	}
	return m
}

// Wait blocks until seq may be dispatched, or ctx ends.
func (g *Gate) Wait(ctx context.Context, seq uint64) error {
	for {
		g.mu.Lock()
		ch := g.wake
		g.mu.Unlock()
		f := g.floor()
		if f == math.MaxUint64 || seq <= f+g.readAhead {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
