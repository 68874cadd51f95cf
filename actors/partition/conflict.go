package partition

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	dstate "github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/telemetry"
)

// casKey is one key the writer moves with compare-and-swap (a destination's
// event log, its offset, the partition's watermark): the revision it last
// saw, and every value it tried to write since.
//
// A write whose answer is lost may still be applied: NATS may have stored
// it before the connection dropped, or nats.go sends it from its reconnect
// buffer once the server is back. The retry then conflicts with the
// writer's own write. So after a conflict the writer re-reads the key (see
// settle): a value it tried since the revision it knew is its own, and it
// adopts that revision and carries on; only a value it never tried is
// another writer's.
type casKey[T comparable] struct {
	rev   uint64
	tried []T
}

// try records an attempt to write v and returns the revision to expect.
func (k *casKey[T]) try(v T) uint64 {
	k.tried = append(k.tried, v)
	return k.rev
}

// written records the revision the key is now known at.
func (k *casKey[T]) written(rev uint64) {
	k.rev, k.tried = rev, nil
}

// errStaleRead: a re-read after a conflict found the key no newer than
// the writer knew it (a replica behind the leader answered); try again.
var errStaleRead = errors.New("the re-read after a compare-and-swap conflict is not newer than the known revision")

// settle re-reads a key after a compare-and-swap conflict. When the key
// holds a value tried since the known revision, the conflict was with the
// writer's own write: settle adopts the stored revision and returns the
// value. Otherwise it returns conflict (another writer moved the key), or
// an error to try again later (the re-read failed or was stale).
func settle[T comparable](ctx context.Context, w *writer, kind string, k *casKey[T], conflict error,
	read func(context.Context) (T, uint64, error)) (T, error) {
	cur, rev, err := read(ctx)
	switch {
	case err != nil:
		return cur, err
	case rev != 0 && rev <= k.rev:
		return cur, fmt.Errorf("%w (%d, known %d)", errStaleRead, rev, k.rev)
	case rev == 0 || !slices.Contains(k.tried, cur):
		w.metrics.CASConflict(ctx, kind, telemetry.CauseOtherWriter)
		return cur, fmt.Errorf("%w; the key holds %+v at revision %d, which this process did not write", conflict, cur, rev)
	}
	w.metrics.CASConflict(ctx, kind, telemetry.CauseOwnWriteReplayed)
	w.log.Debug("a write whose answer was lost had been applied: continuing from it",
		"partition", w.partition, "what", kind, "revision", rev)
	k.written(rev)
	return cur, nil
}

// casPut writes v to k with put, settling conflicts with the writer's own
// earlier writes; done reports whether the value a conflict found already
// covers v (then v need not be written).
func casPut[T comparable](ctx context.Context, w *writer, kind string, k *casKey[T], v T, done func(cur T) bool,
	put func(ctx context.Context, v T, rev uint64) (uint64, error),
	read func(context.Context) (T, uint64, error)) error {
	for {
		rev, err := put(ctx, v, k.try(v))
		if err == nil {
			k.written(rev)
			return nil
		}
		if !errors.Is(err, eventlog.ErrConflict) {
			return err
		}
		cur, err := settle(ctx, w, kind, k, err, read)
		if err != nil || done(cur) {
			return err
		}
		// Our write landed but v is newer: write it over that revision.
	}
}

// keyOf returns the key of name in keys, adding it if new.
func keyOf[T comparable](keys map[string]*casKey[T], name string) *casKey[T] {
	k := keys[name]
	if k == nil {
		k = &casKey[T]{}
		keys[name] = k
	}
	return k
}

func (w *writer) writeOffset(ctx context.Context, dest string, off uint64) error {
	return w.writeOffsetKey(ctx, telemetry.CASOffset, w.offsetKeys, dest, off, w.store.PutOffset, w.store.Offset)
}

func (w *writer) writeEDUOffset(ctx context.Context, dest string, off uint64) error {
	return w.writeOffsetKey(ctx, telemetry.CASEDUOffset, w.eduOffsetKeys, dest, off, w.store.PutEDUOffset, w.store.EDUOffset)
}

// writeOffsetKey moves an offset (PDU or EDU) of dest forward with put,
// reading it with get after a conflict.
func (w *writer) writeOffsetKey(ctx context.Context, kind string, keys map[string]*casKey[uint64], dest string, off uint64,
	put func(ctx context.Context, partition int, dest string, offset, rev uint64) (uint64, error),
	get func(ctx context.Context, partition int, dest string) (uint64, uint64, error)) error {
	return casPut(ctx, w, kind, keyOf(keys, dest), off,
		func(cur uint64) bool { return cur >= off },
		func(ctx context.Context, off, rev uint64) (uint64, error) {
			return put(ctx, w.partition, dest, off, rev)
		},
		func(ctx context.Context) (uint64, uint64, error) { return get(ctx, w.partition, dest) })
}

func (w *writer) writeWatermark(ctx context.Context, wm eventlog.Watermark) error {
	return casPut(ctx, w, telemetry.CASWatermark, &w.wmKey, wm,
		func(cur eventlog.Watermark) bool {
			return cur.Seq >= wm.Seq && cur.EDUSeq >= wm.EDUSeq && cur.EDUPending == wm.EDUPending
		},
		func(ctx context.Context, wm eventlog.Watermark, rev uint64) (uint64, error) {
			return w.store.PutWatermark(ctx, w.partition, wm, rev)
		},
		func(ctx context.Context) (eventlog.Watermark, uint64, error) {
			return w.store.LoadWatermark(ctx, w.partition)
		})
}

// ackEvent waits for an append's answer. A conflict whose re-read finds
// this very event (the only one of its destination the writer can have in
// flight) means an earlier attempt was stored: the event is written.
func (w *writer) ackEvent(ctx context.Context, ev dstate.Event, f jetstream.PubAckFuture) error {
	name := ev.State.Destination
	k := keyOf(w.eventLogs, name)
	seq, err := eventlog.AckResult(ctx, f)
	if err == nil {
		k.written(seq)
		return nil
	}
	if !errors.Is(err, eventlog.ErrConflict) {
		return err
	}
	_, err = settle(ctx, w, telemetry.CASEvent, k, err, func(ctx context.Context) (dstate.Event, uint64, error) {
		return w.store.LastEvent(ctx, w.partition, name)
	})
	return err
}
