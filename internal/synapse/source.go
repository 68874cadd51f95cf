package synapse

import (
	"context"
	"encoding/json"

	"github.com/nats-io/nats.go"
)

// Headers the feed sets on the envelopes it publishes, so that the
// bookkeeping can map what fedsender delivered back to Synapse's rows.
const (
	// HeaderStreamOrdering carries a PDU's Synapse stream ordering
	// (events.stream_ordering): destinations.last_successful_stream_ordering
	// and destination_rooms are kept in Synapse's numbers, not in fedsender's
	// stream sequences.
	HeaderStreamOrdering = "Fedsender-Synapse-Stream-Ordering"
	// HeaderSource names the Synapse row an EDU came from, as
	// "<kind> <stream_id>", kind one of to_device (a
	// device_federation_outbox row) and device_list (a
	// device_lists_outbound_pokes stream id); absent for EDUs Synapse keeps
	// no row for (typing, receipts, presence).
	HeaderSource = "Fedsender-Synapse-Source"
)

// Source turns one of Synapse's streams into envelopes.
type Source interface {
	// Name is the source's name, under which its position is saved
	// ("events", "to_device", "device_lists", "receipts", "presence",
	// "typing").
	Name() string
	// Streams lists the replication streams whose RDATA rows mean this
	// source may have new work.
	Streams() []string
	// Start returns the position to read after when no position was saved
	// yet (the first start against this Synapse).
	Start(ctx context.Context) (int64, error)
	// Next reads what Synapse wrote after position from (a bounded batch)
	// and returns the messages to publish, in order, and the position after
	// them.
	Next(ctx context.Context, from int64) (Batch, error)
}

// Batch is one read of a source.
type Batch struct {
	// Messages are ready to publish (streams.Publisher.Message builds
	// them), with Nats-Msg-Id set so that a replay is dropped by JetStream,
	// and the headers above.
	Messages []*nats.Msg
	// Position is saved once every message is acknowledged.
	Position int64
	// More is true when the batch was cut short: call Next again at once.
	More bool
}

// RowObserver is implemented by sources that use the replication rows
// themselves, not only as a wake-up (typing, whose state Synapse keeps
// only in memory and on the replication stream; presence_federation).
// Observe is called with each RDATA row of the source's Streams, in the
// order Synapse published them; rows may repeat.
type RowObserver interface {
	Observe(stream string, token int64, row json.RawMessage)
}
