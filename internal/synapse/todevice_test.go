package synapse_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// The outbox of the recording without a sender holds the 4 rows the main
// recording's sender delivered first (2 to each server): fedsender sends
// each as its m.direct_to_device EDU, content exactly the row.
func TestToDeviceSendsTheOutbox(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	src, err := synapse.NewToDevice(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	start, err := src.Start(t.Context())
	if err != nil || start != 0 {
		t.Fatalf("Start = %d, %v; want 0: everything in the outbox is owed", start, err)
	}
	msgs, pos := drainSource(t, src, start)
	if pos != 4 {
		t.Fatalf("position %d, want 4 (stream_positions to_device)", pos)
	}
	got := decodeEDUs(t, msgs)
	type row struct {
		dest   string
		stream int64
	}
	want := []row{{synapsefixture.HS2, 2}, {synapsefixture.HS3, 3}, {synapsefixture.HS2, 4}, {synapsefixture.HS3, 4}}
	if len(got) != len(want) {
		t.Fatalf("%d envelopes, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Type != "m.direct_to_device" || !slices.Equal(g.Destinations, []string{w.dest}) {
			t.Errorf("envelope %d: %s to %v, want m.direct_to_device to %s", i, g.Type, g.Destinations, w.dest)
		}
		if id := "synapse-td-" + w.dest + "-" + itoa(w.stream); g.ID != id {
			t.Errorf("envelope %d: Nats-Msg-Id %q, want %q", i, g.ID, id)
		}
		if src := "to_device " + itoa(w.stream); g.Source != src {
			t.Errorf("envelope %d: %s %q, want %q", i, synapse.HeaderSource, g.Source, src)
		}
		var stored string
		if err := f.db.QueryRow(t.Context(), `SELECT messages_json FROM device_federation_outbox
			WHERE destination = $1 AND stream_id = $2`, w.dest, w.stream).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		var row map[string]any
		if err := json.Unmarshal([]byte(stored), &row); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g.Content, row) {
			t.Errorf("envelope %d: content\n%v\nwant the row exactly\n%v", i, g.Content, row)
		}
	}

	// What Synapse put on the wire for the same requests, ids aside.
	for _, dest := range []struct {
		file string
		name string
	}{{"transactions-hs2.jsonl", synapsefixture.HS2}, {"transactions-hs3.jsonl", synapsefixture.HS3}} {
		onWire := wireEDUs(t, dest.file, "m.direct_to_device")[:2]
		var ours []map[string]any
		for _, g := range got {
			if g.Destinations[0] == dest.name {
				ours = append(ours, g.Content)
			}
		}
		for i := range onWire {
			if a, b := withoutIDs(ours[i]), withoutIDs(onWire[i]); !reflect.DeepEqual(a, b) {
				t.Errorf("%s to-device %d:\n%v\nSynapse sent\n%v", dest.name, i, a, b)
			}
		}
	}

	// A replay (a crash before the position was saved) stores nothing twice.
	if n := f.publish(t, msgs); n != 4 {
		t.Fatalf("first publish stored %d, want 4", n)
	}
	again, _ := drainSource(t, src, start)
	if n := f.publish(t, again); n != 0 {
		t.Fatalf("replay stored %d messages again, want 0", n)
	}
}

// Rows above the to_device stream's safe position (the minimum over its
// writers) may have company still committing below them: they wait.
func TestToDeviceWaitsForEveryWriter(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	src, err := synapse.NewToDevice(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	f.exec(t, `INSERT INTO device_federation_outbox VALUES ($1, 6, 0, '{"messages":{},"sender":"@alice:localhost:28481","type":"x","message_id":"m6"}', 'worker1')`, synapsefixture.HS2)
	f.exec(t, `INSERT INTO stream_positions VALUES ('to_device', 'worker1', 6)`)
	// master is still at 4: its 5 may not be committed yet.
	msgs, pos := drainSource(t, src, 4)
	if len(msgs) != 0 || pos != 4 {
		t.Fatalf("read %d rows up to %d while master is at 4, want none up to 4", len(msgs), pos)
	}
	f.exec(t, `INSERT INTO device_federation_outbox VALUES ($1, 5, 0, '{"messages":{},"sender":"@alice:localhost:28481","type":"x","message_id":"m5"}', 'master')`, synapsefixture.HS3)
	f.exec(t, `UPDATE stream_positions SET stream_id = 6 WHERE stream_name = 'to_device' AND instance_name = 'master'`)
	msgs, pos = drainSource(t, src, 4)
	got := decodeEDUs(t, msgs)
	if len(got) != 2 || pos != 6 || got[0].Content["message_id"] != "m5" || got[1].Content["message_id"] != "m6" {
		t.Fatalf("after master reached 6: %+v up to %d, want m5 then m6 up to 6", got, pos)
	}
}

// withoutIDs blanks what differs between two recordings of the same
// request: the random message_id and the recipient's device ids (but *).
func withoutIDs(c map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range c {
		out[k] = v
	}
	out["message_id"] = "ID"
	msgs := map[string]any{}
	for user, devices := range c["messages"].(map[string]any) {
		d := map[string]any{}
		for dev, body := range devices.(map[string]any) {
			if dev != "*" {
				dev = "DEVICE"
			}
			d[dev] = body
		}
		msgs[user] = d
	}
	out["messages"] = msgs
	return out
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// Batches cut between stream ids, never inside one: the two rows of
// stream 4 (one request to two servers) come together.
func TestToDeviceBatches(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	f.deps.BatchSize = 1
	src, err := synapse.NewToDevice(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for from := int64(0); ; {
		b, err := src.Next(t.Context(), from)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(b.Messages))
		from = b.Position
		if !b.More {
			break
		}
	}
	if want := []int{1, 1, 2}; !slices.Equal(sizes, want) {
		t.Fatalf("batches of %v messages, want %v", sizes, want)
	}
}
