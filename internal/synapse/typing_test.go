package synapse_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// observeLog feeds a source the recorded RDATA rows of its streams, each
// twice (Synapse's replication can repeat a line).
func observeLog(t *testing.T, o synapse.RowObserver, streams []string, log string) {
	t.Helper()
	for _, l := range synapsefixture.ReplicationLog(t, log) {
		f := strings.SplitN(l.Command, " ", 5)
		if f[0] != "RDATA" || !slices.Contains(streams, f[1]) {
			continue
		}
		token, _ := strconv.ParseInt(f[3], 10, 64) // "batch": 0, the group's last row has it
		o.Observe(f[1], token, json.RawMessage(f[4]))
		o.Observe(f[1], token, json.RawMessage(f[4]))
	}
}

// The typing rows of the recording without a sender (alice types in R1,
// stops, then in R2) become the start and stop Synapse sent in the main
// recording, to the servers in each room; a remote user's typing is not
// ours to send.
func TestTyping(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	src, err := synapse.NewTyping(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	observeLog(t, src, src.Streams(), "unsent/redis-replication.log")
	src.Observe("typing", 5, json.RawMessage(`["`+unsentR4+`",["@bob:localhost:28482"]]`))
	msgs, pos := drainSource(t, src, 0)
	if pos != 5 {
		t.Fatalf("position %d, want 5, the newest token seen", pos)
	}
	got := decodeEDUs(t, msgs)
	alice := "@alice:localhost:28481"
	want := []eduSent{
		{Type: "m.typing", Destinations: []string{synapsefixture.HS2}, Content: map[string]any{"room_id": unsentR1, "user_id": alice, "typing": true}},
		{Type: "m.typing", Destinations: []string{synapsefixture.HS2}, Content: map[string]any{"room_id": unsentR1, "user_id": alice, "typing": false}},
		{Type: "m.typing", Destinations: []string{synapsefixture.HS2}, Content: map[string]any{"room_id": unsentR2, "user_id": alice, "typing": true}},
		{Type: "m.typing", Destinations: []string{synapsefixture.HS2}, Content: map[string]any{"room_id": unsentR2, "user_id": alice, "typing": false}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("typing:\n%+v\nwant\n%+v", got, want)
	}
	onWire := wireEDUs(t, "transactions-hs2.jsonl", "m.typing")
	for i, c := range onWire {
		if c["typing"] != want[i].Content["typing"] || !reflect.DeepEqual(keysOf(c), keysOf(want[i].Content)) {
			t.Errorf("typing %d: %v, Synapse sent %v", i, want[i].Content, c)
		}
	}
	if msgs, _ := drainSource(t, src, pos); len(msgs) != 0 {
		t.Fatalf("%d typing EDUs again, want 0", len(msgs))
	}
}

// A change not sent within 30 s is stale (a replica that did not feed, a
// feed that was stuck): dropped, as the pipeline would drop it.
func TestTypingStaleChangesDropped(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	now := time.Now()
	f.deps.Now = func() time.Time { return now }
	src, err := synapse.NewTyping(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	src.Observe("typing", 1, json.RawMessage(`["`+unsentR1+`",["@alice:localhost:28481"]]`))
	now = now.Add(31 * time.Second)
	src.Observe("typing", 2, json.RawMessage(`["`+unsentR2+`",["@alice:localhost:28481"]]`))
	got := decodeEDUs(t, drainFrom(t, src, at(0)))
	if len(got) != 1 || got[0].Content["room_id"] != unsentR2 {
		t.Fatalf("typing after 31 s: %+v, want only R2's start", got)
	}
}
