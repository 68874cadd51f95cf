package books

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection/pgprojection"
	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/streams"
)

// The kinds of Synapse rows a must-deliver EDU comes from
// (synapse.HeaderSource).
const (
	kindToDevice   = "to_device"
	kindDeviceList = "device_list"
)

// source is a must-deliver EDU the feed published from Synapse's rows: its
// EDU stream sequence, and the kind and stream id of its rows.
type source struct {
	seq  uint64
	kind string
	id   int64
}

// parseSource parses a Fedsender-Synapse-Source header value.
func parseSource(v string) (kind string, id int64, err error) {
	kind, n, ok := strings.Cut(v, " ")
	if !ok || (kind != kindToDevice && kind != kindDeviceList) {
		return "", 0, fmt.Errorf("books: %s %q: want %q or %q and a stream id", synapse.HeaderSource, v, kindToDevice, kindDeviceList)
	}
	id, err = strconv.ParseInt(n, 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("books: %s %q: %w", synapse.HeaderSource, v, err)
	}
	return kind, id, nil
}

// acked is, for one destination, the highest stream id of each kind of row
// it acknowledged and the books have yet to write.
type acked struct{ toDevice, deviceList int64 }

func (a *acked) add(s source) {
	if s.kind == kindToDevice {
		a.toDevice = max(a.toDevice, s.id)
	} else {
		a.deviceList = max(a.deviceList, s.id)
	}
}

// eduBooks is the state of runEDUs: the sources read and not yet
// acknowledged, per destination in stream order, and the EDU offsets.
type eduBooks struct {
	pending map[string][]source
	offsets map[string]uint64
	ready   map[string]*acked
	read    uint64 // the EDU stream is read through here
}

func (e *eduBooks) markReady(dest string, s source) {
	a := e.ready[dest]
	if a == nil {
		a = &acked{}
		e.ready[dest] = a
	}
	a.add(s)
}

// offset records a destination's EDU offset: its sources at or below it
// were acknowledged.
func (e *eduBooks) offset(dest string, off uint64) {
	e.offsets[dest] = max(e.offsets[dest], off)
	srcs := e.pending[dest]
	i := 0
	for ; i < len(srcs) && srcs[i].seq <= off; i++ {
		e.markReady(dest, srcs[i])
	}
	if i == len(srcs) {
		delete(e.pending, dest)
	} else {
		e.pending[dest] = srcs[i:]
	}
}

// frontier is the checkpoint: every source after it may be unwritten.
func (e *eduBooks) frontier() uint64 {
	f := e.read
	for _, srcs := range e.pending {
		f = min(f, srcs[0].seq-1)
	}
	return f
}

// runEDUs deletes device_federation_outbox rows and device-list pokes,
// and moves device_lists_outbound_last_success, once a destination
// acknowledged the EDUs made of them (its EDU offset passed them). The
// checkpoint is the EDU stream sequence before the oldest source not yet
// written: after a restart, the stream is read again from there and what
// is acknowledged is written again (deleting rows already deleted changes
// nothing).
func (b *Books) runEDUs(ctx context.Context, kv jetstream.KeyValue) error {
	cp, err := loadCheckpoint(ctx, kv, "edu")
	if err != nil {
		return err
	}
	cons, err := b.follow(ctx, streams.EDUStream, cp.seq)
	if err != nil {
		return err
	}
	w, err := b.watch(ctx, streams.EDUOffsetBucket)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	batches := make(chan []jetstream.Msg)
	go b.fetchAll(ctx, cons, batches)
	st := &eduBooks{pending: map[string][]source{}, offsets: map[string]uint64{}, ready: map[string]*acked{}, read: cp.seq}
	tick := time.NewTicker(b.opts.Flush)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case msgs := <-batches:
			b.readEDUs(st, msgs)
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("books: the EDU offsets watcher stopped")
			}
			if e == nil {
				continue
			}
			if name, off, ok := b.offsetUpdate(e); ok {
				st.offset(name, off)
			}
		case <-tick.C:
			if len(st.ready) > 0 {
				if !b.retry(ctx, "apply EDUs", func(ctx context.Context) error { return b.applyEDUs(ctx, st.ready) }) {
					return nil
				}
				clear(st.ready)
			}
			if err := cp.save(ctx, st.frontier()); err != nil {
				return err
			}
		}
	}
}

// fetchAll hands the EDU stream's messages to out, batch by batch, until
// ctx ends.
func (b *Books) fetchAll(ctx context.Context, cons jetstream.Consumer, out chan<- []jetstream.Msg) {
	for ctx.Err() == nil {
		msgs, err := pgprojection.Fetch(cons, 500)
		if err != nil && len(msgs) == 0 {
			b.opts.Log.Warn("books: fetch", "stream", streams.EDUStream, "error", err)
			pgprojection.Wait(ctx, 200*time.Millisecond)
			continue
		}
		if len(msgs) == 0 {
			continue
		}
		select {
		case out <- msgs:
		case <-ctx.Done():
			return
		}
	}
}

// readEDUs notes the sources of a batch of EDUs: ready at once for a
// destination whose EDU offset already passed them, pending otherwise.
func (b *Books) readEDUs(st *eduBooks, msgs []jetstream.Msg) {
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		seq := md.Sequence.Stream
		st.read = max(st.read, seq)
		h := m.Headers().Get(synapse.HeaderSource)
		if h == "" {
			continue // droppable: Synapse keeps no row for it
		}
		kind, id, err := parseSource(h)
		if err != nil {
			b.opts.Log.Warn("books: skipped EDU", "seq", seq, "error", err)
			continue
		}
		edu, err := streams.DecodeEDU(m.Data())
		if err != nil {
			continue // dead-lettered by the EDU reader, which logs it
		}
		s := source{seq: seq, kind: kind, id: id}
		for _, d := range streams.DropOrigin(edu.Destinations, b.opts.Origin) {
			if seq <= st.offsets[d] {
				st.markReady(d, s)
			} else {
				st.pending[d] = append(st.pending[d], s)
			}
		}
	}
}

// Synapse 1.92 after a destination's 200: delete_device_msgs_for_remote,
// and mark_as_sent_devices_by_remote (last_success per user from the
// pokes delivered, then the pokes deleted). last_success only grows.
const (
	deleteToDevice  = `DELETE FROM device_federation_outbox WHERE destination = $1 AND stream_id <= $2`
	moveLastSuccess = `
INSERT INTO device_lists_outbound_last_success AS s (destination, user_id, stream_id)
SELECT destination, user_id, max(stream_id) FROM device_lists_outbound_pokes
WHERE destination = $1 AND stream_id <= $2
GROUP BY destination, user_id
ON CONFLICT (destination, user_id) DO UPDATE SET stream_id = excluded.stream_id
WHERE s.stream_id < excluded.stream_id`
	deletePokes = `DELETE FROM device_lists_outbound_pokes WHERE destination = $1 AND stream_id <= $2`
)

// applyEDUs writes what each destination acknowledged, in one transaction.
func (b *Books) applyEDUs(ctx context.Context, ready map[string]*acked) error {
	return pgx.BeginFunc(ctx, b.opts.DB, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		for dest, a := range ready {
			if a.toDevice > 0 {
				batch.Queue(deleteToDevice, dest, a.toDevice)
			}
			if a.deviceList > 0 {
				batch.Queue(moveLastSuccess, dest, a.deviceList)
				batch.Queue(deletePokes, dest, a.deviceList)
			}
		}
		return tx.SendBatch(ctx, batch).Close()
	})
}
