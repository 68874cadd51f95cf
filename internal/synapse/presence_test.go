package synapse_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// Presence in the recording without a sender: alice's newest state goes
// to every server she shares a room with, shaped as Synapse sent her
// final "online, done" in the main recording; the presence_federation
// rows (alice2 joined R1, carol joined R3) send those users' current
// presence to the servers that asked; remote users' presence is not ours.
func TestPresence(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	end := time.UnixMilli(1796659913295) // the recording's end
	f.deps.Now = func() time.Time { return end }
	src, err := synapse.NewPresence(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	start, err := src.Start(t.Context())
	if err != nil || start != 10 {
		t.Fatalf("Start = %d, %v; want 10, the current position (presence is droppable)", start, err)
	}

	msgs, pos := drainSource(t, src, 0)
	if pos != 10 {
		t.Fatalf("position %d, want 10", pos)
	}
	got := decodeEDUs(t, msgs)
	hs2, hs3 := synapsefixture.HS2, synapsefixture.HS3
	aliceDone := map[string]any{"user_id": "@alice:localhost:28481", "presence": "online", "status_msg": "done",
		"currently_active": true, "last_active_ago": float64(1796659913295 - 1796659908279)}
	// alice2 (stream 4) left R1 and shares no room with anyone now.
	want := []eduSent{{Type: "m.presence", Destinations: []string{hs2, hs3}, ID: "synapse-presence-10",
		Content: map[string]any{"push": []any{aliceDone}}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("presence:\n%+v\nwant\n%+v", got, want)
	}
	onWire := wireEDUs(t, "transactions-hs2.jsonl", "m.presence")
	last := onWire[len(onWire)-1]["push"].([]any)[0].(map[string]any)
	if !reflect.DeepEqual(keysOf(last), keysOf(aliceDone)) || last["status_msg"] != "done" {
		t.Errorf("presence %v, Synapse sent %v", aliceDone, last)
	}

	observeLog(t, src, src.Streams(), "unsent/redis-replication.log")
	msgs, pos = drainSource(t, src, pos)
	got = decodeEDUs(t, msgs)
	alice2 := map[string]any{"user_id": "@alice2:localhost:28481", "presence": "offline",
		"last_active_ago": float64(1796659913295 - 1796659845115)}
	want = []eduSent{
		{Type: "m.presence", Destinations: []string{hs2, hs3}, Content: map[string]any{"push": []any{alice2}}},
		{Type: "m.presence", Destinations: []string{hs3}, Content: map[string]any{"push": []any{aliceDone}}},
	}
	if !reflect.DeepEqual(got, want) || pos != 10 {
		t.Fatalf("answers to presence_federation:\n%+v\nwant\n%+v", got, want)
	}

	// A bump of last_active while currently active is not news; a new
	// state is.
	f.exec(t, `INSERT INTO presence_stream VALUES (11, '@alice:localhost:28481', 'online', 1796659909279, 1796659909279, 0, 'done', true, 'master'),
		(12, '@alice:localhost:28481', 'unavailable', 1796659909279, 1796659909279, 0, 'done', false, 'master')`)
	f.exec(t, `UPDATE stream_positions SET stream_id = 11 WHERE stream_name = 'presence_stream'`)
	if msgs, pos = drainSource(t, src, pos); len(msgs) != 0 || pos != 11 {
		t.Fatalf("%d presence EDUs for a last-active bump, want 0", len(msgs))
	}
	f.exec(t, `UPDATE stream_positions SET stream_id = 12 WHERE stream_name = 'presence_stream'`)
	msgs, _ = drainSource(t, src, pos)
	got = decodeEDUs(t, msgs)
	if len(got) != 1 || got[0].Content["push"].([]any)[0].(map[string]any)["presence"] != "unavailable" ||
		!slices.Equal(got[0].Destinations, []string{hs2, hs3}) {
		t.Fatalf("after alice went unavailable: %+v", got)
	}
	if _, ok := got[0].Content["push"].([]any)[0].(map[string]any)["currently_active"]; ok {
		t.Errorf("currently_active sent while not online: %v", got[0].Content)
	}
}

// On the main recording's database, alice's final presence is what
// Synapse delivered last to both servers (last_active_ago aside, which
// Synapse computed a moment earlier).
func TestPresenceAsSynapseSent(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Main)
	for _, w := range []struct{ file, dest string }{
		{"transactions-hs2.jsonl", synapsefixture.HS2}, {"transactions-hs3.jsonl", synapsefixture.HS3},
	} {
		var last synapsefixture.Transaction
		for _, tx := range synapsefixture.Transactions(t, w.file) {
			for _, e := range tx.Body.EDUs {
				if e.EDUType == "m.presence" {
					last = tx
				}
			}
		}
		at := time.UnixMilli(last.T)
		f.deps.Now = func() time.Time { return at }
		src, err := synapse.NewPresence(f.deps)
		if err != nil {
			t.Fatal(err)
		}
		msgs, _ := drainSource(t, src, 0)
		got := decodeEDUs(t, msgs)
		if len(got) != 1 || !slices.Contains(got[0].Destinations, w.dest) {
			t.Fatalf("presence: %+v, want alice's to %s", got, w.dest)
		}
		ours := got[0].Content["push"].([]any)[0].(map[string]any)
		theirs := wireEDUs(t, w.file, "m.presence")
		lastSent := theirs[len(theirs)-1]["push"].([]any)[0].(map[string]any)
		if ago := ours["last_active_ago"].(float64) - lastSent["last_active_ago"].(float64); ago < 0 || ago > 100 {
			t.Errorf("last_active_ago %v, Synapse sent %v at the same time", ours["last_active_ago"], lastSent["last_active_ago"])
		}
		delete(ours, "last_active_ago")
		delete(lastSent, "last_active_ago")
		if !reflect.DeepEqual(ours, lastSent) {
			t.Errorf("to %s: %v, Synapse sent %v", w.dest, ours, lastSent)
		}
	}
}
