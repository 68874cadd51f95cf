package synapse

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/test/pki"
	"github.com/fedsender/fedsender/test/receiver"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// The golden tests: fedsender, in place of Synapse 1.92's federation
// sender, against the recording of that sender (test/synapsefixture).
//
// TestGoldenMainRecording replays the main recording. hs1's database is the
// one at the end of the recording, so fedsender is put back to where
// Synapse's sender started: its events position (federation_stream_position,
// instance fedsender) at 0, and the receipts and presence streams'
// positions (stream_positions) at 1 until fedsender has started, as if
// Synapse wrote those rows afterwards; then every replication message
// Synapse published is published again, in order.
//
// What is compared, and why:
//
//   - PDUs, by event id (the reference hash the receivers compute, checked
//     against the ids the receiving Synapse answered with), per
//     destination and per room, in order. hs2: exactly the 200 Synapse
//     delivered, in the same order per room. hs3: the 192 Synapse
//     delivered, in the same order, plus the 57 that Synapse's catch-up
//     skipped after outage 2 (the 26 earlier messages of R3, the 26 of R4
//     and R4's 5 sent while the worker was stopped: Synapse's catch-up
//     sends only each room's newest event and leaves the rest for hs3 to
//     fetch). fedsender pushes every PDU: a deliberate difference.
//     Everything else is as Synapse routed it: the ban reaches hs3, the
//     next R1 messages do not; alice's partial-state join to R4 is not
//     sent; carol's join accepted by hs1 goes to hs2 but not back to hs3;
//     remote users' events are not sent; R3's first messages go nowhere.
//   - Transaction ids, timestamps and batching are not compared: they are
//     each sender's own (Synapse sends one transaction per few PDUs as they
//     come; fedsender batches what is queued, up to 50, across rooms).
//     The receivers check what a receiving server checks: the X-Matrix
//     signature with hs1's key, one transaction in flight, the limits.
//   - Typing, receipts and presence: the database shows the rooms as they
//     were at the end of the recording (carol banned from R1, alice2 gone),
//     and fedsender, as Synapse, sends these EDUs to the servers in the
//     room now; so the EDUs of rooms a destination has left by the end are
//     not expected (Synapse sent R1's typing and receipts to hs3 before the
//     ban). For the others: the same public receipts (room, type, user,
//     event ids, thread), never the private one; every typing notice ends
//     with typing false; alice's last presence is Synapse's last.
//   - To-device messages and device-list updates are in
//     TestGoldenUnsentRecording: in the main recording they were delivered
//     and their rows deleted.
func TestGoldenMainRecording(t *testing.T) {
	url := synapsefixture.Database(t, synapsefixture.Main)
	db := pool(t, url)
	exec(t, db, "UPDATE federation_stream_position SET stream_id = 0 WHERE type = 'events' AND instance_name = 'fedsender'")
	exec(t, db, "UPDATE stream_positions SET stream_id = 1 WHERE stream_name IN ('receipts', 'presence_stream')")
	redisURL := synapsefixture.Redis(t)
	ca := pki.MustCA(t)
	hs2, hs3 := remotes(t, ca)
	fs := runFedsender(t, fedsenderConfig(t, feedDatabase(t, url), redisURL), ca)
	fs.waitSources(t, "events", "receipts", "presence", "typing")
	waitSubscribed(t, redisURL)
	exec(t, db, "UPDATE stream_positions SET stream_id = 8 WHERE stream_name = 'receipts'")
	exec(t, db, "UPDATE stream_positions SET stream_id = 24 WHERE stream_name = 'presence_stream'")
	synapsefixture.Publish(t, redisURL, synapsefixture.ReplicationLog(t, "redis-replication.log"))

	want2 := recorded(t, "transactions-hs2.jsonl").rooms
	want3, skipped := withCatchUpSkipped(t, db, recorded(t, "transactions-hs3.jsonl"))
	if skipped != 57 {
		t.Fatalf("the recording shows %d PDUs skipped by Synapse's catch-up, want 57 (26 + 26 + 5)", skipped)
	}
	for _, d := range []struct {
		r    *receiver.Receiver
		want map[string][]string
	}{{hs2, want2}, {hs3, want3}} {
		poll(t, func() string {
			return fmt.Sprintf("%s got %d PDUs, want %d:%s", d.r.ServerName(), d.r.PDUCount(), count(d.want), diff(byRoom(d.r), d.want))
		}, func() bool { return d.r.PDUCount() >= count(d.want) })
	}
	waitPosition(t, db, 333)
	for _, d := range []struct {
		r    *receiver.Receiver
		want map[string][]string
	}{{hs2, want2}, {hs3, want3}} {
		if got := byRoom(d.r); !maps.EqualFunc(got, d.want, slices.Equal) {
			t.Errorf("%s: PDUs differ from Synapse's:%s", d.r.ServerName(), diff(got, d.want))
		}
		if n := d.r.RedeliveredPDUs(); n > 0 {
			t.Errorf("%s: %d PDUs delivered twice", d.r.ServerName(), n)
		}
	}

	for _, d := range []struct {
		r    *receiver.Receiver
		file string
	}{{hs2, "transactions-hs2.jsonl"}, {hs3, "transactions-hs3.jsonl"}} {
		joined := roomsJoined(t, db, d.r.ServerName())
		want := ephemeral(t, synapseEDUs(recorded(t, d.file).txns), joined)
		poll(t, func() string {
			return fmt.Sprintf("%s: typing, receipts and presence:\n got %s\nwant %s", d.r.ServerName(), ephemeral(t, d.r.EDUs(), joined), want)
		}, func() bool { return ephemeral(t, d.r.EDUs(), joined).equal(want) })
	}
	hs2.RequireNoViolations(t)
	hs3.RequireNoViolations(t)
}

// withCatchUpSkipped adds to Synapse's PDUs to hs3 those its catch-up
// skipped after outage 2: in each room, the local events between the last
// PDU hs3 got before it came back (1796658061725, traffic.md) and the one
// the catch-up sent (the first after), in stream order. It returns how
// many it added.
func withCatchUpSkipped(t *testing.T, db *pgxpool.Pool, w wire) (map[string][]string, int) {
	t.Helper()
	const back = 1796658061725
	out := map[string][]string{}
	added := 0
	for room, ids := range w.rooms {
		var merged []string
		for i, id := range ids {
			if i > 0 && w.at[ids[i-1]] < back && w.at[id] >= back {
				rows, err := db.Query(t.Context(), `SELECT event_id FROM events
					WHERE room_id = $1 AND sender LIKE '%:' || $2 AND type = 'm.room.message'
					AND stream_ordering > (SELECT stream_ordering FROM events WHERE event_id = $3)
					AND stream_ordering < (SELECT stream_ordering FROM events WHERE event_id = $4)
					ORDER BY stream_ordering`, room, synapsefixture.HS1, ids[i-1], id)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var skipped string
					if err := rows.Scan(&skipped); err != nil {
						t.Fatal(err)
					}
					merged = append(merged, skipped)
					added++
				}
				rows.Close()
			}
			merged = append(merged, id)
		}
		out[room] = merged
	}
	return out, added
}

// waitSubscribed waits until something (fedsender's replication client)
// listens on hs1's replication channel, so that no replayed message is
// published to nobody.
func waitSubscribed(t *testing.T, redisURL string) {
	t.Helper()
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	var n int64
	poll(t, func() string { return "nobody subscribed to " + synapsefixture.HS1 + " on Redis" }, func() bool {
		subs, err := c.PubSubNumSub(t.Context(), synapsefixture.HS1).Result()
		n = subs[synapsefixture.HS1]
		return err == nil && n > 0
	})
}

// waitPosition waits until the feed has recorded events position pos in
// Synapse's federation_stream_position.
func waitPosition(t *testing.T, db *pgxpool.Pool, pos int64) {
	t.Helper()
	var got int64
	poll(t, func() string { return fmt.Sprintf("federation_stream_position for fedsender is %d, want %d", got, pos) }, func() bool {
		err := db.QueryRow(t.Context(), `SELECT stream_id FROM federation_stream_position
			WHERE type = 'events' AND instance_name = 'fedsender'`).Scan(&got)
		return err == nil && got >= pos
	})
}

// roomsJoined is the rooms a server has a member joined to, at the end of
// the recording.
func roomsJoined(t *testing.T, db *pgxpool.Pool, server string) map[string]bool {
	t.Helper()
	rows, err := db.Query(t.Context(), `SELECT DISTINCT room_id FROM current_state_events
		WHERE type = 'm.room.member' AND membership = 'join' AND state_key LIKE '%:' || $1`, server)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			t.Fatal(err)
		}
		out[r] = true
	}
	return out
}

func synapseEDUs(txns []synapsefixture.Transaction) []receiver.EDU {
	var out []receiver.EDU
	for _, tx := range txns {
		for _, e := range tx.Body.EDUs {
			out = append(out, receiver.EDU{Type: e.EDUType, Content: e.Content, TxnID: tx.TxnID})
		}
	}
	return out
}

// ephemeralEDUs is what the golden test compares of typing, receipts and
// presence, in rooms the destination is still in.
type ephemeralEDUs struct {
	Receipts []string          // "room type user [event ids] thread", sorted, each once
	Typing   map[string]bool   // "room user": the last typing state
	Presence map[string]string // user: the last "presence status_msg currently_active"
}

func (e ephemeralEDUs) equal(o ephemeralEDUs) bool {
	return slices.Equal(e.Receipts, o.Receipts) && maps.Equal(e.Typing, o.Typing) && maps.Equal(e.Presence, o.Presence)
}

func (e ephemeralEDUs) String() string {
	b, _ := json.Marshal(e)
	return string(b)
}

func ephemeral(t *testing.T, edus []receiver.EDU, joined map[string]bool) ephemeralEDUs {
	t.Helper()
	out := ephemeralEDUs{Typing: map[string]bool{}, Presence: map[string]string{}}
	receipts := map[string]bool{}
	for _, e := range edus {
		switch e.Type {
		case "m.typing":
			var c struct {
				RoomID string `json:"room_id"`
				UserID string `json:"user_id"`
				Typing bool   `json:"typing"`
			}
			if err := json.Unmarshal(e.Content, &c); err != nil {
				t.Fatalf("m.typing %s: %v", e.Content, err)
			}
			if joined[c.RoomID] {
				out.Typing[c.RoomID+" "+c.UserID] = c.Typing
			}
		case "m.receipt":
			var c map[string]map[string]map[string]struct {
				EventIDs []string `json:"event_ids"`
				Data     struct {
					ThreadID string `json:"thread_id"`
				} `json:"data"`
			}
			if err := json.Unmarshal(e.Content, &c); err != nil {
				t.Fatalf("m.receipt %s: %v", e.Content, err)
			}
			for room, types := range c {
				for typ, users := range types {
					for user, r := range users {
						if joined[room] || typ == "m.read.private" {
							receipts[fmt.Sprintf("%s %s %s %v %s", room, typ, user, r.EventIDs, r.Data.ThreadID)] = true
						}
					}
				}
			}
		case "m.presence":
			var c struct {
				Push []struct {
					UserID          string `json:"user_id"`
					Presence        string `json:"presence"`
					StatusMsg       string `json:"status_msg"`
					CurrentlyActive bool   `json:"currently_active"`
				} `json:"push"`
			}
			if err := json.Unmarshal(e.Content, &c); err != nil {
				t.Fatalf("m.presence %s: %v", e.Content, err)
			}
			for _, p := range c.Push {
				if p.UserID == "@alice:"+synapsefixture.HS1 {
					out.Presence[p.UserID] = strings.Join([]string{p.Presence, p.StatusMsg, fmt.Sprint(p.CurrentlyActive)}, " ")
				}
			}
		}
	}
	out.Receipts = slices.Sorted(maps.Keys(receipts))
	return out
}
