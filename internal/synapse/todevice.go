package synapse

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// ToDevice is the to-device source: each row of Synapse's
// device_federation_outbox is one m.direct_to_device EDU for one server,
// its messages_json the content as Synapse's sender puts it on the wire
// (message_id and org.matrix.opentracing_context included). Rows are read
// in stream order up to the to_device stream's safe position, never past
// it, so a row committed late by another writer is not skipped. The rows
// are deleted by the bookkeeping once the destination acknowledged them
// (HeaderSource "to_device <stream_id>").
//
// A first start reads from 0: every row still in the outbox is owed, as
// Synapse's own sender re-reads everything not deleted when it starts.
type ToDevice struct {
	d EDUDeps
}

// NewToDevice returns the to-device source.
func NewToDevice(deps EDUDeps) (*ToDevice, error) {
	d, err := deps.withDefaults()
	if err != nil {
		return nil, err
	}
	return &ToDevice{d: d}, nil
}

// Name implements Source.
func (*ToDevice) Name() string { return "to_device" }

// Streams implements Source.
func (*ToDevice) Streams() []string { return []string{"to_device"} }

// Start implements Source: everything still in the outbox.
func (*ToDevice) Start(context.Context) (int64, error) { return 0, nil }

// Next implements Source.
func (s *ToDevice) Next(ctx context.Context, from int64) (Batch, error) {
	upto, ok, err := streamPosition(ctx, s.d.DB, "to_device")
	if err != nil {
		return Batch{}, err
	}
	if !ok {
		// No writer has recorded a position: nothing was written through
		// the multi-writer generator, so what is there is committed.
		if upto, err = maxOf(ctx, s.d.DB, "device_federation_outbox", "stream_id"); err != nil {
			return Batch{}, err
		}
	}
	if upto <= from {
		return Batch{Position: from}, nil
	}
	// Whole stream ids only: one id holds one row per destination of one
	// sending request, and the position must not split it.
	rows, err := s.d.DB.Query(ctx, `
		WITH ids AS (
			SELECT DISTINCT stream_id FROM device_federation_outbox
			 WHERE stream_id > $1 AND stream_id <= $2 ORDER BY stream_id LIMIT $3)
		SELECT o.destination, o.stream_id, o.messages_json
		  FROM device_federation_outbox o JOIN ids USING (stream_id)
		 ORDER BY o.stream_id, o.destination`, from, upto, s.d.BatchSize)
	if err != nil {
		return Batch{}, fmt.Errorf("synapse: read device_federation_outbox after %d: %w", from, err)
	}
	defer rows.Close()
	var (
		msgs []*nats.Msg
		ids  int
		last int64
	)
	for rows.Next() {
		var (
			dest     string
			streamID int64
			content  string
		)
		if err := rows.Scan(&dest, &streamID, &content); err != nil {
			return Batch{}, fmt.Errorf("synapse: read device_federation_outbox: %w", err)
		}
		if streamID != last {
			ids++
			last = streamID
		}
		m, err := s.envelope(ctx, dest, streamID, content)
		if err != nil {
			return Batch{}, err
		}
		if m != nil {
			msgs = append(msgs, m)
		}
	}
	if err := rows.Err(); err != nil {
		return Batch{}, fmt.Errorf("synapse: read device_federation_outbox: %w", err)
	}
	if ids == s.d.BatchSize {
		return Batch{Messages: msgs, Position: last, More: last < upto}, nil
	}
	return Batch{Messages: msgs, Position: upto}, nil
}

// envelope builds one row's envelope, or nil for a row to skip (a
// destination Routing refuses, content that is not a JSON object: Synapse
// wrote it, so it is logged, not retried forever).
func (s *ToDevice) envelope(ctx context.Context, dest string, streamID int64, content string) (*nats.Msg, error) {
	dests := s.d.Routing.Filter([]string{dest})
	if len(dests) == 0 {
		s.d.Logger.Debug("synapse: to-device row not for a destination fedsender sends to",
			"destination", dest, "stream_id", streamID)
		return nil, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(content), &obj); err != nil {
		s.d.Logger.Error("synapse: device_federation_outbox row is not a JSON object; skipped",
			"destination", dest, "stream_id", streamID, "error", err)
		return nil, nil
	}
	id := strconv.FormatInt(streamID, 10)
	m, err := s.d.message(ctx, outgoing{Type: "m.direct_to_device", Content: json.RawMessage(content),
		Destinations: dests, ID: "synapse-td-" + dests[0] + "-" + id, Source: "to_device " + id})
	if err != nil {
		s.d.Logger.Error("synapse: to-device message refused; skipped",
			"destination", dest, "stream_id", streamID, "error", err)
		return nil, nil
	}
	return m, nil
}
