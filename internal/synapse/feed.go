package synapse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/synapse/replication"
	"github.com/fedsender/fedsender/streams"
)

// LeaseKey is the lease the active feed holds: one replica feeds at a
// time.
const LeaseKey = "synapse-feed"

// PositionRecorder is implemented by sources that also record their
// position in Synapse's own tables (the events source writes
// federation_stream_position, as Synapse's sender does). Saved is called
// after the position is saved in fedsender's bucket.
type PositionRecorder interface {
	Saved(ctx context.Context, position int64) error
}

// WriterObserver is implemented by sources that track how far each of
// Synapse's writers has persisted a stream (the events source, whose safe
// position is the minimum over the event writers): ObserveWriter is called
// for every RDATA row and POSITION command of the source's Streams.
type WriterObserver interface {
	ObserveWriter(stream, instance string, token int64)
}

// Observer consumes replication rows without a position of its own (the
// "server is up" signal from the caches stream).
type Observer interface {
	Streams() []string
	RowObserver
}

// FeedOptions configure a Feed.
type FeedOptions struct {
	JS      jetstream.JetStream
	Sources []Source
	// Observers are given the rows of their streams while this feed is
	// the active one.
	Observers []Observer
	// Holder names this replica in the lease.
	Holder string
	// PollInterval is how often sources are read while replication is
	// down (and ten times as long while it is up, a safety net for missed
	// rows).
	PollInterval time.Duration
	// Lease sizes the lease (zero: internal/lease's defaults).
	Lease lease.Options
	Log   *slog.Logger
}

// Feed runs the sources: it reads each forward when Synapse's replication
// says its streams moved (or on a timer), publishes the messages, and
// saves the position once JetStream acknowledged every one. Only the
// replica holding the lease LeaseKey feeds.
type Feed struct {
	opts    FeedOptions
	wakes   map[string]chan struct{} // per source
	up      atomic.Bool              // replication subscribed
	active  atomic.Bool              // holding the lease
	mu      sync.Mutex
	lastErr map[string]error // per source, the last read or publish failure
}

// NewFeed returns a feed; Run starts it.
func NewFeed(o FeedOptions) *Feed {
	if o.PollInterval == 0 {
		o.PollInterval = time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	f := &Feed{opts: o, wakes: map[string]chan struct{}{}, lastErr: map[string]error{}}
	for _, s := range o.Sources {
		f.wakes[s.Name()] = make(chan struct{}, 1)
	}
	return f
}

// OnRow is replication.Options.OnRow: it wakes the sources of the row's
// stream and hands the row to those that observe rows.
func (f *Feed) OnRow(r replication.Row) {
	for _, s := range f.opts.Sources {
		if !slices.Contains(s.Streams(), r.Stream) {
			continue
		}
		if w, ok := s.(WriterObserver); ok {
			w.ObserveWriter(r.Stream, r.Instance, r.Token)
		}
		if o, ok := s.(RowObserver); ok {
			o.Observe(r.Stream, r.Token, r.Data)
		}
		f.wake(s.Name())
	}
	if !f.active.Load() {
		return
	}
	for _, o := range f.opts.Observers {
		if slices.Contains(o.Streams(), r.Stream) {
			o.Observe(r.Stream, r.Token, r.Data)
		}
	}
}

// OnPosition is replication.Options.OnPosition.
func (f *Feed) OnPosition(p replication.Position) {
	for _, s := range f.opts.Sources {
		if w, ok := s.(WriterObserver); ok && slices.Contains(s.Streams(), p.Stream) {
			w.ObserveWriter(p.Stream, p.Instance, p.New)
			f.wake(s.Name())
		}
	}
}

// OnState is replication.Options.OnState. Coming up wakes every source:
// rows may have been missed while replication was down.
func (f *Feed) OnState(up bool) {
	f.up.Store(up)
	if up {
		for name := range f.wakes {
			f.wake(name)
		}
	}
}

// Polling reports whether the feed reads Synapse's database on a timer
// because replication is down (or not configured).
func (f *Feed) Polling() bool { return !f.up.Load() }

// Active reports whether this replica holds the feed's lease.
func (f *Feed) Active() bool { return f.active.Load() }

func (f *Feed) wake(name string) {
	select {
	case f.wakes[name] <- struct{}{}:
	default:
	}
}

// Run feeds while it holds the lease, and waits for it otherwise, until
// ctx ends.
func (f *Feed) Run(ctx context.Context) error {
	lopts := f.opts.Lease
	lopts.Logger = f.opts.Log
	for ctx.Err() == nil {
		l, err := lease.Acquire(ctx, f.opts.JS, LeaseKey, f.opts.Holder, lopts)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("synapse feed: lease: %w", err)
		}
		f.opts.Log.Info("synapse feed: active", "holder", f.opts.Holder)
		f.active.Store(true)
		err = f.runSources(l)
		f.active.Store(false)
		if rerr := l.Release(context.WithoutCancel(ctx)); rerr != nil {
			f.opts.Log.Warn("synapse feed: release lease", "error", rerr)
		}
		if ctx.Err() != nil {
			return nil
		}
		f.opts.Log.Warn("synapse feed: no longer active; waiting for the lease", "error", err)
	}
	return nil
}

// runSources runs every source under l until the lease ends or a source
// finds its position moved by another feed.
func (f *Feed) runSources(l *lease.Lease) error {
	ctx, cancel := context.WithCancelCause(l.Context())
	defer cancel(nil)
	kv, err := f.opts.JS.KeyValue(ctx, streams.SynapsePositionBucket)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", streams.SynapsePositionBucket, err)
	}
	var wg sync.WaitGroup
	for _, s := range f.opts.Sources {
		wg.Go(func() {
			if err := f.runSource(ctx, l, kv, s); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	// Sources return when ctx ends or one failed; observers need the lease
	// held even without sources.
	<-ctx.Done()
	return context.Cause(ctx)
}

// errNotHolder stops a source whose lease is no longer valid.
var errNotHolder = errors.New("synapse feed: the lease is no longer valid")

// runSource reads, publishes and saves one source's work until ctx ends.
// A failure to read or publish is retried from the saved position (a
// replay is dropped by JetStream's duplicate window); a position another
// feed wrote ends the run.
func (f *Feed) runSource(ctx context.Context, l *lease.Lease, kv jetstream.KeyValue, s Source) error {
	pos, rev, err := f.loadPosition(ctx, kv, s)
	for err != nil {
		if ctx.Err() != nil {
			return nil
		}
		f.failed(s.Name(), "start", err)
		if !f.sleep(ctx, s.Name(), f.opts.PollInterval) {
			return nil
		}
		pos, rev, err = f.loadPosition(ctx, kv, s)
	}
	f.opts.Log.Info("synapse feed: source started", "source", s.Name(), "position", pos)
	for ctx.Err() == nil {
		b, err := s.Next(ctx, pos)
		if err == nil && len(b.Messages) > 0 {
			if !l.Valid() {
				return errNotHolder
			}
			err = publishAll(ctx, f.opts.JS, b)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			f.failed(s.Name(), "read and publish", err)
			if !f.sleep(ctx, s.Name(), f.opts.PollInterval) {
				return nil
			}
			continue
		}
		f.clearFailure(s.Name())
		if b.Position != pos {
			if !l.Valid() {
				return errNotHolder
			}
			if rev, err = savePosition(ctx, kv, s.Name(), b.Position, rev); err != nil {
				return err
			}
			pos = b.Position
			if r, ok := s.(PositionRecorder); ok {
				if err := r.Saved(ctx, pos); err != nil && ctx.Err() == nil {
					f.opts.Log.Warn("synapse feed: record position in Synapse's database", "source", s.Name(), "error", err)
				}
			}
		}
		if b.More {
			continue
		}
		wait := f.opts.PollInterval
		if !f.Polling() {
			wait *= 10
		}
		if !f.sleep(ctx, s.Name(), wait) {
			return nil
		}
	}
	return nil
}

// sleep waits for d, a wake-up of the source, or the end of ctx (false).
func (f *Feed) sleep(ctx context.Context, name string, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-f.wakes[name]:
	case <-t.C:
	}
	return true
}

func (f *Feed) failed(name, what string, err error) {
	f.mu.Lock()
	f.lastErr[name] = err
	f.mu.Unlock()
	f.opts.Log.Warn("synapse feed: "+what+" failed; retrying", "source", name, "error", err)
}

func (f *Feed) clearFailure(name string) {
	f.mu.Lock()
	delete(f.lastErr, name)
	f.mu.Unlock()
}

// Failing returns the sources whose last read or publish failed, with the
// error.
func (f *Feed) Failing() map[string]error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.lastErr)
}

// loadPosition returns the saved position of s and its revision, or the
// source's start with revision 0 when none was saved.
func (f *Feed) loadPosition(ctx context.Context, kv jetstream.KeyValue, s Source) (int64, uint64, error) {
	e, err := kv.Get(ctx, s.Name())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		pos, err := s.Start(ctx)
		return pos, 0, err
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read position: %w", err)
	}
	pos, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("position %s in %s is %q: %w", s.Name(), streams.SynapsePositionBucket, e.Value(), err)
	}
	return pos, e.Revision(), nil
}

// savePosition writes pos with compare-and-swap on rev (0: the key must
// not exist), so two feeds never both move a position.
func savePosition(ctx context.Context, kv jetstream.KeyValue, name string, pos int64, rev uint64) (uint64, error) {
	v := []byte(strconv.FormatInt(pos, 10))
	var err error
	if rev == 0 {
		rev, err = kv.Create(ctx, name, v)
	} else {
		rev, err = kv.Update(ctx, name, v, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("save position %s=%d: %w", name, pos, err)
	}
	return rev, nil
}

// publishAll publishes the batch's messages and returns once JetStream
// acknowledged every one (a duplicate counts: it was published before).
func publishAll(ctx context.Context, js jetstream.JetStream, b Batch) error {
	futures := make([]jetstream.PubAckFuture, 0, len(b.Messages))
	for _, m := range b.Messages {
		fut, err := js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		futures = append(futures, fut)
	}
	for _, fut := range futures {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			return fmt.Errorf("publish: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
