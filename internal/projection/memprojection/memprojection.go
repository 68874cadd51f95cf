package memprojection

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/streams"
)

// eventsFilter matches the event log of every destination of every partition.
const eventsFilter = "fedsender.events.>"

// Projection is the read model. Its methods are safe for concurrent use.
type Projection struct {
	js  jetstream.JetStream
	log *slog.Logger

	mu      sync.RWMutex
	entries map[string]*entry
	// The initial read of the event log is done when the consumer reports
	// nothing pending, or when as many messages arrived as were pending at
	// its creation (a busy log may never report zero).
	eventsInitPending uint64 // pending at creation; 0 until known
	eventsInitKnown   bool
	eventsReceived    uint64
	eventsReady       bool
	offsetsReady      bool
}

// entry is what the projection knows of one destination.
type entry struct {
	state    destination.State // from its newest event (zero but the name if none)
	eventSeq uint64            // stream sequence of that event; 0: none
	offset   uint64            // the offsets bucket's value; 0: none
}

func (e *entry) merged() destination.State {
	s := e.state
	s.Offset = max(s.Offset, e.offset)
	return s
}

// Option changes a Projection.
type Option func(*Projection)

// WithLogger sets where skipped (malformed) events and keys are reported;
// the default discards them.
func WithLogger(log *slog.Logger) Option {
	return func(p *Projection) {
		if log != nil {
			p.log = log
		}
	}
}

// New returns a projection over the streams of js; Run fills it.
func New(js jetstream.JetStream, opts ...Option) *Projection {
	p := &Projection{js: js, log: slog.New(slog.DiscardHandler), entries: make(map[string]*entry)}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Ready reports whether the initial read of both the event log and the
// offsets bucket is done; it stays true afterwards.
func (p *Projection) Ready() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.eventsReady && p.offsetsReady
}

// Get returns a destination's state.
func (p *Projection) Get(name string) (destination.State, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e, ok := p.entries[name]
	if !ok {
		return destination.State{}, false
	}
	return e.merged(), true
}

// List returns every destination's state, in no particular order. The slice
// is the caller's.
func (p *Projection) List() []destination.State {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]destination.State, 0, len(p.entries))
	for _, e := range p.entries {
		out = append(out, e.merged())
	}
	return out
}

// Run reads the event log and the offsets bucket until ctx ends, then
// returns nil. It returns an error if it cannot start, or if either
// subscription ends while ctx is still live.
func (p *Projection) Run(ctx context.Context) error {
	kv, err := p.js.KeyValue(ctx, streams.OffsetBucket)
	if err != nil {
		return fmt.Errorf("memprojection: open %s: %w", streams.OffsetBucket, err)
	}
	// Deletes are watched too: a deleted offset must not linger here.
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("memprojection: watch %s: %w", streams.OffsetBucket, err)
	}
	defer w.Stop()

	cons, err := p.js.OrderedConsumer(ctx, streams.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{eventsFilter},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("memprojection: read %s: %w", streams.EventStream, err)
	}
	cc, err := cons.Consume(p.onEvent, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer recreates itself after these; only report.
		p.log.Debug("memprojection: event log consumer", "error", err)
	}))
	if err != nil {
		return fmt.Errorf("memprojection: read %s: %w", streams.EventStream, err)
	}
	defer cc.Stop()
	if info := cons.CachedInfo(); info != nil {
		p.setEventsInitPending(info.NumPending)
	}

	closed := cc.Closed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("memprojection: read %s: consumer stopped", streams.EventStream)
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("memprojection: watch %s: watcher stopped", streams.OffsetBucket)
			}
			p.onOffset(e)
		}
	}
}

func (p *Projection) setEventsInitPending(n uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.eventsInitPending, p.eventsInitKnown = n, true
	if p.eventsReceived >= n {
		p.eventsReady = true
	}
}

// onEvent applies one event of the log. It runs on the consumer's goroutine.
func (p *Projection) onEvent(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		p.log.Warn("memprojection: event without metadata", "subject", msg.Subject(), "error", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.eventsReceived++
	if md.NumPending == 0 || p.eventsInitKnown && p.eventsReceived >= p.eventsInitPending {
		p.eventsReady = true
	}

	name, err := streams.DestinationFromEventSubject(msg.Subject())
	if err != nil {
		p.log.Warn("memprojection: skipped event", "subject", msg.Subject(), "error", err)
		return
	}
	var ev destination.Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		p.log.Warn("memprojection: skipped event", "destination", name, "sequence", md.Sequence.Stream, "error", err)
		return
	}
	e := p.entry(name)
	if md.Sequence.Stream <= e.eventSeq {
		return // a redelivery after the consumer was recreated
	}
	// The subject names the destination: it is what the writer keyed on.
	ev.State.Destination = name
	e.state, e.eventSeq = ev.State, md.Sequence.Stream
}

// onOffset applies one update of the offsets bucket; nil marks the end of the
// initial values.
func (p *Projection) onOffset(kve jetstream.KeyValueEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if kve == nil {
		p.offsetsReady = true
		return
	}
	name, err := streams.DestinationFromOffsetKey(kve.Key())
	if err != nil {
		p.log.Warn("memprojection: skipped offset", "key", kve.Key(), "error", err)
		return
	}
	switch kve.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		e, ok := p.entries[name]
		if !ok {
			return
		}
		e.offset = 0
		if e.eventSeq == 0 {
			delete(p.entries, name)
		}
		return
	}
	off, err := strconv.ParseUint(string(kve.Value()), 10, 64)
	if err != nil {
		p.log.Warn("memprojection: skipped offset", "destination", name, "error", err)
		return
	}
	p.entry(name).offset = off
}

// entry returns a destination's entry, creating it. p.mu must be held.
func (p *Projection) entry(name string) *entry {
	e, ok := p.entries[name]
	if !ok {
		e = &entry{state: destination.State{Destination: name}}
		p.entries[name] = e
	}
	return e
}

// Page answers a query of the destinations list by sorting a copy of every
// state (projection.Select): fine for thousands of destinations; the admin
// surfaces use kvprojection's Index, which keeps the orders.
func (p *Projection) Page(q projection.Query) projection.Page {
	return projection.Select(p.List(), q)
}
