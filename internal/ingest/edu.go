package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/anthdm/hollywood/actor"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/actors/partition"
	"github.com/fedsender/fedsender/internal/edu"
	"github.com/fedsender/fedsender/internal/telemetry"
	"github.com/fedsender/fedsender/streams"
)

// EDUOptions configure an EDUReader.
type EDUOptions struct {
	JS     jetstream.JetStream
	Engine *actor.Engine
	// Partitions are the supervisors, indexed by partition: nil for a
	// partition this replica does not own (yet: see Own).
	Partitions []*actor.PID
	// Start is the first EDU stream sequence to read.
	Start uint64
	// Origin is fedsender's own server_name: never a destination.
	Origin string
	Log    *slog.Logger
	// Metrics counts dead letters and refused destinations (nil: none).
	Metrics *telemetry.Metrics
	// Recent is what the PDU reader read in the last minute, and
	// ReceiptRate the pace (receipts per second) of a receipt for an older
	// event to a room of PacedReceiptServers or more (0: no pacing).
	Recent      *RecentEvents
	ReceiptRate float64
	// Hold: read nothing until Begin (see Options.Hold).
	Hold bool
}

// Pacing of receipts in large rooms, as Synapse has it.
const (
	PacedReceiptServers = 10
	maxReceiptDelay     = 30_000 // ms
)

// EDUReader is the one consumer of the EDU stream in a replica: it reads
// it as Reader reads the PDU stream, with the same validation and dead
// letters, and hands each EDU to the supervisors of its destinations'
// partitions. EDUs are few and small beside PDUs: they take no queue
// budget; each destination's outbox bounds what it holds.
type EDUReader struct {
	readerState
	opts EDUOptions
}

// NewEDUReader returns an EDU reader.
func NewEDUReader(opts EDUOptions) *EDUReader {
	return &EDUReader{opts: opts, readerState: newReaderState(opts.Partitions)}
}

// Run reads until ctx ends.
func (r *EDUReader) Run(ctx context.Context) error {
	return consume(ctx, consumeOptions{
		js: r.opts.JS, stream: streams.EDUStream, start: r.opts.Start, log: r.opts.Log, what: "EDUs",
		state: &r.readerState, handle: r.handle, advance: r.advance, hold: r.opts.Hold,
	})
}

func (r *EDUReader) handle(ctx context.Context, batch []jetstream.Msg) error {
	pairs := make(map[int][]partition.EDUPair)
	var last uint64
	for _, msg := range batch {
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
		last = md.Sequence.Stream
		fresh := last > r.seen // not read before a rewind
		edu, err := streams.DecodeEDU(msg.Data())
		if err != nil && !fresh {
			continue
		}
		if err != nil {
			r.deadLetters.Add(1)
			r.opts.Metrics.DeadLetter(ctx)
			r.opts.Log.WarnContext(ctx, "refused an EDU envelope: moved to the dead-letter subject",
				"sequence", last, "subject", streams.DeadLetterEDU, "reason", err)
			publishDeadLetter(r.opts.JS, r.opts.Log, streams.EDUDeadLetter(msg.Data(), last, err))
			continue
		}
		edu.Destinations = streams.DropOrigin(edu.Destinations, r.opts.Origin)
		for _, ref := range edu.Refused {
			if fresh {
				r.refuseDestination(ctx, edu, last, ref)
			}
		}
		it := streams.EDUItem{Seq: last, TS: md.Timestamp.UnixMilli(), EDU: edu}
		paced := r.paced(edu)
		for i, d := range edu.Destinations {
			if paced {
				it.NotBefore = time.Now().UnixMilli() + min(maxReceiptDelay, int64(float64(i)*1000/r.opts.ReceiptRate))
			}
			if p := r.partitionOf(d); r.owned[p] != nil {
				pairs[p] = append(pairs[p], partition.EDUPair{Destination: d, Item: it})
			}
		}
	}
	for p, ps := range pairs {
		r.opts.Engine.Send(r.owned[p], partition.DispatchEDU{Pairs: ps, Through: last})
	}
	r.through.Store(last)
	r.seen = max(r.seen, last)
	return nil
}

// paced reports whether a receipt is paced: Synapse's rule for a room of
// 10 or more servers, when none of its events was read in the last
// minute. (Synapse also sends it at once to the server of the event's
// sender; fedsender does not index events, so that server is paced too
// unless the receipt goes with another transaction.)
func (r *EDUReader) paced(e *streams.EDU) bool {
	if e.Type != edu.TypeReceipt || r.opts.ReceiptRate <= 0 || len(e.Destinations) < PacedReceiptServers {
		return false
	}
	now := time.Now().UnixMilli()
	for _, id := range edu.ReceiptEventIDs(e.Content) {
		if r.opts.Recent.Recent(id, now) {
			return false
		}
	}
	return true
}

// refuseDestination records one invalid destination of a valid EDU
// envelope; the EDU goes to the others.
func (r *EDUReader) refuseDestination(ctx context.Context, edu *streams.EDU, seq uint64, ref streams.RefusedDestination) {
	r.opts.Metrics.DestinationRefused(ctx, telemetry.RefusedInvalidServerName)
	r.opts.Log.Log(ctx, warnOnce(r.warned, ref.Name), "refused a destination: recorded on the dead-letter subject, the EDU goes to the others",
		"sequence", seq, "subject", streams.DeadLetterEDU, "reason", ref)
	dl, err := streams.EDUDestinationDeadLetter(edu, seq, ref)
	if err != nil {
		r.opts.Log.Error("could not record a dead letter", "sequence", seq, "error", err)
		return
	}
	publishDeadLetter(r.opts.JS, r.opts.Log, dl)
}

// advance tells every supervisor how far the reader is.
func (r *EDUReader) advance() {
	t := r.through.Load()
	for _, pid := range r.owned {
		if pid != nil {
			r.opts.Engine.Send(pid, partition.AdvanceEDU{Through: t})
		}
	}
}
