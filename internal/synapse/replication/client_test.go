package replication

import (
	"context"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/test/synapsefixture"
)

// recorder keeps what a Client delivered.
type recorder struct {
	mu     sync.Mutex
	rows   []Row
	ups    []RemoteServerUp
	states []bool
}

func (r *recorder) options(redisURL string) Options {
	return Options{URL: redisURL, Channel: synapsefixture.HS1, Log: slog.New(slog.DiscardHandler),
		MaxBackoff: 200 * time.Millisecond,
		OnRow:      func(row Row) { r.mu.Lock(); r.rows = append(r.rows, row); r.mu.Unlock() },
		OnRemoteServerUp: func(u RemoteServerUp) {
			r.mu.Lock()
			r.ups = append(r.ups, u)
			r.mu.Unlock()
		},
		OnState: func(up bool) { r.mu.Lock(); r.states = append(r.states, up); r.mu.Unlock() },
	}
}

func (r *recorder) count(stream string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, row := range r.rows {
		if row.Stream == stream {
			n++
		}
	}
	return n
}

func start(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRecordedTraffic replays what Synapse 1.92 published and checks what
// the feed would be told: every row once, rows of a batch with the token
// of the row that closed it, repeats dropped.
func TestRecordedTraffic(t *testing.T) {
	redisURL := synapsefixture.Redis(t)
	var rec recorder
	c := start(t, rec.options(redisURL))
	waitFor(t, "the subscription", c.Up)

	lines := synapsefixture.ReplicationLog(t, "redis-replication.log")
	wantEvents, distinctCaches := 0, map[string]bool{}
	for _, l := range lines {
		if strings.HasPrefix(l.Command, "RDATA events ") {
			wantEvents++
		}
		if strings.HasPrefix(l.Command, "RDATA caches ") {
			distinctCaches[l.Command] = true
		}
	}
	synapsefixture.Publish(t, redisURL, lines)
	waitFor(t, "every events row", func() bool { return rec.count("events") == wantEvents })
	waitFor(t, "the caches rows", func() bool { return rec.count("caches") >= len(distinctCaches) })

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if got := rec.count0("caches"); got != len(distinctCaches) {
		t.Errorf("caches rows: got %d, want %d (each distinct line once; Synapse repeats some)", got, len(distinctCaches))
	}
	for _, row := range rec.rows {
		if row.Stream == "events" && row.Token == 0 {
			t.Fatalf("events row without a token: %s", row.Data)
		}
	}
	// The room's creation: the ev row was published with "batch", its
	// state row closed the batch with token 2.
	var first Row
	for _, row := range rec.rows {
		if row.Stream == "events" {
			first = row
			break
		}
	}
	if first.Stream != "events" || first.Token != 2 || !strings.HasPrefix(string(first.Data), `["ev",`) {
		t.Errorf("first row: %+v (%s), want the create event's ev row with token 2", first, first.Data)
	}
	// Synapse published it twice, 300 ms apart; replayed at once, the two
	// may count as one.
	if len(rec.ups) == 0 || rec.ups[0].Server != synapsefixture.HS3 {
		t.Errorf("REMOTE_SERVER_UP: %+v, want hs3", rec.ups)
	}
}

func (r *recorder) count0(stream string) int {
	n := 0
	for _, row := range r.rows {
		if row.Stream == stream {
			n++
		}
	}
	return n
}

// TestReconnect: Redis stops, the client says it is down, and once Redis
// is back it subscribes again by itself.
func TestReconnect(t *testing.T) {
	redisURL := synapsefixture.Redis(t)
	var rec recorder
	c := start(t, rec.options(redisURL))
	waitFor(t, "the subscription", c.Up)

	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(opts)
	defer admin.Close()
	_ = admin.Shutdown(context.Background()).Err() // the connection ends with the server
	waitFor(t, "the client to notice Redis is down", func() bool { return !c.Up() })

	u, _ := url.Parse(redisURL)
	port, _ := strconv.Atoi(u.Port())
	synapsefixture.RedisAt(t, port)
	waitFor(t, "the client to subscribe again", c.Up)
	if err := admin.Publish(context.Background(), synapsefixture.HS1, `RDATA to_device master 7 ["localhost:28483"]`).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the row published after the reconnection", func() bool { return rec.count("to_device") == 1 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if want := []bool{true, false, true}; len(rec.states) != 3 || rec.states[0] != want[0] || rec.states[1] != want[1] || rec.states[2] != want[2] {
		t.Errorf("states %v, want %v", rec.states, want)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		line  string
		want  any
		batch bool
		err   bool
	}{
		{`RDATA typing master 2 ["!r:hs1",[]]`, Row{Stream: "typing", Instance: "master", Token: 2, Data: []byte(`["!r:hs1",[]]`)}, false, false},
		{`RDATA events master batch ["ev",[]]`, Row{Stream: "events", Instance: "master", Data: []byte(`["ev",[]]`)}, true, false},
		{`POSITION events master 1 5`, Position{Stream: "events", Instance: "master", Prev: 1, New: 5}, false, false},
		{`REMOTE_SERVER_UP localhost:28483`, RemoteServerUp{Server: "localhost:28483"}, false, false},
		{`FEDERATION_ACK fedsender 0`, nil, false, false},
		{`RDATA typing master x []`, nil, false, true},
		{`RDATA typing master 2 not-json`, nil, false, true},
		{`POSITION events master 1`, nil, false, true},
	} {
		got, batch, err := parse(tc.line)
		if (err != nil) != tc.err || batch != tc.batch {
			t.Errorf("parse(%q): batch %v, err %v", tc.line, batch, err)
			continue
		}
		if r, ok := got.(Row); ok {
			w := tc.want.(Row)
			if r.Stream != w.Stream || r.Instance != w.Instance || r.Token != w.Token || string(r.Data) != string(w.Data) {
				t.Errorf("parse(%q) = %+v, want %+v", tc.line, r, w)
			}
		} else if got != tc.want {
			t.Errorf("parse(%q) = %#v, want %#v", tc.line, got, tc.want)
		}
	}
}
