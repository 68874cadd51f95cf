package synapsefixture_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestDumpsRestore(t *testing.T) {
	for _, tc := range []struct {
		dump        string
		events      int
		maxOrdering int64
	}{
		{synapsefixture.Main, 337, 333},
		{synapsefixture.Unsent, 158, 154},
	} {
		t.Run(tc.dump, func(t *testing.T) {
			url := synapsefixture.Database(t, tc.dump)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer c.Close(ctx)
			var n int
			var max int64
			if err := c.QueryRow(ctx, "SELECT count(*), max(stream_ordering) FROM events").Scan(&n, &max); err != nil {
				t.Fatalf("query: %v", err)
			}
			if n != tc.events || max != tc.maxOrdering {
				t.Fatalf("events: %d rows up to %d, want %d up to %d", n, max, tc.events, tc.maxOrdering)
			}
		})
	}
}

func TestReplicationReplays(t *testing.T) {
	url := synapsefixture.Redis(t)
	lines := synapsefixture.ReplicationLog(t, "redis-replication.log")
	if len(lines) != 1178 {
		t.Fatalf("%d lines, want the 1178 recorded", len(lines))
	}
	opts, _ := redis.ParseURL(url)
	c := redis.NewClient(opts)
	defer c.Close()
	sub := c.Subscribe(t.Context(), synapsefixture.HS1)
	defer sub.Close()
	if _, err := sub.Receive(t.Context()); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	synapsefixture.Publish(t, url, lines[:10])
	for i := range 10 {
		select {
		case m := <-sub.Channel():
			if m.Payload != lines[i].Command {
				t.Fatalf("message %d: %q, want %q", i, m.Payload, lines[i].Command)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d not received", i)
		}
	}
	if got := len(synapsefixture.Transactions(t, "transactions-hs2.jsonl")); got != 165 {
		t.Fatalf("hs2 transactions: %d, want 165", got)
	}
}
