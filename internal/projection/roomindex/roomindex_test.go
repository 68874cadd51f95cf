package roomindex_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/projection/roomindex"
	"github.com/fedsender/fedsender/streams"
)

func item(seq uint64, room string, dests ...string) streams.Item {
	return streams.Item{Seq: seq, PDU: &streams.PDU{RoomID: room, EventID: fmt.Sprintf("$e%d", seq), Destinations: dests}}
}

func roomsOf(t *testing.T, x *roomindex.Index, dest string, q projection.RoomQuery) ([]projection.Room, int, bool) {
	t.Helper()
	p, known := x.Rooms(dest, q)
	return p.Rooms, p.Total, known
}

func TestObserve(t *testing.T) {
	x := roomindex.New(roomindex.Options{})
	x.Observe([]streams.Item{
		item(1, "!b:o", "a.example", "b.example"),
		item(2, "!a:o", "a.example"),
		item(3, "!b:o", "a.example"),
		item(4, "!c:o", "b.example:8448"),
	})
	x.Observe([]streams.Item{item(2, "!b:o", "a.example")}) // older than what is known: ignored
	all := projection.RoomQuery{Limit: 100}
	rooms, total, known := roomsOf(t, x, "a.example", all)
	want := []projection.Room{{RoomID: "!a:o", StreamOrdering: 2}, {RoomID: "!b:o", StreamOrdering: 3}}
	if !known || total != 2 || !slices.Equal(rooms, want) {
		t.Errorf("rooms of a.example = %v %d %v, want %v", rooms, total, known, want)
	}
	rooms, _, _ = roomsOf(t, x, "a.example", projection.RoomQuery{Backwards: true, Limit: 100})
	if !slices.Equal(rooms, []projection.Room{want[1], want[0]}) {
		t.Errorf("rooms of a.example backwards = %v", rooms)
	}
	rooms, total, _ = roomsOf(t, x, "a.example", projection.RoomQuery{From: 1, Limit: 1})
	if total != 2 || !slices.Equal(rooms, want[1:]) {
		t.Errorf("second page = %v (total %d)", rooms, total)
	}
	for _, q := range []projection.RoomQuery{{Limit: 0}, {From: 2, Limit: 5}, {From: 1 << 62, Limit: 5}} {
		if rooms, total, known := roomsOf(t, x, "a.example", q); !known || total != 2 || rooms == nil || len(rooms) != 0 {
			t.Errorf("rooms of a.example %+v = %v %d %v, want none of 2", q, rooms, total, known)
		}
	}
	if rooms, _, known := roomsOf(t, x, "b.example:8448", all); !known || len(rooms) != 1 || rooms[0].StreamOrdering != 4 {
		t.Errorf("rooms of b.example:8448 = %v %v", rooms, known)
	}
	if _, _, known := roomsOf(t, x, "nope.example", all); known {
		t.Error("a destination without PDUs is known")
	}
	if st := x.Stats(); st.Destinations != 3 || st.Rooms != 3 || st.Pairs != 4 {
		t.Errorf("stats = %+v, want 3 destinations, 3 rooms, 4 pairs", st)
	}
}

// TestBound: over MaxPairs, the pairs of the oldest PDUs go first.
func TestBound(t *testing.T) {
	x := roomindex.New(roomindex.Options{MaxPairs: 10_000})
	for seq := uint64(1); seq <= 20_000; seq++ {
		x.Observe([]streams.Item{item(seq, fmt.Sprintf("!r%d:o", seq), "a.example")})
	}
	st := x.Stats()
	if st.Pairs > 10_000 || st.Pairs < 8_000 || st.Rooms != st.Pairs {
		t.Fatalf("stats = %+v, want at most 10,000 pairs, and rooms freed with them", st)
	}
	rooms, total, _ := roomsOf(t, x, "a.example", projection.RoomQuery{Limit: 1 << 20})
	if total != st.Pairs {
		t.Errorf("total %d, want %d", total, st.Pairs)
	}
	for _, r := range rooms {
		if r.StreamOrdering < st.Floor {
			t.Fatalf("room %v older than the floor %d was kept", r, st.Floor)
		}
	}
	if !slices.ContainsFunc(rooms, func(r projection.Room) bool { return r.StreamOrdering == 20_000 }) {
		t.Error("the newest room was dropped")
	}
}

// publish puts envelopes on the PDU stream and returns the last sequence.
func publish(t *testing.T, js jetstream.JetStream, envs ...streams.Envelope) uint64 {
	t.Helper()
	pub := streams.NewPublisher(js)
	var last uint64
	for _, env := range envs {
		data, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		seq, _, err := pub.Publish(context.Background(), data)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		last = seq
	}
	return last
}

func env(n int, room string, dests ...string) streams.Envelope {
	return streams.Envelope{RoomID: room, EventID: fmt.Sprintf("$ev%d", n), PDU: json.RawMessage(`{"type":"m.room.message"}`), Destinations: dests}
}

func run(t *testing.T, x *roomindex.Index) {
	t.Helper()
	projectiontest.Start(t, x.Run)
}

// TestBackfillAndRetention: a new index reads what the reader skips, and
// drops the rooms whose PDUs left the stream.
func TestBackfillAndRetention(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	last := publish(t, js,
		env(1, "!old:o", "a.example"),
		env(2, "!r1:o", "a.example", "b.example"),
		env(3, "!r2:o", "a.example"),
	)
	// An envelope the reader would dead-letter: not in the index.
	if _, err := js.Publish(context.Background(), streams.PDUSubject, []byte(`{"room_id":"!bad:o","event_id":"$x","pdu":{},"destinations":["bad name"]}`)); err != nil {
		t.Fatal(err)
	}
	last++
	// What the reader will read itself: not backfilled.
	publish(t, js, env(5, "!r3:o", "a.example"))

	x := roomindex.New(roomindex.Options{JS: js, Through: last, PruneEvery: 20 * time.Millisecond})
	run(t, x)
	projectiontest.Eventually(t, 10*time.Second, x.Ready, "backfill not done")
	rooms, _, _ := roomsOf(t, x, "a.example", projection.RoomQuery{Limit: 10})
	want := []projection.Room{{RoomID: "!old:o", StreamOrdering: 1}, {RoomID: "!r1:o", StreamOrdering: 2}, {RoomID: "!r2:o", StreamOrdering: 3}}
	if !slices.Equal(rooms, want) {
		t.Errorf("backfilled rooms = %v, want %v", rooms, want)
	}
	if _, _, known := roomsOf(t, x, "bad name", projection.RoomQuery{Limit: 10}); known {
		t.Error("a dead-lettered envelope was indexed")
	}

	s, err := js.Stream(context.Background(), streams.PDUStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(context.Background(), jetstream.WithPurgeSequence(2)); err != nil {
		t.Fatal(err)
	}
	projectiontest.Eventually(t, 5*time.Second, func() bool {
		rooms, _, _ := roomsOf(t, x, "a.example", projection.RoomQuery{Limit: 10})
		return len(rooms) == 2 && rooms[0].RoomID == "!r1:o"
	}, "the room of a purged PDU is still shown")
}

// TestBackfillSeesTheReadersDestinations: the backfill indexes a PDU under
// the destinations the reader delivers it to: normalised, without the
// invalid ones and without fedsender's own server name.
func TestBackfillSeesTheReadersDestinations(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	last := publish(t, js, env(1, "!r:o", "B.Example:8448", "b.example:8448", "O.example", "bad name"))
	x := roomindex.New(roomindex.Options{JS: js, Through: last, Origin: "o.Example"})
	run(t, x)
	projectiontest.Eventually(t, 10*time.Second, x.Ready, "backfill not done")
	if rooms, _, _ := roomsOf(t, x, "b.example:8448", projection.RoomQuery{Limit: 10}); !slices.Equal(rooms, []projection.Room{{RoomID: "!r:o", StreamOrdering: 1}}) {
		t.Errorf("rooms of b.example:8448 = %v, want !r:o at 1", rooms)
	}
	for _, d := range []string{"B.Example:8448", "O.example", "o.example", "bad name"} {
		if _, _, known := roomsOf(t, x, d, projection.RoomQuery{Limit: 10}); known {
			t.Errorf("%q is indexed as a destination", d)
		}
	}
}

// BenchmarkMemory reports the heap one (destination, room) pair costs, with
// 100,000 destinations, 10,000 rooms and 1,000,000 pairs.
func BenchmarkMemory(b *testing.B) {
	const dests, rooms, pairs = 100_000, 10_000, 1_000_000
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		x := roomindex.New(roomindex.Options{MaxPairs: 2 * pairs})
		batch := make([]streams.Item, 0, 100)
		for i := range pairs {
			d := fmt.Sprintf("d%06d.example.org", i%dests)
			room := fmt.Sprintf("!room%05d:origin.example.org", (i/dests*31+i)%rooms)
			batch = append(batch, item(uint64(i+1), room, d))
			if len(batch) == cap(batch) {
				x.Observe(batch)
				batch = batch[:0]
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		st := x.Stats()
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(st.Pairs), "B/pair")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
		runtime.KeepAlive(x)
	}
}

// BenchmarkRooms is one page of a destination with 10,000 rooms.
func BenchmarkRooms(b *testing.B) {
	x := roomindex.New(roomindex.Options{})
	var batch []streams.Item
	for i := range 10_000 {
		batch = append(batch, item(uint64(i+1), fmt.Sprintf("!room%05d:origin.example.org", (i*7919)%10_000), "big.example"))
	}
	x.Observe(batch)
	for b.Loop() {
		x.Rooms("big.example", projection.RoomQuery{From: 5000, Limit: 100})
	}
}
