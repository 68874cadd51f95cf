package synapse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/internal/servername"
	"github.com/fedsender/fedsender/streams"
)

// EventsOptions are the events source's dependencies.
type EventsOptions struct {
	DB *pgxpool.Pool
	// Redis is Synapse's Redis, for its external cache of joined hosts;
	// nil computes them from the database.
	Redis   *redis.Client
	Routing Routing
	// InstanceName is this sender's name in federation_stream_position.
	InstanceName string
	// Publisher builds the messages (it validates each envelope).
	Publisher MessageBuilder
	// BatchSize is how many events one Next reads (default 100, as
	// Synapse's sender).
	BatchSize int
	Log       *slog.Logger
}

// Events is the source of PDUs: every event Synapse persisted, in stream
// order, up to the position every event writer has finished, routed as
// Synapse's federation sender routes it.
type Events struct {
	opts  EventsOptions
	hosts *joinedHosts

	mu      sync.Mutex
	writers map[string]int64 // per event writer, the position replication announced
}

// NewEvents returns the events source.
func NewEvents(o EventsOptions) *Events {
	if o.BatchSize == 0 {
		o.BatchSize = 100
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Events{opts: o, hosts: newJoinedHosts(o.DB, o.Redis), writers: map[string]int64{}}
}

// Name is "events".
func (e *Events) Name() string { return "events" }

// Streams is Synapse's events stream.
func (e *Events) Streams() []string { return []string{"events"} }

// Start is this instance's federation_stream_position, after Synapse's
// repair of that table (resetFederationPositions).
func (e *Events) Start(ctx context.Context) (int64, error) {
	return resetFederationPositions(ctx, e.opts.DB, e.opts.InstanceName)
}

// Saved records pos in federation_stream_position, as Synapse's sender
// does after each batch (so that Synapse's own sender, put back, resumes
// there).
func (e *Events) Saved(ctx context.Context, pos int64) error {
	return saveFederationPosition(ctx, e.opts.DB, e.opts.InstanceName, pos)
}

// ObserveWriter records how far replication says an event writer got: a
// writer announces a row only once it is committed, sometimes before its
// stream_positions row is updated.
func (e *Events) ObserveWriter(stream, instance string, token int64) {
	if stream != "events" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.writers[instance] = max(e.writers[instance], token)
}

// safePosition is the position every event writer has finished: the
// smallest, over the writers, of the larger of its stream_positions row
// and what replication announced. Events above it may still be
// uncommitted, with smaller stream orderings than committed ones.
func (e *Events) safePosition(ctx context.Context) (int64, error) {
	rows, err := e.opts.DB.Query(ctx, "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = 'events'")
	if err != nil {
		return 0, fmt.Errorf("stream_positions: %w", err)
	}
	type writer struct {
		Instance string
		StreamID int64
	}
	ws, err := pgx.CollectRows(rows, pgx.RowToStructByPos[writer])
	if err != nil {
		return 0, fmt.Errorf("stream_positions: %w", err)
	}
	if len(ws) == 0 {
		return 0, fmt.Errorf("%w: stream_positions has no row for the events stream", ErrNotSynapse)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	safe := int64(1<<63 - 1)
	for _, w := range ws {
		safe = min(safe, max(w.StreamID, e.writers[w.Instance]))
	}
	return safe, nil
}

// event is a row of the events read.
type event struct {
	StreamOrdering int64
	EventID        string
	RoomID         string
	Type           string
	StateKey       *string
	Sender         string
	Rejected       bool
	Metadata       []byte
	JSON           []byte
}

// metadata is what the sender reads of event_json.internal_metadata.
type metadata struct {
	// SendOnBehalfOf is set on remote memberships Synapse accepted
	// through send_join, send_leave or send_knock: sent, but not back to
	// that server.
	SendOnBehalfOf      string `json:"send_on_behalf_of"`
	OutOfBandMembership bool   `json:"out_of_band_membership"`
	// ProactivelySend false: our own join of a partial join, which the
	// resident server broadcasts.
	ProactivelySend *bool `json:"proactively_send"`
}

// Next reads the events after from, up to the safe position, at most
// BatchSize of them, and returns a PDU envelope for each one Synapse's
// sender would send.
func (e *Events) Next(ctx context.Context, from int64) (Batch, error) {
	safe, err := e.safePosition(ctx)
	if err != nil {
		return Batch{}, err
	}
	if safe <= from {
		return Batch{Position: from}, nil
	}
	rows, err := e.opts.DB.Query(ctx, `SELECT e.stream_ordering, e.event_id, e.room_id, e.type, e.state_key, e.sender,
			e.rejection_reason IS NOT NULL, j.internal_metadata, j.json
		FROM events e JOIN event_json j ON j.event_id = e.event_id
		WHERE e.stream_ordering > $1 AND e.stream_ordering <= $2
		ORDER BY e.stream_ordering LIMIT $3`, from, safe, e.opts.BatchSize)
	if err != nil {
		return Batch{}, fmt.Errorf("events: %w", err)
	}
	evs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[event])
	if err != nil {
		return Batch{}, fmt.Errorf("events: %w", err)
	}
	b := Batch{Position: safe}
	if len(evs) == e.opts.BatchSize {
		b.Position, b.More = evs[len(evs)-1].StreamOrdering, true
	}
	partial, err := e.partialStateServers(ctx, evs)
	if err != nil {
		return Batch{}, err
	}
	states := make([]eventState, len(evs))
	for i, ev := range evs {
		states[i] = eventState{EventID: ev.EventID, IsState: ev.StateKey != nil && !ev.Rejected}
	}
	groups, err := e.hosts.groupsBefore(ctx, states)
	if err != nil {
		return Batch{}, err
	}
	for _, ev := range evs {
		msg, err := e.message(ctx, ev, partial, groups)
		if err != nil {
			return Batch{}, fmt.Errorf("event %s (stream ordering %d): %w", ev.EventID, ev.StreamOrdering, err)
		}
		if msg != nil {
			b.Messages = append(b.Messages, msg)
		}
	}
	return b, nil
}

// message returns the PDU envelope of ev, or nil when it goes nowhere.
func (e *Events) message(ctx context.Context, ev event, partial map[string][]string, groups map[string][]int64) (*nats.Msg, error) {
	dests, err := e.destinations(ctx, ev, partial, groups)
	if errors.Is(err, errNoState) {
		// As Synapse's sender: an event whose hosts cannot be computed is
		// skipped, and the position moves past it.
		e.opts.Log.Warn("synapse feed: event without state skipped", "event_id", ev.EventID, "room_id", ev.RoomID)
		return nil, nil
	}
	if err != nil || len(dests) == 0 {
		return nil, err
	}
	env, err := json.Marshal(streams.Envelope{RoomID: ev.RoomID, EventID: ev.EventID, PDU: ev.JSON, Destinations: dests})
	if err != nil {
		return nil, err
	}
	msg, err := e.opts.Publisher.Message(ctx, env)
	if err != nil {
		return nil, err
	}
	msg.Header.Set(HeaderStreamOrdering, strconv.FormatInt(ev.StreamOrdering, 10))
	return msg, nil
}

// destinations applies Synapse's sender's rules to ev (see
// docs/ARCHITECTURE.md, "The Synapse feed").
func (e *Events) destinations(ctx context.Context, ev event, partial map[string][]string, groups map[string][]int64) ([]string, error) {
	var md metadata
	if err := json.Unmarshal(ev.Metadata, &md); err != nil {
		return nil, fmt.Errorf("internal_metadata: %w", err)
	}
	self := servername.Normalize(e.opts.Routing.ServerName)
	if servername.Normalize(serverOf(ev.Sender)) != self && md.SendOnBehalfOf == "" {
		return nil, nil
	}
	if md.OutOfBandMembership || (md.ProactivelySend != nil && !*md.ProactivelySend) {
		return nil, nil
	}
	var pdu struct {
		PrevEvents []json.RawMessage `json:"prev_events"`
		AuthEvents []json.RawMessage `json:"auth_events"`
		Content    struct {
			Membership string `json:"membership"`
		} `json:"content"`
	}
	if err := json.Unmarshal(ev.JSON, &pdu); err != nil {
		return nil, fmt.Errorf("event json: %w", err)
	}
	if len(pdu.PrevEvents) == 0 {
		return nil, nil // the create event
	}
	hosts, ok := partial[ev.RoomID]
	if !ok {
		before, ok := groups[ev.EventID]
		if !ok {
			return nil, errNoState
		}
		var err error
		if hosts, err = e.hosts.atGroups(ctx, before); err != nil {
			return nil, err
		}
	}
	if invitee, err := e.rescindedInvitee(ctx, ev, pdu.Content.Membership, pdu.AuthEvents); err != nil {
		return nil, err
	} else if invitee != "" {
		hosts = append(slices.Clone(hosts), invitee)
	}
	if md.SendOnBehalfOf != "" {
		origin := servername.Normalize(md.SendOnBehalfOf)
		hosts = slices.DeleteFunc(slices.Clone(hosts), func(h string) bool { return servername.Normalize(h) == origin })
	}
	return e.opts.Routing.Filter(hosts), nil
}

// rescindedInvitee returns the invitee's server when ev withdraws an
// invite: a leave sent by someone else whose auth events hold the
// invitee's invite. The invitee's server is not in the room, but must
// learn the invite is gone.
func (e *Events) rescindedInvitee(ctx context.Context, ev event, membership string, authEvents []json.RawMessage) (string, error) {
	if ev.Type != "m.room.member" || ev.StateKey == nil || membership != "leave" || ev.Sender == *ev.StateKey {
		return "", nil
	}
	ids := make([]string, 0, len(authEvents))
	for _, raw := range authEvents {
		var id string
		if json.Unmarshal(raw, &id) == nil {
			ids = append(ids, id)
		}
	}
	var invited bool
	err := e.opts.DB.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM room_memberships
		WHERE event_id = ANY($1) AND user_id = $2 AND membership = 'invite')`, ids, *ev.StateKey).Scan(&invited)
	if err != nil {
		return "", fmt.Errorf("room_memberships: %w", err)
	}
	if !invited {
		return "", nil
	}
	return serverOf(*ev.StateKey), nil
}

// partialStateServers returns, for the rooms of evs that are partial-state
// (joined with a "faster join" that has not finished), the servers listed
// at the join: Synapse's sender sends to them, not to the room's state.
func (e *Events) partialStateServers(ctx context.Context, evs []event) (map[string][]string, error) {
	rooms := make([]string, 0, len(evs))
	for _, ev := range evs {
		rooms = append(rooms, ev.RoomID)
	}
	slices.Sort(rooms)
	rooms = slices.Compact(rooms)
	rows, err := e.opts.DB.Query(ctx, `SELECT r.room_id, COALESCE(array_agg(s.server_name) FILTER (WHERE s.server_name IS NOT NULL), '{}')
		FROM partial_state_rooms r LEFT JOIN partial_state_rooms_servers s ON s.room_id = r.room_id
		WHERE r.room_id = ANY($1) GROUP BY r.room_id`, rooms)
	if err != nil {
		return nil, fmt.Errorf("partial_state_rooms: %w", err)
	}
	out := map[string][]string{}
	var room string
	var servers []string
	_, err = pgx.ForEachRow(rows, []any{&room, &servers}, func() error {
		out[room] = servers
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("partial_state_rooms: %w", err)
	}
	return out, nil
}
