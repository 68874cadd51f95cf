package synapse_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// BenchmarkJoinedHostsFromDatabase measures what the events source pays
// per event to compute the hosts in the state before it from Synapse's
// state groups, without Synapse's Redis cache and without fedsender's
// own memory of state groups (a fresh one per event): the recording's
// local events, and one event in a room of 200 servers whose membership
// is a chain of 200 state-group deltas.
func BenchmarkJoinedHostsFromDatabase(b *testing.B) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, synapsefixture.Database(b, synapsefixture.Main))
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	type ev struct {
		ID      string
		IsState bool
	}
	rows, err := pool.Query(ctx, `SELECT event_id, state_key IS NOT NULL FROM events
		WHERE stream_ordering > 0 AND sender LIKE '%:localhost:28481' ORDER BY stream_ordering`)
	if err != nil {
		b.Fatal(err)
	}
	recorded, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ev])
	if err != nil {
		b.Fatal(err)
	}
	big := bigRoom(b, pool, 200)

	for _, bc := range []struct {
		name   string
		events []ev
	}{{"recording", recorded}, {"200 servers", []ev{{big, false}}}} {
		b.Run(bc.name, func(b *testing.B) {
			n := 0
			for b.Loop() {
				e := bc.events[n%len(bc.events)]
				n++
				if _, err := synapse.NewJoinedHosts(pool).Before(ctx, e.ID, e.IsState); err != nil {
					b.Fatalf("%s: %v", e.ID, err)
				}
			}
		})
	}
	// As the events source runs: state groups, which never change, are
	// remembered, so an event costs its state-group lookups only.
	b.Run("recording, state groups remembered", func(b *testing.B) {
		hosts := synapse.NewJoinedHosts(pool)
		n := 0
		for b.Loop() {
			e := recorded[n%len(recorded)]
			n++
			if _, err := hosts.Before(ctx, e.ID, e.IsState); err != nil {
				b.Fatalf("%s: %v", e.ID, err)
			}
		}
	})
}

// bigRoom adds n servers' users to the recording's R2, one join each,
// then a message, and returns the message's id.
func bigRoom(b *testing.B, pool *pgxpool.Pool, n int) string {
	b.Helper()
	ctx := context.Background()
	var room string
	if err := pool.QueryRow(ctx, "SELECT room_id FROM rooms WHERE room_id LIKE '!evyk%'").Scan(&room); err != nil {
		b.Fatal(err)
	}
	var id string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for i := range n {
			user := fmt.Sprintf("@u:s%d.example", i)
			if _, _, err := synapsefixture.InsertEvent(ctx, tx, synapsefixture.Event{RoomID: room, Type: "m.room.member",
				StateKey: &user, Sender: user, Content: map[string]any{"membership": "join"}}); err != nil {
				return err
			}
		}
		var err error
		id, _, err = synapsefixture.InsertEvent(ctx, tx, synapsefixture.Event{RoomID: room, Type: "m.room.message",
			Sender: "@alice:localhost:28481", Content: map[string]any{"body": "hi"}})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	// As autovacuum would: the plans depend on the tables' statistics.
	if _, err := pool.Exec(ctx, "ANALYZE"); err != nil {
		b.Fatal(err)
	}
	return id
}

// BenchmarkEventsNext measures the events source reading the whole
// recording (333 events, batches of 100) as it runs, but starting each
// time with nothing remembered and no Redis cache: what the database
// costs per event.
func BenchmarkEventsNext(b *testing.B) {
	ctx := context.Background()
	dbURL := synapsefixture.Database(b, synapsefixture.Main)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	nc, _, _ := projectiontest.JetStream(b)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for b.Loop() {
		src := synapse.NewEvents(synapse.EventsOptions{DB: pool, InstanceName: "fedsender",
			Routing: synapse.Routing{ServerName: synapsefixture.HS1}, Publisher: streams.NewPublisher(js)})
		for pos, more := int64(0), true; more; {
			batch, err := src.Next(ctx, pos)
			if err != nil {
				b.Fatal(err)
			}
			pos, more = batch.Position, batch.More
		}
		total += 333
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(total), "µs/event")
}
