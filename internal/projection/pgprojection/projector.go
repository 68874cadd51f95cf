package pgprojection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/streams"
)

// ConsumerName is the projector's durable consumer on EventStream. Every
// replica shares it; the per-row event_seq makes their writes commute.
const ConsumerName = "fedsender-pgprojection"

// checkpointName is the projector's row in projection_checkpoints.
const checkpointName = "destination_events"

// ProjectorOptions configure a Projector.
type ProjectorOptions struct {
	JS   jetstream.JetStream
	Pool *pgxpool.Pool
	// BatchSize is the most events applied in one transaction (default 500).
	BatchSize int
	// MaxBackoff bounds the wait between retries while PostgreSQL is down
	// (default 5 s; the first wait is 50 ms).
	MaxBackoff time.Duration
	// Origin is fedsender's own server_name, never a destination: its
	// rooms are not listed.
	Origin string
	Log    *slog.Logger
}

func (o *ProjectorOptions) setDefaults() {
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Projector writes the destinations table from the destination event log
// and the offsets bucket. Run does the work.
type Projector struct {
	opts ProjectorOptions

	mu            sync.Mutex
	eventsCaught  bool // the event log was read to its end once
	offsetsCaught bool // the offsets bucket's initial values are written
	roomsCaught   bool // the PDU stream was read to its end once
	eventsBehind  uint64
	pdusBehind    uint64
}

// NewProjector returns a projector; Run starts it.
func NewProjector(opts ProjectorOptions) *Projector {
	opts.setDefaults()
	return &Projector{opts: opts}
}

// Synced reports whether everything in the event log, the offsets bucket
// and the PDU stream when the projector (re)started is in PostgreSQL.
func (p *Projector) Synced() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.eventsCaught && p.offsetsCaught && p.roomsCaught
}

// Behind returns how many destination events and PDUs the projector's
// consumers had yet to deliver at their last fetch.
func (p *Projector) Behind() (events, pdus uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.eventsBehind, p.pdusBehind
}

// Run projects until ctx ends, then returns nil. It returns an error only
// if it cannot create its consumers or watch the offsets bucket. When a
// rebuild deletes the event consumer, it starts over: the consumers read
// their streams from the start and the offsets bucket is replayed.
func (p *Projector) Run(ctx context.Context) error {
	rebuilt, err := p.run(ctx)
	for rebuilt && ctx.Err() == nil {
		p.opts.Log.Info("pgprojection: the tables were rebuilt; projecting everything again")
		p.mu.Lock()
		p.eventsCaught, p.offsetsCaught, p.roomsCaught = false, false, false
		p.mu.Unlock()
		// The server may still be removing the deleted consumers: retry.
		p.retry(ctx, "start over", func(ctx context.Context) error {
			rebuilt, err = p.run(ctx)
			return err
		})
	}
	return err
}

// run is one pass of Run; rebuilt reports that the event consumer was
// deleted under it.
func (p *Projector) run(ctx context.Context) (rebuilt bool, err error) {
	cons, err := p.consumer(ctx)
	if err != nil {
		return false, err
	}
	rooms, err := p.roomsConsumer(ctx)
	if err != nil {
		return false, err
	}
	offsets, err := p.opts.JS.KeyValue(ctx, streams.OffsetBucket)
	if err != nil {
		return false, fmt.Errorf("pgprojection: open %s: %w", streams.OffsetBucket, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := offsets.WatchAll(ctx)
	if err != nil {
		return false, fmt.Errorf("pgprojection: watch %s: %w", streams.OffsetBucket, err)
	}
	pendingKV, err := p.opts.JS.KeyValue(ctx, streams.EDUPendingBucket)
	if err != nil {
		return false, fmt.Errorf("pgprojection: open %s: %w", streams.EDUPendingBucket, err)
	}
	pw, err := pendingKV.WatchAll(ctx)
	if err != nil {
		return false, fmt.Errorf("pgprojection: watch %s: %w", streams.EDUPendingBucket, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.runOffsets(ctx, offsets, w) })
	wg.Go(func() { p.runPending(ctx, pendingKV, pw) })
	wg.Go(func() { p.runRooms(ctx, rooms) })
	rebuilt = p.runEvents(ctx, cons)
	cancel()
	wg.Wait()
	return rebuilt, nil
}

// consumer creates (or finds) the durable consumer.
func (p *Projector) consumer(ctx context.Context) (jetstream.Consumer, error) {
	return p.durable(ctx, streams.EventStream, checkpointName, jetstream.ConsumerConfig{
		Durable:        ConsumerName,
		Description:    "pgprojection: the destinations table in PostgreSQL",
		FilterSubjects: []string{"fedsender.events.>"},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        time.Minute,
		MaxAckPending:  -1,
	})
}

// durable creates (or finds) the durable consumer cfg on stream, whose
// progress PostgreSQL keeps as checkpoint. Messages are acked only once
// their checkpoint is committed, so a consumer whose ack floor is past it
// acked what the tables no longer hold: they were emptied by a rebuild,
// and the server, still removing the deleted consumer's store when the
// projector created it again, gave the new one the old one's state. That
// consumer is deleted (the server has removed its store when it answers)
// and created again, to read the stream from the start.
func (p *Projector) durable(ctx context.Context, stream, checkpoint string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cons, err := p.opts.JS.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgprojection: consumer on %s: %w", stream, err)
	}
	var seq int64
	err = p.opts.Pool.QueryRow(ctx, "SELECT stream_seq FROM projection_checkpoints WHERE name = $1", checkpoint).Scan(&seq)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		// PostgreSQL is down: the batches wait for it anyway.
		p.opts.Log.Warn("pgprojection: read checkpoint", "checkpoint", checkpoint, "error", err)
		return cons, nil
	}
	floor := cons.CachedInfo().AckFloor.Stream
	if floor <= uint64(max(seq, 0)) {
		return cons, nil
	}
	p.opts.Log.Warn("pgprojection: consumer acked past the checkpoint in PostgreSQL; reading its stream again",
		"consumer", cfg.Durable, "ack_floor", floor, "checkpoint", seq)
	if err := p.opts.JS.DeleteConsumer(ctx, stream, cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("pgprojection: delete consumer %s: %w", cfg.Durable, err)
	}
	cons, err = p.opts.JS.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgprojection: consumer on %s: %w", stream, err)
	}
	return cons, nil
}

// runEvents fetches batches of events and applies each in one transaction,
// retrying a batch until it commits; only then are its messages acked. It
// returns when ctx ends, or with rebuilt set when its consumer was deleted
// (by `fedsender projection rebuild`).
func (p *Projector) runEvents(ctx context.Context, cons jetstream.Consumer) (rebuilt bool) {
	for ctx.Err() == nil {
		msgs, err := Fetch(cons, p.opts.BatchSize)
		if err != nil && len(msgs) == 0 {
			if consumerGone(ctx, cons, err) {
				return true
			}
			p.opts.Log.Warn("pgprojection: fetch events", "error", err)
			if !p.wait(ctx, 200*time.Millisecond) {
				return false
			}
			continue
		}
		if len(msgs) == 0 {
			p.caughtUp(&p.eventsCaught, &p.eventsBehind)
			continue
		}
		rows, last, pending := p.decode(msgs)
		if !p.retry(ctx, "apply events", func(ctx context.Context) error { return p.applyEvents(ctx, rows, last) }) {
			return false
		}
		p.ackAll(msgs)
		p.progress(&p.eventsCaught, &p.eventsBehind, pending)
	}
	return false
}

// consumerGone reports whether a fetch from cons failed because cons was
// deleted. Deleted during a pull, the server says so; deleted between
// pulls, nothing answers the next pull (no responders), which is also
// what a server still starting answers: then cons is looked up.
func consumerGone(ctx context.Context, cons jetstream.Consumer, err error) bool {
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
		return true
	}
	if !errors.Is(err, nats.ErrNoResponders) {
		return false
	}
	_, err = cons.Info(ctx)
	return errors.Is(err, jetstream.ErrConsumerNotFound)
}

// progress records what a consumer had left after a batch: caught is set
// once it reached the end of its stream.
func (p *Projector) progress(caught *bool, behind *uint64, pending uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	*behind = pending
	if pending == 0 {
		*caught = true
	}
}

// caughtUp records that a consumer had nothing left to deliver.
func (p *Projector) caughtUp(caught *bool, behind *uint64) { p.progress(caught, behind, 0) }

// row is one destination's state from an event.
type row struct {
	state destination.State
	seq   uint64
}

// decode turns a batch into rows (the newest event per destination) and
// returns the batch's highest sequence and how many events the consumer
// had left after it.
func (p *Projector) decode(msgs []jetstream.Msg) (rows []row, last, pending uint64) {
	idx := map[string]int{}
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			p.opts.Log.Warn("pgprojection: event without metadata", "subject", m.Subject(), "error", err)
			continue
		}
		last, pending = max(last, md.Sequence.Stream), md.NumPending
		ev, err := eventlog.DecodeEvent(m.Subject(), m.Data())
		if err != nil {
			p.opts.Log.Warn("pgprojection: skipped event", "subject", m.Subject(), "sequence", md.Sequence.Stream, "error", err)
			continue
		}
		name := ev.State.Destination
		r := row{state: ev.State, seq: md.Sequence.Stream}
		if i, ok := idx[name]; ok {
			if rows[i].seq < r.seq {
				rows[i] = r
			}
			continue
		}
		idx[name] = len(rows)
		rows = append(rows, r)
	}
	return rows, last, pending
}

// upsertEvent writes each destination's state (one statement per batch, a
// row per destination: rows holds no name twice) as Synapse stores it (failure_ts
// null and the timings 0 when not failing) unless the row shows a newer
// event; last_successful_stream_ordering only grows (the offsets bucket
// writes it too). GREATEST ignores NULLs.
const upsertEvent = `
INSERT INTO destinations AS d (destination, retry_last_ts, retry_interval, failure_ts,
	last_successful_stream_ordering, catching_up, event_seq)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::boolean[], $7::bigint[])
ON CONFLICT (destination) DO UPDATE SET
	retry_last_ts = excluded.retry_last_ts,
	retry_interval = excluded.retry_interval,
	failure_ts = excluded.failure_ts,
	last_successful_stream_ordering = GREATEST(d.last_successful_stream_ordering, excluded.last_successful_stream_ordering),
	catching_up = excluded.catching_up,
	event_seq = excluded.event_seq
WHERE d.event_seq < excluded.event_seq`

const upsertCheckpoint = `
INSERT INTO projection_checkpoints AS c (name, stream_seq) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET stream_seq = GREATEST(c.stream_seq, excluded.stream_seq)`

// applyEvents writes rows and the checkpoint in one transaction.
func (p *Projector) applyEvents(ctx context.Context, rows []row, last uint64) error {
	return pgx.BeginFunc(ctx, p.opts.Pool, func(tx pgx.Tx) error {
		var (
			names                    = make([]string, len(rows))
			retryLast, retryIv, seqs = make([]int64, len(rows)), make([]int64, len(rows)), make([]int64, len(rows))
			failure, offsets         = make([]*int64, len(rows)), make([]*int64, len(rows))
			catchingUp               = make([]bool, len(rows))
		)
		for i, r := range rows {
			s := projection.Shown(r.state) // as Synapse stores it
			names[i], retryLast[i], retryIv[i], seqs[i] = s.Destination, s.RetryLastTS, s.RetryInterval, int64(r.seq)
			failure[i], offsets[i] = nullZero(s.FailureTS), nullZero(int64(min(s.Offset, 1<<63-1)))
			catchingUp[i] = s.CatchingUp
		}
		b := &pgx.Batch{}
		if len(rows) > 0 {
			b.Queue(upsertEvent, names, retryLast, retryIv, failure, offsets, catchingUp, seqs)
		}
		b.Queue(upsertCheckpoint, checkpointName, int64(last))
		return tx.SendBatch(ctx, b).Close()
	})
}

// runOffsets applies the offsets bucket to the destinations table.
func (p *Projector) runOffsets(ctx context.Context, offsets jetstream.KeyValue, w jetstream.KeyWatcher) {
	p.runBucket(ctx, offsets, w, "offsets", func(ctx context.Context, vals map[string]bucketValue) error {
		return p.applyOffsets(ctx, vals)
	}, func() {
		p.mu.Lock()
		p.offsetsCaught = true
		p.mu.Unlock()
	})
}

// runPending applies the pending-EDU bucket to the destinations table.
func (p *Projector) runPending(ctx context.Context, pending jetstream.KeyValue, w jetstream.KeyWatcher) {
	p.runBucket(ctx, pending, w, "pending EDUs", p.applyPending, func() {})
}

// bucketValue is a decimal value of a bucket keyed like the offsets, and
// its revision.
type bucketValue struct {
	n   int64
	rev uint64
}

// runBucket follows a bucket keyed <partition>.<token> with decimal
// values, and applies the newest value of each changed key every 100 ms
// (SQL decides what wins: offsets only grow, counts follow revisions);
// caught is called after each pass once the initial values are applied.
func (p *Projector) runBucket(ctx context.Context, kv jetstream.KeyValue, w jetstream.KeyWatcher, what string,
	apply func(context.Context, map[string]bucketValue) error, caught func()) {
	defer func() { w.Stop() }()
	// nats.go's watcher finds out that the server restarted only at its
	// heartbeat check, up to 20 s after the reconnection: watch again at
	// once instead, so that the admin API follows within a flush.
	nc := p.opts.JS.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	pending := map[string]bucketValue{}
	initial := true
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() == nil {
					p.opts.Log.Error("pgprojection: the " + what + " watcher stopped")
				}
				return
			}
			if e == nil {
				initial = false
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				continue // a deleted key: the row keeps what it showed
			}
			name, err := streams.DestinationFromOffsetKey(e.Key())
			if err != nil {
				continue
			}
			n, err := strconv.ParseUint(string(e.Value()), 10, 64)
			if err != nil {
				p.opts.Log.Warn("pgprojection: skipped "+what, "destination", name, "error", err)
				continue
			}
			v := bucketValue{n: int64(min(n, 1<<63-1)), rev: e.Revision()}
			if cur, ok := pending[name]; !ok || v.rev > cur.rev {
				pending[name] = v
			}
		case <-reconnected:
			if nw, err := kv.WatchAll(ctx); err != nil {
				p.opts.Log.Warn("pgprojection: watching "+what+" again after reconnecting", "error", err)
			} else {
				w.Stop()
				w = nw
			}
		case <-tick.C:
			if initial {
				continue
			}
			if len(pending) > 0 {
				if !p.retry(ctx, "apply "+what, func(ctx context.Context) error { return apply(ctx, pending) }) {
					return
				}
				clear(pending)
			}
			caught()
		}
	}
}

const upsertOffset = `
INSERT INTO destinations AS d (destination, last_successful_stream_ordering)
SELECT * FROM unnest($1::text[], $2::bigint[])
ON CONFLICT (destination) DO UPDATE SET
	last_successful_stream_ordering = GREATEST(d.last_successful_stream_ordering, excluded.last_successful_stream_ordering)
WHERE d.last_successful_stream_ordering IS DISTINCT FROM GREATEST(d.last_successful_stream_ordering, excluded.last_successful_stream_ordering)`

func (p *Projector) applyOffsets(ctx context.Context, offs map[string]bucketValue) error {
	values := make(map[string]int64, len(offs))
	for name, off := range offs {
		values[name] = off.n
	}
	return WriteOffsets(ctx, p.opts.Pool, values)
}

// WriteOffsets sets each destination's last_successful_stream_ordering
// (creating its row) unless the row shows a higher one, in one statement.
// Synapse's own destinations table has these columns, so the Synapse
// bookkeeping (internal/synapse/books) writes it with it too.
func WriteOffsets(ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, offs map[string]int64) error {
	names, values := make([]string, 0, len(offs)), make([]*int64, 0, len(offs))
	for name, off := range offs {
		names, values = append(names, name), append(values, nullZero(off))
	}
	_, err := db.Exec(ctx, upsertOffset, names, values)
	return err
}

// upsertPending sets a destination's pending_edus unless the row shows a
// newer count (a higher revision of its key).
const upsertPending = `
INSERT INTO destinations AS d (destination, pending_edus, pending_edus_rev)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
ON CONFLICT (destination) DO UPDATE SET
	pending_edus = excluded.pending_edus, pending_edus_rev = excluded.pending_edus_rev
WHERE d.pending_edus_rev < excluded.pending_edus_rev`

func (p *Projector) applyPending(ctx context.Context, counts map[string]bucketValue) error {
	names, values, revs := make([]string, 0, len(counts)), make([]int64, 0, len(counts)), make([]int64, 0, len(counts))
	for name, c := range counts {
		names, values, revs = append(names, name), append(values, c.n), append(revs, int64(min(c.rev, 1<<63-1)))
	}
	_, err := p.opts.Pool.Exec(ctx, upsertPending, names, values, revs)
	return err
}

// retry runs f until it succeeds, waiting with exponential backoff between
// attempts; it returns false if ctx ended first.
func (p *Projector) retry(ctx context.Context, what string, f func(context.Context) error) bool {
	return Retry(ctx, p.opts.Log, "pgprojection: "+what, p.opts.MaxBackoff, f)
}

// wait sleeps for d or until ctx ends; it reports whether ctx is live.
func (p *Projector) wait(ctx context.Context, d time.Duration) bool { return Wait(ctx, d) }

// Retry runs f until it succeeds, logging each failure as what and
// waiting with exponential backoff (from 50 ms up to maxBackoff) between
// attempts; it returns false if ctx ended first. Writers of PostgreSQL
// beside the pipeline (projections, the Synapse bookkeeping) retry so.
func Retry(ctx context.Context, log *slog.Logger, what string, maxBackoff time.Duration, f func(context.Context) error) bool {
	wait := 50 * time.Millisecond
	for {
		err := f(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		log.Warn(what+" failed; retrying", "in", wait, "error", err)
		if !Wait(ctx, wait) {
			return false
		}
		wait = min(wait*2, maxBackoff)
	}
}

// Wait sleeps for d or until ctx ends; it reports whether ctx is live.
func Wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Rebuild empties the tables and deletes the durable consumers, so that
// the projector reads the event log, the offsets bucket and the PDU stream
// again: a running one notices its event consumer is gone and starts over;
// otherwise the next Run does.
func Rebuild(ctx context.Context, js jetstream.JetStream, pool *pgxpool.Pool) error {
	// Truncate first: a projector that restarts on the deleted consumers
	// must find the tables empty, not see its first rows truncated.
	if _, err := pool.Exec(ctx, "TRUNCATE destinations, destination_rooms, projection_checkpoints"); err != nil {
		return fmt.Errorf("pgprojection: truncate: %w", err)
	}
	for _, c := range [][2]string{{streams.PDUStream, RoomsConsumerName}, {streams.EventStream, ConsumerName}} {
		err := js.DeleteConsumer(ctx, c[0], c[1])
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("pgprojection: delete consumer %s: %w", c[1], err)
		}
	}
	return nil
}

// nullZero maps 0 (Synapse's NULL: never failed, nothing sent) to NULL.
func nullZero(v int64) *int64 {
	if v == 0 {
		return nil
	}
	return &v
}
