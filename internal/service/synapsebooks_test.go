package service_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// TestSynapseBooksInRun: `fedsender run` logged in to Synapse's database
// as a role with only the privileges of package grants feeds what the recording without a
// sender owes and keeps Synapse's tables: destination_rooms for every
// destination of every PDU, at the stream ordering of the newest one (the
// ban of carol is R1's last for hs3, as in the main recording), and,
// since neither server can be reached, their backoff as Synapse writes it.
func TestSynapseBooksInRun(t *testing.T) {
	db := synapsefixture.Database(t, synapsefixture.Unsent)
	cfg := synapseConfig(t, synapsefixture.Role(t, db))
	svc := runService(t, cfg)
	nc, err := nats.Connect(svc.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	projectiontest.Eventually(t, time.Minute, func() bool { return pduCount(t, js) == owedPDUs },
		"the %d owed PDUs to be published", owedPDUs)

	// What destination_rooms must hold: per (destination, room), the
	// newest stream ordering the feed published a PDU for it with.
	want := newestPerRoom(t, js)
	admin, err := pgxpool.New(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	waitText(t, "destination_rooms", want, func() string {
		return tableText(t, admin, `SELECT destination, room_id, stream_ordering FROM destination_rooms ORDER BY destination, room_id`)
	})
	r1 := "!nPnUIHvlTqHThRlUUP:localhost:28481"
	hs2R1, hs3R1 := roomOrdering(want, synapsefixture.HS2, r1), roomOrdering(want, synapsefixture.HS3, r1)
	if hs3R1 >= hs2R1 {
		t.Errorf("R1 for hs3 at %d, hs2 at %d: hs3 must stop at the ban, before R1's last message", hs3R1, hs2R1)
	}
	waitText(t, "destinations, both unreachable", synapsefixture.HS2+"|600000|true|true\n"+synapsefixture.HS3+"|600000|true|true",
		func() string {
			return tableText(t, admin, `SELECT destination, retry_interval, retry_last_ts = failure_ts,
				last_successful_stream_ordering IS NULL FROM destinations ORDER BY destination`)
		})
}

// waitText polls got until it answers want, and fails with the last answer.
func waitText(t *testing.T, what, want string, got func() string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		last := got()
		if last == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute:\n got %q\nwant %q", what, last, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newestPerRoom reads the PDU stream and returns, one line per
// (destination, room) sorted, the newest Synapse stream ordering.
func newestPerRoom(t *testing.T, js jetstream.JetStream) string {
	t.Helper()
	cons, err := js.OrderedConsumer(t.Context(), streams.PDUStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	newest := map[string]int64{}
	for n := 0; n < owedPDUs; {
		batch, err := cons.Fetch(owedPDUs, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			n++
			pdu, err := streams.DecodePDU(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			order, err := strconv.ParseInt(m.Headers().Get(synapse.HeaderStreamOrdering), 10, 64)
			if err != nil {
				t.Fatalf("PDU %s: %s: %v", pdu.EventID, synapse.HeaderStreamOrdering, err)
			}
			for _, d := range pdu.Destinations {
				k := d + "|" + pdu.RoomID
				newest[k] = max(newest[k], order)
			}
		}
	}
	lines := make([]string, 0, len(newest))
	for k, v := range newest {
		lines = append(lines, fmt.Sprintf("%s|%d", k, v))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func roomOrdering(rows, dest, room string) int64 {
	for _, l := range strings.Split(rows, "\n") {
		if v, ok := strings.CutPrefix(l, dest+"|"+room+"|"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// tableText returns every row of query, columns joined by '|'.
func tableText(t *testing.T, pool *pgxpool.Pool, query string) string {
	t.Helper()
	rows, err := pool.Query(t.Context(), query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		cols := make([]string, len(vals))
		for i, v := range vals {
			cols[i] = fmt.Sprint(v)
		}
		out = append(out, strings.Join(cols, "|"))
	}
	return strings.Join(out, "\n")
}
