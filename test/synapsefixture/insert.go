package synapsefixture

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Event is an event to persist the way Synapse's event persister does
// (the rows a federation sender reads): events, event_json, event_edges,
// event_auth, room_memberships, state groups, and the writer's
// stream_positions row.
type Event struct {
	RoomID   string
	Type     string
	StateKey *string // nil: not a state event
	Sender   string
	Content  map[string]any
	// Metadata is event_json.internal_metadata ({} when nil), e.g.
	// {"send_on_behalf_of": "server"} or {"out_of_band_membership": true}.
	Metadata map[string]any
	// PrevEvents default to the room's newest event.
	PrevEvents []string
	AuthEvents []string
	// Instance is the event writer (default "master").
	Instance string
	// StreamOrdering is the stream ordering to use (default: the next one
	// of events_stream_seq).
	StreamOrdering int64
	// KeepPosition leaves the writer's stream_positions row alone (a
	// writer that has not finished yet).
	KeepPosition bool
}

// InsertEvent persists ev in the database tx belongs to and returns its
// event id and stream ordering.
func InsertEvent(ctx context.Context, tx pgx.Tx, ev Event) (eventID string, streamOrdering int64, err error) {
	if ev.Instance == "" {
		ev.Instance = "master"
	}
	if ev.Metadata == nil {
		ev.Metadata = map[string]any{}
	}
	if ev.PrevEvents == nil {
		var prev string
		if err := tx.QueryRow(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND NOT outlier
			ORDER BY stream_ordering DESC LIMIT 1`, ev.RoomID).Scan(&prev); err != nil {
			return "", 0, fmt.Errorf("newest event of %s: %w", ev.RoomID, err)
		}
		ev.PrevEvents = []string{prev}
	}
	if ev.AuthEvents == nil {
		ev.AuthEvents = []string{}
	}
	if ev.StreamOrdering == 0 {
		if err := tx.QueryRow(ctx, "SELECT nextval('events_stream_seq')").Scan(&ev.StreamOrdering); err != nil {
			return "", 0, err
		}
	}
	hash := make([]byte, 32)
	_, _ = rand.Read(hash)
	sha := base64.RawStdEncoding.EncodeToString(hash)
	eventID = "$" + base64.RawURLEncoding.EncodeToString(hash)
	now := time.Now().UnixMilli()
	var depth int64
	if err := tx.QueryRow(ctx, "SELECT COALESCE(max(depth), 0) + 1 FROM events WHERE event_id = ANY($1)", ev.PrevEvents).Scan(&depth); err != nil {
		return "", 0, err
	}
	pdu := map[string]any{"type": ev.Type, "room_id": ev.RoomID, "sender": ev.Sender, "content": ev.Content,
		"prev_events": ev.PrevEvents, "auth_events": ev.AuthEvents, "depth": depth, "origin": serverOf(ev.Sender),
		"origin_server_ts": now, "hashes": map[string]string{"sha256": sha}, "signatures": map[string]any{},
		"unsigned": map[string]any{"age_ts": now}}
	if ev.StateKey != nil {
		pdu["state_key"] = *ev.StateKey
	}
	js, err := json.Marshal(pdu)
	if err != nil {
		return "", 0, err
	}
	md, err := json.Marshal(ev.Metadata)
	if err != nil {
		return "", 0, err
	}
	content, err := json.Marshal(ev.Content)
	if err != nil {
		return "", 0, err
	}
	steps := []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO events (topological_ordering, event_id, type, room_id, content, processed, outlier, depth,
			origin_server_ts, received_ts, sender, instance_name, stream_ordering, state_key)
			VALUES ($1, $2, $3, $4, $5, true, false, $1, $6, $6, $7, $8, $9, $10)`,
			[]any{depth, eventID, ev.Type, ev.RoomID, string(content), now, ev.Sender, ev.Instance, ev.StreamOrdering, ev.StateKey}},
		{"INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version) VALUES ($1, $2, $3, $4, 3)",
			[]any{eventID, ev.RoomID, string(md), string(js)}},
		{"INSERT INTO event_edges (event_id, prev_event_id) SELECT $1, unnest($2::text[])", []any{eventID, ev.PrevEvents}},
		{"INSERT INTO event_auth (event_id, auth_id, room_id) SELECT $1, unnest($2::text[]), $3", []any{eventID, ev.AuthEvents, ev.RoomID}},
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil {
		steps = append(steps, struct {
			sql  string
			args []any
		}{`INSERT INTO room_memberships (event_id, user_id, sender, room_id, membership, event_stream_ordering)
			VALUES ($1, $2, $3, $4, $5, $6)`, []any{eventID, *ev.StateKey, ev.Sender, ev.RoomID, ev.Content["membership"], ev.StreamOrdering}})
	}
	for _, s := range steps {
		if _, err := tx.Exec(ctx, s.sql, s.args...); err != nil {
			return "", 0, fmt.Errorf("%s: %w", s.sql, err)
		}
	}
	if err := insertStateGroup(ctx, tx, ev, eventID); err != nil {
		return "", 0, err
	}
	if !ev.KeepPosition {
		if _, err := tx.Exec(ctx, `INSERT INTO stream_positions (stream_name, instance_name, stream_id) VALUES ('events', $1, $2)
			ON CONFLICT (stream_name, instance_name) DO UPDATE SET stream_id = GREATEST(stream_positions.stream_id, excluded.stream_id)`,
			ev.Instance, ev.StreamOrdering); err != nil {
			return "", 0, fmt.Errorf("stream_positions: %w", err)
		}
	}
	return eventID, ev.StreamOrdering, nil
}

// insertStateGroup gives the event the state group of its first prev
// event, or for a state event a new group on top of it (a delta of one).
func insertStateGroup(ctx context.Context, tx pgx.Tx, ev Event, eventID string) error {
	var sg int64
	if err := tx.QueryRow(ctx, "SELECT state_group FROM event_to_state_groups WHERE event_id = $1", ev.PrevEvents[0]).Scan(&sg); err != nil {
		return fmt.Errorf("state group of %s: %w", ev.PrevEvents[0], err)
	}
	if ev.StateKey != nil {
		prev := sg
		if err := tx.QueryRow(ctx, "SELECT nextval('state_group_id_seq')").Scan(&sg); err != nil {
			return err
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{"INSERT INTO state_groups (id, room_id, event_id) VALUES ($1, $2, $3)", []any{sg, ev.RoomID, eventID}},
			{"INSERT INTO state_group_edges (state_group, prev_state_group) VALUES ($1, $2)", []any{sg, prev}},
			{"INSERT INTO state_groups_state (state_group, room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4, $5)",
				[]any{sg, ev.RoomID, ev.Type, *ev.StateKey, eventID}},
		} {
			if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
				return fmt.Errorf("%s: %w", q.sql, err)
			}
		}
	}
	_, err := tx.Exec(ctx, "INSERT INTO event_to_state_groups (event_id, state_group) VALUES ($1, $2)", eventID, sg)
	return err
}

func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}
