// Package ingest reads the PDU stream once per replica and hands each PDU to
// the partition supervisors of its destinations. It validates every envelope
// (a homeserver may publish without fedsender's client) and moves invalid ones
// to the dead-letter subject with the reason in a header, so nothing crashes
// and nothing valid is held up. An invalid destination of a valid envelope
// gets a dead letter of its own; the PDU still goes to the other
// destinations. fedsender's own server name is dropped from every PDU's
// destinations.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/anthdm/hollywood/actor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"go.opentelemetry.io/otel/trace"

	"github.com/fedsender/fedsender/actors/partition"
	"github.com/fedsender/fedsender/internal/queuebudget"
	"github.com/fedsender/fedsender/internal/telemetry"
	"github.com/fedsender/fedsender/streams"
)

// maxBatch bounds the PDUs handed to the supervisors in one go.
const maxBatch = 512

// maxWarned bounds the refused destination names logged at warning level
// (the first time each is seen); later ones are logged at debug level.
const maxWarned = 1024

// heartbeat is how often the server signals an idle pull. The ordered
// consumer is recreated, from the PDU after the last one read, once two are
// missed: within 2 s when the NATS node holding it goes down while the
// connection stays up (a cluster's rolling restart), instead of 10 s with
// nats.go's default of 5 s.
const heartbeat = time.Second

// Options configure a Reader.
type Options struct {
	JS     jetstream.JetStream
	Engine *actor.Engine
	// Partitions are the supervisors, indexed by partition: nil for a
	// partition this replica does not own (yet: see Own).
	Partitions []*actor.PID
	// Budget is charged for every (PDU, destination) pair handed over.
	Budget *queuebudget.Budget
	// Start is the first stream sequence to read.
	Start uint64
	// Origin is fedsender's own server_name: never a destination.
	Origin string
	Log    *slog.Logger
	// Tracer records the ingest and fan-out spans (zero: tracing off).
	Tracer telemetry.Tracer
	// Metrics counts queued PDUs and dead letters (nil: none).
	Metrics *telemetry.Metrics
	// Observer, if set, sees every valid PDU (e.g. the admin surfaces'
	// rooms index).
	Observer Observer
	// Recent, if set, remembers the events read in the last minute, for
	// the EDU reader's receipt pacing.
	Recent *RecentEvents
	// Hold: read nothing until Begin, while taking Own and Disown, so
	// that the partitions claimed at start are read for in one pass.
	Hold bool
}

// Observer sees the valid PDUs the reader reads, once per batch, in stream
// order, before they are dispatched. It must not block or keep the slice:
// the reader waits for it.
type Observer interface {
	Observe(items []streams.Item)
}

// Reader is the one consumer of the PDU stream in a replica.
type Reader struct {
	readerState
	opts Options
}

// New returns a reader.
func New(opts Options) *Reader {
	return &Reader{opts: opts, readerState: newReaderState(opts.Partitions)}
}

// Run reads until ctx ends.
func (r *Reader) Run(ctx context.Context) error {
	return consume(ctx, consumeOptions{
		js: r.opts.JS, stream: streams.PDUStream, start: r.opts.Start, log: r.opts.Log, what: "PDUs",
		state: &r.readerState, handle: r.handle, advance: r.advance, hold: r.opts.Hold,
	})
}

// consumeOptions say what consume reads and what it does with it.
type consumeOptions struct {
	js      jetstream.JetStream
	stream  string
	start   uint64
	log     *slog.Logger
	what    string
	state   *readerState
	handle  func(context.Context, []jetstream.Msg) error
	advance func() // every second
	hold    bool   // wait for Begin
}

// consume reads a stream from o.start with an ordered consumer, in batches
// of what has arrived (at most maxBatch), until ctx ends. A partition
// acquired with a watermark behind the reader makes it read again from
// there.
func consume(ctx context.Context, o consumeOptions) error {
	start := max(o.start, 1)
	if o.hold {
		o.state.through.Store(start - 1)
		var ok bool
		if start, ok = o.state.hold(ctx, start); !ok {
			return nil
		}
	}
	for {
		o.state.through.Store(start - 1)
		rewind, err := consumeFrom(ctx, o, start)
		if err != nil || rewind == 0 {
			return err
		}
		o.log.Info("a partition was acquired behind the reader: reading "+o.what+" again from its watermark",
			"from_sequence", rewind, "was_through", o.state.through.Load())
		start = rewind
	}
}

// consumeFrom reads from start until ctx ends (0, nil), or until an
// acquired partition needs the stream read again from an earlier sequence
// (that sequence).
func consumeFrom(ctx context.Context, o consumeOptions, start uint64) (uint64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cons, err := o.js.OrderedConsumer(ctx, o.stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   start,
	})
	if err != nil {
		return 0, fmt.Errorf("ingest: consume %s: %w", o.stream, err)
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(2*maxBatch), jetstream.PullHeartbeat(heartbeat))
	if err != nil {
		return 0, fmt.Errorf("ingest: consume %s: %w", o.stream, err)
	}
	defer iter.Stop()
	msgs := make(chan jetstream.Msg, maxBatch)
	errc := make(chan error, 1)
	go func() {
		defer close(msgs)
		for {
			msg, err := iter.Next(jetstream.NextContext(ctx))
			if err != nil {
				if ctx.Err() == nil {
					errc <- err
				}
				return
			}
			select {
			case msgs <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	o.state.running.Store(true)
	defer o.state.running.Store(false)
	o.log.Info("reading "+o.what, "from_sequence", start)

	advance := time.NewTicker(time.Second)
	defer advance.Stop()
	batch := make([]jetstream.Msg, 0, maxBatch)
	for {
		select {
		case <-ctx.Done():
			return 0, nil
		case err := <-errc:
			return 0, fmt.Errorf("ingest: read %s: %w", o.stream, err)
		case <-advance.C:
			o.advance()
		case req := <-o.state.requests:
			if rewind := o.state.apply(req); rewind != 0 {
				return rewind, nil
			}
		case msg, ok := <-msgs:
			if !ok {
				return 0, nil
			}
			batch = append(batch[:0], msg)
		drain:
			for len(batch) < maxBatch {
				select {
				case m, ok := <-msgs:
					if !ok {
						break drain
					}
					batch = append(batch, m)
				default:
					break drain
				}
			}
			if err := o.handle(ctx, batch); err != nil {
				return 0, err
			}
		}
	}
}

func (r *Reader) handle(ctx context.Context, batch []jetstream.Msg) error {
	pairs := make(map[int][]partition.Pair)
	var last uint64
	var observed []streams.Item
	var fanOuts []trace.Span // only when tracing
	defer func() { endFanOuts(fanOuts) }()
	valid, deliveries := 0, 0
	for _, msg := range batch {
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
		last = md.Sequence.Stream
		// Read again after a rewind: only the acquired partitions need it.
		fresh := last > r.seen
		pdu, err := streams.DecodePDU(msg.Data())
		if err == nil {
			pdu.Destinations = streams.DropOrigin(pdu.Destinations, r.opts.Origin)
		}
		sctx := ctx
		if r.opts.Tracer.Enabled() && fresh { // traced once, when first read
			sctx, fanOuts = r.traceIngest(ctx, msg, last, pdu, err, fanOuts)
		}
		if err != nil {
			if fresh {
				r.deadLetter(sctx, msg, last, err)
			}
			continue
		}
		if fresh {
			for _, ref := range pdu.Refused {
				r.refuseDestination(sctx, pdu, last, ref)
			}
			if len(pdu.Destinations) > 0 { // none: a PDU only for fedsender's own server
				valid, deliveries = valid+1, deliveries+len(pdu.Destinations)
			}
		}
		it := streams.Item{Seq: last, TS: md.Timestamp.UnixMilli(), PDU: pdu}
		if (r.opts.Observer != nil || r.opts.Recent != nil) && fresh {
			observed = append(observed, it)
		}
		for _, d := range pdu.Destinations {
			p := r.partitionOf(d)
			if r.owned[p] != nil {
				pairs[p] = append(pairs[p], partition.Pair{Destination: d, Item: it})
			}
		}
	}
	if len(observed) > 0 && r.opts.Observer != nil {
		r.opts.Observer.Observe(observed)
	}
	r.opts.Recent.add(observed, time.Now().UnixMilli())
	total := 0
	for _, ps := range pairs {
		total += len(ps)
	}
	if err := r.opts.Budget.Acquire(ctx, int64(total)); err != nil {
		return nil // shutting down
	}
	for p, ps := range pairs {
		r.opts.Engine.Send(r.owned[p], partition.Dispatch{Pairs: ps, Through: last})
	}
	r.through.Store(last)
	r.seen = max(r.seen, last)
	r.opts.Metrics.Queued(ctx, valid, deliveries)
	return nil
}

// advance tells every supervisor how far the reader is, so that partitions
// without traffic still move their watermark.
func (r *Reader) advance() {
	t := r.through.Load()
	for _, pid := range r.owned {
		if pid != nil {
			r.opts.Engine.Send(pid, partition.Advance{Through: t})
		}
	}
}

func (r *Reader) deadLetter(ctx context.Context, msg jetstream.Msg, seq uint64, reason error) {
	r.deadLetters.Add(1)
	r.opts.Metrics.DeadLetter(ctx)
	r.opts.Log.WarnContext(ctx, "refused an envelope: moved to the dead-letter subject",
		"sequence", seq, "subject", streams.DeadLetterPDU, "reason", reason)
	// The id makes a replay after a restart, or a second replica, a no-op.
	r.publishDeadLetter(streams.DeadLetter(msg.Data(), seq, reason))
}

// refuseDestination records one invalid destination of a valid envelope:
// the PDU goes to the others. A room's odd server name comes with each of
// its PDUs: each is recorded and counted, but only the first few distinct
// names are logged at warning level.
func (r *Reader) refuseDestination(ctx context.Context, pdu *streams.PDU, seq uint64, ref streams.RefusedDestination) {
	r.opts.Metrics.DestinationRefused(ctx, telemetry.RefusedInvalidServerName)
	r.opts.Log.Log(ctx, warnOnce(r.warned, ref.Name), "refused a destination: recorded on the dead-letter subject, the PDU goes to the others",
		"sequence", seq, "subject", streams.DeadLetterPDU, "reason", ref)
	dl, err := streams.DestinationDeadLetter(pdu, seq, ref)
	if err != nil {
		r.opts.Log.Error("could not record a dead letter", "sequence", seq, "error", err)
		return
	}
	r.publishDeadLetter(dl)
}

func (r *Reader) publishDeadLetter(dl *nats.Msg) {
	publishDeadLetter(r.opts.JS, r.opts.Log, dl)
}

func publishDeadLetter(js jetstream.JetStream, log *slog.Logger, dl *nats.Msg) {
	if _, err := js.PublishMsgAsync(dl); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("could not record a dead letter", "dead_letter_id", dl.Header.Get(jetstream.MsgIDHeader), "error", err)
	}
}

// warnOnce is the level to log a refused name at: warning the first time
// it is seen, while fewer than maxWarned were, debug after.
func warnOnce(warned map[string]struct{}, name string) slog.Level {
	if _, seen := warned[name]; !seen && len(warned) < maxWarned {
		warned[name] = struct{}{}
		return slog.LevelWarn
	}
	return slog.LevelDebug
}
