package synapse

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/test/fedsenderproc"
	"github.com/fedsender/fedsender/test/pki"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// Synapse 1.92's own sender worker, killed with -9 and restarted, was seen
// pushing 42 of 100 messages to a healthy server and leaving the other 58
// for that server to fetch: its queues live in memory and a restart begins
// in catch-up, which sends each room's newest event only. fedsender, a real
// process killed with -9 while Synapse keeps persisting messages (and
// announcing them on Redis), must push every one of them to the healthy
// server once it is back, in stream order.
func TestKill9WhileSynapseWritesPushesEveryPDU(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	url := synapsefixture.Database(t, synapsefixture.Unsent)
	db := pool(t, url)
	redisURL := synapsefixture.Redis(t)
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	w, err := synapsefixture.NewWriter(t.Context(), synapsefixture.WriterDeps{Pool: db, Redis: rdb,
		ServerName: synapsefixture.HS1, Key: synapsefixture.SigningKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	rooms, err := w.CreateRooms(t.Context(), []synapsefixture.RoomSpec{
		{ID: "!crash1:" + synapsefixture.HS1, Creator: "@alice:" + synapsefixture.HS1, Members: []string{"@bob:" + synapsefixture.HS2}},
		{ID: "!crash2:" + synapsefixture.HS1, Creator: "@alice:" + synapsefixture.HS1, Members: []string{"@bob:" + synapsefixture.HS2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// fedsender takes over from a sender that had sent everything so far.
	execSQL(t, db, "UPDATE federation_stream_position SET stream_id = (SELECT max(stream_ordering) FROM events)")

	ca := pki.MustCA(t)
	hs2, _ := remotes(t, ca)
	p := newProcess(t, feedDatabase(t, url), redisURL, ca)
	p.Start()

	const total = 300
	var written atomic.Int64
	var mu sync.Mutex
	var want []synapsefixture.Persisted
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		next := time.Now()
		for i := range total {
			next = next.Add(20 * time.Millisecond) // 50 messages a second
			time.Sleep(time.Until(next))
			ev, err := w.Message(ctx, rooms[i%len(rooms)], "message "+strconv.Itoa(i))
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			want = append(want, ev)
			mu.Unlock()
			written.Add(1)
		}
		done <- nil
	}()

	poll(t, func() string { return fmt.Sprintf("hs2 got %d PDUs before the kill, want 60", hs2.PDUCount()) },
		func() bool { return hs2.PDUCount() >= 60 })
	p.Kill9()
	killedAt := written.Load()
	poll(t, func() string {
		return fmt.Sprintf("Synapse wrote %d messages while fedsender was down, want 50", written.Load()-killedAt)
	},
		func() bool { return written.Load() >= killedAt+50 })
	p.Start()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Synapse's writes: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Synapse's writes did not finish")
	}

	ids := make([]string, len(want))
	for i, ev := range want {
		ids[i] = ev.ID
	}
	firsts := func() []string {
		seen := map[string]bool{}
		var out []string
		for _, pdu := range hs2.PDUs() {
			if !seen[pdu.EventID] && slices.Contains(ids, pdu.EventID) {
				seen[pdu.EventID] = true
				out = append(out, pdu.EventID)
			}
		}
		return out
	}
	poll(t, func() string {
		return fmt.Sprintf("hs2 got %d of the %d messages (killed after %d were written)", len(firsts()), total, killedAt)
	}, func() bool { return len(firsts()) == total })
	// In stream order per room: each room's messages as written.
	got := map[string][]string{}
	for _, id := range firsts() {
		for _, ev := range want {
			if ev.ID == id {
				got[ev.RoomID] = append(got[ev.RoomID], id)
			}
		}
	}
	byRoomWant := map[string][]string{}
	for _, ev := range want {
		byRoomWant[ev.RoomID] = append(byRoomWant[ev.RoomID], ev.ID)
	}
	for room, ids := range byRoomWant {
		if !slices.Equal(got[room], ids) {
			t.Errorf("%s: hs2 got the messages out of order:%s", room, diff(got, byRoomWant))
		}
	}
	hs2.RequireNoViolations(t)
	t.Logf("%d messages, fedsender killed with -9 after %d were written; %d PDUs delivered again after the restart",
		total, killedAt, hs2.RedeliveredPDUs())

	// Synapse's own table shows it, as its admin API would.
	last := want[len(want)-1].StreamOrdering
	var lastOK int64
	poll(t, func() string {
		return fmt.Sprintf("destinations.last_successful_stream_ordering for hs2 is %d, want %d", lastOK, last)
	}, func() bool {
		err := db.QueryRow(t.Context(), "SELECT coalesce(last_successful_stream_ordering, 0) FROM destinations WHERE destination = $1",
			synapsefixture.HS2).Scan(&lastOK)
		return err == nil && lastOK >= last
	})
}

// newProcess is a real fedsender (not started) fed by the Synapse at
// databaseURL and redisURL, trusting ca for its destinations.
func newProcess(t *testing.T, databaseURL, redisURL string, ca *pki.CA) *fedsenderproc.Process {
	t.Helper()
	dir := t.TempDir()
	caPath := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caPath, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fedsenderConfig(t, databaseURL, redisURL)
	conf := filepath.Join(dir, "fedsender.yaml")
	yaml := fmt.Sprintf(`server_name: %s
signing_key_path: %s
data_dir: %s
log: {level: warn}
nats: {listen: "127.0.0.1:%d", max_store: 1GiB, max_memory: 64MiB}
admin: {listen: "127.0.0.1:0", token: t}
metrics: {listen: "127.0.0.1:0"}
federation:
  ca_file: %s
  ip_range_allowlist: [127.0.0.0/8]
  request_timeout: 5s
queue: {partitions: 4, checkpoint_interval: 100ms}
synapse:
  database_url: %q
  redis_url: %s
`, cfg.ServerName, cfg.SigningKeyPath, filepath.Join(dir, "data"), fedsenderproc.FreePort(t), caPath, databaseURL, redisURL)
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return fedsenderproc.NewProcess(t, dir, "fedsender", conf)
}
