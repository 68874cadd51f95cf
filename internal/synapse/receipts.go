package synapse

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// Receipts is the read-receipt source: rows of Synapse's
// receipts_linearized of our own users, as Synapse's sender worker takes
// them from the receipts stream, each as one m.receipt EDU to the servers
// in the room now. Private receipts (m.read.private and its unstable name)
// never leave the server. A threaded receipt carries its thread in
// data.thread_id, and a coalescing key of its own, so that it does not
// replace the user's unthreaded receipt in the pipeline (Synapse keeps one
// per thread too).
//
// Receipts are droppable and Synapse's sender holds them only in memory:
// a first start begins at the stream's current position, as Synapse's
// sender does after a restart.
type Receipts struct {
	d EDUDeps
}

// NewReceipts returns the receipts source.
func NewReceipts(deps EDUDeps) (*Receipts, error) {
	d, err := deps.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Receipts{d: d}, nil
}

// Name implements Source.
func (*Receipts) Name() string { return "receipts" }

// Streams implements Source.
func (*Receipts) Streams() []string { return []string{"receipts"} }

// Start implements Source: the current position.
func (s *Receipts) Start(ctx context.Context) (int64, error) { return s.upto(ctx) }

func (s *Receipts) upto(ctx context.Context) (int64, error) {
	upto, ok, err := streamPosition(ctx, s.d.DB, "receipts")
	if err != nil || ok {
		return upto, err
	}
	return maxOf(ctx, s.d.DB, "receipts_linearized", "stream_id")
}

type receiptRow struct {
	streamID                   int64
	room, rtype, user, eventID string
	data                       string
	threadID                   *string
}

// Next implements Source.
func (s *Receipts) Next(ctx context.Context, from int64) (Batch, error) {
	upto, err := s.upto(ctx)
	if err != nil {
		return Batch{}, err
	}
	if upto <= from {
		return Batch{Position: from}, nil
	}
	rows, err := s.d.DB.Query(ctx, `
		SELECT stream_id, room_id, receipt_type, user_id, event_id, data, thread_id
		  FROM receipts_linearized WHERE stream_id > $1 AND stream_id <= $2
		 ORDER BY stream_id LIMIT $3`, from, upto, s.d.BatchSize)
	if err != nil {
		return Batch{}, fmt.Errorf("synapse: read receipts_linearized after %d: %w", from, err)
	}
	var (
		list  []receiptRow
		rooms []string
		n     int
		last  int64
	)
	for rows.Next() {
		var r receiptRow
		if err := rows.Scan(&r.streamID, &r.room, &r.rtype, &r.user, &r.eventID, &r.data, &r.threadID); err != nil {
			rows.Close()
			return Batch{}, fmt.Errorf("synapse: read receipts_linearized: %w", err)
		}
		n, last = n+1, r.streamID
		if !s.d.isLocal(r.user) || private(r.rtype) {
			continue
		}
		list = append(list, r)
		rooms = append(rooms, r.room)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Batch{}, fmt.Errorf("synapse: read receipts_linearized: %w", err)
	}
	hosts, err := roomHosts(ctx, s.d.DB, rooms)
	if err != nil {
		return Batch{}, err
	}
	var msgs []*nats.Msg
	for _, r := range list {
		m, err := s.envelope(ctx, r, s.d.Routing.Filter(hosts[r.room]))
		if err != nil {
			return Batch{}, err
		}
		if m != nil {
			msgs = append(msgs, m)
		}
	}
	if n == s.d.BatchSize {
		return Batch{Messages: msgs, Position: last, More: last < upto}, nil
	}
	return Batch{Messages: msgs, Position: upto}, nil
}

// private reports whether a receipt type is one Synapse never federates.
func private(receiptType string) bool {
	return receiptType == "m.read.private" || strings.HasSuffix(receiptType, ".read.private")
}

// envelope builds the m.receipt EDU of one row, as Synapse's sender
// serialises it: {room: {type: {user: {event_ids, data}}}}; nil when the
// room has no other server.
func (s *Receipts) envelope(ctx context.Context, r receiptRow, dests []string) (*nats.Msg, error) {
	if len(dests) == 0 {
		return nil, nil
	}
	data := map[string]json.RawMessage{}
	if err := json.Unmarshal([]byte(r.data), &data); err != nil {
		s.d.Logger.Error("synapse: receipts_linearized data is not a JSON object; sent without it",
			"room_id", r.room, "stream_id", r.streamID, "error", err)
		data = map[string]json.RawMessage{}
	}
	var key string
	if r.threadID != nil {
		data["thread_id"], _ = json.Marshal(*r.threadID)
		// The pipeline's default key is (room, type, user).
		if k := r.room + "\x00" + r.rtype + "\x00" + r.user + "\x00" + *r.threadID; len(k) <= 255 {
			key = k
		}
	}
	content := map[string]any{r.room: map[string]any{r.rtype: map[string]any{r.user: map[string]any{
		"event_ids": []string{r.eventID}, "data": data}}}}
	m, err := s.d.message(ctx, outgoing{Type: "m.receipt", Content: content, Destinations: dests, Key: key,
		ID: "synapse-receipt-" + strconv.FormatInt(r.streamID, 10)})
	if err != nil {
		s.d.Logger.Error("synapse: receipt refused; skipped", "room_id", r.room, "stream_id", r.streamID, "error", err)
		return nil, nil
	}
	return m, nil
}
