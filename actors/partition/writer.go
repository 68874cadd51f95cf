package partition

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/anthdm/hollywood/actor"
	"github.com/nats-io/nats.go/jetstream"

	dstate "github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
)

// Store is what the writer needs of the event log.
type Store interface {
	AppendAsync(partition int, ev dstate.Event, expected uint64) (jetstream.PubAckFuture, error)
	PutOffset(ctx context.Context, partition int, dest string, offset, rev uint64) (uint64, error)
	PutWatermark(ctx context.Context, partition int, w eventlog.Watermark, rev uint64) (uint64, error)
}

// writer persists a partition's events, offsets and watermark in order,
// off the supervisor's goroutine: events first (with compare-and-swap on each
// destination's log), then offsets, then the watermark, so the watermark
// never gets ahead of the events it depends on.
type writer struct {
	partition int
	store     Store
	log       *slog.Logger
	engine    *actor.Engine
	super     *actor.PID

	mu      sync.Mutex
	events  []dstate.Event
	offsets map[string]uint64
	wm      *eventlog.Watermark
	signal  chan struct{}

	eventSeq  map[string]uint64
	offsetRev map[string]uint64
	wmRev     uint64
}

// persisted tells the supervisor which events are durable.
type persisted struct {
	events []dstate.Event
}

func newWriter(partition int, store Store, log *slog.Logger, loaded map[string]*eventlog.Loaded, wmRev uint64) *writer {
	w := &writer{
		partition: partition, store: store, log: log,
		offsets:  map[string]uint64{},
		signal:   make(chan struct{}, 1),
		eventSeq: map[string]uint64{}, offsetRev: map[string]uint64{}, wmRev: wmRev,
	}
	for name, l := range loaded {
		w.eventSeq[name] = l.EventSeq
		w.offsetRev[name] = l.OffsetRev
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

func (w *writer) putWatermark(wm eventlog.Watermark) {
	w.mu.Lock()
	w.wm = &wm
	w.mu.Unlock()
	w.kick()
}

func (w *writer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.signal:
		}
		w.mu.Lock()
		events, offsets, wm := w.events, w.offsets, w.wm
		w.events, w.offsets, w.wm = nil, map[string]uint64{}, nil
		w.mu.Unlock()
		if len(events) > 0 {
			w.writeEvents(ctx, events)
			w.engine.Send(w.super, persisted{events: events})
		}
		for dest, off := range offsets {
			rev, err := w.store.PutOffset(ctx, w.partition, dest, off, w.offsetRev[dest])
			if err != nil {
				w.fail(ctx, "offset", dest, err)
				continue
			}
			w.offsetRev[dest] = rev
		}
		if wm != nil {
			rev, err := w.store.PutWatermark(ctx, w.partition, *wm, w.wmRev)
			if err != nil {
				w.fail(ctx, "watermark", "", err)
				continue
			}
			w.wmRev = rev
		}
	}
}

// writeEvents publishes the events, pipelined across destinations and in
// order within one (a destination's next event waits for the previous ack).
func (w *writer) writeEvents(ctx context.Context, events []dstate.Event) {
	for len(events) > 0 {
		seen := map[string]bool{}
		var rest []dstate.Event
		type pending struct {
			name string
			f    jetstream.PubAckFuture
		}
		var round []pending
		for _, ev := range events {
			name := ev.State.Destination
			if seen[name] {
				rest = append(rest, ev)
				continue
			}
			seen[name] = true
			f, err := w.store.AppendAsync(w.partition, ev, w.eventSeq[name])
			if err != nil {
				w.fail(ctx, "event", name, err)
				continue
			}
			round = append(round, pending{name, f})
		}
		for _, p := range round {
			seq, err := eventlog.AckResult(ctx, p.f)
			if err != nil {
				w.fail(ctx, "event", p.name, err)
				continue
			}
			w.eventSeq[p.name] = seq
		}
		events = rest
	}
}

func (w *writer) fail(ctx context.Context, what, dest string, err error) {
	if ctx.Err() != nil {
		return
	}
	if errors.Is(err, eventlog.ErrConflict) {
		w.log.Error("another replica wrote this partition: is a second fedsender using the same streams?",
			"partition", w.partition, "what", what, "destination", dest, "error", err)
		return
	}
	w.log.Error("could not persist", "partition", w.partition, "what", what, "destination", dest, "error", err)
}
