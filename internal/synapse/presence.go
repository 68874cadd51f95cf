package synapse

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Presence is the presence source, doing what Synapse's sender worker does
// with the presence streams:
//
//   - presence_stream rows of our users (Synapse keeps the newest per
//     user) that Synapse's should_notify finds worth telling (always the
//     first seen of a user), as one m.presence EDU to the interested
//     servers: those in a room the user is joined to now;
//   - presence_federation rows [destination, user_id] (Observe): the
//     user's current presence to that server (Synapse publishes them when a
//     server joins a room of ours, or a user of ours joins a room).
//
// The content is Synapse's: {"push": [{user_id, presence, last_active_ago
// (if ever active), status_msg (if set), currently_active (when
// online)}]}, last_active_ago computed when the envelope is built.
//
// Presence is droppable and Synapse's sender holds it only in memory: a
// first start begins at the stream's current position, as Synapse's
// sender does after a restart.
type Presence struct {
	d EDUDeps

	mu    sync.Mutex
	seen  map[string]presenceState // user -> last state read
	asked map[string][]string      // user -> servers that want its presence
}

// presenceState is one presence_stream row.
type presenceState struct {
	streamID        int64
	user, state     string
	lastActive      int64
	statusMsg       *string
	currentlyActive bool
}

// lastActiveGranularity is Synapse's LAST_ACTIVE_GRANULARITY.
const lastActiveGranularity = 60 * time.Second

// NewPresence returns the presence source.
func NewPresence(deps EDUDeps) (*Presence, error) {
	d, err := deps.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Presence{d: d, seen: map[string]presenceState{}, asked: map[string][]string{}}, nil
}

// Name implements Source.
func (*Presence) Name() string { return "presence" }

// Streams implements Source.
func (*Presence) Streams() []string { return []string{"presence", "presence_federation"} }

// Start implements Source: the current position.
func (s *Presence) Start(ctx context.Context) (int64, error) { return s.upto(ctx) }

func (s *Presence) upto(ctx context.Context) (int64, error) {
	upto, ok, err := streamPosition(ctx, s.d.DB, "presence_stream")
	if err != nil || ok {
		return upto, err
	}
	return maxOf(ctx, s.d.DB, "presence_stream", "stream_id")
}

// Observe implements RowObserver: presence_federation rows.
func (s *Presence) Observe(stream string, _ int64, row json.RawMessage) {
	if stream != "presence_federation" {
		return
	}
	var dest, user string
	if err := json.Unmarshal(row, &[]any{&dest, &user}); err != nil || dest == "" || user == "" {
		s.d.Logger.Warn("synapse: presence_federation row is not [destination, user_id]; ignored", "row", string(row), "error", err)
		return
	}
	if !s.d.isLocal(user) {
		return
	}
	s.mu.Lock()
	if !slices.Contains(s.asked[user], dest) {
		s.asked[user] = append(s.asked[user], dest)
	}
	s.mu.Unlock()
}

// Next implements Source.
func (s *Presence) Next(ctx context.Context, from int64) (b Batch, err error) {
	s.mu.Lock()
	asked := s.asked
	s.asked = map[string][]string{}
	s.mu.Unlock()
	defer func() {
		if err != nil { // not lost: asked again with the next call
			s.mu.Lock()
			for u, d := range asked {
				s.asked[u] = append(s.asked[u], d...)
			}
			s.mu.Unlock()
		}
	}()
	msgs, err := s.answer(ctx, asked)
	if err != nil {
		return Batch{}, err
	}
	upto, err := s.upto(ctx)
	if err != nil {
		return Batch{}, err
	}
	if upto <= from {
		return Batch{Messages: msgs, Position: from}, nil
	}
	states, n, last, err := s.read(ctx, `stream_id > $1 AND stream_id <= $2 ORDER BY stream_id LIMIT $3`, from, upto, s.d.BatchSize)
	if err != nil {
		return Batch{}, err
	}
	notify := s.changed(states)
	users := make([]string, len(notify))
	for i, st := range notify {
		users[i] = st.user
	}
	interested, err := s.interested(ctx, users)
	if err != nil {
		return Batch{}, err
	}
	for _, st := range notify {
		m, err := s.envelope(ctx, st, interested[st.user], "synapse-presence-"+strconv.FormatInt(st.streamID, 10))
		if err != nil {
			return Batch{}, err
		}
		msgs = append(msgs, m...)
	}
	if n == s.d.BatchSize {
		return Batch{Messages: msgs, Position: last, More: last < upto}, nil
	}
	return Batch{Messages: msgs, Position: upto}, nil
}

// changed returns the states worth telling, and remembers every state as
// the user's last.
func (s *Presence) changed(states []presenceState) []presenceState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var notify []presenceState
	for _, st := range states {
		if old, ok := s.seen[st.user]; !ok || shouldNotify(old, st) {
			notify = append(notify, st)
		}
		s.seen[st.user] = st
	}
	return notify
}

// shouldNotify is Synapse's should_notify: another state or status
// message; for an online user a change of currently_active, or a
// last-active bump of over a minute while not currently active; for
// others any last-active bump of over a minute.
func shouldNotify(old, st presenceState) bool {
	switch {
	case old.state != st.state,
		(old.statusMsg == nil) != (st.statusMsg == nil), old.statusMsg != nil && *old.statusMsg != *st.statusMsg:
		return true
	case old.state == "online" && old.currentlyActive != st.currentlyActive:
		return true
	}
	bumped := st.lastActive-old.lastActive > lastActiveGranularity.Milliseconds()
	if old.state == "online" {
		return bumped && !st.currentlyActive
	}
	return bumped
}

// answer builds the presence presence_federation rows asked for: each
// user's current presence (offline if Synapse has none) to the servers
// that asked.
func (s *Presence) answer(ctx context.Context, asked map[string][]string) ([]*nats.Msg, error) {
	if len(asked) == 0 {
		return nil, nil
	}
	users := make([]string, 0, len(asked))
	for u := range asked {
		users = append(users, u)
	}
	slices.Sort(users)
	states, _, _, err := s.read(ctx, `user_id = ANY($1)`, users)
	if err != nil {
		return nil, err
	}
	current := map[string]presenceState{}
	for _, st := range states {
		if st.streamID >= current[st.user].streamID {
			current[st.user] = st
		}
	}
	var msgs []*nats.Msg
	for _, u := range users {
		st, ok := current[u]
		if !ok {
			st = presenceState{user: u, state: "offline"}
		}
		// No Nats-Msg-Id: the same state may have gone to others from
		// the stream a moment ago.
		m, err := s.envelope(ctx, st, asked[u], "")
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m...)
	}
	return msgs, nil
}

// read returns the presence_stream rows of our users matching where, and
// how many rows it read and the last stream id.
func (s *Presence) read(ctx context.Context, where string, args ...any) ([]presenceState, int, int64, error) {
	rows, err := s.d.DB.Query(ctx, `
		SELECT coalesce(stream_id, 0), coalesce(user_id, ''), coalesce(state, 'offline'), coalesce(last_active_ts, 0),
		       status_msg, coalesce(currently_active, false)
		  FROM presence_stream WHERE `+where, args...)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("synapse: read presence_stream: %w", err)
	}
	var (
		out  []presenceState
		n    int
		last int64
	)
	defer rows.Close()
	for rows.Next() {
		var st presenceState
		if err := rows.Scan(&st.streamID, &st.user, &st.state, &st.lastActive, &st.statusMsg, &st.currentlyActive); err != nil {
			return nil, 0, 0, fmt.Errorf("synapse: read presence_stream: %w", err)
		}
		n, last = n+1, st.streamID
		if s.d.isLocal(st.user) {
			out = append(out, st)
		}
	}
	return out, n, last, rows.Err()
}

// interested returns, per user, the servers in the rooms the user is
// joined to now.
func (s *Presence) interested(ctx context.Context, users []string) (map[string][]string, error) {
	out := map[string][]string{}
	if len(users) == 0 {
		return out, nil
	}
	rows, err := s.d.DB.Query(ctx, `SELECT user_id, room_id FROM local_current_membership
		WHERE user_id = ANY($1) AND membership = 'join'`, users)
	if err != nil {
		return nil, fmt.Errorf("synapse: read local_current_membership: %w", err)
	}
	roomsOf := map[string][]string{}
	var rooms []string
	for rows.Next() {
		var user, room string
		if err := rows.Scan(&user, &room); err != nil {
			rows.Close()
			return nil, fmt.Errorf("synapse: read local_current_membership: %w", err)
		}
		roomsOf[user] = append(roomsOf[user], room)
		rooms = append(rooms, room)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("synapse: read local_current_membership: %w", err)
	}
	hosts, err := roomHosts(ctx, s.d.DB, rooms)
	if err != nil {
		return nil, err
	}
	for user, rs := range roomsOf {
		for _, r := range rs {
			out[user] = append(out[user], hosts[r]...)
		}
	}
	return out, nil
}

// envelope builds one user's m.presence EDU to hosts (filtered), with
// Nats-Msg-Id id if set; none when no server is left.
func (s *Presence) envelope(ctx context.Context, st presenceState, hosts []string, id string) ([]*nats.Msg, error) {
	dests := s.d.Routing.Filter(hosts)
	if len(dests) == 0 {
		return nil, nil
	}
	p := map[string]any{"user_id": st.user, "presence": st.state}
	if st.lastActive != 0 {
		p["last_active_ago"] = s.d.Now().UnixMilli() - st.lastActive
	}
	if st.statusMsg != nil && *st.statusMsg != "" {
		p["status_msg"] = *st.statusMsg
	}
	if st.state == "online" {
		p["currently_active"] = st.currentlyActive
	}
	m, err := s.d.message(ctx, outgoing{Type: "m.presence", Content: map[string]any{"push": []any{p}}, Destinations: dests, ID: id})
	if err != nil {
		s.d.Logger.Error("synapse: presence refused; skipped", "user_id", st.user, "error", err)
		return nil, nil
	}
	return []*nats.Msg{m}, nil
}
