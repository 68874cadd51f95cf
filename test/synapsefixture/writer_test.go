package synapsefixture_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/test/synapsefixture"
)

// The Writer's events are rows as Synapse's, its RDATA lines come in stream
// order although four rooms are written concurrently, and the external
// cache names each event's state group and the group's joined hosts.
func TestWriterPersistsAndAnnouncesInStreamOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, synapsefixture.Database(t, synapsefixture.Unsent))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	opts, _ := redis.ParseURL(synapsefixture.Redis(t))
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	sub := rdb.Subscribe(ctx, synapsefixture.HS1)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := synapsefixture.NewWriter(ctx, synapsefixture.WriterDeps{Pool: pool, Redis: rdb,
		ServerName: synapsefixture.HS1, Key: synapsefixture.SigningKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	var specs []synapsefixture.RoomSpec
	for i := range 4 {
		specs = append(specs, synapsefixture.RoomSpec{ID: fmt.Sprintf("!w%d:%s", i, synapsefixture.HS1),
			Creator: "@alice:" + synapsefixture.HS1, Members: []string{"@bob:" + synapsefixture.HS2, "@carol:" + synapsefixture.HS3}})
	}
	rooms, err := w.CreateRooms(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rooms[0].Hosts, " "); got != "localhost:28481 localhost:28482 localhost:28483" {
		t.Fatalf("hosts %q", got)
	}
	var wg sync.WaitGroup
	events := make(chan synapsefixture.Persisted, 40)
	for _, r := range rooms {
		wg.Go(func() {
			for i := range 10 {
				ev, err := w.Message(ctx, r, "m"+strconv.Itoa(i))
				if err != nil {
					t.Error(err)
					return
				}
				events <- ev
			}
		})
	}
	wg.Wait()
	close(events)
	if t.Failed() {
		return
	}
	last := int64(0)
	for ev := range events {
		var sg int64
		var hosts string
		if err := pool.QueryRow(ctx, `SELECT s.state_group FROM events e JOIN event_to_state_groups s USING (event_id)
			WHERE e.event_id = $1 AND e.stream_ordering = $2 AND e.type = 'm.room.message'`, ev.ID, ev.StreamOrdering).Scan(&sg); err != nil {
			t.Fatalf("%s: %v", ev.ID, err)
		}
		cached, err := rdb.Get(ctx, "cache_v1:event_to_prev_state_group:"+ev.ID).Int64()
		if err != nil || cached != sg {
			t.Fatalf("%s: cached state group %d (%v), want %d", ev.ID, cached, err, sg)
		}
		if hosts, err = rdb.Get(ctx, "cache_v1:get_joined_hosts:"+strconv.FormatInt(sg, 10)).Result(); err != nil ||
			hosts != `["localhost:28481","localhost:28482","localhost:28483"]` {
			t.Fatalf("joined hosts of %d: %s (%v)", sg, hosts, err)
		}
		last = max(last, ev.StreamOrdering)
	}
	var pos int64
	if err := pool.QueryRow(ctx, "SELECT stream_id FROM stream_positions WHERE stream_name = 'events' AND instance_name = 'master'").Scan(&pos); err != nil || pos != last {
		t.Fatalf("stream position %d (%v), want %d", pos, err, last)
	}
	// 4 rooms of 4 state events (create, 3 joins: an ev and a state row each) and
	// 40 messages.
	want, prev, messages := 4*4*2+40, int64(154), 0
	for range want {
		m, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v", messages, err)
		}
		f := strings.SplitN(m.Payload, " ", 5)
		if len(f) != 5 || f[0] != "RDATA" || f[1] != "events" || !json.Valid([]byte(f[4])) {
			t.Fatalf("not an RDATA events line: %q", m.Payload)
		}
		if f[3] == "batch" {
			continue
		}
		token, _ := strconv.ParseInt(f[3], 10, 64)
		if token != prev+1 {
			t.Fatalf("RDATA token %d after %d: %q", token, prev, m.Payload)
		}
		prev = token
		messages++
	}
	if prev != last {
		t.Fatalf("last RDATA token %d, want %d", prev, last)
	}
}
