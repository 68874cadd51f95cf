package pgprojection

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/streams"
)

// RoomsConsumerName is the rooms projector's durable consumer on the PDU
// stream. Every replica shares it; rows only move to a newer stream
// ordering, so their writes commute.
const RoomsConsumerName = "fedsender-pgrooms"

// roomsCheckpointName is the rooms projector's row in projection_checkpoints.
const roomsCheckpointName = "pdu_fanout"

// roomsBatch is the most PDUs applied in one transaction.
const roomsBatch = 1000

// roomsConsumer creates (or finds) the rooms projector's durable consumer.
func (p *Projector) roomsConsumer(ctx context.Context) (jetstream.Consumer, error) {
	return p.durable(ctx, streams.PDUStream, roomsCheckpointName, jetstream.ConsumerConfig{
		Durable:        RoomsConsumerName,
		Description:    "pgprojection: destination_rooms in PostgreSQL",
		FilterSubjects: []string{streams.PDUSubject},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        time.Minute,
		MaxAckPending:  -1,
	})
}

// runRooms fills destination_rooms from the fan-out of each PDU: a batch
// of PDUs becomes one row per (destination, room) with the newest stream
// ordering, applied in one transaction with the checkpoint; only then are
// the messages acked. Envelopes the PDU reader refuses (dead letters) are
// skipped as it skips them. The next batch is fetched and decoded while
// one is applied.
func (p *Projector) runRooms(ctx context.Context, cons jetstream.Consumer) {
	batches := make(chan fanoutBatch, 1)
	go p.fetchRooms(ctx, cons, batches)
	for b := range batches {
		if len(b.msgs) == 0 {
			p.caughtUp(&p.roomsCaught, &p.pdusBehind)
			continue
		}
		if !p.retry(ctx, "apply rooms", func(ctx context.Context) error { return p.applyRooms(ctx, b.rows, b.last) }) {
			break
		}
		p.ackAll(b.msgs)
		p.progress(&p.roomsCaught, &p.pdusBehind, b.pending)
	}
	for range batches { // let fetchRooms end
	}
}

// fanoutBatch is a fetched batch of PDUs and its rows; no messages means
// the consumer had nothing left.
type fanoutBatch struct {
	msgs          []jetstream.Msg
	rows          RoomRows
	last, pending uint64
}

// fetchRooms fetches and decodes batches for runRooms until ctx ends, then
// closes out.
func (p *Projector) fetchRooms(ctx context.Context, cons jetstream.Consumer, out chan<- fanoutBatch) {
	defer close(out)
	for ctx.Err() == nil {
		msgs, err := Fetch(cons, roomsBatch)
		if err != nil && len(msgs) == 0 {
			p.opts.Log.Warn("pgprojection: fetch PDUs", "error", err)
			if !p.wait(ctx, 200*time.Millisecond) {
				return
			}
			if consumerGone(ctx, cons, err) { // read the stream from the start again
				if c, cerr := p.roomsConsumer(ctx); cerr == nil {
					cons = c
				}
			}
			continue
		}
		b := fanoutBatch{msgs: msgs}
		if len(msgs) > 0 {
			b.rows, b.last, b.pending = p.fanout(msgs)
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return
		}
	}
}

// Fetch returns up to n messages, waiting at most half a second; a fetch
// that times out is not an error.
func Fetch(cons jetstream.Consumer, n int) ([]jetstream.Msg, error) {
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	err = batch.Error()
	if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	return msgs, err
}

func (p *Projector) ackAll(msgs []jetstream.Msg) {
	for _, m := range msgs {
		if err := m.Ack(); err != nil {
			p.opts.Log.Debug("pgprojection: ack", "error", err) // redelivery is harmless
		}
	}
}

// RoomRows are destination_rooms rows: per (destination, room) the newest
// stream ordering of a batch of PDUs, sorted by key so that concurrent
// writers lock rows in the same order, with the distinct destinations.
type RoomRows struct {
	names, dests, rooms []string
	orderings           []int64
}

// Len is how many rows there are.
func (r RoomRows) Len() int { return len(r.dests) }

// NewestRooms turns a batch of PDUs into RoomRows. orderOf gives a
// message's stream ordering, or false to leave the message out; PDUs that
// do not decode (dead-lettered by the PDU reader, which logs them) and
// fedsender's own server name are left out too.
func NewestRooms(msgs []jetstream.Msg, origin string, orderOf func(jetstream.Msg) (int64, bool)) RoomRows {
	type key struct{ dest, room string }
	newest := map[key]int64{}
	for _, m := range msgs {
		order, ok := orderOf(m)
		if !ok {
			continue
		}
		pdu, err := streams.DecodePDU(m.Data())
		if err != nil {
			continue
		}
		for _, d := range streams.DropOrigin(pdu.Destinations, origin) {
			k := key{d, pdu.RoomID}
			newest[k] = max(newest[k], order)
		}
	}
	keys := make([]key, 0, len(newest))
	for k := range newest {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.dest, b.dest), cmp.Compare(a.room, b.room)) })
	r := RoomRows{dests: make([]string, len(keys)), rooms: make([]string, len(keys)), orderings: make([]int64, len(keys))}
	for i, k := range keys {
		r.dests[i], r.rooms[i], r.orderings[i] = k.dest, k.room, newest[k]
		if len(r.names) == 0 || r.names[len(r.names)-1] != k.dest {
			r.names = append(r.names, k.dest)
		}
	}
	return r
}

// fanout turns a batch of PDUs into rows keyed by their stream sequences.
// It also returns the batch's highest sequence and how many PDUs the
// consumer had left after it.
func (p *Projector) fanout(msgs []jetstream.Msg) (rows RoomRows, last, pending uint64) {
	rows = NewestRooms(msgs, p.opts.Origin, func(m jetstream.Msg) (int64, bool) {
		md, err := m.Metadata()
		if err != nil {
			p.opts.Log.Warn("pgprojection: PDU without metadata", "error", err)
			return 0, false
		}
		last, pending = max(last, md.Sequence.Stream), md.NumPending
		return int64(min(md.Sequence.Stream, 1<<63-1)), true
	})
	return rows, last, pending
}

// upsertRooms writes the rows unless a row shows a newer stream ordering.
const upsertRooms = `
INSERT INTO destination_rooms AS r (destination, room_id, stream_ordering)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (destination, room_id) DO UPDATE SET stream_ordering = excluded.stream_ordering
WHERE r.stream_ordering < excluded.stream_ordering`

// insertDestinations gives every destination a PDU was queued for a row, as
// Synapse does before it stores destination_rooms: it is listed from its
// first PDU, with nothing sent and no failure yet.
const insertDestinations = `
INSERT INTO destinations (destination)
SELECT * FROM unnest($1::text[])
ON CONFLICT (destination) DO NOTHING`

// Queue queues on b the writes of the destination_rooms rows, and of a
// destinations row for each of their destinations: a row only moves to a
// newer stream ordering, so applying rows again changes nothing. Synapse's
// own tables have the columns these statements use, so the Synapse
// bookkeeping (internal/synapse/books) writes them with it too.
func (r RoomRows) Queue(b *pgx.Batch) {
	if r.Len() == 0 {
		return
	}
	b.Queue(insertDestinations, r.names)
	b.Queue(upsertRooms, r.dests, r.rooms, r.orderings)
}

// applyRooms writes rows and the checkpoint in one transaction.
func (p *Projector) applyRooms(ctx context.Context, rows RoomRows, last uint64) error {
	return pgx.BeginFunc(ctx, p.opts.Pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		rows.Queue(b)
		b.Queue(upsertCheckpoint, roomsCheckpointName, int64(last))
		return tx.SendBatch(ctx, b).Close()
	})
}

// Rooms is admin.Rooms': a page of a destination's rooms by room id;
// known reports whether it has any. A failed read answers no rooms and
// makes Ready false, so the admin surfaces answer 503.
func (r *Reader) Rooms(dest string, q projection.RoomQuery) (projection.RoomPage, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	page, err := r.rooms(ctx, dest, q)
	if err != nil {
		r.failed(err)
		return projection.RoomPage{Rooms: []projection.Room{}}, false
	}
	return page, page.Total > 0
}

func (r *Reader) rooms(ctx context.Context, dest string, q projection.RoomQuery) (projection.RoomPage, error) {
	out := projection.RoomPage{Rooms: []projection.Room{}}
	err := r.pool.QueryRow(ctx, `SELECT count(*) FROM destination_rooms WHERE destination = $1`, dest).Scan(&out.Total)
	if err != nil || q.Limit == 0 || q.From >= int64(out.Total) {
		return out, err
	}
	dir := "ASC"
	if q.Backwards {
		dir = "DESC"
	}
	rows, err := r.pool.Query(ctx, `SELECT room_id, stream_ordering FROM destination_rooms
		WHERE destination = $1 ORDER BY room_id `+dir+` LIMIT $2 OFFSET $3`, dest, q.Limit, q.From)
	if err != nil {
		return out, err
	}
	out.Rooms, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (projection.Room, error) {
		var (
			room projection.Room
			seq  int64
		)
		err := row.Scan(&room.RoomID, &seq)
		room.StreamOrdering = uint64(seq)
		return room, err
	})
	if out.Rooms == nil {
		out.Rooms = []projection.Room{}
	}
	return out, err
}
