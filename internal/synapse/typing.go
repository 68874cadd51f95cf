package synapse

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Typing is the typing source. Synapse keeps typing only in memory and on
// its replication stream: each typing row is [room_id, [users typing
// now]], the whole room. Like Synapse's sender worker, the source diffs
// each row against the room's previous set and sends one m.typing EDU
// {room_id, user_id, typing} per change of one of our users, to the
// servers in the room now. Repeated rows change nothing.
//
// Typing is droppable: a first start (and a restart) begins with no sets,
// as Synapse's worker does. Synapse's worker also repeats a typing start
// every 40 s while it lasts; this source does not (nothing wakes the feed
// then), so a remote server may show a long typing spell as ended after
// its own timeout.
type Typing struct {
	d EDUDeps

	mu      sync.Mutex
	rooms   map[string][]string // room -> users typing, as last observed
	pending []typingChange
	token   int64
}

type typingChange struct {
	room, user string
	typing     bool
	at         time.Time
}

// Typing changes are worth sending for typingTTL (the pipeline drops
// older ones too); at most maxPendingTyping wait for Next (rows keep
// coming on a replica that does not feed).
const (
	typingTTL        = 30 * time.Second
	maxPendingTyping = 10000
)

// NewTyping returns the typing source.
func NewTyping(deps EDUDeps) (*Typing, error) {
	d, err := deps.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Typing{d: d, rooms: map[string][]string{}}, nil
}

// Name implements Source.
func (*Typing) Name() string { return "typing" }

// Streams implements Source.
func (*Typing) Streams() []string { return []string{"typing"} }

// Start implements Source: nothing of the past is sent.
func (*Typing) Start(context.Context) (int64, error) { return 0, nil }

// Observe implements RowObserver.
func (s *Typing) Observe(stream string, token int64, row json.RawMessage) {
	if stream != "typing" {
		return
	}
	var r struct {
		room  string
		users []string
	}
	if err := json.Unmarshal(row, &[]any{&r.room, &r.users}); err != nil || r.room == "" {
		s.d.Logger.Warn("synapse: typing row is not [room_id, [user ids]]; ignored", "row", string(row), "error", err)
		return
	}
	now := s.d.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
	before := s.rooms[r.room]
	for _, u := range r.users {
		if s.d.isLocal(u) && !slices.Contains(before, u) {
			s.pending = append(s.pending, typingChange{room: r.room, user: u, typing: true, at: now})
		}
	}
	for _, u := range before {
		if s.d.isLocal(u) && !slices.Contains(r.users, u) {
			s.pending = append(s.pending, typingChange{room: r.room, user: u, typing: false, at: now})
		}
	}
	if over := len(s.pending) - maxPendingTyping; over > 0 {
		s.pending = slices.Delete(s.pending, 0, over)
	}
	if len(r.users) == 0 {
		delete(s.rooms, r.room)
	} else {
		s.rooms[r.room] = slices.Clone(r.users)
	}
}

// Next implements Source: the changes observed since the last call. The
// position is the newest typing token seen, which is only informative:
// Synapse's typing tokens start again from 0 when it restarts.
func (s *Typing) Next(ctx context.Context, from int64) (Batch, error) {
	s.mu.Lock()
	changes := s.pending
	s.pending = nil
	pos := max(from, s.token)
	s.mu.Unlock()
	cutoff := s.d.Now().Add(-typingTTL)
	changes = slices.DeleteFunc(changes, func(c typingChange) bool { return c.at.Before(cutoff) })
	if len(changes) == 0 {
		return Batch{Position: pos}, nil
	}
	rooms := make([]string, len(changes))
	for i, c := range changes {
		rooms[i] = c.room
	}
	hosts, err := roomHosts(ctx, s.d.DB, rooms)
	if err != nil {
		// Not lost: they go with the next call.
		s.mu.Lock()
		s.pending = append(changes, s.pending...)
		s.mu.Unlock()
		return Batch{}, err
	}
	var msgs []*nats.Msg
	for _, c := range changes {
		dests := s.d.Routing.Filter(hosts[c.room])
		if len(dests) == 0 {
			continue
		}
		m, err := s.d.message(ctx, outgoing{Type: "m.typing", Destinations: dests,
			Content: map[string]any{"room_id": c.room, "user_id": c.user, "typing": c.typing}})
		if err != nil {
			s.d.Logger.Error("synapse: typing refused; skipped", "room_id", c.room, "error", err)
			continue
		}
		msgs = append(msgs, m)
	}
	return Batch{Messages: msgs, Position: pos}, nil
}
