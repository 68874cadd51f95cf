package synapse

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
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
	execSQL(t, db, "UPDATE federation_stream_position SET stream_id = 0 WHERE type = 'events' AND instance_name = 'fedsender'")
	execSQL(t, db, "UPDATE stream_positions SET stream_id = 1 WHERE stream_name IN ('receipts', 'presence_stream')")
	redisURL := synapsefixture.Redis(t)
	ca := pki.MustCA(t)
	hs2, hs3 := remotes(t, ca)
	fs := runFedsender(t, fedsenderConfig(t, feedDatabase(t, url), redisURL), ca)
	fs.waitSources(t, "events", "receipts", "presence", "typing")
	waitSubscribed(t, redisURL)
	execSQL(t, db, "UPDATE stream_positions SET stream_id = 8 WHERE stream_name = 'receipts'")
	execSQL(t, db, "UPDATE stream_positions SET stream_id = 24 WHERE stream_name = 'presence_stream'")
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

// TestGoldenUnsentRecording starts fedsender on the second recording's
// database, in which no sender ever ran: everything is still owed. The
// recording's ids differ from the main one's, so what fedsender sends is
// compared with the fixture's README (which replays the memberships) and
// with the main recording by structure:
//
//   - PDUs per destination, room and type: hs2 106 (R1 55: 47 messages, 4
//     memberships, the name, the topic, a reaction, a redaction; R2 33; R4
//     18), hs3 76 (R1 50: 43 messages, 3 memberships and the same four;
//     R3 8; R4 18), each once.
//   - To-device: exactly the rows of device_federation_outbox, the content
//     as stored (message_id included), once each, two for each server (the
//     main recording's wire had the same td-1 and td-3 for hs2, td-2 and
//     td-3 for hs3); the rows are deleted after the 200, as Synapse does.
//   - Device lists: for each server, alice's two devices, the deleted one
//     last sent as deleted at its newest poke, the other at its newest
//     poke with the self-signing key's signature (as in the main
//     recording); prev_id [] first (nothing was ever sent), then only
//     stream ids delivered before; and her master and self-signing keys as
//     m.signing_key_update and an identical org.matrix.signing_key_update.
//     How updates are grouped depends on timing and is not compared.
//   - No receipt, typing or presence EDU: Synapse's sender keeps those in
//     memory, so a sender starting on this database sends none of the old
//     ones, and neither does fedsender.
func TestGoldenUnsentRecording(t *testing.T) {
	url := synapsefixture.Database(t, synapsefixture.Unsent)
	db := pool(t, url)
	outbox := map[string][]string{}
	rows, err := db.Query(t.Context(), "SELECT destination, messages_json FROM device_federation_outbox ORDER BY stream_id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var dest, content string
		if err := rows.Scan(&dest, &content); err != nil {
			t.Fatal(err)
		}
		outbox[dest] = append(outbox[dest], canonical(t, []byte(content)))
	}
	rows.Close()
	if len(outbox[synapsefixture.HS2]) != 2 || len(outbox[synapsefixture.HS3]) != 2 {
		t.Fatalf("the recording's outbox is %v, want 2 rows for each server", outbox)
	}
	pokes := newestPokes(t, db)
	redisURL := synapsefixture.Redis(t)
	ca := pki.MustCA(t)
	hs2, hs3 := remotes(t, ca)
	runFedsender(t, fedsenderConfig(t, feedDatabase(t, url), redisURL), ca)

	types := eventTypes(t, db)
	// The fixture's README: the PDUs each server is owed, by room and type.
	want := []struct {
		r    *receiver.Receiver
		want map[string]string
	}{
		{hs2, map[string]string{
			"R1": "m.reaction 1, m.room.member 4, m.room.message 47, m.room.name 1, m.room.redaction 1, m.room.topic 1",
			"R2": "m.room.message 33", "R4": "m.room.message 18"}},
		{hs3, map[string]string{
			"R1": "m.reaction 1, m.room.member 3, m.room.message 43, m.room.name 1, m.room.redaction 1, m.room.topic 1",
			"R3": "m.room.message 8", "R4": "m.room.message 18"}},
	}
	for _, d := range want {
		total := 0
		for _, s := range d.want {
			for _, part := range strings.Split(s, ", ") {
				var n int
				fmt.Sscanf(part[strings.LastIndex(part, " ")+1:], "%d", &n)
				total += n
			}
		}
		poll(t, func() string { return fmt.Sprintf("%s got %d PDUs, want %d", d.r.ServerName(), d.r.PDUCount(), total) },
			func() bool { return d.r.PDUCount() >= total })
		poll(t, func() string {
			return fmt.Sprintf("%s: to-device got %v, want the outbox rows %v", d.r.ServerName(), toDevice(t, d.r.EDUs()), outbox[d.r.ServerName()])
		}, func() bool { return len(toDevice(t, d.r.EDUs())) >= len(outbox[d.r.ServerName()]) })
	}
	waitPosition(t, db, 154)
	var left int
	poll(t, func() string { return fmt.Sprintf("%d rows left in device_federation_outbox", left) }, func() bool {
		return db.QueryRow(t.Context(), "SELECT count(*) FROM device_federation_outbox").Scan(&left) == nil && left == 0
	})

	rooms := unsentRooms(t)
	for _, d := range want {
		name := d.r.ServerName()
		if got := typeCounts(d.r.PDUs(), types, rooms); !maps.Equal(got, d.want) {
			t.Errorf("%s: PDUs by room and type\n got %v\nwant %v", name, got, d.want)
		}
		if n := d.r.RedeliveredPDUs(); n > 0 {
			t.Errorf("%s: %d PDUs delivered twice", name, n)
		}
		if got := toDevice(t, d.r.EDUs()); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(outbox[name]))) {
			t.Errorf("%s: to-device EDUs\n got %v\nwant %v", name, got, outbox[name])
		}
		checkDeviceLists(t, db, name, pokes[name], d.r.EDUs())
		for _, e := range d.r.EDUs() {
			switch e.Type {
			case "m.receipt", "m.typing", "m.presence":
				t.Errorf("%s: %s %s sent, from before fedsender started", name, e.Type, e.Content)
			}
		}
	}
	hs2.RequireNoViolations(t)
	hs3.RequireNoViolations(t)
}

func canonical(t *testing.T, raw []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	b, err := json.Marshal(v) // sorted keys
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// toDevice is the m.direct_to_device contents received, canonical.
func toDevice(t *testing.T, edus []receiver.EDU) []string {
	t.Helper()
	var out []string
	for _, e := range edus {
		if e.Type == "m.direct_to_device" {
			out = append(out, canonical(t, e.Content))
		}
	}
	return out
}

// eventTypes is every event's type, by id.
func eventTypes(t *testing.T, db *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := db.Query(t.Context(), "SELECT event_id, type FROM events")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, typ string
		if err := rows.Scan(&id, &typ); err != nil {
			t.Fatal(err)
		}
		out[id] = typ
	}
	return out
}

// unsentRooms maps the second recording's room ids to R1..R4.
func unsentRooms(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(synapsefixture.Path("unsent/facts.json"))
	if err != nil {
		t.Fatal(err)
	}
	var facts struct {
		Rooms map[string]string `json:"rooms"`
	}
	if err := json.Unmarshal(raw, &facts); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for name, id := range facts.Rooms {
		out[id] = name
	}
	return out
}

// typeCounts is "type n, type n" per room name, types sorted.
func typeCounts(pdus []receiver.PDU, types, rooms map[string]string) map[string]string {
	counts := map[string]map[string]int{}
	for _, p := range pdus {
		r := rooms[p.RoomID]
		if counts[r] == nil {
			counts[r] = map[string]int{}
		}
		counts[r][types[p.EventID]]++
	}
	out := map[string]string{}
	for r, byType := range counts {
		var parts []string
		for _, typ := range slices.Sorted(maps.Keys(byType)) {
			parts = append(parts, fmt.Sprintf("%s %d", typ, byType[typ]))
		}
		out[r] = strings.Join(parts, ", ")
	}
	return out
}

// checkDeviceLists compares the device-list and signing-key updates one
// server received with the pokes Synapse queued for it and with the
// structure of the main recording's (see TestGoldenUnsentRecording).
func checkDeviceLists(t *testing.T, db *pgxpool.Pool, server string, newest map[string]int64, edus []receiver.EDU) {
	t.Helper()
	const alice = "@alice:" + synapsefixture.HS1
	var selfSigning string
	if err := db.QueryRow(t.Context(), `SELECT keydata::json -> 'keys' ->> (SELECT json_object_keys(keydata::json -> 'keys') LIMIT 1)
		FROM e2e_cross_signing_keys WHERE user_id = $1 AND keytype = 'self_signing'`, alice).Scan(&selfSigning); err != nil {
		t.Fatalf("self-signing key: %v", err)
	}
	pokes := map[int64]bool{}
	for _, id := range newest {
		pokes[id] = true
	}
	type update struct {
		DeviceID string          `json:"device_id"`
		UserID   string          `json:"user_id"`
		StreamID int64           `json:"stream_id"`
		PrevID   []int64         `json:"prev_id"`
		Deleted  bool            `json:"deleted"`
		Keys     json.RawMessage `json:"keys"`
	}
	last := map[string]update{}
	delivered := map[int64]bool{}
	first := true
	var signing, orgSigning, sent []string
	for _, e := range edus {
		switch e.Type {
		case "m.device_list_update":
			var u update
			if err := json.Unmarshal(e.Content, &u); err != nil {
				t.Fatalf("%s: m.device_list_update %s: %v", server, e.Content, err)
			}
			if u.UserID != alice {
				t.Errorf("%s: device-list update of %s", server, u.UserID)
			}
			if first && len(u.PrevID) != 0 {
				t.Errorf("%s: the first update has prev_id %v, want [] (nothing was sent before)", server, u.PrevID)
			}
			for _, p := range u.PrevID {
				if !delivered[p] && !pokes[p] {
					t.Errorf("%s: update %d has prev_id %d, which was never sent", server, u.StreamID, p)
				}
			}
			first = false
			delivered[u.StreamID] = true
			sent = append(sent, fmt.Sprintf("%d%v", u.StreamID, u.PrevID))
			last[u.DeviceID] = u
		case "m.signing_key_update":
			signing = append(signing, canonical(t, e.Content))
		case "org.matrix.signing_key_update":
			orgSigning = append(orgSigning, canonical(t, e.Content))
		}
	}
	t.Logf("%s: m.device_list_update stream_id[prev_id]: %s; %d m.signing_key_update", server, strings.Join(sent, " "), len(signing))
	phone, ok := last["ALICEPHONE"]
	if !ok || !phone.Deleted || phone.StreamID != newest["ALICEPHONE"] {
		t.Errorf("%s: ALICEPHONE last sent as %+v, want deleted at stream id %d", server, phone, newest["ALICEPHONE"])
	}
	devices := 0
	for dev, u := range last {
		if dev == "ALICEPHONE" {
			continue
		}
		devices++
		if u.Deleted || u.StreamID != newest[dev] || !strings.Contains(string(u.Keys), "ed25519:"+selfSigning) {
			t.Errorf("%s: device %s last sent at %d (deleted %v) with keys %s, want its newest poke %d signed by the self-signing key %s",
				server, dev, u.StreamID, u.Deleted, u.Keys, newest[dev], selfSigning)
		}
	}
	if devices != 1 {
		t.Errorf("%s: updates for %d devices besides ALICEPHONE, want alice's first device: %v", server, devices, slices.Sorted(maps.Keys(last)))
	}
	joined := strings.Join(signing, "\n")
	if len(signing) == 0 || !strings.Contains(joined, `"master_key"`) || !strings.Contains(joined, `"self_signing_key"`) {
		t.Errorf("%s: m.signing_key_update %v, want alice's master and self-signing keys", server, signing)
	}
	if !slices.Equal(signing, orgSigning) {
		t.Errorf("%s: org.matrix.signing_key_update %v differs from m.signing_key_update %v", server, orgSigning, signing)
	}
}

// newestPokes is, per destination, alice's device-list pokes queued for it:
// per device (a cross-signing key's public key stands in for the device),
// the newest stream id.
func newestPokes(t *testing.T, db *pgxpool.Pool) map[string]map[string]int64 {
	t.Helper()
	rows, err := db.Query(t.Context(), `SELECT destination, device_id, max(stream_id) FROM device_lists_outbound_pokes
		WHERE user_id = $1 GROUP BY destination, device_id`, "@alice:"+synapsefixture.HS1)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[string]int64{}
	for rows.Next() {
		var dest, dev string
		var id int64
		if err := rows.Scan(&dest, &dev, &id); err != nil {
			t.Fatal(err)
		}
		if out[dest] == nil {
			out[dest] = map[string]int64{}
		}
		out[dest][dev] = id
	}
	return out
}
