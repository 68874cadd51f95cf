package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/anthdm/hollywood/actor"

	"github.com/fedsender/fedsender/actors/partition"
	"github.com/fedsender/fedsender/internal/control"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/ingest"
	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/telemetry"
	"github.com/fedsender/fedsender/streams"
)

// partitions serves the partitions this replica owns (the
// ownership.Handler): a supervisor each, fed by both readers, with the
// owner's control subscription.
type partitions struct {
	engine    *actor.Engine
	store     *eventlog.Store
	cfg       *partition.Config
	reader    *ingest.Reader
	eduReader *ingest.EDUReader
	control   *control.Server
	metrics   *telemetry.Metrics
	log       *slog.Logger
	n         int

	mu     sync.Mutex
	served map[int]*served
	gen    int
}

// served is one partition this replica serves.
type served struct {
	pid *actor.PID
	// stop ends the supervisor's and its actors' work (and aborts the
	// requests in flight): the drain ran out of time, or the lease ended.
	stop context.CancelFunc
}

// fencedLease is the partition's lease as its supervisor sees it: valid
// while the lease is, and until the service abandons the partition.
type fencedLease struct {
	l   *lease.Lease
	ctx context.Context
}

func (f fencedLease) Valid() bool              { return f.ctx.Err() == nil && f.l.Valid() }
func (f fencedLease) Context() context.Context { return f.ctx }

// Serve loads partition p's destinations and watermark as the previous
// owner left them, starts its supervisor, and has the readers dispatch to
// it from its watermark on.
func (ps *partitions) Serve(ctx context.Context, p int, l *lease.Lease) error {
	loaded, err := ps.store.LoadPartition(ctx, p)
	if err != nil {
		return err
	}
	wm, rev, err := ps.store.LoadWatermark(ctx, p)
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(l.Context())
	ps.mu.Lock()
	ps.gen++
	pid := ps.engine.Spawn(partition.New(ps.cfg, p, loaded, wm, rev, fencedLease{l: l, ctx: sctx}), "partition",
		actor.WithID(strconv.Itoa(p)+"."+strconv.Itoa(ps.gen)), actor.WithInboxSize(4096))
	ps.served[p] = &served{pid: pid, stop: stop}
	ps.mu.Unlock()
	err = errors.Join(ps.reader.Own(ctx, p, pid, wm.Seq+1), ps.eduReader.Own(ctx, p, pid, wm.EDUSeq+1))
	if err == nil {
		err = ps.control.Own(ctx, p)
	}
	if err != nil {
		ps.Stop(p)
		return fmt.Errorf("serve partition %d: %w", p, err)
	}
	ps.log.Debug("serving a partition", "partition", p, "destinations_known", len(loaded),
		"resume_after_sequence", wm.Seq, "resume_after_edu_sequence", wm.EDUSeq)
	return nil
}

// Drain stops dispatching to p, lets its transactions in flight finish and
// persists its offsets and watermark, or gives up when ctx ends (then the
// requests still in flight are aborted).
func (ps *partitions) Drain(ctx context.Context, p int) {
	s := ps.take(p)
	if s == nil {
		return
	}
	ps.disown(p)
	done := make(chan struct{})
	ps.engine.Send(s.pid, partition.Drain{Done: func() { close(done) }})
	select {
	case <-done:
	case <-ctx.Done():
		ps.log.Warn("a partition's drain ran out of time: transactions in flight are abandoned, its next owner sends them",
			"partition", p)
	}
	ps.end(p, s)
}

// Stop stops serving p at once: its lease ended.
func (ps *partitions) Stop(p int) {
	s := ps.take(p)
	if s == nil {
		return
	}
	s.stop() // before anything else: no request goes out any more
	ps.disown(p)
	ps.end(p, s)
}

// disown stops the owner's control subscription and the readers'
// dispatch of p.
func (ps *partitions) disown(p int) {
	ps.control.Disown(p)
	// The readers answer between two batches: at once, unless one waits
	// for the queue budget.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := errors.Join(ps.reader.Disown(ctx, p), ps.eduReader.Disown(ctx, p)); err != nil {
		ps.log.Warn("the readers did not let go of a partition in time", "partition", p, "error", err)
	}
}

func (ps *partitions) take(p int) *served {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	s := ps.served[p]
	delete(ps.served, p)
	return s
}

// end stops p's supervisor and its actors.
func (ps *partitions) end(p int, s *served) {
	s.stop()
	<-ps.engine.Poison(s.pid).Done()
	ps.metrics.Partition(p).Clear()
}

// pid returns the supervisor of dest's partition, if this replica serves
// it.
func (ps *partitions) pid(dest string) (*actor.PID, error) {
	p := streams.Partition(dest, ps.n)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if s := ps.served[p]; s != nil {
		return s.pid, nil
	}
	return nil, fmt.Errorf("partition %d is moving to another replica; try again", p)
}

// stopAll stops every partition still served (after the drain at
// shutdown, or when it could not run).
func (ps *partitions) stopAll() {
	ps.mu.Lock()
	var ps2 []int
	for p := range ps.served {
		ps2 = append(ps2, p)
	}
	ps.mu.Unlock()
	for _, p := range ps2 {
		ps.Stop(p)
	}
}
