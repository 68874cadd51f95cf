package books_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/internal/synapse/books"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Rooms of the recording without a sender (unsent/facts.json).
const (
	r1 = "!nPnUIHvlTqHThRlUUP:localhost:28481"
	r4 = "!dccxkfPuSHVpigMHbB:localhost:28482"
)

const partitions = 8

// env is a Synapse database with work owed (synapsefixture.Unsent), the
// feed's role on it, and fedsender's streams in an embedded NATS.
type env struct {
	t      *testing.T
	js     jetstream.JetStream
	admin  *pgxpool.Pool // Synapse's own view (superuser)
	role   string        // the feed's role, which the books use
	pub    *streams.Publisher
	events *eventlog.Store
	last   map[string]uint64 // each destination's last event sequence
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := synapsefixture.Database(t, synapsefixture.Unsent)
	_, js, _ := projectiontest.JetStream(t)
	store, err := eventlog.Open(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, js: js, admin: pool(t, db), role: synapsefixture.Role(t, db),
		pub: streams.NewPublisher(js), events: store, last: map[string]uint64{}}
}

func pool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// start runs a replica of the books, logged in as the feed's role, until
// stop is called or the test ends.
func (e *env) start(holder string) (stop func()) {
	e.t.Helper()
	return e.startWith(holder, nil)
}

// startWith is start with Synapse's replication Redis.
func (e *env) startWith(holder string, rdb *redis.Client) (stop func()) {
	e.t.Helper()
	b := books.New(books.Options{JS: e.js, DB: pool(e.t, e.role), Origin: synapsefixture.HS1, Holder: holder,
		Redis: rdb, Flush: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Lease: lease.Options{TTL: 2 * time.Second}})
	return projectiontest.Start(e.t, b.Run)
}

// pdu publishes a PDU as the feed does, with its Synapse stream ordering,
// and returns its sequence.
func (e *env) pdu(room string, ordering int64, dests ...string) uint64 {
	e.t.Helper()
	env, err := json.Marshal(streams.Envelope{RoomID: room, EventID: fmt.Sprintf("$ev%d", ordering),
		PDU: json.RawMessage(`{"type":"m.room.message"}`), Destinations: dests})
	if err != nil {
		e.t.Fatal(err)
	}
	return e.publish(env, synapse.HeaderStreamOrdering, strconv.FormatInt(ordering, 10))
}

// edu publishes a must-deliver EDU for one destination as the feed does,
// with the Synapse rows it came from ("to_device 4"), and returns its
// sequence.
func (e *env) edu(eduType, dest, source string) uint64 {
	e.t.Helper()
	env, err := json.Marshal(streams.EDUEnvelope{EDUType: eduType, Content: json.RawMessage(`{}`), Destinations: []string{dest}})
	if err != nil {
		e.t.Fatal(err)
	}
	return e.publish(env, synapse.HeaderSource, source)
}

func (e *env) publish(envelope []byte, header, value string) uint64 {
	e.t.Helper()
	msg, err := e.pub.Message(e.t.Context(), envelope)
	if err != nil {
		e.t.Fatal(err)
	}
	if header != "" {
		msg.Header.Set(header, value)
	}
	ack, err := e.js.PublishMsg(e.t.Context(), msg)
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

// put writes a destination's key in an offsets bucket, as the partition
// supervisors do once the destination acknowledged.
func (e *env) put(bucket, dest string, seq uint64) {
	e.t.Helper()
	kv, err := e.js.KeyValue(e.t.Context(), bucket)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := kv.Put(e.t.Context(), streams.OffsetKey(streams.Partition(dest, partitions), dest), []byte(strconv.FormatUint(seq, 10))); err != nil {
		e.t.Fatal(err)
	}
}

// record appends a destination event at time at (ms), folding it into the
// destination's state as the actor does, and returns its sequence.
func (e *env) record(dest string, state *destination.State, typ destination.EventType, at, interval int64) uint64 {
	e.t.Helper()
	state.Destination = dest
	ev := state.Record(destination.Event{Type: typ, At: at, Interval: interval})
	seq, err := e.events.Append(e.t.Context(), streams.Partition(dest, partitions), ev, e.last[dest])
	if err != nil {
		e.t.Fatal(err)
	}
	e.last[dest] = seq
	return seq
}

// applied waits until the books' checkpoint of a stream reached seq.
func (e *env) applied(name string, seq uint64) {
	e.t.Helper()
	kv, err := e.js.KeyValue(e.t.Context(), streams.SynapseBooksBucket)
	if err != nil {
		e.t.Fatal(err)
	}
	projectiontest.Eventually(e.t, 20*time.Second, func() bool {
		v, err := kv.Get(e.t.Context(), name)
		if err != nil {
			return false
		}
		n, _ := strconv.ParseUint(string(v.Value()), 10, 64)
		return n >= seq
	}, "checkpoint %s did not reach %d", name, seq)
}

// rows returns what query answers, one row per line, columns joined by '|'
// (NULL as "-").
func (e *env) rows(query string, args ...any) string {
	e.t.Helper()
	rs, err := e.admin.Query(e.t.Context(), query, args...)
	if err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		vals, err := rs.Values()
		if err != nil {
			e.t.Fatal(err)
		}
		cols := make([]string, len(vals))
		for i, v := range vals {
			cols[i] = "-"
			if v != nil {
				cols[i] = fmt.Sprint(v)
			}
		}
		out = append(out, strings.Join(cols, "|"))
	}
	if err := rs.Err(); err != nil {
		e.t.Fatal(err)
	}
	return strings.Join(out, "\n")
}

// want waits until query answers want, and fails with the last answer.
func (e *env) want(what, want, query string, args ...any) {
	e.t.Helper()
	var got string
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got = e.rows(query, args...); got == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not within 20s:\n got: %q\nwant: %q", what, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const (
	destinationsQuery = `SELECT destination, retry_last_ts, retry_interval, failure_ts, last_successful_stream_ordering
		FROM destinations ORDER BY destination`
	roomsQuery    = `SELECT destination, room_id, stream_ordering FROM destination_rooms ORDER BY destination, stream_ordering`
	outboxQuery   = `SELECT destination, stream_id FROM device_federation_outbox ORDER BY destination, stream_id`
	pokesQuery    = `SELECT destination, stream_id FROM device_lists_outbound_pokes WHERE destination = $1 ORDER BY stream_id`
	lastSuccQuery = `SELECT destination, user_id, stream_id FROM device_lists_outbound_last_success ORDER BY destination, user_id`
)

var (
	hs2, hs3 = synapsefixture.HS2, synapsefixture.HS3
	alice    = "@alice:localhost:28481"
)

// TestAfterDelivery: once destinations acknowledged PDUs and EDUs,
// Synapse's tables say so as Synapse's sender would have left them: rooms
// per destination at the newest stream ordering queued, the stream
// ordering of the newest PDU acknowledged, the to-device rows and
// device-list pokes acknowledged deleted and last_success moved; what a
// destination did not acknowledge stays.
func TestAfterDelivery(t *testing.T) {
	e := newEnv(t)
	e.start("a")

	// Two PDUs for both servers, ourselves listed too (never a destination).
	first := e.pdu(r1, 150, hs2, hs3, synapsefixture.HS1)
	last := e.pdu(r4, 154, hs2, hs3)
	// hs2's owed EDUs (the fixture's rows): to-device 2 and 4, device
	// lists up to 26; hs3's to-device 3.
	e.edu("m.direct_to_device", hs2, "to_device 2")
	e.edu("m.device_list_update", hs2, "device_list 13")
	e.edu("m.direct_to_device", hs2, "to_device 4")
	hs2EDUs := e.edu("m.signing_key_update", hs2, "device_list 26")
	e.edu("m.direct_to_device", hs3, "to_device 3")

	e.want("destination_rooms, as Synapse stores them when it queues",
		hs2+"|"+r1+"|150\n"+hs2+"|"+r4+"|154\n"+hs3+"|"+r1+"|150\n"+hs3+"|"+r4+"|154", roomsQuery)

	// hs2 acknowledged everything; hs3 only the first PDU, no EDU.
	e.put(streams.OffsetBucket, hs2, last)
	e.put(streams.OffsetBucket, hs3, first)
	e.put(streams.EDUOffsetBucket, hs2, hs2EDUs)

	e.want("destinations", hs2+"|-|-|-|154\n"+hs3+"|-|-|-|150", destinationsQuery)
	e.want("to-device rows", hs3+"|3\n"+hs3+"|4", outboxQuery)
	e.want("hs2's pokes", "", pokesQuery, hs2)
	e.want("device-list last success", hs2+"|"+alice+"|26", lastSuccQuery)
	e.want("hs3's pokes", "localhost:28483|6\nlocalhost:28483|9\nlocalhost:28483|12\nlocalhost:28483|17\n"+
		"localhost:28483|19\nlocalhost:28483|22\nlocalhost:28483|25", pokesQuery, hs3)
}

// synapseWrite is Synapse 1.92's own write of retry timings
// (_set_destination_retry_timings_txn), as its main process runs it for
// its own requests.
const synapseWrite = `
INSERT INTO destinations (destination, failure_ts, retry_last_ts, retry_interval) VALUES ($1, $2, $3, $4)
ON CONFLICT (destination) DO UPDATE SET
	failure_ts = EXCLUDED.failure_ts, retry_last_ts = EXCLUDED.retry_last_ts, retry_interval = EXCLUDED.retry_interval
WHERE EXCLUDED.retry_interval = 0 OR EXCLUDED.retry_last_ts = 0 OR destinations.retry_interval IS NULL
	OR destinations.retry_interval < EXCLUDED.retry_interval OR destinations.retry_last_ts < EXCLUDED.retry_last_ts`

// TestRetryTimings: fedsender's failures, recoveries and resets reach
// destinations as Synapse's sender writes them, and never undo a newer
// backoff Synapse's main process recorded for its own requests.
func TestRetryTimings(t *testing.T) {
	e := newEnv(t)
	e.start("a")
	const q = `SELECT retry_last_ts, retry_interval, failure_ts FROM destinations WHERE destination = $1`
	var s destination.State

	// A first failure creates the row, as any outbound failure does in Synapse.
	e.applied("events", e.record(hs3, &s, destination.Failed, 1_000, 600_000))
	e.want("after the first failure", "1000|600000|1000", q, hs3)

	// Synapse's main process fails to reach hs3 later (a key query), with a
	// longer interval.
	if _, err := e.admin.Exec(t.Context(), synapseWrite, hs3, 1_000, 5_000, 1_500_000); err != nil {
		t.Fatal(err)
	}
	// fedsender's second failure happened before it, with a shorter
	// interval than Synapse's but longer than its stored one would
	// have been: Synapse's rule alone would let it through.
	e.applied("events", e.record(hs3, &s, destination.Failed, 3_000, 1_600_000))
	e.want("an older failure does not overwrite Synapse's newer one", "5000|1500000|1000", q, hs3)

	// fedsender's recovery came before Synapse's failure: the backoff stays.
	e.applied("events", e.record(hs3, &s, destination.Recovered, 4_000, 0))
	e.want("an older recovery does not clear Synapse's newer failure", "5000|1500000|1000", q, hs3)

	// A reset after it clears it as Synapse does.
	e.applied("events", e.record(hs3, &s, destination.Reset, 6_000, 0))
	e.want("after the reset", "0|0|-", q, hs3)

	// A failure after a reset starts a new run: failure_ts is its own.
	e.applied("events", e.record(hs3, &s, destination.Failed, 7_000, 600_000))
	e.want("after a new failure", "7000|600000|7000", q, hs3)
	// The catch-up events carry no timings.
	e.applied("events", e.record(hs3, &s, destination.CatchUpStarted, 8_000, 0))
	e.applied("events", e.record(hs3, &s, destination.Recovered, 9_000, 0))
	e.want("after the recovery", "0|0|-", q, hs3)
}

// TestRestart: the books stopped (or killed before any checkpoint: every
// key of their bucket gone) and started again miss nothing delivered
// meanwhile, and applying everything again changes nothing Synapse wrote
// since.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	stop := e.start("a")
	var s destination.State
	p1 := e.pdu(r1, 150, hs2)
	td := e.edu("m.direct_to_device", hs2, "to_device 2")
	e.put(streams.OffsetBucket, hs2, p1)
	e.put(streams.EDUOffsetBucket, hs2, td)
	e.applied("events", e.record(hs2, &s, destination.Failed, 1_000, 600_000))
	e.want("before the restart", hs2+"|1000|600000|1000|150", destinationsQuery)
	e.want("to-device 2 deleted", hs2+"|4\n"+hs3+"|3\n"+hs3+"|4", outboxQuery)
	stop()

	// While the books are down: more delivered, Synapse's main process
	// records a newer backoff, and Synapse queues a new to-device row for
	// hs2 that nothing delivered yet.
	p2 := e.pdu(r4, 154, hs2)
	td4 := e.edu("m.direct_to_device", hs2, "to_device 4")
	e.put(streams.OffsetBucket, hs2, p2)
	e.put(streams.EDUOffsetBucket, hs2, td4)
	if _, err := e.admin.Exec(t.Context(), synapseWrite, hs2, 1_000, 5_000, 1_200_000); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Exec(t.Context(), `INSERT INTO device_federation_outbox
		(destination, stream_id, queued_ts, messages_json, instance_name) VALUES ($1, 30, 0, '{}', 'master')`, hs2); err != nil {
		t.Fatal(err)
	}
	// The checkpoints lost, as if killed before it ever saved one.
	kv, err := e.js.KeyValue(t.Context(), streams.SynapseBooksBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"pdu", "events", "edu"} {
		if err := kv.Purge(t.Context(), k); err != nil {
			t.Fatal(err)
		}
	}

	e.start("b")
	e.want("rooms after the restart", hs2+"|"+r1+"|150\n"+hs2+"|"+r4+"|154", roomsQuery)
	e.want("destinations after the restart: Synapse's newer backoff kept",
		hs2+"|5000|1200000|1000|154", destinationsQuery)
	e.want("to-device after the restart: 4 deleted, 30 kept", hs2+"|30\n"+hs3+"|3\n"+hs3+"|4", outboxQuery)
}

// TestTwoReplicas: of two replicas, one keeps the books; when it stops,
// the other takes over from its checkpoints.
func TestTwoReplicas(t *testing.T) {
	e := newEnv(t)
	stops := map[string]func(){"a": e.start("a"), "b": e.start("b")}
	leases, err := e.js.KeyValue(t.Context(), streams.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	var holder string
	projectiontest.Eventually(t, 10*time.Second, func() bool {
		r, ok, err := lease.Holder(t.Context(), leases, books.LeaseKey)
		holder = r.Holder
		return err == nil && ok
	}, "nobody took the lease %s", books.LeaseKey)
	p := e.pdu(r1, 150, hs2)
	e.put(streams.OffsetBucket, hs2, p)
	e.want("rows with two replicas", hs2+"|-|-|-|150", destinationsQuery)

	stops[holder]()
	p = e.pdu(r4, 154, hs2)
	e.put(streams.OffsetBucket, hs2, p)
	e.want("rows after the holder stopped", hs2+"|-|-|-|154", destinationsQuery)
	e.want("rooms after the holder stopped", hs2+"|"+r1+"|150\n"+hs2+"|"+r4+"|154", roomsQuery)
}

// TestRetryTimingsInvalidateSynapseCaches: each change of retry timings
// is announced to Synapse's processes as Synapse's own writers announce it
// (a caches stream row under fedsender's instance name, and RDATA caches
// on the replication channel), so that the main process drops its cached
// timings and its admin API shows fedsender's; a write that changes
// nothing announces nothing.
func TestRetryTimingsInvalidateSynapseCaches(t *testing.T) {
	e := newEnv(t)
	opts, err := redis.ParseURL(synapsefixture.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	sub := rdb.Subscribe(t.Context(), synapsefixture.HS1)
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Receive(t.Context()); err != nil { // the subscription is confirmed
		t.Fatal(err)
	}
	e.startWith("a", rdb)
	const rowsQuery = `SELECT stream_id, cache_func, keys[1] FROM cache_invalidation_stream_by_instance
		WHERE instance_name = 'fedsender' ORDER BY stream_id`
	var s destination.State

	next := func() string {
		t.Helper()
		select {
		case m := <-sub.Channel():
			return m.Payload
		case <-time.After(20 * time.Second):
			t.Fatal("no replication message within 20s")
			return ""
		}
	}
	// wantRDATA checks the message announces the newest caches row.
	wantRDATA := func(msg string) {
		t.Helper()
		var id int64
		var ts int64
		if err := e.admin.QueryRow(t.Context(), `SELECT stream_id, invalidation_ts FROM cache_invalidation_stream_by_instance
			WHERE instance_name = 'fedsender' ORDER BY stream_id DESC LIMIT 1`).Scan(&id, &ts); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`RDATA caches fedsender %d ["get_destination_retry_timings",["%s"],%d]`, id, hs3, ts)
		if msg != want {
			t.Errorf("replication message\n got %s\nwant %s", msg, want)
		}
	}

	e.applied("events", e.record(hs3, &s, destination.Failed, 1_000, 600_000))
	wantRDATA(next())
	// An older failure than the one stored changes nothing: no row, no message.
	if _, err := e.admin.Exec(t.Context(), synapseWrite, hs3, 1_000, 5_000, 1_500_000); err != nil {
		t.Fatal(err)
	}
	e.applied("events", e.record(hs3, &s, destination.Failed, 3_000, 1_600_000))
	if got := strings.Count(e.rows(rowsQuery), "\n") + 1; got != 1 {
		t.Errorf("caches rows after a write that changed nothing: %d, want 1", got)
	}
	e.applied("events", e.record(hs3, &s, destination.Reset, 6_000, 0))
	wantRDATA(next())
	if got := strings.Count(e.rows(rowsQuery), "\n") + 1; got != 2 {
		t.Errorf("caches rows after the reset: %d, want 2:\n%s", got, e.rows(rowsQuery))
	}
}
