package synapsefixture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/internal/xmatrix"
)

// Writer persists events into a restored Synapse database the way
// Synapse's event persister does (the rows a federation sender reads:
// events, event_json, event_edges, state groups, memberships, the
// stream position), and, with a Redis, announces them as Synapse's main
// process does: the external cache of joined hosts
// (cache_v1:event_to_prev_state_group, cache_v1:get_joined_hosts) before
// the commit, and RDATA events rows on the channel named after the
// server, in stream order, once every lower stream ordering is persisted.
// It is for tests and the benchmark, which need Synapse writing while
// fedsender reads, without running Synapse.
type Writer struct {
	pool    *pgxpool.Pool
	rdb     *redis.Client
	server  string
	key     xmatrix.SigningKey
	version gomatrixserverlib.IRoomVersion
	onAnn   func(int64, time.Time)

	mu   sync.Mutex
	next int64            // the lowest stream ordering not yet announced
	done map[int64]string // persisted, not yet announced: its RDATA lines
}

// WriterDeps is what a Writer writes to.
type WriterDeps struct {
	Pool *pgxpool.Pool
	// Redis, when set, receives the external cache and the RDATA lines.
	Redis *redis.Client
	// ServerName is the homeserver's (HS1 for the fixture's databases).
	ServerName string
	// Key signs the events.
	Key xmatrix.SigningKey
	// OnAnnounce, when set, is told when each stream ordering's RDATA
	// lines were published (the benchmark tells a reader's delay from the
	// writers' order).
	OnAnnounce func(streamOrdering int64, at time.Time)
}

// NewWriter returns a Writer that continues the database's event stream.
func NewWriter(ctx context.Context, deps WriterDeps) (*Writer, error) {
	var last int64
	var called bool
	if err := deps.Pool.QueryRow(ctx, "SELECT last_value, is_called FROM events_stream_seq").Scan(&last, &called); err != nil {
		return nil, fmt.Errorf("synapsefixture: not a Synapse database: %w", err)
	}
	if called {
		last++
	}
	return &Writer{pool: deps.Pool, rdb: deps.Redis, server: deps.ServerName, key: deps.Key,
		version: gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10),
		onAnn:   deps.OnAnnounce, next: last, done: map[int64]string{}}, nil
}

// Room is a room the Writer created; its messages are written one after
// the other, each on top of the previous one.
type Room struct {
	ID         string
	Hosts      []string // the servers in the room, this one included
	stateGroup int64
	auth       []string
	creator    string

	mu    sync.Mutex
	prev  string
	depth int64
}

// RoomSpec is a room to create: its creator (a local user) and its other
// members, local or remote, all joined.
type RoomSpec struct {
	ID      string
	Creator string
	Members []string
}

// Persisted is an event the Writer persisted.
type Persisted struct {
	ID             string
	RoomID         string
	StreamOrdering int64
	Committed      time.Time // when its transaction committed
}

// built is an event ready to insert.
type built struct {
	ev        gomatrixserverlib.PDU
	json      []byte
	so        int64
	stateKey  *string
	member    string // membership of an m.room.member event
	roomState int64
}

// CreateRooms creates rooms in one transaction, with bulk copies: a
// create event and a join per member each, all in one state group per
// room. They are persisted events like any other (RDATA included), so a
// sender started before sends the local creator's events; one started
// after them (federation_stream_position) does not.
func (w *Writer) CreateRooms(ctx context.Context, specs []RoomSpec) ([]*Room, error) {
	var rooms []*Room
	var events []built
	for _, s := range specs {
		r := &Room{ID: s.ID, creator: s.Creator}
		evs, err := w.roomEvents(r, s)
		if err != nil {
			return nil, err
		}
		rooms = append(rooms, r)
		events = append(events, evs...)
	}
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx)
	sos, err := nextvals(ctx, tx, "events_stream_seq", len(events))
	if err != nil {
		return nil, err
	}
	sgs, err := nextvals(ctx, tx, "state_group_id_seq", len(rooms))
	if err != nil {
		return nil, err
	}
	byRoom := map[string]*Room{}
	for i, r := range rooms {
		r.stateGroup = sgs[i]
		byRoom[r.ID] = r
	}
	for i := range events {
		events[i].so = sos[i]
		events[i].roomState = byRoom[events[i].ev.RoomID().String()].stateGroup
	}
	if err := copyRooms(ctx, tx, w.server, rooms, events); err != nil {
		return nil, err
	}
	if err := w.setJoinedHosts(ctx, rooms); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	for _, e := range events {
		if err := w.announce(ctx, e.so, rdata(e)); err != nil {
			return nil, err
		}
	}
	return rooms, nil
}

// roomEvents builds a room's create event and joins.
func (w *Writer) roomEvents(r *Room, s RoomSpec) ([]built, error) {
	hosts := map[string]bool{w.server: true}
	create, err := w.build(r, "m.room.create", strPtr(""), map[string]any{"creator": s.Creator, "room_version": "10"}, s.Creator, nil)
	if err != nil {
		return nil, err
	}
	r.auth = []string{create.ev.EventID()}
	out := []built{create}
	for _, m := range append([]string{s.Creator}, s.Members...) {
		_, host, ok := strings.Cut(m, ":")
		if !ok {
			return nil, fmt.Errorf("synapsefixture: member %q is not a user id", m)
		}
		hosts[host] = true
		b, err := w.build(r, "m.room.member", strPtr(m), map[string]any{"membership": "join"}, m, nil)
		if err != nil {
			return nil, err
		}
		b.member = "join"
		if m == s.Creator {
			r.auth = append(r.auth, b.ev.EventID())
		}
		out = append(out, b)
	}
	for h := range hosts {
		r.Hosts = append(r.Hosts, h)
	}
	sort.Strings(r.Hosts)
	return out, nil
}

// build makes r's next event, signed by this server (a remote member's join
// too: the receivers do not check PDU signatures, and the sender never
// sends a remote user's event).
func (w *Writer) build(r *Room, typ string, stateKey *string, content any, sender string, prev []string) (built, error) {
	if prev == nil && r.prev != "" {
		prev = []string{r.prev}
	}
	now := time.Now()
	unsigned, _ := json.Marshal(map[string]int64{"age_ts": now.UnixMilli()})
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: r.ID, Type: typ, StateKey: stateKey,
		PrevEvents: prev, AuthEvents: r.auth, Depth: r.depth + 1, Unsigned: unsigned,
	}
	if proto.PrevEvents == nil {
		proto.PrevEvents = []string{}
	}
	if err := proto.SetContent(content); err != nil {
		return built{}, err
	}
	ev, err := w.version.NewEventBuilderFromProtoEvent(&proto).Build(now,
		spec.ServerName(w.server), gomatrixserverlib.KeyID(w.key.KeyID()), w.key.Private)
	if err != nil && typ == "m.room.create" && ev != nil {
		err = nil // the create event has no prev or auth events, which Build's last check refuses
	}
	if err != nil {
		return built{}, fmt.Errorf("synapsefixture: build %s: %w", typ, err)
	}
	r.prev, r.depth = ev.EventID(), ev.Depth()
	return built{ev: ev, json: ev.JSON(), stateKey: stateKey}, nil
}

// Message persists one m.room.message from the room's creator, on top of
// the room's previous event, in its own transaction, as Synapse persists
// a client's message: the external cache first, then the rows, then (once
// every lower stream ordering is persisted) the RDATA line.
func (w *Writer) Message(ctx context.Context, r *Room, body string) (Persisted, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prevID, prevDepth := r.prev, r.depth
	b, err := w.build(r, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body}, r.creator, nil)
	if err != nil {
		return Persisted{}, err
	}
	b.roomState = r.stateGroup
	if w.rdb != nil {
		if err := w.rdb.Set(ctx, "cache_v1:event_to_prev_state_group:"+b.ev.EventID(), r.stateGroup, time.Hour).Err(); err != nil {
			r.prev, r.depth = prevID, prevDepth
			return Persisted{}, err
		}
	}
	so, committed, err := w.persist(ctx, b, prevID)
	if err != nil {
		r.prev, r.depth = prevID, prevDepth
		return Persisted{}, err
	}
	return Persisted{ID: b.ev.EventID(), RoomID: r.ID, StreamOrdering: so, Committed: committed}, nil
}

// persist writes one non-state event in a transaction and announces it.
func (w *Writer) persist(ctx context.Context, b built, prevID string) (int64, time.Time, error) {
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return 0, time.Time{}, err
	}
	defer tx.Rollback(ctx)
	if err := tx.QueryRow(ctx, "SELECT nextval('events_stream_seq')").Scan(&b.so); err != nil {
		return 0, time.Time{}, err
	}
	// An allocated stream ordering that is never persisted must not hold
	// back the announcements of the ones after it.
	committed := false
	defer func() {
		if !committed {
			w.announce(context.WithoutCancel(ctx), b.so, "")
		}
	}()
	room := b.ev.RoomID().String()
	batch := &pgx.Batch{}
	batch.Queue(`INSERT INTO events (topological_ordering, event_id, type, room_id, processed, outlier, depth,
		origin_server_ts, received_ts, sender, contains_url, instance_name, stream_ordering)
		VALUES ($1, $2, $3, $4, true, false, $1, $5, $6, $7, false, 'master', $8)`,
		b.ev.Depth(), b.ev.EventID(), b.ev.Type(), room, int64(b.ev.OriginServerTS()), time.Now().UnixMilli(),
		string(b.ev.SenderID()), b.so)
	batch.Queue(`INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version) VALUES ($1, $2, '{}', $3, 3)`,
		b.ev.EventID(), room, string(b.json))
	batch.Queue(`INSERT INTO event_edges (event_id, prev_event_id, room_id, is_state) VALUES ($1, $2, $3, false)`, b.ev.EventID(), prevID, room)
	batch.Queue(`INSERT INTO event_to_state_groups (event_id, state_group) VALUES ($1, $2)`, b.ev.EventID(), b.roomState)
	batch.Queue(`DELETE FROM event_forward_extremities WHERE room_id = $1`, room)
	batch.Queue(`INSERT INTO event_forward_extremities (event_id, room_id) VALUES ($1, $2)`, b.ev.EventID(), room)
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return 0, time.Time{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, time.Time{}, err
	}
	committed = true
	at := time.Now()
	return b.so, at, w.announce(ctx, b.so, rdata(b))
}

// announce records that stream ordering so is persisted and publishes the
// RDATA lines of every persisted ordering up to the first one that is not,
// so that the stream is announced in order, as Synapse's replication does;
// then, as Synapse's id generator does after each commit, it moves the
// writer's stream_positions row to the position below which every event is
// persisted (never past an event still being written).
func (w *Writer) announce(ctx context.Context, so int64, lines string) error {
	w.mu.Lock()
	w.done[so] = lines
	var out []string
	first := w.next
	for {
		l, ok := w.done[w.next]
		if !ok {
			break
		}
		delete(w.done, w.next)
		w.next++
		if l != "" {
			out = append(out, strings.Split(l, "\n")...)
		}
	}
	upto := w.next - 1
	if w.rdb != nil && len(out) > 0 {
		pipe := w.rdb.Pipeline()
		for _, l := range out {
			pipe.Publish(ctx, w.server, l)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			w.mu.Unlock()
			return err
		}
	}
	if w.onAnn != nil {
		at := time.Now()
		for so := first; so < w.next; so++ {
			w.onAnn(so, at)
		}
	}
	w.mu.Unlock()
	_, err := w.pool.Exec(ctx, `UPDATE stream_positions SET stream_id = $1
		WHERE stream_name = 'events' AND instance_name = 'master' AND stream_id < $1`, upto)
	return err
}

// rdata is an event's RDATA lines as Synapse publishes them: an "ev" row,
// and for a state event a "state" row; "batch" on all but the last.
func rdata(b built) string {
	room := b.ev.RoomID().String()
	var stateKey, membership any
	if b.stateKey != nil {
		stateKey = *b.stateKey
	}
	if b.member != "" {
		membership = b.member
	}
	ev, _ := json.Marshal([]any{"ev", []any{b.ev.EventID(), room, b.ev.Type(), stateKey, nil, nil, membership, false, false}})
	token := strconv.FormatInt(b.so, 10)
	if b.stateKey == nil {
		return "RDATA events master " + token + " " + string(ev)
	}
	st, _ := json.Marshal([]any{"state", []any{room, b.ev.Type(), *b.stateKey, b.ev.EventID()}})
	return "RDATA events master batch " + string(ev) + "\nRDATA events master " + token + " " + string(st)
}

// CacheJoinedHosts writes Synapse's external cache of each room's joined
// hosts at its state group again (CreateRooms wrote it), e.g. after the
// Redis was flushed.
func (w *Writer) CacheJoinedHosts(ctx context.Context, rooms []*Room) error {
	return w.setJoinedHosts(ctx, rooms)
}

// setJoinedHosts writes Synapse's external cache of each room's joined
// hosts at its state group.
func (w *Writer) setJoinedHosts(ctx context.Context, rooms []*Room) error {
	if w.rdb == nil {
		return nil
	}
	pipe := w.rdb.Pipeline()
	for _, r := range rooms {
		hosts, _ := json.Marshal(r.Hosts)
		pipe.Set(ctx, "cache_v1:get_joined_hosts:"+strconv.FormatInt(r.stateGroup, 10), hosts, time.Hour)
	}
	_, err := pipe.Exec(ctx)
	return err
}

func nextvals(ctx context.Context, tx pgx.Tx, seq string, n int) ([]int64, error) {
	rows, err := tx.Query(ctx, "SELECT nextval('"+seq+"') FROM generate_series(1, $1) ORDER BY 1", n)
	if err != nil {
		return nil, err
	}
	vals, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err == nil && len(vals) != n {
		err = errors.New("synapsefixture: short sequence read")
	}
	return vals, err
}

func strPtr(s string) *string { return &s }

// copyRooms bulk-inserts the rooms' events and state.
func copyRooms(ctx context.Context, tx pgx.Tx, server string, rooms []*Room, events []built) error {
	now := time.Now().UnixMilli()
	var evRows, jsonRows, edgeRows, sgRows, stateRows, sgsRows, cseRows, memberRows, localRows, extremRows [][]any
	last := map[string]built{}
	for _, e := range events {
		id, room := e.ev.EventID(), e.ev.RoomID().String()
		sender := string(e.ev.SenderID())
		evRows = append(evRows, []any{e.ev.Depth(), id, e.ev.Type(), room, true, false, e.ev.Depth(),
			int64(e.ev.OriginServerTS()), now, sender, false, "master", e.so, *e.stateKey})
		jsonRows = append(jsonRows, []any{id, room, "{}", string(e.json), int32(3)})
		for _, p := range e.ev.PrevEventIDs() {
			edgeRows = append(edgeRows, []any{id, p, room, false})
		}
		sgRows = append(sgRows, []any{id, e.roomState})
		stateRows = append(stateRows, []any{id, room, e.ev.Type(), *e.stateKey})
		sgsRows = append(sgsRows, []any{e.roomState, room, e.ev.Type(), *e.stateKey, id})
		var membership any
		if e.member != "" {
			membership = e.member
			memberRows = append(memberRows, []any{id, *e.stateKey, sender, room, e.member, e.so})
			if strings.HasSuffix(*e.stateKey, ":"+server) {
				localRows = append(localRows, []any{room, *e.stateKey, id, e.member, e.so})
			}
		}
		cseRows = append(cseRows, []any{id, room, e.ev.Type(), *e.stateKey, membership, e.so})
		last[room] = e
	}
	var roomRows, groupRows [][]any
	for _, r := range rooms {
		roomRows = append(roomRows, []any{r.ID, false, r.creator, "10", true})
		groupRows = append(groupRows, []any{r.stateGroup, r.ID, last[r.ID].ev.EventID()})
		extremRows = append(extremRows, []any{last[r.ID].ev.EventID(), r.ID})
	}
	copies := []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"events", []string{"topological_ordering", "event_id", "type", "room_id", "processed", "outlier", "depth",
			"origin_server_ts", "received_ts", "sender", "contains_url", "instance_name", "stream_ordering", "state_key"}, evRows},
		{"event_json", []string{"event_id", "room_id", "internal_metadata", "json", "format_version"}, jsonRows},
		{"event_edges", []string{"event_id", "prev_event_id", "room_id", "is_state"}, edgeRows},
		{"event_to_state_groups", []string{"event_id", "state_group"}, sgRows},
		{"state_events", []string{"event_id", "room_id", "type", "state_key"}, stateRows},
		{"state_groups", []string{"id", "room_id", "event_id"}, groupRows},
		{"state_groups_state", []string{"state_group", "room_id", "type", "state_key", "event_id"}, sgsRows},
		{"current_state_events", []string{"event_id", "room_id", "type", "state_key", "membership", "event_stream_ordering"}, cseRows},
		{"room_memberships", []string{"event_id", "user_id", "sender", "room_id", "membership", "event_stream_ordering"}, memberRows},
		{"local_current_membership", []string{"room_id", "user_id", "event_id", "membership", "event_stream_ordering"}, localRows},
		{"rooms", []string{"room_id", "is_public", "creator", "room_version", "has_auth_chain_index"}, roomRows},
		{"event_forward_extremities", []string{"event_id", "room_id"}, extremRows},
	}
	for _, c := range copies {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, pgx.CopyFromRows(c.rows)); err != nil {
			return fmt.Errorf("synapsefixture: copy into %s: %w", c.table, err)
		}
	}
	return nil
}
