package pgprojection_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/projection/pgprojection"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
)

// fanout publishes PDUs and remembers, per destination, the newest stream
// ordering of each room: what destination_rooms must hold.
type fanout struct {
	pub  *streams.Publisher
	want map[string]map[string]uint64
}

func (f *fanout) publish(t *testing.T, eventID, room string, dests ...string) uint64 {
	t.Helper()
	env, err := json.Marshal(map[string]any{"room_id": room, "event_id": eventID,
		"pdu": map[string]any{"type": "m.room.message", "room_id": room}, "destinations": dests})
	if err != nil {
		t.Fatal(err)
	}
	seq, _, err := f.pub.Publish(t.Context(), env)
	if err != nil {
		t.Fatalf("publish %s: %v", eventID, err)
	}
	return seq
}

func (f *fanout) rooms(dest string) []projection.Room {
	var out []projection.Room
	for room, seq := range f.want[dest] {
		out = append(out, projection.Room{RoomID: room, StreamOrdering: seq})
	}
	return out
}

// publishFanout publishes n PDUs over 7 rooms, each to some of 5
// destinations, plus a refused envelope and a duplicate event id, which
// destination_rooms must not show.
func publishFanout(t *testing.T, js jetstream.JetStream, n int) *fanout {
	t.Helper()
	f := &fanout{pub: streams.NewPublisher(js), want: map[string]map[string]uint64{}}
	for i := range n {
		room := fmt.Sprintf("!room%d:origin.example", i%7)
		var dests []string
		for j := range 5 {
			if (i+j)%3 != 0 {
				dests = append(dests, fmt.Sprintf("d%d.example:8448", j))
			}
		}
		seq := f.publish(t, "$e"+strconv.Itoa(i), room, dests...)
		for _, d := range dests {
			if f.want[d] == nil {
				f.want[d] = map[string]uint64{}
			}
			f.want[d][room] = seq
		}
	}
	// A homeserver publishing without streams.Publisher can store what the
	// PDU reader refuses.
	if _, err := js.Publish(t.Context(), streams.PDUSubject, []byte(`{"room_id":"!elsewhere:origin.example",`+
		`"event_id":"$refused","pdu":{},"destinations":["not a server name"]}`)); err != nil {
		t.Fatal(err)
	}
	f.publish(t, "$e0", "!duplicate:origin.example", "d0.example:8448")
	// Rows for the destinations the PDU reader delivers to: host case
	// folded, invalid names and fedsender's own name (runProjector's
	// origin) left out.
	seq := f.publish(t, "$mixed", "!mixed:origin.example", "ORIGIN.example", "D1.Example:8448", "not a server name")
	f.want["d1.example:8448"]["!mixed:origin.example"] = seq
	return f
}

func dumpRooms(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	return rowsAsText(t, pool, `SELECT concat_ws('|', destination, room_id, stream_ordering)
		FROM destination_rooms ORDER BY destination, room_id`)
}

// checkRooms asks the reader for every page shape of every destination's
// rooms and compares with the reference answer.
func checkRooms(t *testing.T, r *pgprojection.Reader, f *fanout) {
	t.Helper()
	for dest := range f.want {
		all := f.rooms(dest)
		for _, q := range []projection.RoomQuery{
			{Limit: 100}, {Limit: 100, Backwards: true}, {From: 2, Limit: 3}, {From: 2, Limit: 3, Backwards: true},
			{From: 6, Limit: 5}, {From: 7, Limit: 5}, {From: 1<<63 - 1, Limit: 1<<63 - 1}, {Limit: 0},
		} {
			got, known := r.Rooms(dest, q)
			want := projection.SelectRooms(all, q)
			if !known || got.Total != want.Total || !slices.Equal(got.Rooms, want.Rooms) {
				t.Errorf("Rooms(%s, %+v) = %+v (known %v), want %+v", dest, q, got, known, want)
			}
		}
	}
}

// TestRoomsFromFanOut: destination_rooms holds, for each destination, the
// newest stream ordering of every room a PDU was sent to it for (refused
// envelopes and duplicate event ids leave no row), the admin reader pages
// it by room id, and every such destination is listed from its first PDU,
// as Synapse lists it.
func TestRoomsFromFanOut(t *testing.T) {
	url := pgtest.URL(t)
	_, js, _ := projectiontest.JetStream(t)
	pool, _ := connect(t, url)
	f := publishFanout(t, js, 300)
	p := runProjector(t, js, pool)
	r := pgprojection.NewReader(pool, p, nil)
	projectiontest.Eventually(t, 10*time.Second, p.Synced, "projector not synced")

	checkRooms(t, r, f)
	if page, known := r.Rooms("unknown.example", projection.RoomQuery{Limit: 10}); known || page.Total != 0 || len(page.Rooms) != 0 {
		t.Errorf("Rooms(unknown.example) = %+v, known %v; want nothing", page, known)
	}
	list := r.Page(projection.Query{Limit: 100})
	var names []string
	for _, s := range list.Destinations {
		names = append(names, s.Destination)
		if s.FailureTS != 0 || s.RetryLastTS != 0 || s.Offset != 0 {
			t.Errorf("listed %+v; a destination known only from its PDUs has nothing sent and no failure", s)
		}
	}
	want := []string{"d0.example:8448", "d1.example:8448", "d2.example:8448", "d3.example:8448", "d4.example:8448"}
	if !slices.Equal(names, want) || list.Total != len(want) {
		t.Errorf("listed %v (total %d), want %v", names, list.Total, want)
	}
	if events, pdus := p.Behind(); events != 0 || pdus != 0 {
		t.Errorf("Behind() = %d events, %d PDUs once synced; want 0, 0", events, pdus)
	}

	// PDUs published while it runs arrive too.
	seq := f.publish(t, "$late", "!room0:origin.example", "d0.example:8448", "late.example")
	f.want["d0.example:8448"]["!room0:origin.example"] = seq
	f.want["late.example"] = map[string]uint64{"!room0:origin.example": seq}
	projectiontest.Eventually(t, 10*time.Second, func() bool {
		_, known := r.Rooms("late.example", projection.RoomQuery{})
		return known
	}, "a PDU published while the projector runs never reached destination_rooms")
	checkRooms(t, r, f)
}

// TestRebuildReplaysEverything: a rebuild under a running projector fills
// destination_rooms with the same rows again, and replays the offsets
// bucket without a restart.
func TestRebuildReplaysEverything(t *testing.T) {
	url := pgtest.URL(t)
	_, js, _ := projectiontest.JetStream(t)
	pool, _ := connect(t, url)
	f := publishFanout(t, js, 100)
	offsets, err := js.KeyValue(t.Context(), streams.OffsetBucket)
	if err != nil {
		t.Fatal(err)
	}
	const dest = "offset-only.example"
	if _, err := offsets.Put(t.Context(), streams.OffsetKey(streams.Partition(dest, 8), dest), []byte("42")); err != nil {
		t.Fatal(err)
	}
	p := runProjector(t, js, pool)
	r := pgprojection.NewReader(pool, p, nil)
	projectiontest.Eventually(t, 10*time.Second, p.Synced, "projector not synced")
	before := dumpRooms(t, pool)
	if s, ok := r.Get(dest); !ok || s.Offset != 42 {
		t.Fatalf("Get(%s) = %+v, %v before the rebuild; want offset 42", dest, s, ok)
	}

	if err := pgprojection.Rebuild(t.Context(), js, pool); err != nil {
		t.Fatal(err)
	}
	projectiontest.Eventually(t, 20*time.Second, func() bool {
		s, ok := r.Get(dest)
		return ok && s.Offset == 42 && slices.Equal(dumpRooms(t, pool), before)
	}, "after the rebuild, destination_rooms or the offsets were not written again")
	checkRooms(t, r, f)
	if n := len(before); n != countPairs(f) {
		t.Errorf("%d rows in destination_rooms, want %d", n, countPairs(f))
	}
}

func countPairs(f *fanout) int {
	n := 0
	for _, rooms := range f.want {
		n += len(rooms)
	}
	return n
}

// TestRoomsSurvivePostgresRestart: PDUs published before, while and after
// PostgreSQL is down all reach destination_rooms, and reads fail (503 on
// the admin surfaces) while it is down.
func TestRoomsSurvivePostgresRestart(t *testing.T) {
	srv := pgtest.Own(t)
	_, js, _ := projectiontest.JetStream(t)
	pool, _ := connect(t, srv.URL)
	f := &fanout{pub: streams.NewPublisher(js), want: map[string]map[string]uint64{}}
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			room, dest := fmt.Sprintf("!r%d:origin.example", i%50), fmt.Sprintf("d%d.example", i%3)
			seq := f.publish(t, "$p"+strconv.Itoa(i), room, dest)
			if f.want[dest] == nil {
				f.want[dest] = map[string]uint64{}
			}
			f.want[dest][room] = seq
		}
	}
	p := runProjector(t, js, pool)
	r := pgprojection.NewReader(pool, p, nil)
	go func() { _ = r.Run(t.Context()) }()

	publish(0, 100)
	projectiontest.Eventually(t, 10*time.Second, p.Synced, "projector not synced")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	publish(100, 200)
	if _, known := r.Rooms("d0.example", projection.RoomQuery{Limit: 1}); known || r.Ready() {
		t.Error("rooms read and reader ready while PostgreSQL is down")
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	publish(200, 300)
	projectiontest.Eventually(t, 30*time.Second, func() bool {
		page, _ := r.Rooms("d0.example", projection.RoomQuery{Limit: 100})
		return r.Ready() && slices.Equal(page.Rooms, projection.SelectRooms(f.rooms("d0.example"), projection.RoomQuery{Limit: 100}).Rooms)
	}, "the PDUs of the outage never reached destination_rooms")
	checkRooms(t, r, f)
}
