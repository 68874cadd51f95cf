package partition

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/anthdm/hollywood/actor"
	"github.com/nats-io/nats.go/jetstream"

	dstate "github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/telemetry"
)

// Store is what the writer needs of the event log: compare-and-swap
// writes, and the reads that tell after a conflict what the key holds.
type Store interface {
	AppendAsync(partition int, ev dstate.Event, expected uint64) (jetstream.PubAckFuture, error)
	PutOffset(ctx context.Context, partition int, dest string, offset, rev uint64) (uint64, error)
	PutEDUOffset(ctx context.Context, partition int, dest string, offset, rev uint64) (uint64, error)
	PutWatermark(ctx context.Context, partition int, w eventlog.Watermark, rev uint64) (uint64, error)
	LastEvent(ctx context.Context, partition int, dest string) (dstate.Event, uint64, error)
	Offset(ctx context.Context, partition int, dest string) (uint64, uint64, error)
	EDUOffset(ctx context.Context, partition int, dest string) (uint64, uint64, error)
	LoadWatermark(ctx context.Context, partition int) (eventlog.Watermark, uint64, error)
}

// writer persists a partition's events, offsets and watermark in order,
// off the supervisor's goroutine: events first (with compare-and-swap on each
// destination's log), then offsets, then the watermark, so the watermark
// never gets ahead of the events it depends on.
type writer struct {
	partition int
	store     Store
	log       *slog.Logger
	metrics   *telemetry.Metrics
	engine    *actor.Engine
	super     *actor.PID

	mu         sync.Mutex
	events     []dstate.Event
	offsets    map[string]uint64
	eduOffsets map[string]uint64
	wm         *eventlog.Watermark
	signal     chan struct{}
	// flushed are called once everything handed over before them is
	// stored.
	flushed []func()

	// Each key's revision, and what was tried since (see casKey).
	eventLogs     map[string]*casKey[dstate.Event]
	offsetKeys    map[string]*casKey[uint64]
	eduOffsetKeys map[string]*casKey[uint64]
	wmKey         casKey[eventlog.Watermark]
}

// persisted tells the supervisor which events are durable; through is,
// for each of their destinations, the event-log sequence of its newest
// durable event.
type persisted struct {
	events  []dstate.Event
	through map[string]uint64
}

func newWriter(s *Supervisor, loaded map[string]*eventlog.Loaded, wmRev uint64) *writer {
	w := &writer{
		partition: s.id, store: s.cfg.Store, log: s.log, metrics: s.cfg.Destination.Metrics,
		offsets: map[string]uint64{}, eduOffsets: map[string]uint64{},
		signal:    make(chan struct{}, 1),
		eventLogs: map[string]*casKey[dstate.Event]{}, offsetKeys: map[string]*casKey[uint64]{},
		eduOffsetKeys: map[string]*casKey[uint64]{},
		wmKey:         casKey[eventlog.Watermark]{rev: wmRev},
	}
	for name, l := range loaded {
		w.eventLogs[name] = &casKey[dstate.Event]{rev: l.EventSeq}
		w.offsetKeys[name] = &casKey[uint64]{rev: l.OffsetRev}
		w.eduOffsetKeys[name] = &casKey[uint64]{rev: l.EDUOffsetRev}
	}
	return w
}

func (w *writer) kick() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *writer) appendEvent(ev dstate.Event) {
	w.mu.Lock()
	w.events = append(w.events, ev)
	w.mu.Unlock()
	w.kick()
}

func (w *writer) putOffset(dest string, offset uint64) {
	w.mu.Lock()
	w.offsets[dest] = max(w.offsets[dest], offset)
	w.mu.Unlock()
	w.kick()
}

func (w *writer) putEDUOffset(dest string, offset uint64) {
	w.mu.Lock()
	w.eduOffsets[dest] = max(w.eduOffsets[dest], offset)
	w.mu.Unlock()
	w.kick()
}

func (w *writer) putWatermark(wm eventlog.Watermark) {
	w.mu.Lock()
	w.wm = &wm
	w.mu.Unlock()
	w.kick()
}

// flush has done called (on the writer's goroutine) once everything handed
// to the writer so far is stored.
func (w *writer) flush(done func()) {
	w.mu.Lock()
	w.flushed = append(w.flushed, done)
	w.mu.Unlock()
	w.kick()
}

// takeFlushed returns the flush callbacks to call when nothing waits to
// be written.
func (w *writer) takeFlushed() []func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.events) > 0 || len(w.offsets) > 0 || len(w.eduOffsets) > 0 || w.wm != nil {
		return nil
	}
	f := w.flushed
	w.flushed = nil
	return f
}

func (w *writer) run(ctx context.Context) {
	retry := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.signal:
		case <-after(retry):
		}
		w.mu.Lock()
		events, offsets, eduOffsets, wm := w.events, w.offsets, w.eduOffsets, w.wm
		w.events, w.offsets, w.eduOffsets, w.wm = nil, map[string]uint64{}, map[string]uint64{}, nil
		w.mu.Unlock()

		done, failedEvents := w.writeEvents(ctx, events)
		if len(done) > 0 {
			w.engine.Send(w.super, persisted{events: done, through: w.sequences(done)})
		}
		failedOffsets, failedEDUOffsets := map[string]uint64{}, map[string]uint64{}
		if len(failedEvents) == 0 {
			for dest, off := range offsets {
				if err := w.writeOffset(ctx, dest, off); err != nil && w.fail(ctx, telemetry.CASOffset, dest, err) {
					failedOffsets[dest] = off
				}
			}
			for dest, off := range eduOffsets {
				if err := w.writeEDUOffset(ctx, dest, off); err != nil && w.fail(ctx, telemetry.CASEDUOffset, dest, err) {
					failedEDUOffsets[dest] = off
				}
			}
		} else {
			failedOffsets, failedEDUOffsets = offsets, eduOffsets
		}
		// The watermark waits for everything before it.
		if wm != nil && len(failedEvents) == 0 && len(failedOffsets) == 0 && len(failedEDUOffsets) == 0 {
			if err := w.writeWatermark(ctx, *wm); err == nil || !w.fail(ctx, telemetry.CASWatermark, "", err) {
				wm = nil
			}
		}
		if len(failedEvents) == 0 && len(failedOffsets) == 0 && len(failedEDUOffsets) == 0 && wm == nil {
			retry = 0
			for _, done := range w.takeFlushed() {
				done()
			}
			continue
		}
		// Put back what failed, in front of anything newer, and try again.
		w.mu.Lock()
		w.events = append(failedEvents, w.events...)
		for dest, off := range failedOffsets {
			w.offsets[dest] = max(w.offsets[dest], off)
		}
		for dest, off := range failedEDUOffsets {
			w.eduOffsets[dest] = max(w.eduOffsets[dest], off)
		}
		if wm != nil && w.wm == nil {
			w.wm = wm
		}
		w.mu.Unlock()
		retry = min(max(2*retry, 100*time.Millisecond), 5*time.Second)
	}
}

// after returns a channel that fires after d, or never when d is 0.
func after(d time.Duration) <-chan time.Time {
	if d == 0 {
		return nil
	}
	return time.After(d)
}

// writeEvents publishes the events, pipelined across destinations and in
// order within one (a destination's next event waits for the previous ack).
// It returns the events written, and those to try again: a destination's
// failed event and every later event of that destination.
func (w *writer) writeEvents(ctx context.Context, events []dstate.Event) (done, failed []dstate.Event) {
	blocked := map[string]bool{}
	for len(events) > 0 {
		seen := map[string]bool{}
		var rest []dstate.Event
		type pending struct {
			ev dstate.Event
			f  jetstream.PubAckFuture
		}
		var round []pending
		for _, ev := range events {
			name := ev.State.Destination
			switch {
			case blocked[name]:
				failed = append(failed, ev)
				continue
			case seen[name]:
				rest = append(rest, ev)
				continue
			}
			seen[name] = true
			f, err := w.store.AppendAsync(w.partition, ev, keyOf(w.eventLogs, name).try(ev))
			if err != nil {
				if w.fail(ctx, telemetry.CASEvent, name, err) {
					blocked[name] = true
					failed = append(failed, ev)
				}
				continue
			}
			round = append(round, pending{ev, f})
		}
		for _, p := range round {
			name := p.ev.State.Destination
			if err := w.ackEvent(ctx, p.ev, p.f); err != nil {
				if w.fail(ctx, telemetry.CASEvent, name, err) {
					blocked[name] = true
					failed = append(failed, p.ev)
				}
				continue
			}
			done = append(done, p.ev)
		}
		events = rest
	}
	return done, failed
}

// fail logs a write that failed and reports whether to try it again: not
// after a conflict with another writer (it owns the log now) nor when
// stopping. Conflicts with this writer's own earlier writes never get here
// (see casKey).
func (w *writer) fail(ctx context.Context, what, dest string, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, eventlog.ErrConflict) {
		w.log.Error("another replica wrote this partition: is a second fedsender using the same streams?",
			"partition", w.partition, "what", what, "destination", dest, "error", err)
		return false
	}
	w.log.Warn("could not persist; will retry", "partition", w.partition, "what", what, "destination", dest, "error", err)
	return true
}

// sequences returns the event-log sequence of the newest durable event of
// each destination of events.
func (w *writer) sequences(events []dstate.Event) map[string]uint64 {
	out := make(map[string]uint64, len(events))
	for _, ev := range events {
		out[ev.State.Destination] = keyOf(w.eventLogs, ev.State.Destination).rev
	}
	return out
}
