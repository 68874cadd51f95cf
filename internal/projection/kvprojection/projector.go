package kvprojection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/streams"
)

// eventsFilter matches the event log of every destination of every partition.
const eventsFilter = "fedsender.events.>"

// writeChunk bounds the writes in flight at once, so a full rebuild does
// not fill the connection's async publish window other writers share.
const writeChunk = 1000

// ProjectorOptions configure a Projector.
type ProjectorOptions struct {
	JS jetstream.JetStream
	// Index is this replica's view of the bucket: the projector writes only
	// what it lacks, with its revisions for compare-and-swap. Required.
	Index *Index
	// FlushInterval is how long changes are coalesced before they are
	// written (default 250 ms; a change shows in the Index within about
	// that, well under the 1 s the admin surfaces promise).
	FlushInterval time.Duration
	// ReconcileInterval is how often every destination is compared with the
	// bucket, which repairs documents an operator edited or deleted
	// (default 1 min).
	ReconcileInterval time.Duration
	// Bucket is the configuration used to recreate a deleted bucket
	// (default streams.DestinationBucketConfig with one replica).
	Bucket jetstream.KeyValueConfig
	Log    *slog.Logger
}

func (o *ProjectorOptions) setDefaults() {
	if o.FlushInterval <= 0 {
		o.FlushInterval = 250 * time.Millisecond
	}
	if o.ReconcileInterval <= 0 {
		o.ReconcileInterval = time.Minute
	}
	if o.Bucket.Bucket == "" {
		o.Bucket = streams.DestinationBucketConfig(streams.Options{})
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// entry is what the projector knows of one destination.
type entry struct {
	state    destination.State // from its newest event (zero but the name if none)
	eventSeq uint64            // that event's sequence; 0: none
	offset   uint64            // the offsets bucket's value; 0: none
	// pending is the pending-EDU bucket's count, pendingRev its revision.
	pending, pendingRev uint64
}

func (e *entry) document() Document {
	s := e.state
	s.Offset = max(s.Offset, e.offset)
	d := documentOf(s, e.eventSeq)
	d.PendingEDUs, d.PendingEDUsRevision = e.pending, e.pendingRev
	return d
}

// Projector writes the destinations bucket from the event log and the
// offsets bucket. Its methods are safe for concurrent use; Run does the work.
type Projector struct {
	opts ProjectorOptions

	mu      sync.Mutex
	entries map[string]*entry
	dirty   map[string]struct{}
	// The initial read of the event log is done when the consumer reports
	// nothing pending, or when as many messages arrived as were pending at
	// its creation.
	eventsInitPending uint64
	eventsInitKnown   bool
	eventsReceived    uint64
	eventsReady       bool
	offsetsReady      bool
	synced            bool
	syncedRev         uint64
	indexLoads        uint64 // the Index generation compared against last
}

// NewProjector returns a projector; Run starts it.
func NewProjector(opts ProjectorOptions) *Projector {
	opts.setDefaults()
	return &Projector{opts: opts, entries: map[string]*entry{}, dirty: map[string]struct{}{}}
}

// Synced reports whether everything the projector read at start is in the
// bucket, and the bucket revision that contains it (0 if it wrote nothing).
// An Index whose Revision has reached it shows at least that state.
func (p *Projector) Synced() (bool, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.synced, p.syncedRev
}

// Run projects until ctx ends, then returns nil. It returns an error if it
// cannot start, or if a subscription ends while ctx is still live.
func (p *Projector) Run(ctx context.Context) error {
	err := p.run(ctx)
	if ctx.Err() != nil {
		return nil // ended while starting, or while running: either way, stopped
	}
	return err
}

func (p *Projector) run(ctx context.Context) error {
	if p.opts.Index == nil {
		return errors.New("kvprojection: projector without an Index")
	}
	js := p.opts.JS
	if _, err := js.CreateOrUpdateKeyValue(ctx, p.opts.Bucket); err != nil {
		return fmt.Errorf("kvprojection: ensure %s: %w", p.opts.Bucket.Bucket, err)
	}
	offsets, err := js.KeyValue(ctx, streams.OffsetBucket)
	if err != nil {
		return fmt.Errorf("kvprojection: open %s: %w", streams.OffsetBucket, err)
	}
	pending, err := js.KeyValue(ctx, streams.EDUPendingBucket)
	if err != nil {
		return fmt.Errorf("kvprojection: open %s: %w", streams.EDUPendingBucket, err)
	}
	reconnected, unlisten := reconnections(js)
	defer unlisten()
	w, err := offsets.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("kvprojection: watch %s: %w", streams.OffsetBucket, err)
	}
	defer func() { w.Stop() }()
	pw, err := pending.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("kvprojection: watch %s: %w", streams.EDUPendingBucket, err)
	}
	defer func() { pw.Stop() }()
	cons, err := js.OrderedConsumer(ctx, streams.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{eventsFilter},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("kvprojection: read %s: %w", streams.EventStream, err)
	}
	cc, err := cons.Consume(p.onEvent, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		p.opts.Log.Debug("kvprojection: event log consumer", "error", err)
	}))
	if err != nil {
		return fmt.Errorf("kvprojection: read %s: %w", streams.EventStream, err)
	}
	defer cc.Stop()
	if info := cons.CachedInfo(); info != nil {
		p.setEventsInitPending(info.NumPending)
	}

	flush := time.NewTicker(p.opts.FlushInterval)
	defer flush.Stop()
	reconcile := time.NewTicker(p.opts.ReconcileInterval)
	defer reconcile.Stop()
	check := time.NewTicker(recheckEvery)
	defer check.Stop()
	closed := cc.Closed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kvprojection: read %s: consumer stopped", streams.EventStream)
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("kvprojection: watch %s: watcher stopped", streams.OffsetBucket)
			}
			p.onOffset(e)
		case e, ok := <-pw.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("kvprojection: watch %s: watcher stopped", streams.EDUPendingBucket)
			}
			p.onPending(e)
		case <-reconnected:
			// Every offset again, then what changes (see reconnections).
			if nw, err := offsets.WatchAll(ctx); err != nil {
				p.opts.Log.Warn("kvprojection: watching offsets again after reconnecting", "error", err)
			} else {
				w.Stop()
				w = nw
			}
			if nw, err := pending.WatchAll(ctx, jetstream.IgnoreDeletes()); err != nil {
				p.opts.Log.Warn("kvprojection: watching pending EDUs again after reconnecting", "error", err)
			} else {
				pw.Stop()
				pw = nw
			}
		case <-reconcile.C:
			p.markAllDirty()
		case <-check.C:
			if err := p.checkBucket(ctx); err != nil && ctx.Err() == nil {
				p.opts.Log.Warn("kvprojection: checking the destinations bucket", "error", err)
			}
		case <-flush.C:
			if err := p.flush(ctx); err != nil && ctx.Err() == nil {
				p.opts.Log.Warn("kvprojection: writing the destinations bucket", "error", err)
			}
		}
	}
}

// checkBucket recreates the bucket if an operator deleted it, and writes
// every destination into it again.
func (p *Projector) checkBucket(ctx context.Context) error {
	_, err := p.opts.JS.Stream(ctx, "KV_"+p.opts.Bucket.Bucket)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	return p.recreate(ctx)
}

func (p *Projector) recreate(ctx context.Context) error {
	p.opts.Log.Warn("kvprojection: the destinations bucket is gone; recreating it from the event log",
		"bucket", p.opts.Bucket.Bucket)
	p.markAllDirty()
	if _, err := p.opts.JS.CreateOrUpdateKeyValue(ctx, p.opts.Bucket); err != nil {
		return fmt.Errorf("kvprojection: recreate %s: %w", p.opts.Bucket.Bucket, err)
	}
	return nil
}

func (p *Projector) setEventsInitPending(n uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.eventsInitPending, p.eventsInitKnown = n, true
	if p.eventsReceived >= n {
		p.eventsReady = true
	}
}

// onEvent applies one event of the log, on the consumer's goroutine.
func (p *Projector) onEvent(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		p.opts.Log.Warn("kvprojection: event without metadata", "subject", msg.Subject(), "error", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.eventsReceived++
	if md.NumPending == 0 || p.eventsInitKnown && p.eventsReceived >= p.eventsInitPending {
		p.eventsReady = true
	}
	ev, err := eventlog.DecodeEvent(msg.Subject(), msg.Data())
	if err != nil {
		p.opts.Log.Warn("kvprojection: skipped event", "subject", msg.Subject(), "sequence", md.Sequence.Stream, "error", err)
		return
	}
	name := ev.State.Destination
	e := p.entry(name)
	if md.Sequence.Stream <= e.eventSeq {
		return // a redelivery after the consumer was recreated
	}
	e.state, e.eventSeq = ev.State, md.Sequence.Stream
	p.dirty[name] = struct{}{}
}

// onOffset applies one update of the offsets bucket; nil marks the end of
// its initial values.
func (p *Projector) onOffset(kve jetstream.KeyValueEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if kve == nil {
		p.offsetsReady = true
		return
	}
	name, err := streams.DestinationFromOffsetKey(kve.Key())
	if err != nil {
		p.opts.Log.Warn("kvprojection: skipped offset", "key", kve.Key(), "error", err)
		return
	}
	switch kve.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		if e, ok := p.entries[name]; ok {
			e.offset = 0
			if e.eventSeq == 0 {
				delete(p.entries, name)
			}
			p.dirty[name] = struct{}{}
		}
		return
	}
	off, err := strconv.ParseUint(string(kve.Value()), 10, 64)
	if err != nil {
		p.opts.Log.Warn("kvprojection: skipped offset", "destination", name, "error", err)
		return
	}
	p.entry(name).offset = off
	p.dirty[name] = struct{}{}
}

// onPending applies one update of the pending-EDU bucket (nil: the end of
// its initial values).
func (p *Projector) onPending(kve jetstream.KeyValueEntry) {
	if kve == nil {
		return
	}
	name, err := streams.DestinationFromOffsetKey(kve.Key())
	if err != nil {
		p.opts.Log.Warn("kvprojection: skipped pending EDU count", "key", kve.Key(), "error", err)
		return
	}
	n, err := strconv.ParseUint(string(kve.Value()), 10, 64)
	if err != nil {
		p.opts.Log.Warn("kvprojection: skipped pending EDU count", "destination", name, "error", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[name]
	if !ok && n == 0 {
		return
	}
	if !ok {
		e = p.entry(name)
	}
	if kve.Revision() > e.pendingRev {
		e.pending, e.pendingRev = n, kve.Revision()
		p.dirty[name] = struct{}{}
	}
}

// entry returns a destination's entry, creating it. p.mu must be held.
func (p *Projector) entry(name string) *entry {
	e, ok := p.entries[name]
	if !ok {
		e = &entry{state: destination.State{Destination: name}}
		p.entries[name] = e
	}
	return e
}

func (p *Projector) markAllDirty() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name := range p.entries {
		p.dirty[name] = struct{}{}
	}
}

// change is one pending write: the document, or nil for a deletion.
type change struct {
	name string
	doc  *Document
}

// takeDirty returns the pending changes once the initial reads are done.
func (p *Projector) takeDirty() ([]change, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.eventsReady || !p.offsetsReady {
		return nil, false
	}
	out := make([]change, 0, len(p.dirty))
	for name := range p.dirty {
		c := change{name: name}
		if e, ok := p.entries[name]; ok {
			d := e.document()
			c.doc = &d
		}
		out = append(out, c)
	}
	clear(p.dirty)
	return out, true
}

func (p *Projector) redirty(names []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range names {
		p.dirty[n] = struct{}{}
	}
}

// flush writes what the bucket lacks, compare-and-swap on each key's
// revision as the Index knows it. A conflict (another writer, or an Index
// behind the bucket) leaves the destination dirty for the next flush, which
// merges with whatever won.
func (p *Projector) flush(ctx context.Context) error {
	if !p.opts.Index.Ready() {
		return nil
	}
	if n := p.opts.Index.loads(); n != p.indexLoads {
		// A new load of the bucket (a rebuild): compare everything again.
		p.indexLoads = n
		p.markAllDirty()
	}
	changes, loaded := p.takeDirty()
	if !loaded {
		return nil
	}
	var (
		retry    []string
		lastRev  uint64
		noBucket bool
		firstErr error
	)
	for len(changes) > 0 {
		n := min(writeChunk, len(changes))
		r, rev, missing, err := p.write(ctx, changes[:n])
		changes = changes[n:]
		retry, lastRev = append(retry, r...), max(lastRev, rev)
		noBucket = noBucket || missing
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			retry = append(retry, names(changes)...)
			break
		}
	}
	p.redirty(retry)
	if noBucket {
		if err := p.recreate(ctx); err != nil {
			firstErr = errors.Join(firstErr, err)
		}
	}
	p.mu.Lock()
	if !p.synced && len(retry) == 0 && !noBucket {
		p.synced, p.syncedRev = true, lastRev
	}
	p.mu.Unlock()
	return firstErr
}

func names(cs []change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.name
	}
	return out
}

// write publishes one chunk of changes and waits for their acks. It returns
// the names to retry, the newest revision written, and whether the bucket
// is missing.
func (p *Projector) write(ctx context.Context, cs []change) (retry []string, lastRev uint64, noBucket bool, err error) {
	type pending struct {
		name string
		f    jetstream.PubAckFuture
	}
	var waits []pending
	for _, c := range cs {
		msg, rev, ok := p.message(c)
		if !ok {
			continue // the bucket already shows it
		}
		f, perr := p.opts.JS.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(rev))
		if perr != nil {
			retry = append(retry, c.name)
			err = cmpErr(err, perr)
			continue
		}
		waits = append(waits, pending{c.name, f})
	}
	for i, w := range waits {
		select {
		case ack := <-w.f.Ok():
			lastRev = max(lastRev, ack.Sequence)
		case werr := <-w.f.Err():
			retry = append(retry, w.name)
			var apiErr *jetstream.APIError
			switch {
			case errors.Is(werr, jetstream.ErrNoStreamResponse), errors.Is(werr, nats.ErrNoResponders):
				noBucket = true
			case errors.As(werr, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
				apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
				// Another writer first, or the Index is behind: next flush.
			default:
				err = cmpErr(err, werr)
			}
		case <-ctx.Done():
			for _, rest := range waits[i:] {
				retry = append(retry, rest.name)
			}
			return retry, lastRev, noBucket, ctx.Err()
		}
	}
	return retry, lastRev, noBucket, err
}

func cmpErr(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

// message builds the write of a change over what the Index shows, with the
// revision to compare against; ok is false when nothing needs writing.
func (p *Projector) message(c change) (msg *nats.Msg, rev uint64, ok bool) {
	cur, rev, exists := p.opts.Index.lookup(c.name)
	msg = nats.NewMsg("$KV." + p.opts.Bucket.Bucket + "." + streams.DestinationKey(c.name))
	if c.doc == nil {
		if !exists {
			return nil, 0, false
		}
		msg.Header.Set("KV-Operation", "DEL")
		return msg, rev, true
	}
	want := *c.doc
	if exists {
		want = merge(cur, want)
		if want.equal(cur) {
			return nil, 0, false
		}
	}
	data, err := json.Marshal(want)
	if err != nil { // a plain struct: cannot happen
		p.opts.Log.Error("kvprojection: encode document", "destination", c.name, "error", err)
		return nil, 0, false
	}
	msg.Data = data
	return msg, rev, true
}
