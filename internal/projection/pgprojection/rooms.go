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
	rows          []roomRow
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

// roomRow is one row of destination_rooms.
type roomRow struct {
	dest, room string
	seq        uint64
}

// fanout turns a batch of PDUs into rows, one per (destination, room) with
// the newest sequence, sorted by key so that concurrent replicas lock rows
// in the same order. It also returns the batch's highest sequence and how
// many PDUs the consumer had left after it.
func (p *Projector) fanout(msgs []jetstream.Msg) (rows []roomRow, last, pending uint64) {
	type key struct{ dest, room string }
	newest := map[key]uint64{}
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			p.opts.Log.Warn("pgprojection: PDU without metadata", "error", err)
			continue
		}
		seq := md.Sequence.Stream
		last, pending = max(last, seq), md.NumPending
		pdu, err := streams.DecodePDU(m.Data())
		if err != nil {
			continue // dead-lettered by the PDU reader, which logs it
		}
		for _, d := range streams.DropOrigin(pdu.Destinations, p.opts.Origin) {
			k := key{d, pdu.RoomID}
			newest[k] = max(newest[k], seq)
		}
	}
	rows = make([]roomRow, 0, len(newest))
	for k, seq := range newest {
		rows = append(rows, roomRow{dest: k.dest, room: k.room, seq: seq})
	}
	slices.SortFunc(rows, func(a, b roomRow) int {
		return cmp.Or(cmp.Compare(a.dest, b.dest), cmp.Compare(a.room, b.room))
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

// QueueRooms queues on b the writes of destination_rooms rows (dests[i],
// rooms[i], orderings[i]), sorted by key, and of a destinations row for
// each of names (the distinct dests, sorted): a row only moves to a newer
// stream ordering, so applying rows again changes nothing. Synapse's own
// tables have the columns these statements use, so the Synapse
// bookkeeping (internal/synapse/books) writes them with it too.
func QueueRooms(b *pgx.Batch, names, dests, rooms []string, orderings []int64) {
	if len(dests) == 0 {
		return
	}
	b.Queue(insertDestinations, names)
	b.Queue(upsertRooms, dests, rooms, orderings)
}

// applyRooms writes rows and the checkpoint in one transaction.
func (p *Projector) applyRooms(ctx context.Context, rows []roomRow, last uint64) error {
	var (
		dests, rooms = make([]string, len(rows)), make([]string, len(rows))
		seqs         = make([]int64, len(rows))
		names        []string // distinct destinations, sorted (rows are)
	)
	for i, r := range rows {
		dests[i], rooms[i], seqs[i] = r.dest, r.room, int64(min(r.seq, 1<<63-1))
		if len(names) == 0 || names[len(names)-1] != r.dest {
			names = append(names, r.dest)
		}
	}
	return pgx.BeginFunc(ctx, p.opts.Pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		QueueRooms(b, names, dests, rooms, seqs)
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
