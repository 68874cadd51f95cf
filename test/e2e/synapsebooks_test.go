package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/internal/synapse/books"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// TestSynapseBooks: fedsender delivers PDUs and EDUs published as the
// Synapse feed publishes them to a healthy and a failing server, and
// Synapse's tables, kept by the books with the feed's database role, show
// what Synapse's sender would have left: after the 200s the rooms, the
// stream ordering of the newest PDU delivered, the to-device rows and
// device-list pokes deleted and last_success moved; for the failing
// server its backoff as Synapse writes it, and after a reset and a
// successful retry, everything.
func TestSynapseBooks(t *testing.T) {
	h := newHarness(t, nil)
	up := h.receiver(nil)
	down := h.receiver(nil)
	down.SetFault(receiver.Fault{Status: http.StatusInternalServerError})

	db := synapsefixture.Database(t, synapsefixture.Unsent)
	admin := connectPG(t, db)
	// Synapse owes both servers the to-device messages and device-list
	// pokes it owes hs2 in the recording.
	for _, d := range []string{up.ServerName(), down.ServerName()} {
		owe(t, admin, d)
	}
	b := books.New(books.Options{JS: h.js, DB: connectPG(t, synapsefixture.Role(t, db)), Origin: origin, Holder: "e2e",
		Flush: 50 * time.Millisecond, Lease: lease.Options{TTL: 2 * time.Second}})
	projectiontest.Start(t, b.Run)

	const (
		r1 = "!nPnUIHvlTqHThRlUUP:localhost:28481"
		r4 = "!dccxkfPuSHVpigMHbB:localhost:28482"
	)
	dests := []string{up.ServerName(), down.ServerName()}
	h.publishFromSynapse(r1, 150, dests)
	h.publishFromSynapse(r4, 154, dests)
	for _, d := range dests {
		for _, id := range []int{2, 4} {
			h.publishSynapseEDU("m.direct_to_device", fmt.Sprintf(
				`{"message_id":"td%d","messages":{"@bob:r":{"DEV":{}}},"sender":"@alice:origin.test","type":"m.room_key_request"}`, id),
				d, fmt.Sprintf("to_device %d", id))
		}
		h.publishSynapseEDU("m.device_list_update",
			`{"device_id":"ALICEPHONE","stream_id":26,"user_id":"@alice:localhost:28481","deleted":true}`, d, "device_list 26")
	}
	up.WaitPDUs(t, 2)

	rows := func(q string, args ...any) func() string {
		return func() string { return queryText(t, admin, q, args...) }
	}
	destination := rows(`SELECT concat_ws('|', retry_last_ts, retry_interval, failure_ts, last_successful_stream_ordering)
		FROM destinations WHERE destination = $1`, up.ServerName())
	wantText(t, "the healthy server's destinations row", "154", destination)
	wantText(t, "its rooms", r1+"|150\n"+r4+"|154", rows(`SELECT concat_ws('|', room_id, stream_ordering)
		FROM destination_rooms WHERE destination = $1 ORDER BY stream_ordering`, up.ServerName()))
	wantText(t, "its to-device rows", "", rows(`SELECT stream_id::text FROM device_federation_outbox WHERE destination = $1`, up.ServerName()))
	wantText(t, "its device-list pokes", "", rows(`SELECT stream_id::text FROM device_lists_outbound_pokes WHERE destination = $1`, up.ServerName()))
	wantText(t, "its device-list last success", "@alice:localhost:28481|26", rows(`SELECT concat_ws('|', user_id, stream_id)
		FROM device_lists_outbound_last_success WHERE destination = $1`, up.ServerName()))

	// The failing server: backoff as Synapse writes it (first interval 10
	// min, retry_last_ts = failure_ts), rooms queued, nothing delivered.
	failing := rows(`SELECT concat_ws('|', retry_interval, (retry_last_ts = failure_ts)::text, (last_successful_stream_ordering IS NULL)::text)
		FROM destinations WHERE destination = $1`, down.ServerName())
	wantText(t, "the failing server's backoff", "600000|true|true", failing)
	wantText(t, "its rooms, queued though it fails", r1+"|150\n"+r4+"|154", rows(`SELECT concat_ws('|', room_id, stream_ordering)
		FROM destination_rooms WHERE destination = $1 ORDER BY stream_ordering`, down.ServerName()))
	wantText(t, "its to-device rows, kept", "2\n4", rows(`SELECT stream_id::text FROM device_federation_outbox
		WHERE destination = $1 ORDER BY stream_id`, down.ServerName()))

	// It comes back; the operator resets the backoff; fedsender delivers.
	down.SetFault(receiver.Fault{})
	eventually(t, 10*time.Second, func() bool {
		return h.admin("POST", "/_synapse/admin/v1/federation/destinations/"+down.ServerName()+"/reset_connection", nil) == http.StatusOK
	}, "reset_connection of %s never answered 200", down.ServerName())
	down.WaitPDUs(t, 2)
	wantText(t, "the recovered server's destinations row", "0|0|154", rows(`SELECT concat_ws('|', retry_last_ts, retry_interval,
		failure_ts, last_successful_stream_ordering) FROM destinations WHERE destination = $1`, down.ServerName()))
	wantText(t, "its to-device rows, deleted", "", rows(`SELECT stream_id::text FROM device_federation_outbox
		WHERE destination = $1`, down.ServerName()))
	wantText(t, "its device-list pokes, deleted", "", rows(`SELECT stream_id::text FROM device_lists_outbound_pokes
		WHERE destination = $1`, down.ServerName()))
	up.RequireNoViolations(t)
	down.RequireNoViolations(t)
}

// publishFromSynapse publishes a PDU of room as the Synapse feed does, with
// its Synapse stream ordering.
func (h *harness) publishFromSynapse(room string, ordering int64, dests []string) {
	h.t.Helper()
	_, env := h.envelope(room, int(ordering), dests...)
	publishWithHeader(h.t, h.js, h.pub, env, synapse.HeaderStreamOrdering, strconv.FormatInt(ordering, 10))
}

// publishSynapseEDU publishes a must-deliver EDU for one destination as
// the Synapse feed does, naming the Synapse rows it came from.
func (h *harness) publishSynapseEDU(eduType, content, dest, source string) {
	h.t.Helper()
	publishEDUWithHeader(h.t, h.js, h.pub, eduType, content, dest, source)
}

func publishEDUWithHeader(t *testing.T, js jetstream.JetStream, pub *streams.Publisher, eduType, content, dest, source string) {
	t.Helper()
	env, err := json.Marshal(streams.EDUEnvelope{EDUType: eduType, Content: json.RawMessage(content), Destinations: []string{dest}})
	if err != nil {
		t.Fatal(err)
	}
	publishWithHeader(t, js, pub, env, synapse.HeaderSource, source)
}

func publishWithHeader(t *testing.T, js jetstream.JetStream, pub *streams.Publisher, env []byte, header, value string) {
	t.Helper()
	msg, err := pub.Message(t.Context(), env)
	if err != nil {
		t.Fatal(err)
	}
	msg.Header.Set(header, value)
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// queryText returns the single text column of each row, one per line
// (NULL as "NULL").
func queryText(t *testing.T, pool *pgxpool.Pool, q string, args ...any) string {
	t.Helper()
	rows, err := pool.Query(t.Context(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s *string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		if s == nil {
			out = append(out, "NULL")
			continue
		}
		out = append(out, *s)
	}
	return strings.Join(out, "\n")
}

// wantText polls got until it answers want, and fails with the last answer.
func wantText(t *testing.T, what, want string, got func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		last := got()
		if last == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s: got %q, want %q", what, last, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// owe gives dest, in Synapse's database, the to-device rows and device-list
// pokes Synapse owes hs2 in the recording without a sender.
func owe(t *testing.T, admin *pgxpool.Pool, dest string) {
	t.Helper()
	for _, q := range []string{
		`INSERT INTO device_federation_outbox SELECT $1, stream_id, queued_ts, messages_json, instance_name
			FROM device_federation_outbox WHERE destination = 'localhost:28482'`,
		`INSERT INTO device_lists_outbound_pokes SELECT $1, stream_id, user_id, device_id, sent, ts, opentracing_context
			FROM device_lists_outbound_pokes WHERE destination = 'localhost:28482'`,
	} {
		if _, err := admin.Exec(t.Context(), q, dest); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSynapseBooksKill9: a real `fedsender run` feeding from Synapse is
// killed with -9 while it delivers and keeps Synapse's tables, and started
// again: in the end Synapse's tables show every delivery (the newest
// stream ordering per destination and room, last_successful_stream_ordering,
// the to-device rows and pokes deleted), written by the feed's role.
func TestSynapseBooksKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	db := synapsefixture.Database(t, synapsefixture.Unsent)
	admin := connectPG(t, db)
	role := synapsefixture.Role(t, db)
	p, key, ca, natsPort := newConfiguredProcess(t, synapsefixture.HS1,
		fmt.Sprintf("synapse: {database_url: %q, poll_interval: 200ms}\n", role))
	var rs []*receiver.Receiver
	var dests []string
	for range 2 {
		r := receiver.Start(t, receiver.Options{Origin: synapsefixture.HS1, OriginKey: key.Public(), OriginKeyID: key.KeyID(),
			Cert: ca.MustLeaf(t, "127.0.0.1")})
		rs = append(rs, r)
		dests = append(dests, r.ServerName())
		owe(t, admin, r.ServerName())
	}
	p.Start()
	_, js, pub := publisherOf(t, natsPort)

	const (
		r1    = "!nPnUIHvlTqHThRlUUP:localhost:28481"
		r4    = "!dccxkfPuSHVpigMHbB:localhost:28482"
		total = 400
		first = 1000 // stream orderings first .. first+total-1, R1 even, R4 odd
	)
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			room := r1
			if i%2 == 1 {
				room = r4
			}
			id := fmt.Sprintf("$kill9-%d", i)
			env, err := json.Marshal(streams.Envelope{RoomID: room, EventID: id, Destinations: dests,
				PDU: json.RawMessage(fmt.Sprintf(`{"event_id":%q,"room_id":%q,"type":"m.room.message","content":{"body":"%d"}}`, id, room, i))})
			if err != nil {
				t.Fatal(err)
			}
			publishWithHeader(t, js, pub, env, synapse.HeaderStreamOrdering, strconv.Itoa(first+i))
		}
	}
	publish(0, total/2)
	for _, d := range dests {
		for _, id := range []int{2, 4} {
			publishEDUWithHeader(t, js, pub, "m.direct_to_device", fmt.Sprintf(
				`{"message_id":"td%d","messages":{"@bob:r":{"DEV":{}}},"sender":"@alice:localhost:28481","type":"m.room_key_request"}`, id),
				d, fmt.Sprintf("to_device %d", id))
		}
	}
	// Killed while it delivers the first half.
	rs[0].WaitFor(t, "a quarter of the PDUs", func() bool { return rs[0].PDUCount() >= total/4 })
	p.Kill9()
	p.Start()
	_, js, pub = publisherOf(t, natsPort)
	publish(total/2, total)
	for _, d := range dests {
		publishEDUWithHeader(t, js, pub, "m.device_list_update",
			`{"device_id":"ALICEPHONE","stream_id":26,"user_id":"@alice:localhost:28481","deleted":true}`, d, "device_list 26")
	}
	for _, r := range rs {
		r.WaitFor(t, "every PDU", func() bool { return len(distinctEvents(r)) == total })
	}

	last := first + total - 1
	for _, d := range dests {
		rows := func(q string) func() string { return func() string { return queryText(t, admin, q, d) } }
		wantText(t, d+": last_successful_stream_ordering", strconv.Itoa(last), rows(
			`SELECT last_successful_stream_ordering::text FROM destinations WHERE destination = $1`))
		wantText(t, d+": rooms", fmt.Sprintf("%s|%d\n%s|%d", r1, last-1, r4, last), rows(
			`SELECT concat_ws('|', room_id, stream_ordering) FROM destination_rooms WHERE destination = $1 ORDER BY stream_ordering`))
		wantText(t, d+": to-device rows", "", rows(`SELECT stream_id::text FROM device_federation_outbox WHERE destination = $1`))
		wantText(t, d+": pokes", "", rows(`SELECT stream_id::text FROM device_lists_outbound_pokes WHERE destination = $1`))
		wantText(t, d+": last success", "@alice:localhost:28481|26", rows(
			`SELECT concat_ws('|', user_id, stream_id) FROM device_lists_outbound_last_success WHERE destination = $1`))
	}
}

// distinctEvents returns the event ids a receiver accepted, each once.
func distinctEvents(r *receiver.Receiver) map[string]bool {
	seen := map[string]bool{}
	for _, p := range r.PDUs() {
		seen[p.EventID] = true
	}
	return seen
}
