package kvprojection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/streams"
)

// recheckEvery is how often the Index checks that its bucket is still the
// one it watches, and a Projector that it still exists (an operator may
// delete it to rebuild it).
var recheckEvery = 5 * time.Second

// errRecreated ends a watch session whose bucket was deleted or recreated.
var errRecreated = errors.New("kvprojection: bucket deleted or recreated")

// Index is the in-memory index of the destinations bucket. Its methods are
// safe for concurrent use; Run fills it.
type Index struct {
	js  jetstream.JetStream
	log *slog.Logger

	mu    sync.RWMutex
	cur   *table // nil until the first initial load is done
	ready bool
	// generation counts the loads of the bucket: a projector compares
	// against the index, so after a new load it must look at everything
	// again.
	generation uint64
	// moved is closed (and replaced) whenever the revision moves, for Sync.
	moved chan struct{}
}

// NewIndex returns an index of streams.DestinationBucket in js.
func NewIndex(js jetstream.JetStream, log *slog.Logger) *Index {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Index{js: js, log: log, moved: make(chan struct{})}
}

// Ready reports whether the bucket's contents have been loaded once.
func (x *Index) Ready() bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.ready
}

// loads returns how many times the bucket was loaded.
func (x *Index) loads() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.generation
}

// Revision is the newest bucket revision the index has applied.
func (x *Index) Revision() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.cur == nil {
		return 0
	}
	return x.cur.rev
}

// Len is the number of destinations in the index.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.cur == nil {
		return 0
	}
	return len(x.cur.slot)
}

// EventSeq returns the event-log sequence of the newest event the index
// shows for a destination: 0 if none, or if the index does not have it.
func (x *Index) EventSeq(_ context.Context, name string) (uint64, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.cur == nil {
		return 0, nil
	}
	r, ok := x.cur.get(name)
	if !ok {
		return 0, nil
	}
	return r.doc.EventSequence, nil
}

// Sync returns once the index shows every write to the bucket that
// completed before it was called: it asks the bucket's stream (its leader)
// for its last sequence and waits for the index to reach that revision.
// Every replica's index follows the same bucket at its own pace; a read
// that syncs first shows whatever any replica saw written before it began.
func (x *Index) Sync(ctx context.Context) error {
	if !x.js.Conn().IsConnected() {
		// Fail now rather than when ctx ends: nothing can be confirmed.
		return fmt.Errorf("kvprojection: sync with %s: NATS is not connected (%s)", streams.DestinationBucket, x.js.Conn().Status())
	}
	s, err := x.js.Stream(ctx, "KV_"+streams.DestinationBucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // deleted for a rebuild: answer from the old contents meanwhile
	}
	if err != nil {
		return fmt.Errorf("kvprojection: sync with %s: %w", streams.DestinationBucket, err)
	}
	last := s.CachedInfo().State.LastSeq
	for {
		x.mu.RLock()
		reached, moved := x.cur != nil && x.cur.rev >= last, x.moved
		x.mu.RUnlock()
		if reached {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("kvprojection: sync with %s: the index is at revision %d, the bucket at %d: %w",
				streams.DestinationBucket, x.Revision(), last, ctx.Err())
		}
	}
}

// notify wakes the Syncs waiting for the revision to move. x.mu must be
// held for writing.
func (x *Index) notify() {
	close(x.moved)
	x.moved = make(chan struct{})
}

// Get returns a destination's state as shown.
func (x *Index) Get(name string) (destination.State, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.cur == nil {
		return destination.State{}, false
	}
	r, ok := x.cur.get(name)
	if !ok {
		return destination.State{}, false
	}
	return r.state(), true
}

// lookup returns what the bucket holds for name as far as the index knows:
// the document and its revision, or the revision of its delete marker.
func (x *Index) lookup(name string) (doc Document, rev uint64, exists bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.cur == nil {
		return Document{}, 0, false
	}
	if r, ok := x.cur.get(name); ok {
		return r.doc, r.rev, true
	}
	return Document{}, x.cur.tombs[name], false
}

// Page answers a query from the ordered list of its order and direction:
// O(log n + limit) without a search; with one, a scan of the names the
// first time a search is asked (then cached until a destination is added
// or removed) and a walk of the list until the page is full.
func (x *Index) Page(q projection.Query) projection.Page {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.cur == nil {
		return projection.Page{Destinations: []destination.State{}}
	}
	return x.cur.page(q)
}

// Run watches the bucket until ctx ends, then returns nil. If the bucket is
// deleted or recreated, it loads the new one (answering from the old
// contents until that is done). It returns an error if it cannot watch.
func (x *Index) Run(ctx context.Context) error {
	for {
		err := x.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errRecreated) {
			return err
		}
		x.log.Warn("kvprojection: bucket deleted or recreated; loading it again", "bucket", streams.DestinationBucket)
	}
}

// bucketCreated returns when the bucket's stream was created, and its last
// sequence.
func (x *Index) bucketCreated(ctx context.Context) (time.Time, uint64, error) {
	s, err := x.js.Stream(ctx, "KV_"+streams.DestinationBucket)
	if err != nil {
		return time.Time{}, 0, err
	}
	info := s.CachedInfo()
	return info.Created, info.State.LastSeq, nil
}

// session loads the bucket and follows it, until ctx ends, the watch
// breaks, or the bucket is replaced.
func (x *Index) session(ctx context.Context) error {
	kv, err := x.waitBucket(ctx)
	if err != nil {
		return err
	}
	created, last, err := x.bucketCreated(ctx)
	if err != nil {
		return fmt.Errorf("kvprojection: %s: %w", streams.DestinationBucket, err)
	}
	reconnected, unlisten := reconnections(x.js)
	defer unlisten()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.WatchAll(wctx)
	if err != nil {
		return fmt.Errorf("kvprojection: watch %s: %w", streams.DestinationBucket, err)
	}
	defer func() { w.Stop() }()

	t := newTable()
	loading := true
	check := time.NewTicker(recheckEvery)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-check.C:
			c, _, err := x.bucketCreated(ctx)
			if errors.Is(err, jetstream.ErrStreamNotFound) || err == nil && !c.Equal(created) {
				return errRecreated
			}
		case <-reconnected:
			if loading {
				continue // the old watch resumes by itself, later
			}
			// Go on from the next revision (see reconnections).
			if nw, err := kv.WatchAll(wctx, jetstream.ResumeFromRevision(t.rev+1)); err != nil {
				x.log.Warn("kvprojection: watching the bucket again after reconnecting", "error", err)
			} else {
				w.Stop()
				w = nw
			}
		case e, ok := <-w.Updates():
			if !ok {
				// A deleted bucket can end the watch; that is a rebuild.
				c, _, err := x.bucketCreated(ctx)
				if errors.Is(err, jetstream.ErrStreamNotFound) || err == nil && !c.Equal(created) {
					return errRecreated
				}
				return fmt.Errorf("kvprojection: watch %s: watcher stopped", streams.DestinationBucket)
			}
			if e == nil {
				if loading {
					loading = false
					t.buildLists()
					// The load holds everything up to the last sequence
					// read before the watch began, whether or not that
					// message is still there to be delivered.
					t.rev = max(t.rev, last)
					x.mu.Lock()
					x.cur, x.ready = t, true
					x.generation++
					x.notify()
					x.mu.Unlock()
				}
				continue
			}
			if loading {
				x.apply(t, e, false)
				continue
			}
			x.mu.Lock()
			x.apply(t, e, true)
			x.notify()
			x.mu.Unlock()
		}
	}
}

// waitBucket opens the bucket, waiting for it to exist (a projector creates
// it; an operator may have just deleted it).
func (x *Index) waitBucket(ctx context.Context) (jetstream.KeyValue, error) {
	for {
		kv, err := x.js.KeyValue(ctx, streams.DestinationBucket)
		if err == nil {
			return kv, nil
		}
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("kvprojection: open %s: %w", streams.DestinationBucket, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// apply folds one bucket entry into t.
func (x *Index) apply(t *table, e jetstream.KeyValueEntry, indexed bool) {
	t.rev = max(t.rev, e.Revision())
	name, err := streams.DestinationFromKey(e.Key())
	if err != nil {
		x.log.Warn("kvprojection: skipped a key that is not a destination token", "key", e.Key(), "error", err)
		return
	}
	switch e.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		t.remove(name, e.Revision(), indexed)
		return
	}
	doc, err := decodeDocument(name, e.Value())
	if err != nil {
		// Not shown; a projector's next reconcile overwrites it.
		x.log.Warn("kvprojection: skipped a document", "destination", name, "revision", e.Revision(), "error", err)
		t.remove(name, e.Revision(), indexed)
		return
	}
	t.put(&record{doc: doc, rev: e.Revision()}, indexed)
}
