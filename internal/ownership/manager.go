package ownership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"

	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/telemetry"
)

// Handler serves the partitions a Manager gives it. The Manager calls it
// from one goroutine at a time per partition.
type Handler interface {
	// Serve starts serving partition p, whose lease l this replica now
	// holds. Sends for p must check l.Valid() first. An error gives the
	// lease back (the Manager tries again later).
	Serve(ctx context.Context, p int, l *lease.Lease) error
	// Drain stops serving p before its lease is released: nothing more
	// is dispatched to it, in-flight transactions finish (or are
	// abandoned when ctx ends), offsets and the watermark are persisted.
	Drain(ctx context.Context, p int)
	// Stop stops serving p at once, sending nothing more: its lease was
	// lost (expired or taken).
	Stop(p int)
}

// Options configure a Manager.
type Options struct {
	JS jetstream.JetStream
	// Instance is this replica's instance_name.
	Instance   string
	Partitions int
	// Lease sizes the member and partition leases.
	Lease lease.Options
	// DrainTimeout bounds a partition's drain.
	DrainTimeout time.Duration
	Handler      Handler
	// ReclaimOwn deletes, at start, the leases held under Instance: only
	// when no other process can run with this name (the embedded NATS
	// server's data_dir is locked by one process), so that a restart after
	// a crash does not wait for its own leases to expire.
	ReclaimOwn bool
	Log        *slog.Logger
	Metrics    *telemetry.Metrics
	Tracer     telemetry.Tracer
}

// Manager keeps this replica a member and its share of the partitions
// owned.
type Manager struct {
	opts   Options
	events chan event

	mu    sync.Mutex
	parts []part // by partition; the loop's, read under mu by Owned
	ready bool
	// settled is closed the first time the replica is ready.
	settled     chan struct{}
	settledOnce sync.Once
}

type partState int

const (
	free     partState = iota // not ours
	serving                   // ours: the lease is held and the handler serves it
	draining                  // being drained, then released
)

type part struct {
	state partState
	lease *lease.Lease
}

// event is what the goroutines of a Manager tell its loop.
type event struct {
	p        int
	l        *lease.Lease
	released bool // a drain finished and l is released; else l was lost
}

// New returns a Manager.
func New(o Options) *Manager {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.Lease.Logger = o.Log
	if o.Lease.TTL == 0 {
		o.Lease.TTL = 6 * time.Second
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 20 * time.Second
	}
	return &Manager{opts: o, parts: make([]part, o.Partitions), events: make(chan event, 2*o.Partitions+8),
		settled: make(chan struct{})}
}

// Settled is closed the first time Ready is true: the replica has taken
// the partitions it could take at start (the readers then start, reading
// once for all of them).
func (m *Manager) Settled() <-chan struct{} { return m.settled }

// Ready reports whether this replica has claimed every partition it is
// the desired owner of, or knows that another replica still holds it and
// waits for it.
func (m *Manager) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready
}

// Owned returns the partitions this replica serves.
func (m *Manager) Owned() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int
	for p, pt := range m.parts {
		if pt.state == serving {
			out = append(out, p)
		}
	}
	return out
}

// view is what the loop knows of the lease bucket.
type view struct {
	synced  bool
	members map[string]string // member key -> instance name
	holders map[int]string    // partition -> holder
}

// Run joins, and keeps this replica's share of the partitions owned until
// ctx ends; then it drains every partition it serves (within
// DrainTimeout), releases their leases at once and leaves.
func (m *Manager) Run(ctx context.Context) error {
	// Leases outlive ctx: the drain after ctx ends still holds them.
	leaseCtx, cancelLeases := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelLeases()
	kv, err := m.opts.JS.KeyValue(ctx, lease.Bucket)
	if err != nil {
		return fmt.Errorf("ownership: bucket %s: %w", lease.Bucket, err)
	}
	w, err := kv.WatchFiltered(ctx, []string{memberPrefix + "*", partitionPrefix + "*"})
	if err != nil {
		return fmt.Errorf("ownership: watch %s: %w", lease.Bucket, err)
	}
	defer w.Stop()
	if m.opts.ReclaimOwn {
		if err := m.reclaim(ctx, kv); err != nil {
			return err
		}
	}
	member := m.join(ctx, leaseCtx)
	if member == nil {
		return nil // ctx ended
	}
	v := view{members: map[string]string{}, holders: map[int]string{}}
	tick := time.NewTicker(m.opts.Lease.TTL / 3)
	defer tick.Stop()
	for {
		var memberLost <-chan struct{}
		if member != nil {
			memberLost = member.Context().Done()
		}
		select {
		case <-ctx.Done():
			m.leave(member)
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					continue
				}
				// The connection is closed for good: nothing can be
				// renewed, so stop serving now.
				m.stopAll()
				return errors.New("ownership: the watch of " + lease.Bucket + " ended")
			}
			v.apply(e)
		case ev := <-m.events:
			m.handle(ev)
		case <-tick.C:
		case <-memberLost:
			// The membership key expired or was deleted: join again. The
			// partitions held stay held (their leases are their own), and
			// none is taken or given up meanwhile.
			m.opts.Log.Warn("this replica's membership lease ended; joining again", "instance", m.opts.Instance)
			member = nil
		}
		if member == nil {
			member = m.rejoin(leaseCtx)
		}
		if member != nil {
			m.reconcile(ctx, leaseCtx, v)
		}
	}
}

// rejoin tries once to take the membership lease again; nil when it
// cannot yet.
func (m *Manager) rejoin(leaseCtx context.Context) *lease.Lease {
	l, err := lease.TryAcquire(leaseCtx, m.opts.JS, MemberKey(m.opts.Instance), m.opts.Instance, m.opts.Lease)
	if err != nil {
		m.opts.Log.Warn("cannot join again yet", "instance", m.opts.Instance, "error", err)
		return nil
	}
	m.opts.Log.Info("joined again", "instance", m.opts.Instance)
	return l
}

func (v *view) apply(e jetstream.KeyValueEntry) {
	if e == nil {
		v.synced = true
		return
	}
	gone := e.Operation() != jetstream.KeyValuePut
	if p, ok := partitionOfKey(e.Key()); ok {
		if gone {
			delete(v.holders, p)
		} else {
			v.holders[p] = holderOf(e)
		}
		return
	}
	if gone {
		delete(v.members, e.Key())
	} else {
		v.members[e.Key()] = holderOf(e)
	}
}

// join takes this replica's membership lease, waiting while another
// process holds it (the same instance_name twice, or this replica's own
// key from before a quick restart, until it expires). nil when ctx ends.
func (m *Manager) join(ctx, leaseCtx context.Context) *lease.Lease {
	key := MemberKey(m.opts.Instance)
	for {
		l, err := lease.TryAcquire(leaseCtx, m.opts.JS, key, m.opts.Instance, m.opts.Lease)
		if err == nil {
			m.opts.Log.Info("joined", "instance", m.opts.Instance, "key", key)
			return l
		}
		m.opts.Log.Warn("cannot join yet: is another replica running with the same instance_name? waiting for its key to expire",
			"instance", m.opts.Instance, "key", key, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(m.opts.Lease.TTL / 3):
		}
	}
}

// reclaim deletes the member and partition leases held under this
// replica's instance name.
func (m *Manager) reclaim(ctx context.Context, kv jetstream.KeyValue) error {
	keys := []string{MemberKey(m.opts.Instance)}
	for p := range m.opts.Partitions {
		keys = append(keys, PartitionKey(p))
	}
	n := 0
	for _, key := range keys {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return fmt.Errorf("ownership: read %s: %w", key, err)
		}
		if holderOf(e) != m.opts.Instance {
			continue
		}
		if err := kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
			return fmt.Errorf("ownership: reclaim %s: %w", key, err)
		}
		n++
	}
	if n > 0 {
		m.opts.Log.Info("took back the leases this replica held before it restarted", "leases", n)
	}
	return nil
}

// live returns the instance names of the live members, with this one.
func (v view) live(self string) []string {
	out := []string{self}
	for _, name := range v.members {
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// reconcile acquires the free partitions this replica is the desired owner
// of and whose lease nobody holds, and starts draining the served ones it
// no longer is the desired owner of.
func (m *Manager) reconcile(ctx, leaseCtx context.Context, v view) {
	if !v.synced {
		return
	}
	live := v.live(m.opts.Instance)
	ready := true
	for p := range m.parts {
		want := Owner(p, live) == m.opts.Instance
		switch m.parts[p].state {
		case free:
			if !want {
				continue
			}
			if _, held := v.holders[p]; held {
				continue // wait until its holder releases it or it expires
			}
			if !m.acquire(ctx, leaseCtx, p) {
				ready = false
			}
		case serving:
			if !want {
				m.drain(p, "another replica is the partition's desired owner")
			}
		case draining:
		}
	}
	m.mu.Lock()
	m.ready = ready
	m.mu.Unlock()
	if ready {
		m.settledOnce.Do(func() { close(m.settled) })
	}
}

// acquire takes partition p's lease and has the handler serve it; false
// when that failed for another reason than a holder.
func (m *Manager) acquire(ctx, leaseCtx context.Context, p int) bool {
	sctx, span := m.opts.Tracer.Start(ctx, telemetry.SpanHandover)
	defer span.End()
	span.SetAttributes(telemetry.KeyPartition.Int(p), telemetry.KeyHandover.String(telemetry.HandoverAcquired),
		telemetry.KeyInstance.String(m.opts.Instance))
	l, err := lease.TryAcquire(leaseCtx, m.opts.JS, PartitionKey(p), m.opts.Instance, m.opts.Lease)
	if errors.Is(err, lease.ErrHeld) {
		return true // the watch tells when it is gone
	}
	if err == nil {
		err = m.opts.Handler.Serve(sctx, p, l)
		if err != nil {
			l.Release(context.WithoutCancel(ctx))
		}
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		m.opts.Log.Error("could not take a partition; trying again", "partition", p, "error", err)
		return false
	}
	m.set(p, part{state: serving, lease: l})
	m.opts.Metrics.Handover(sctx, telemetry.HandoverAcquired, len(m.Owned()))
	m.opts.Log.Info("partition acquired", "partition", p, "instance", m.opts.Instance)
	go func() {
		<-l.Context().Done()
		if errors.Is(context.Cause(l.Context()), lease.ErrLost) {
			m.events <- event{p: p, l: l}
		}
	}()
	return true
}

func (m *Manager) set(p int, pt part) {
	m.mu.Lock()
	m.parts[p] = pt
	m.mu.Unlock()
}

// drain drains and releases p in the background.
func (m *Manager) drain(p int, why string) {
	l := m.parts[p].lease
	m.set(p, part{state: draining, lease: l})
	m.opts.Log.Info("releasing a partition: draining it", "partition", p, "reason", why)
	go func() {
		m.drainRelease(p, l)
		m.events <- event{p: p, l: l, released: true}
	}()
}

// drainRelease drains p and releases its lease.
func (m *Manager) drainRelease(p int, l *lease.Lease) {
	ctx, span := m.opts.Tracer.Start(context.WithoutCancel(l.Context()), telemetry.SpanHandover)
	defer span.End()
	span.SetAttributes(telemetry.KeyPartition.Int(p), telemetry.KeyHandover.String(telemetry.HandoverReleased),
		telemetry.KeyInstance.String(m.opts.Instance))
	dctx, cancel := context.WithTimeout(l.Context(), m.opts.DrainTimeout)
	m.opts.Handler.Drain(dctx, p)
	cancel()
	if err := l.Release(ctx); err != nil {
		m.opts.Log.Warn("could not release a partition's lease: it expires", "partition", p, "error", err)
	}
}

// stopAll stops every partition at once, without draining.
func (m *Manager) stopAll() {
	for p, pt := range m.parts {
		if pt.state != free {
			m.opts.Handler.Stop(p)
			m.set(p, part{})
			m.opts.Metrics.Handover(context.Background(), telemetry.HandoverLost, len(m.Owned()))
		}
	}
}

// handle applies what a goroutine reported.
func (m *Manager) handle(ev event) {
	pt := m.parts[ev.p]
	if pt.lease != ev.l {
		return // about an earlier lease of the partition
	}
	if ev.released {
		m.set(ev.p, part{})
		m.opts.Metrics.Handover(context.Background(), telemetry.HandoverReleased, len(m.Owned()))
		m.opts.Log.Info("partition released", "partition", ev.p)
		return
	}
	_, span := m.opts.Tracer.Start(context.Background(), telemetry.SpanHandover)
	span.SetAttributes(telemetry.KeyPartition.Int(ev.p), telemetry.KeyHandover.String(telemetry.HandoverLost),
		telemetry.KeyInstance.String(m.opts.Instance))
	m.opts.Handler.Stop(ev.p)
	span.End()
	m.set(ev.p, part{})
	m.opts.Metrics.Handover(context.Background(), telemetry.HandoverLost, len(m.Owned()))
	m.opts.Log.Error("partition lease lost: stopped sending for it", "partition", ev.p, "instance", m.opts.Instance)
}

// leave drains every partition served, releases their leases at once, and
// then the membership.
func (m *Manager) leave(member *lease.Lease) {
	for p, pt := range m.parts {
		if pt.state == serving {
			m.drain(p, "shutting down")
		}
	}
	// Each drain ends within DrainTimeout.
	deadline := time.After(m.opts.DrainTimeout + m.opts.Lease.TTL)
	for m.draining() {
		select {
		case ev := <-m.events:
			m.handle(ev)
		case <-deadline:
			m.opts.Log.Warn("partitions still draining at shutdown: their leases expire")
			m.release(member)
			return
		}
	}
	m.release(member)
}

func (m *Manager) release(member *lease.Lease) {
	if member == nil {
		return
	}
	if err := member.Release(context.Background()); err != nil {
		m.opts.Log.Warn("could not release the membership lease: it expires", "error", err)
	}
	m.opts.Log.Info("left: every partition released", "instance", m.opts.Instance)
}

// draining reports whether a drain started by drain is still running.
func (m *Manager) draining() bool {
	for _, pt := range m.parts {
		if pt.state == draining {
			return true
		}
	}
	return false
}
