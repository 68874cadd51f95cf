package books

import (
	"cmp"
	"context"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection/pgprojection"
	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/streams"
)

// streamOrdering returns the Synapse stream ordering the feed published a
// PDU with; false for a PDU without it (not from the feed).
func streamOrdering(h interface{ Get(string) string }) (int64, bool) {
	v, err := strconv.ParseInt(h.Get(synapse.HeaderStreamOrdering), 10, 64)
	return v, err == nil
}

// applyRooms stores destination_rooms for a batch of PDUs, as Synapse does
// when it queues a PDU: for every destination (backing off or not) a
// destinations row, and per (destination, room) the newest stream ordering.
func (b *Books) applyRooms(ctx context.Context, msgs []jetstream.Msg) error {
	type key struct{ dest, room string }
	newest := map[key]int64{}
	for _, m := range msgs {
		order, ok := streamOrdering(m.Headers())
		if !ok {
			continue // not published by the Synapse feed: Synapse has no row for it
		}
		pdu, err := streams.DecodePDU(m.Data())
		if err != nil {
			continue // dead-lettered by the PDU reader, which logs it
		}
		for _, d := range streams.DropOrigin(pdu.Destinations, b.opts.Origin) {
			k := key{d, pdu.RoomID}
			newest[k] = max(newest[k], order)
		}
	}
	if len(newest) == 0 {
		return nil
	}
	keys := make([]key, 0, len(newest))
	for k := range newest {
		keys = append(keys, k)
	}
	// Sorted, so that writers lock rows in the same order.
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.dest, b.dest), cmp.Compare(a.room, b.room)) })
	var (
		names        []string
		dests, rooms = make([]string, len(keys)), make([]string, len(keys))
		orderings    = make([]int64, len(keys))
	)
	for i, k := range keys {
		dests[i], rooms[i], orderings[i] = k.dest, k.room, newest[k]
		if len(names) == 0 || names[len(names)-1] != k.dest {
			names = append(names, k.dest)
		}
	}
	return pgx.BeginFunc(ctx, b.opts.DB, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		pgprojection.QueueRooms(batch, names, dests, rooms, orderings)
		return tx.SendBatch(ctx, batch).Close()
	})
}
