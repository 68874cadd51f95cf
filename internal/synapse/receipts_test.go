package synapse_test

import (
	"reflect"
	"slices"
	"testing"

	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// The 5 receipts of the recording without a sender: 4 public ones go to
// the servers in their rooms now, shaped as Synapse sent them in the main
// recording (the threaded one with data.thread_id); m.read.private never
// leaves.
func TestReceipts(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	src, err := synapse.NewReceipts(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	start, err := src.Start(t.Context())
	if err != nil || start != 6 {
		t.Fatalf("Start = %d, %v; want 6, the current position (receipts are droppable)", start, err)
	}
	if msgs, _ := drainSource(t, src, start); len(msgs) != 0 {
		t.Fatalf("%d receipts after the current position, want 0", len(msgs))
	}

	msgs, pos := drainSource(t, src, 1)
	if pos != 6 {
		t.Fatalf("position %d, want 6", pos)
	}
	got := decodeEDUs(t, msgs)
	hs2, hs3 := synapsefixture.HS2, synapsefixture.HS3
	want := []struct {
		room   string
		dests  []string
		thread bool
	}{
		{unsentR1, []string{hs2}, false}, // stream 2; hs3 left R1 (banned) since
		{unsentR4, []string{hs2, hs3}, false},
		{unsentR1, []string{hs2}, true},
		{unsentR2, []string{hs2}, false}, // /read_markers; the private one (3) is gone
	}
	if len(got) != len(want) {
		t.Fatalf("%d receipts, want %d: %+v", len(got), len(want), got)
	}
	alice := "@alice:localhost:28481"
	for i, w := range want {
		g := got[i]
		if g.Type != "m.receipt" || !slices.Equal(g.Destinations, w.dests) {
			t.Errorf("receipt %d: %s to %v, want m.receipt to %v", i, g.Type, g.Destinations, w.dests)
		}
		r, ok := g.Content[w.room].(map[string]any)["m.read"].(map[string]any)[alice].(map[string]any)
		if !ok || len(g.Content) != 1 {
			t.Fatalf("receipt %d: %v, want alice's m.read in %s only", i, g.Content, w.room)
		}
		data := r["data"].(map[string]any)
		if _, has := data["thread_id"]; has != w.thread || data["ts"] == nil || len(r["event_ids"].([]any)) != 1 {
			t.Errorf("receipt %d: %v, want event_ids [one id] and data {ts, thread_id: %v}", i, r, w.thread)
		}
	}

	// Synapse's shape, receipt by receipt: the same keys at every level.
	for _, c := range wireEDUs(t, "transactions-hs2.jsonl", "m.receipt") {
		for _, perType := range c {
			r := perType.(map[string]any)["m.read"].(map[string]any)[alice].(map[string]any)
			ours := got[0].Content[unsentR1].(map[string]any)["m.read"].(map[string]any)[alice].(map[string]any)
			if _, threaded := r["data"].(map[string]any)["thread_id"]; threaded {
				ours = got[2].Content[unsentR1].(map[string]any)["m.read"].(map[string]any)[alice].(map[string]any)
			}
			if !reflect.DeepEqual(keysOf(r), keysOf(ours)) || !reflect.DeepEqual(keysOf(r["data"]), keysOf(ours["data"])) {
				t.Errorf("receipt %v, Synapse sent %v", ours, r)
			}
		}
	}
}

func keysOf(v any) []string {
	var keys []string
	for k := range v.(map[string]any) {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// On the main recording's database (the same ids as its wire), each
// receipt's content is exactly one Synapse delivered, and it goes to
// servers Synapse delivered it to.
func TestReceiptsAsSynapseSent(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Main)
	src, err := synapse.NewReceipts(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	msgs, pos := drainSource(t, src, 1)
	if pos != 8 {
		t.Fatalf("position %d, want 8", pos)
	}
	got := decodeEDUs(t, msgs)
	if len(got) != 5 { // rows 2 to 7 but the private 3
		t.Fatalf("%d receipts, want 5: %+v", len(got), got)
	}
	delivered := map[string][]map[string]any{} // room -> receipts Synapse sent, with the server
	for _, w := range []struct{ file, dest string }{
		{"transactions-hs2.jsonl", synapsefixture.HS2}, {"transactions-hs3.jsonl", synapsefixture.HS3},
	} {
		for _, c := range wireEDUs(t, w.file, "m.receipt") {
			for room, r := range c {
				delivered[room] = append(delivered[room], map[string]any{"dest": w.dest, "receipt": r})
			}
		}
	}
	for _, g := range got {
		for room, r := range g.Content {
			var to []string
			for _, d := range delivered[room] {
				if reflect.DeepEqual(d["receipt"], r) {
					to = append(to, d["dest"].(string))
				}
			}
			for _, dest := range g.Destinations {
				if !slices.Contains(to, dest) {
					t.Errorf("receipt %v in %s to %s: Synapse delivered it only to %v", r, room, dest, to)
				}
			}
		}
	}
}
