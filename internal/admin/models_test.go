package admin_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/admin"
	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/projection/kvprojection"
	"github.com/fedsender/fedsender/internal/projection/pgprojection"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/projection/roomindex"
	"github.com/fedsender/fedsender/streams"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// readModel is what the admin surfaces read: destinations and their rooms,
// over the same contents.
type readModel interface {
	admin.Reader
	admin.Rooms
}

// loader replaces a read model's contents with states and the rooms of
// each destination, and returns the model once it shows exactly them.
// What it starts stops when t ends.
type loader func(t *testing.T, states []destination.State, rooms map[string][]projection.Room) readModel

// eachModel runs f against each implementation of the read models, as
// parallel subtests named after them. The loader it hands over belongs to
// that subtest.
func eachModel(t *testing.T, f func(t *testing.T, load loader)) {
	models := []struct {
		name string
		open func(t *testing.T) loader
	}{
		{"kv", openKV},
		{"postgres", openPostgres},
	}
	for _, m := range models {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			f(t, m.open(t))
		})
	}
}

// kvModel is the read models of a replica without PostgreSQL: the
// destinations bucket's Index, and the rooms index the PDU reader feeds.
type kvModel struct {
	*kvprojection.Index
	rooms *roomindex.Index
}

func (m kvModel) Rooms(dest string, q projection.RoomQuery) (projection.RoomPage, bool) {
	return m.rooms.Rooms(dest, q)
}

func (m kvModel) Ready() bool { return m.Index.Ready() && m.rooms.Ready() }

// openKV loads each set into the same JetStream, emptied first: the states
// as the owners' events, which a new Projector writes to the destinations
// bucket that a new Index watches; the rooms as the PDU reader hands them
// to a new rooms index, with the chosen stream orderings.
func openKV(t *testing.T) loader {
	t.Helper()
	_, js, _ := projectiontest.JetStream(t)
	stopPrevious := func() {}
	return func(t *testing.T, states []destination.State, rooms map[string][]projection.Room) readModel {
		t.Helper()
		stopPrevious()
		for _, name := range []string{streams.EventStream, "KV_" + streams.DestinationBucket} {
			if err := purge(t.Context(), js, name); err != nil {
				t.Fatal(err)
			}
		}
		store, err := eventlog.Open(t.Context(), js)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range states {
			typ := destination.Recovered
			if s.Failing() {
				typ = destination.Failed
			}
			ev := destination.Event{Type: typ, At: time.Now().UnixMilli(), State: s}
			if _, err := store.Append(t.Context(), streams.Partition(s.Destination, 8), ev, 0); err != nil {
				t.Fatalf("append the event of %s: %v", s.Destination, err)
			}
		}
		idx := kvprojection.NewIndex(js, nil)
		proj := kvprojection.NewProjector(kvprojection.ProjectorOptions{JS: js, Index: idx, FlushInterval: 20 * time.Millisecond})
		rx := roomindex.New(roomindex.Options{})
		var items []streams.Item
		for dest, rs := range rooms {
			for _, r := range rs {
				pdu := &streams.PDU{RoomID: r.RoomID, EventID: fmt.Sprintf("$%d", len(items)), Destinations: []string{dest}}
				items = append(items, streams.Item{Seq: r.StreamOrdering, PDU: pdu})
			}
		}
		rx.Observe(items)
		stopPrevious = projectiontest.Start(t, idx.Run, proj.Run, rx.Run)
		projectiontest.Eventually(t, 10*time.Second, func() bool {
			synced, rev := proj.Synced()
			return synced && idx.Ready() && idx.Revision() >= rev && idx.Len() == len(states) && rx.Ready()
		}, "the KV read models show %d destinations: %d", len(states), idx.Len())
		return kvModel{Index: idx, rooms: rx}
	}
}

// purge empties a stream, if it exists (the projector creates the
// destinations bucket).
func purge(ctx context.Context, js jetstream.JetStream, name string) error {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err == nil {
		err = s.Purge(ctx)
	}
	if err != nil {
		return fmt.Errorf("purge %s: %w", name, err)
	}
	return nil
}

// openPostgres migrates a fresh schema, and loads each set into it with
// the rows the projector writes: a state as Synapse stores it (failure_ts
// and last_successful_stream_ordering NULL for 0), and for each room a
// destination_rooms row and, as the rooms projector does for a destination
// it first queues a PDU for, a destinations row with nothing recorded. The
// projector is not run: it cannot choose the rooms' stream orderings, and
// waiting for it to catch up costs half a second per set.
func openPostgres(t *testing.T) loader {
	t.Helper()
	pool := migratedPool(t)
	rd := pgprojection.NewReader(pool, nil, nil)
	return func(t *testing.T, states []destination.State, rooms map[string][]projection.Room) readModel {
		t.Helper()
		b := &pgx.Batch{}
		b.Queue(`TRUNCATE destinations, destination_rooms`)
		for i, s := range states {
			s = projection.Shown(s)
			b.Queue(`INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts,
				last_successful_stream_ordering, catching_up, event_seq) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				s.Destination, s.RetryLastTS, s.RetryInterval, nullZero(s.FailureTS), nullZero(int64(min(s.Offset, 1<<63-1))), s.CatchingUp, i+1)
		}
		for dest, rs := range rooms {
			b.Queue(`INSERT INTO destinations (destination) VALUES ($1) ON CONFLICT (destination) DO NOTHING`, dest)
			for _, r := range rs {
				b.Queue(`INSERT INTO destination_rooms (destination, room_id, stream_ordering) VALUES ($1, $2, $3)`,
					dest, r.RoomID, int64(r.StreamOrdering))
			}
		}
		err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error { return tx.SendBatch(t.Context(), b).Close() })
		if err != nil {
			t.Fatalf("load the destinations tables: %v", err)
		}
		return rd
	}
}

// migratedPool connects to a fresh, migrated schema, until t ends.
func migratedPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := pgtest.URL(t)
	schema := pgtest.Schema(t, url)
	pool, err := pgprojection.Connect(t.Context(), url, schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pgprojection.Migrate(t.Context(), pool, schema); err != nil {
		t.Fatal(err)
	}
	return pool
}

// nullZero is Synapse's NULL for 0: never failed, nothing sent.
func nullZero(v int64) *int64 {
	if v == 0 {
		return nil
	}
	return &v
}

// swapModel is a read model whose contents a test replaces between cases,
// so that one HTTP handler and one micro service serve them all.
type swapModel struct {
	mu sync.Mutex
	m  readModel
}

func (s *swapModel) set(m readModel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = m
}

func (s *swapModel) cur() readModel {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m
}

func (s *swapModel) Get(name string) (destination.State, bool) { return s.cur().Get(name) }

func (s *swapModel) Page(q projection.Query) projection.Page { return s.cur().Page(q) }

func (s *swapModel) Rooms(dest string, q projection.RoomQuery) (projection.RoomPage, bool) {
	return s.cur().Rooms(dest, q)
}

func (s *swapModel) Sync(ctx context.Context) error { return s.cur().Sync(ctx) }

func (s *swapModel) EventSeq(ctx context.Context, name string) (uint64, error) {
	return s.cur().EventSeq(ctx, name)
}

func (s *swapModel) Ready() bool {
	m := s.cur()
	return m != nil && m.Ready()
}
