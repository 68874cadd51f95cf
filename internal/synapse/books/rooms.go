package books

import (
	"context"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection/pgprojection"
	"github.com/fedsender/fedsender/internal/synapse"
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
// PDUs not published by the Synapse feed are left out: Synapse has no row
// for them.
func (b *Books) applyRooms(ctx context.Context, msgs []jetstream.Msg) error {
	rows := pgprojection.NewestRooms(msgs, b.opts.Origin, func(m jetstream.Msg) (int64, bool) {
		return streamOrdering(m.Headers())
	})
	if rows.Len() == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, b.opts.DB, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		rows.Queue(batch)
		return tx.SendBatch(ctx, batch).Close()
	})
}
