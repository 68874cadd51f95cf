package books

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection/pgprojection"
	"github.com/fedsender/fedsender/streams"
)

// watch watches every key of bucket; the updates start with every current
// value, then a nil entry.
func (b *Books) watch(ctx context.Context, bucket string) (jetstream.KeyWatcher, error) {
	kv, err := b.opts.JS.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("books: open %s: %w", bucket, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("books: watch %s: %w", bucket, err)
	}
	return w, nil
}

// offsetUpdate decodes a watched offset: its destination and value; false
// for a deletion or a key or value that is not an offset.
func (b *Books) offsetUpdate(e jetstream.KeyValueEntry) (string, uint64, bool) {
	if e.Operation() != jetstream.KeyValuePut {
		return "", 0, false
	}
	name, err := streams.DestinationFromOffsetKey(e.Key())
	if err != nil {
		return "", 0, false
	}
	off, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		b.opts.Log.Warn("books: skipped offset", "destination", name, "error", err)
		return "", 0, false
	}
	return name, off, true
}

// runOffsets writes last_successful_stream_ordering from the offsets
// bucket: each destination's offset is the PDU stream sequence of the
// newest PDU it acknowledged, and the feed published that PDU with its
// Synapse stream ordering. The bucket holds the current offsets, so it is
// its own checkpoint: at start, every offset is applied again (rows only
// move forward).
func (b *Books) runOffsets(ctx context.Context, pdus jetstream.Stream) error {
	w, err := b.watch(ctx, streams.OffsetBucket)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	pending := map[string]uint64{}
	applied := map[string]uint64{} // the offsets written, by destination
	tick := time.NewTicker(b.opts.Flush)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("books: the offsets watcher stopped")
			}
			if e == nil {
				continue
			}
			if name, off, ok := b.offsetUpdate(e); ok && off > applied[name] {
				pending[name] = max(pending[name], off)
			}
		case <-tick.C:
			if len(pending) == 0 {
				continue
			}
			orderings, unread := b.orderings(ctx, pdus, pending)
			if len(orderings) > 0 && !b.retry(ctx, "apply offsets", func(ctx context.Context) error {
				return pgprojection.WriteOffsets(ctx, b.opts.DB, orderings)
			}) {
				return nil
			}
			for name, off := range pending {
				if !unread[name] {
					applied[name] = off
					delete(pending, name)
				}
			}
		}
	}
}

// orderings maps offsets to the stream orderings of their PDUs. An offset
// whose PDU is gone (past the stream's retention) or was not published by
// the feed is skipped: the next offset of that destination moves the row.
// unread lists the destinations whose PDU could not be read now (NATS
// unavailable), to try again.
func (b *Books) orderings(ctx context.Context, pdus jetstream.Stream, offs map[string]uint64) (out map[string]int64, unread map[string]bool) {
	out, unread = make(map[string]int64, len(offs)), map[string]bool{}
	bySeq := map[uint64]int64{}
	for name, off := range offs {
		order, ok := bySeq[off]
		if !ok {
			m, err := pdus.GetMsg(ctx, off)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				b.opts.Log.Warn("books: an offset's PDU is no longer in the stream", "destination", name, "seq", off)
				continue
			}
			if err != nil {
				unread[name] = true
				continue
			}
			if order, ok = streamOrdering(m.Header); !ok {
				b.opts.Log.Debug("books: an offset's PDU has no Synapse stream ordering", "destination", name, "seq", off)
				continue
			}
			bySeq[off] = order
		}
		out[name] = order
	}
	return out, unread
}
