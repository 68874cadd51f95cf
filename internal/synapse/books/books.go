package books

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/projection/pgprojection"
	"github.com/fedsender/fedsender/streams"
)

// LeaseKey is the lease the replica doing the bookkeeping holds.
const LeaseKey = "synapse-books"

// ErrFenced means another replica moved a checkpoint: this one lost the
// lease and stops writing.
var ErrFenced = errors.New("books: another replica keeps the books")

// Options configure Books.
type Options struct {
	JS jetstream.JetStream
	// DB is Synapse's database (synapse.database_url), logged in as a role
	// with the privileges of package grants.
	DB *pgxpool.Pool
	// Origin is Synapse's server_name, never a destination; Synapse's
	// replication channel is named after it.
	Origin string
	// Redis is Synapse's replication Redis (synapse.redis_url); nil
	// without it. Changes of retry timings are announced there, as
	// Synapse's processes announce them, so that they drop their cached
	// timings.
	Redis *redis.Client
	// InstanceName is fedsender's name among Synapse's processes
	// (synapse.instance_name; default "fedsender").
	InstanceName string
	// Holder names this replica in the lease.
	Holder string
	// Flush is how often offsets and EDU offsets are applied (default
	// 200 ms).
	Flush time.Duration
	// MaxBackoff bounds the wait between retries while PostgreSQL fails
	// (default 5 s; the first wait is 50 ms).
	MaxBackoff time.Duration
	// Lease sizes the lease (defaults of package lease).
	Lease lease.Options
	Log   *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Flush <= 0 {
		o.Flush = 200 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	if o.InstanceName == "" {
		o.InstanceName = "fedsender"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Lease.Logger == nil {
		o.Lease.Logger = o.Log
	}
}

// Books keeps Synapse's tables from fedsender's streams; Run does the work.
type Books struct {
	opts Options
}

// New returns the bookkeeping; Run starts it.
func New(opts Options) *Books {
	opts.setDefaults()
	return &Books{opts: opts}
}

// Run keeps the books until ctx ends, then returns nil: it waits for the
// lease, works while it holds it, and waits for it again when it is lost.
func (b *Books) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		l, err := lease.Acquire(ctx, b.opts.JS, LeaseKey, b.opts.Holder, b.opts.Lease)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("books: lease: %w", err)
		}
		b.opts.Log.Info("books: keeping Synapse's federation tables", "holder", b.opts.Holder)
		err = b.keep(l.Context())
		_ = l.Release(context.WithoutCancel(ctx))
		if err != nil && ctx.Err() == nil {
			b.opts.Log.Warn("books: stopped; waiting for the lease again", "error", err)
			if !pgprojection.Wait(ctx, time.Second) {
				return nil
			}
		}
	}
	return nil
}

// keep runs the four appliers until ctx ends or one of them fails.
func (b *Books) keep(ctx context.Context) error {
	kv, err := b.opts.JS.KeyValue(ctx, streams.SynapseBooksBucket)
	if err != nil {
		return fmt.Errorf("books: open %s: %w", streams.SynapseBooksBucket, err)
	}
	pdus, err := b.opts.JS.Stream(ctx, streams.PDUStream)
	if err != nil {
		return fmt.Errorf("books: open %s: %w", streams.PDUStream, err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{
		func(ctx context.Context) error { return b.tail(ctx, kv, "pdu", streams.PDUStream, b.applyRooms) },
		func(ctx context.Context) error { return b.tail(ctx, kv, "events", streams.EventStream, b.applyTimings) },
		func(ctx context.Context) error { return b.runOffsets(ctx, pdus) },
		func(ctx context.Context) error { return b.runEDUs(ctx, kv) },
	} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// tail applies stream, from after its checkpoint name, batch by batch; the
// checkpoint moves once apply committed a batch.
func (b *Books) tail(ctx context.Context, kv jetstream.KeyValue, name, stream string,
	apply func(context.Context, []jetstream.Msg) error) error {
	cp, err := loadCheckpoint(ctx, kv, name)
	if err != nil {
		return err
	}
	cons, err := b.follow(ctx, stream, cp.seq)
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		msgs, err := pgprojection.Fetch(cons, 500)
		if err != nil && len(msgs) == 0 {
			b.opts.Log.Warn("books: fetch", "stream", stream, "error", err)
			pgprojection.Wait(ctx, 200*time.Millisecond)
			continue
		}
		if len(msgs) == 0 {
			continue
		}
		if !b.retry(ctx, "apply "+name, func(ctx context.Context) error { return apply(ctx, msgs) }) {
			return nil
		}
		md, err := msgs[len(msgs)-1].Metadata()
		if err != nil {
			return fmt.Errorf("books: %s: %w", stream, err)
		}
		if err := cp.save(ctx, md.Sequence.Stream); err != nil {
			return err
		}
	}
	return nil
}

// follow reads stream after sequence after with an ordered consumer.
func (b *Books) follow(ctx context.Context, stream string, after uint64) (jetstream.Consumer, error) {
	cfg := jetstream.OrderedConsumerConfig{}
	if after > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	cons, err := b.opts.JS.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("books: read %s: %w", stream, err)
	}
	return cons, nil
}

// retry runs f until it succeeds, with backoff; false if ctx ended first.
func (b *Books) retry(ctx context.Context, what string, f func(context.Context) error) bool {
	return pgprojection.Retry(ctx, b.opts.Log, "books: "+what, b.opts.MaxBackoff, f)
}

// checkpoint is how far one stream was applied, kept in a KV key written
// with compare-and-swap.
type checkpoint struct {
	kv       jetstream.KeyValue
	key      string
	rev, seq uint64
}

func loadCheckpoint(ctx context.Context, kv jetstream.KeyValue, key string) (*checkpoint, error) {
	cp := &checkpoint{kv: kv, key: key}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return cp, nil
	}
	if err != nil {
		return nil, fmt.Errorf("books: read checkpoint %s: %w", key, err)
	}
	cp.rev = e.Revision()
	if cp.seq, err = strconv.ParseUint(string(e.Value()), 10, 64); err != nil {
		return nil, fmt.Errorf("books: checkpoint %s: %w", key, err)
	}
	return cp, nil
}

// save moves the checkpoint to seq; a checkpoint another writer moved
// meanwhile is ErrFenced.
func (c *checkpoint) save(ctx context.Context, seq uint64) error {
	if seq <= c.seq {
		return nil
	}
	val := []byte(strconv.FormatUint(seq, 10))
	var (
		rev uint64
		err error
	)
	if c.rev == 0 {
		rev, err = c.kv.Create(ctx, c.key, val)
	} else {
		rev, err = c.kv.Update(ctx, c.key, val, c.rev)
	}
	if conflict(err) {
		return fmt.Errorf("%w: checkpoint %s: %v", ErrFenced, c.key, err)
	}
	if err != nil {
		return fmt.Errorf("books: save checkpoint %s: %w", c.key, err)
	}
	c.rev, c.seq = rev, seq
	return nil
}

// conflict reports whether a KV write failed because the key moved.
func conflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
