package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/streams"
)

// Bucket is the KV bucket that holds every lease (created with the other
// buckets by streams.Ensure).
const Bucket = streams.LeaseBucket

// ErrHeld is returned by TryAcquire when another holder has the lease.
var ErrHeld = errors.New("lease: held by another holder")

// ErrLost is the cause of a lease's context when it was lost.
var ErrLost = errors.New("lease: lost")

// Options size a lease.
type Options struct {
	// TTL is how long the key lives on the server after its last renewal
	// (default 6 s; whole seconds, rounded up).
	TTL time.Duration
	// Margin is how long before the TTL's end the holder stops acting
	// (default TTL/6, at least 200 ms).
	Margin time.Duration
	// Logger reports a lost lease (default slog.Default()).
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.TTL == 0 {
		o.TTL = 6 * time.Second
	}
	// The server keeps per-key TTLs in whole seconds, truncating: round up
	// so that the key never lives shorter than the holder believes.
	if r := o.TTL % time.Second; r != 0 {
		o.TTL += time.Second - r
	}
	if o.Margin == 0 {
		o.Margin = max(o.TTL/6, 200*time.Millisecond)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Record is the JSON value of a lease key. It is informational (operators
// read it with `nats kv get fedsender-leases <key>`): ownership is decided
// by the key's existence and revision, not by these times.
type Record struct {
	Holder  string    `json:"holder"`
	Since   time.Time `json:"since"`
	Renewed time.Time `json:"renewed"`
}

// Lease is a held lease. Its context ends when the lease is lost or
// released.
type Lease struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	key    string
	holder string
	opts   Options
	since  time.Time

	mu       sync.Mutex
	rev      uint64
	deadline time.Time // local monotonic: act only before it

	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// Holder returns the record of the lease key, and false when nobody holds
// it.
func Holder(ctx context.Context, kv jetstream.KeyValue, key string) (Record, bool, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("lease: read %s: %w", key, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Record{}, false, fmt.Errorf("lease: read %s: %w", key, err)
	}
	return r, true, nil
}

// TryAcquire takes the lease key for holder if nobody holds it, and keeps
// it renewed until ctx ends, Release is called, or a renewal fails for
// longer than the lease can last. It returns ErrHeld (wrapped, naming the
// holder) when the key exists.
func TryAcquire(ctx context.Context, js jetstream.JetStream, key, holder string, o Options) (*Lease, error) {
	o.setDefaults()
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("lease: bucket %s: %w", Bucket, err)
	}
	now := time.Now()
	value, err := json.Marshal(Record{Holder: holder, Since: now.UTC(), Renewed: now.UTC()})
	if err != nil {
		return nil, err
	}
	sent := time.Now()
	rev, err := kv.Create(ctx, key, value, jetstream.KeyTTL(o.TTL))
	if errors.Is(err, jetstream.ErrKeyExists) {
		r, ok, herr := Holder(ctx, kv, key)
		if herr == nil && ok {
			return nil, fmt.Errorf("%w: %s holds %s", ErrHeld, r.Holder, key)
		}
		return nil, fmt.Errorf("%w: %s", ErrHeld, key)
	}
	if err != nil {
		return nil, fmt.Errorf("lease: acquire %s: %w", key, err)
	}
	l := &Lease{js: js, kv: kv, key: key, holder: holder, opts: o, since: now,
		rev: rev, deadline: sent.Add(o.TTL - o.Margin), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancelCause(ctx)
	go l.renew()
	return l, nil
}

// Acquire waits until it can take the lease key (it retries when the key
// is deleted or expires, and at least every TTL), or ctx ends.
func Acquire(ctx context.Context, js jetstream.JetStream, key, holder string, o Options) (*Lease, error) {
	o.setDefaults()
	for {
		l, err := TryAcquire(ctx, js, key, holder, o)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, ErrHeld) {
			// NATS unreachable or the bucket missing: retry, the caller
			// decides how long through ctx.
			o.Logger.Debug("lease: acquire failed; retrying", "key", key, "error", err)
		}
		if err := waitGone(ctx, js, key, o.TTL); err != nil {
			return nil, err
		}
	}
}

// waitGone returns when key is deleted or expires, after at most wait, or
// with ctx's error.
func waitGone(ctx context.Context, js jetstream.JetStream, key string, wait time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	kv, err := js.KeyValue(wctx, Bucket)
	if err == nil {
		w, werr := kv.Watch(wctx, key, jetstream.UpdatesOnly())
		if werr == nil {
			defer w.Stop()
			for {
				select {
				case e, ok := <-w.Updates():
					if !ok {
						return ctx.Err()
					}
					if e != nil && e.Operation() != jetstream.KeyValuePut {
						return nil
					}
				case <-wctx.Done():
					return ctx.Err()
				}
			}
		}
	}
	<-wctx.Done()
	return ctx.Err()
}

// Key is the lease's key.
func (l *Lease) Key() string { return l.key }

// Valid reports whether the holder may still act under the lease.
func (l *Lease) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ctx.Err() == nil && time.Now().Before(l.deadline)
}

// Context ends when the lease is lost (cause ErrLost): taken by another
// holder, or not renewed by its deadline (when Valid turns false);
// when it is released; or when the context it was acquired with ends.
func (l *Lease) Context() context.Context { return l.ctx }

// Revision is the key's revision of the last renewal: a fencing token that
// grows with every renewal and every new holder.
func (l *Lease) Revision() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev
}

// Release stops renewing and deletes the key (if this holder still has
// it), so another holder can take it at once.
func (l *Lease) Release(ctx context.Context) error {
	l.cancel(context.Canceled)
	<-l.done
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev))
	if err != nil && !isConflict(err) { // a conflict: someone else has it by now
		return fmt.Errorf("lease: release %s: %w", l.key, err)
	}
	return nil
}

// renew renews the key every TTL/3 until the lease ends. A renewal that
// finds another revision means the key expired and someone else took it;
// renewals that fail for a passing reason are retried until the lease's
// deadline.
func (l *Lease) renew() {
	defer close(l.done)
	tick := time.NewTicker(l.opts.TTL / 3)
	defer tick.Stop()
	// The lease ends at its deadline unless a renewal moved it: a holder
	// that cannot reach NATS stops acting then, not at its next failed
	// renewal.
	expiry := time.NewTimer(time.Until(l.Deadline()))
	defer expiry.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-expiry.C:
			if d := time.Until(l.Deadline()); d > 0 {
				expiry.Reset(d)
				continue
			}
			l.opts.Logger.Warn("lease lost: not renewed in time", "key", l.key, "holder", l.holder)
			l.cancel(ErrLost)
			return
		case <-tick.C:
		}
		err := l.renewOnce()
		if err == nil {
			continue
		}
		if isConflict(err) {
			l.opts.Logger.Warn("lease lost", "key", l.key, "holder", l.holder, "error", err)
			l.cancel(ErrLost)
			return
		}
	}
}

// Deadline is when the holder must stop acting unless the lease is renewed
// first (local monotonic clock).
func (l *Lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

func (l *Lease) renewOnce() error {
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	value, err := json.Marshal(Record{Holder: l.holder, Since: l.since.UTC(), Renewed: time.Now().UTC()})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.TTL/3)
	defer cancel()
	sent := time.Now()
	msg := &nats.Msg{Subject: "$KV." + Bucket + "." + l.key, Header: nats.Header{}, Data: value}
	ack, err := l.js.PublishMsg(ctx, msg,
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(l.opts.TTL))
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.rev = ack.Sequence
	l.deadline = sent.Add(l.opts.TTL - l.opts.Margin)
	l.mu.Unlock()
	return nil
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
