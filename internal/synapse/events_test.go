package synapse_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// pdu is one envelope the events source produced.
type pdu struct {
	StreamOrdering int64
	streams.Envelope
}

// env is a test's Synapse database (a copy of a fixture dump) and NATS.
// pool is the database's owner, which sets the scene as Synapse would;
// feedPool is logged in as the role holding exactly grants.Tables, as
// fedsender is.
type env struct {
	pool     *pgxpool.Pool
	feedPool *pgxpool.Pool
	js       jetstream.JetStream
	url      string
}

func newEnv(t *testing.T, dump string) *env {
	t.Helper()
	url := synapsefixture.Database(t, dump)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	feedPool, err := pgxpool.New(context.Background(), synapsefixture.Role(t, url))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(feedPool.Close)
	nc, _, _ := projectiontest.JetStream(t)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return &env{pool: pool, feedPool: feedPool, js: js, url: url}
}

func (e *env) events(rc *redis.Client, whitelist ...string) *synapse.Events {
	return synapse.NewEvents(synapse.EventsOptions{DB: e.feedPool, Redis: rc, InstanceName: "fedsender",
		Routing:   synapse.Routing{ServerName: synapsefixture.HS1, Whitelist: whitelist},
		Publisher: streams.NewPublisher(e.js)})
}

func (e *env) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// drain reads src from from until it has nothing more, and returns the
// envelopes and the final position.
func drain(t *testing.T, src synapse.Source, from int64) ([]pdu, int64) {
	t.Helper()
	var out []pdu
	for {
		b, err := src.Next(context.Background(), from)
		if err != nil {
			t.Fatalf("Next(%d): %v", from, err)
		}
		for _, m := range b.Messages {
			var p pdu
			if err := json.Unmarshal(m.Data, &p.Envelope); err != nil {
				t.Fatal(err)
			}
			if got := m.Header.Get(jetstream.MsgIDHeader); got != p.EventID {
				t.Fatalf("Nats-Msg-Id %q, want the event id %q", got, p.EventID)
			}
			so, err := strconv.ParseInt(m.Header.Get(synapse.HeaderStreamOrdering), 10, 64)
			if err != nil || so <= from || so > b.Position {
				t.Fatalf("%s header %q outside (%d, %d]", synapse.HeaderStreamOrdering, m.Header.Get(synapse.HeaderStreamOrdering), from, b.Position)
			}
			p.StreamOrdering = so
			out = append(out, p)
		}
		from = b.Position
		if !b.More {
			return out, from
		}
	}
}

type facts struct {
	Rooms map[string]string `json:"rooms"`
}

func readFacts(t *testing.T, name string) facts {
	t.Helper()
	data, err := os.ReadFile(synapsefixture.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	var f facts
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// perRoom counts the envelopes to dest by room name (R1..R4).
func perRoom(pdus []pdu, rooms map[string]string, dest string) map[string]int {
	name := map[string]string{}
	for n, id := range rooms {
		name[id] = n
	}
	out := map[string]int{}
	for _, p := range pdus {
		for _, d := range p.Destinations {
			if d == dest {
				out[name[p.RoomID]]++
			}
		}
	}
	return out
}

// TestEventsOwedWithoutSender: the recording in which no sender ran. From
// the position Synapse's own sender would have started at, the events
// source owes each server exactly what the fixture counts (the hosts in
// the room before each event; local users' events and the remote joins
// hs1 accepted; not alice's partial join to R4, which hs2 learnt through
// send_join).
func TestEventsOwedWithoutSender(t *testing.T) {
	e := newEnv(t, synapsefixture.Unsent)
	src := e.events(nil)
	start, err := src.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if start != -1 {
		t.Fatalf("Start = %d, want -1 (the smallest position in federation_stream_position)", start)
	}
	pdus, pos := drain(t, src, start)
	// One envelope per event: R1 55 (hs3 in 50 of them), R2 33, R3 8, R4 18.
	if len(pdus) != 114 {
		t.Errorf("%d envelopes, want 114", len(pdus))
	}
	if pos != 154 {
		t.Errorf("position %d, want 154 (stream_positions: events master 154)", pos)
	}
	rooms := readFacts(t, "unsent/facts.json").Rooms
	for dest, want := range map[string]map[string]int{
		synapsefixture.HS2: {"R1": 55, "R2": 33, "R4": 18},
		synapsefixture.HS3: {"R1": 50, "R3": 8, "R4": 18},
	} {
		got := perRoom(pdus, rooms, dest)
		for _, r := range []string{"R1", "R2", "R3", "R4"} {
			if got[r] != want[r] {
				t.Errorf("%s %s: %d PDUs, want %d", dest, r, got[r], want[r])
			}
		}
	}
}

// TestEventsAsSynapseSent: on the main recording, the events source gives
// hs2 exactly the 200 PDUs Synapse's sender delivered to it (hs2 was never
// down), each PDU as it was on the wire; hs3 gets everything it was sent
// and also the messages of outage 2 that Synapse left it to pull. The
// ban of carol goes to hs3, the R1 message after it does not.
func TestEventsAsSynapseSent(t *testing.T) {
	e := newEnv(t, synapsefixture.Main)
	pdus, _ := drain(t, e.events(nil), 0)
	byHash := map[string]pdu{}
	for _, p := range pdus {
		byHash[contentHash(t, p.PDU)] = p
	}
	for _, name := range []string{"transactions-hs2.jsonl", "transactions-hs3.jsonl"} {
		wire := 0
		for _, tx := range synapsefixture.Transactions(t, name) {
			for _, raw := range tx.Body.PDUs {
				wire++
				p, ok := byHash[contentHash(t, raw)]
				if !ok {
					t.Errorf("%s: Synapse sent %s, the events source did not", name, raw)
					continue
				}
				if !contains(p.Destinations, tx.Destination) {
					t.Errorf("%s: event %s: destinations %q lack %s", name, p.EventID, p.Destinations, tx.Destination)
				}
				if !jsonEqual(t, raw, p.PDU) {
					t.Errorf("%s: event %s:\n wire %s\n ours %s", name, p.EventID, raw, p.PDU)
				}
			}
		}
		t.Logf("%s: %d PDUs on the wire", name, wire)
	}
	if n := len(perDest(pdus, synapsefixture.HS2)); n != 200 {
		t.Errorf("hs2: %d PDUs, want the 200 Synapse sent", n)
	}
	if n := len(perDest(pdus, synapsefixture.HS3)); n <= 192 {
		t.Errorf("hs3: %d PDUs, want more than the 192 Synapse pushed (it left outage 2's messages to be pulled)", n)
	}
}

func perDest(pdus []pdu, dest string) []pdu {
	var out []pdu
	for _, p := range pdus {
		if contains(p.Destinations, dest) {
			out = append(out, p)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// contentHash identifies a PDU (room version 10 PDUs carry no event id).
func contentHash(t *testing.T, raw []byte) string {
	t.Helper()
	var p struct {
		Hashes struct {
			SHA256 string `json:"sha256"`
		} `json:"hashes"`
	}
	if err := json.Unmarshal(raw, &p); err != nil || p.Hashes.SHA256 == "" {
		t.Fatalf("PDU without hashes.sha256: %s", raw)
	}
	return p.Hashes.SHA256
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// TestEventsStart: the first start takes this instance's position as
// Synapse's sender would after its repair of federation_stream_position:
// its own row when it is the only sender there, otherwise the smallest
// position of any, given to it alone.
func TestEventsStart(t *testing.T) {
	e := newEnv(t, synapsefixture.Main)
	src := e.events(nil)
	if pos, err := src.Start(context.Background()); err != nil || pos != 333 {
		t.Fatalf("Start = %d, %v; want 333, fedsender's row", pos, err)
	}
	// Synapse's own worker "sender1" was configured too, and is behind.
	e.exec(t, "INSERT INTO federation_stream_position (type, stream_id, instance_name) VALUES ('events', 300, 'sender1'), ('federation', 0, 'sender1')")
	if pos, err := src.Start(context.Background()); err != nil || pos != 300 {
		t.Fatalf("Start = %d, %v; want 300, the smallest", pos, err)
	}
	if got, want := e.federationPosition(t), "events 300 fedsender, federation 0 fedsender"; got != want {
		t.Errorf("federation_stream_position: %s, want %s", got, want)
	}
}
