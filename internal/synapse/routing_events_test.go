package synapse_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/test/synapsefixture"
)

const (
	alice = "@alice:localhost:28481"
	bob   = "@bob:localhost:28482"
	carol = "@carol:localhost:28483"
	dave  = "@dave:other.example"
)

func ptr(s string) *string { return &s }

// insert persists events in one transaction and returns their ids.
func (e *env) insert(t *testing.T, evs ...synapsefixture.Event) []string {
	t.Helper()
	var ids []string
	err := pgx.BeginFunc(context.Background(), e.pool, func(tx pgx.Tx) error {
		for _, ev := range evs {
			id, _, err := synapsefixture.InsertEvent(context.Background(), tx, ev)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("insert: %v", err)
	}
	return ids
}

func (e *env) position(t *testing.T) int64 {
	t.Helper()
	var pos int64
	if err := e.pool.QueryRow(context.Background(), "SELECT max(stream_ordering) FROM events").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	return pos
}

func member(room, sender, target, membership string) synapsefixture.Event {
	return synapsefixture.Event{RoomID: room, Type: "m.room.member", StateKey: ptr(target), Sender: sender,
		Content: map[string]any{"membership": membership}}
}

func message(room, sender string) synapsefixture.Event {
	return synapsefixture.Event{RoomID: room, Type: "m.room.message", Sender: sender,
		Content: map[string]any{"msgtype": "m.text", "body": "hello"}}
}

// destinationsOf maps each event id to the destinations of its envelope
// (absent: no envelope).
func destinationsOf(pdus []pdu) map[string][]string {
	out := map[string][]string{}
	for _, p := range pdus {
		out[p.EventID] = p.Destinations
	}
	return out
}

// TestRouting checks each of Synapse's sender's routing rules on events
// persisted the way Synapse persists them, in the main recording's rooms
// (R1: alice, bob; carol banned. R2: alice, bob. R3: alice, carol. R4:
// hs2's room with alice, bob, carol).
func TestRouting(t *testing.T) {
	rooms := readFacts(t, "facts.json").Rooms
	r1, r2, r3, r4 := rooms["R1"], rooms["R2"], rooms["R3"], rooms["R4"]
	for _, tc := range []struct {
		name      string
		whitelist []string
		setup     func(*testing.T, *env)
		events    func() []synapsefixture.Event
		want      [][]string // per event, nil: no envelope
	}{{
		name: "kick: the kicked server's last member gets it, the next message does not",
		events: func() []synapsefixture.Event {
			return []synapsefixture.Event{member(r2, alice, bob, "leave"), message(r2, alice)}
		},
		want: [][]string{{synapsefixture.HS2}, nil},
	}, {
		name: "ban: as the kick",
		events: func() []synapsefixture.Event {
			return []synapsefixture.Event{member(r3, alice, carol, "ban"), message(r3, alice)}
		},
		want: [][]string{{synapsefixture.HS3}, nil},
	}, {
		name: "leave: our own leave goes to the servers still in the room",
		events: func() []synapsefixture.Event {
			return []synapsefixture.Event{member(r2, alice, alice, "leave")}
		},
		want: [][]string{{synapsefixture.HS2}},
	}, {
		name: "remote event without send_on_behalf_of: not ours to send",
		events: func() []synapsefixture.Event {
			return []synapsefixture.Event{message(r1, bob), member(r1, bob, bob, "leave")}
		},
		want: [][]string{nil, nil},
	}, {
		name: "remote membership accepted through send_leave: to the others, not back",
		events: func() []synapsefixture.Event {
			ev := member(r4, carol, carol, "leave")
			ev.Metadata = map[string]any{"send_on_behalf_of": synapsefixture.HS3}
			return []synapsefixture.Event{ev}
		},
		want: [][]string{{synapsefixture.HS2}},
	}, {
		name: "out-of-band membership and proactively_send=false are not sent",
		events: func() []synapsefixture.Event {
			oob, quiet := message(r2, alice), message(r2, alice)
			oob.Metadata = map[string]any{"out_of_band_membership": true}
			quiet.Metadata = map[string]any{"proactively_send": false}
			return []synapsefixture.Event{oob, quiet, message(r2, alice)}
		},
		want: [][]string{nil, nil, {synapsefixture.HS2}},
	}, {
		name: "partial-state room: the servers listed at the join, not the room's state",
		setup: func(t *testing.T, e *env) {
			e.exec(t, "INSERT INTO partial_state_rooms (room_id, device_lists_stream_id, joined_via) VALUES ($1, 0, $2)", r4, synapsefixture.HS2)
			e.exec(t, "INSERT INTO partial_state_rooms_servers (room_id, server_name) VALUES ($1, $2), ($1, 'other.example')", r4, synapsefixture.HS2)
		},
		events: func() []synapsefixture.Event { return []synapsefixture.Event{message(r4, alice)} },
		want:   [][]string{{synapsefixture.HS2, "other.example"}},
	}, {
		name:      "federation_domain_whitelist",
		whitelist: []string{synapsefixture.HS3},
		events: func() []synapsefixture.Event {
			return []synapsefixture.Event{message(r4, alice), message(r2, alice)}
		},
		want: [][]string{{synapsefixture.HS3}, nil},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, synapsefixture.Main)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			from := e.position(t)
			ids := e.insert(t, tc.events()...)
			pdus, _ := drain(t, e.events(nil, tc.whitelist...), from)
			got := destinationsOf(pdus)
			for i, id := range ids {
				d, ok := got[id]
				if tc.want[i] == nil {
					if ok {
						t.Errorf("event %d: sent to %q, want not sent", i, d)
					}
					continue
				}
				if !slices.Equal(d, tc.want[i]) {
					t.Errorf("event %d: destinations %q, want %q", i, d, tc.want[i])
				}
			}
		})
	}
}

// TestRescindedInvite: alice invites dave (of a server not in the room),
// then withdraws the invite. The withdrawal goes to the room and to
// dave's server, which holds the invite.
func TestRescindedInvite(t *testing.T) {
	e := newEnv(t, synapsefixture.Main)
	r2 := readFacts(t, "facts.json").Rooms["R2"]
	from := e.position(t)
	invite := e.insert(t, member(r2, alice, dave, "invite"))[0]
	rescind := member(r2, alice, dave, "leave")
	rescind.AuthEvents = []string{invite}
	ids := e.insert(t, rescind)
	pdus, _ := drain(t, e.events(nil), from)
	got := destinationsOf(pdus)
	if want := []string{synapsefixture.HS2}; !slices.Equal(got[invite], want) {
		t.Errorf("invite: destinations %q, want %q (the room; the invite itself goes by /invite)", got[invite], want)
	}
	if want := []string{synapsefixture.HS2, "other.example"}; !slices.Equal(got[ids[0]], want) {
		t.Errorf("rescinded invite: destinations %q, want %q", got[ids[0]], want)
	}
}

// TestRecordedRouting: what the recording itself shows: the ban of carol
// in R1 went to hs3 and the next R1 message did not; carol's join, which
// hs1 accepted through send_join, went to hs2 only; alice's partial join
// to R4 was not sent (hs2 got it through send_join).
func TestRecordedRouting(t *testing.T) {
	e := newEnv(t, synapsefixture.Main)
	rooms := readFacts(t, "facts.json").Rooms
	pdus, _ := drain(t, e.events(nil), 0)
	got := destinationsOf(pdus)
	q := func(sql string, args ...any) string {
		t.Helper()
		var id string
		if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&id); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return id
	}
	ban := q("SELECT event_id FROM room_memberships WHERE room_id = $1 AND membership = 'ban'", rooms["R1"])
	next := q(`SELECT event_id FROM events WHERE room_id = $1 AND stream_ordering >
		(SELECT stream_ordering FROM events WHERE event_id = $2) ORDER BY stream_ordering LIMIT 1`, rooms["R1"], ban)
	carolJoin := q("SELECT event_id FROM room_memberships WHERE room_id = $1 AND user_id = $2 AND membership = 'join'", rooms["R1"], carol)
	aliceJoin := q("SELECT event_id FROM room_memberships WHERE room_id = $1 AND user_id = $2 AND membership = 'join'", rooms["R4"], alice)
	for _, c := range []struct {
		what string
		id   string
		want []string
	}{
		{"the ban", ban, []string{synapsefixture.HS2, synapsefixture.HS3}},
		{"the message after the ban", next, []string{synapsefixture.HS2}},
		{"carol's join (send_on_behalf_of hs3)", carolJoin, []string{synapsefixture.HS2}},
		{"alice's partial join to R4", aliceJoin, nil},
	} {
		if !slices.Equal(got[c.id], c.want) {
			t.Errorf("%s (%s): destinations %q, want %q", c.what, c.id, got[c.id], c.want)
		}
	}
}

// TestJoinedHostsFromRedisCache: with Synapse's external cache on Redis,
// the hosts of a state group come from it (here a list the database would
// not give); a group it does not know falls back to the database.
func TestJoinedHostsFromRedisCache(t *testing.T) {
	e := newEnv(t, synapsefixture.Main)
	rooms := readFacts(t, "facts.json").Rooms
	rc := redisClient(t, synapsefixture.Redis(t))
	from := e.position(t)
	ids := e.insert(t, message(rooms["R2"], alice), message(rooms["R4"], alice))
	ctx := context.Background()
	// Synapse cached the hosts of the state group before the first event
	// (here a list the database would not give).
	var sg string
	if err := e.pool.QueryRow(ctx, "SELECT state_group::text FROM event_to_state_groups WHERE event_id = $1", ids[0]).Scan(&sg); err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(ctx, "cache_v1:get_joined_hosts:"+sg, `["localhost:28481","cached.example"]`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	got := destinationsOf(must(drain(t, e.events(rc), from)))
	if want := []string{"cached.example"}; !slices.Equal(got[ids[0]], want) {
		t.Errorf("cached event: destinations %q, want %q", got[ids[0]], want)
	}
	if want := []string{synapsefixture.HS2, synapsefixture.HS3}; !slices.Equal(got[ids[1]], want) {
		t.Errorf("uncached event: destinations %q, want %q", got[ids[1]], want)
	}
}

func must(pdus []pdu, _ int64) []pdu { return pdus }

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSafePosition: with two event writers, an event the second writer
// commits late, below one the first writer already committed, is not
// skipped: the source stops below the slower writer's position until it
// moves (in stream_positions, or announced on replication).
func TestSafePosition(t *testing.T) {
	e := newEnv(t, synapsefixture.Main)
	r2 := readFacts(t, "facts.json").Rooms["R2"]
	p := e.position(t)
	e.exec(t, "INSERT INTO stream_positions (stream_name, instance_name, stream_id) VALUES ('events', 'persister2', $1)", p)
	src := e.events(nil)

	fast := message(r2, alice)
	fast.StreamOrdering = p + 2
	fastID := e.insert(t, fast)[0]
	pdus, pos := drain(t, src, p)
	if len(pdus) != 0 || pos != p {
		t.Fatalf("with persister2 at %d: %d PDUs, position %d; want none and %d", p, len(pdus), pos, p)
	}

	late := message(r2, alice)
	late.StreamOrdering, late.Instance, late.PrevEvents = p+1, "persister2", []string{fastID}
	late.KeepPosition = true
	lateID := e.insert(t, late)[0]
	if pdus, pos = drain(t, src, p); len(pdus) != 0 || pos != p {
		t.Fatalf("persister2 committed but not finished: %d PDUs, position %d; want none and %d", len(pdus), pos, p)
	}
	// Replication announces persister2's row: the late event, then the
	// one behind it.
	src.ObserveWriter("events", "persister2", p+1)
	pdus, pos = drain(t, src, p)
	if len(pdus) != 1 || pdus[0].EventID != lateID || pos != p+1 {
		t.Fatalf("persister2 at %d: %d PDUs, position %d; want the late event and %d", p+1, len(pdus), pos, p+1)
	}
	e.exec(t, "UPDATE stream_positions SET stream_id = $1 WHERE stream_name = 'events' AND instance_name = 'persister2'", p+2)
	pdus, pos = drain(t, src, pos)
	if len(pdus) != 1 || pdus[0].EventID != fastID || pos != p+2 {
		t.Fatalf("both writers at %d: %d PDUs, position %d; want the first writer's event and %d", p+2, len(pdus), pos, p+2)
	}
}
