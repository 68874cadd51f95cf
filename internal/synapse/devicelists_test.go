package synapse_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// summary is what a receiving server learns from a device-list EDU, ids
// of the recording aside: which kind, the stream id, prev_id, whether the
// device is gone or has keys (and how many keys signed them), which
// cross-signing keys changed.
func summary(e eduSent) string {
	c := e.Content
	switch e.Type {
	case "m.device_list_update":
		var b strings.Builder
		fmt.Fprintf(&b, "dl %v prev=%v", c["stream_id"], c["prev_id"])
		if c["deleted"] == true {
			b.WriteString(" deleted")
		}
		if k, ok := c["keys"].(map[string]any); ok {
			n := 0
			for _, keys := range k["signatures"].(map[string]any) {
				n += len(keys.(map[string]any))
			}
			fmt.Fprintf(&b, " keys signed by %d", n)
		}
		if _, ok := c["device_display_name"]; ok {
			b.WriteString(" named")
		}
		return b.String()
	case "m.signing_key_update", "org.matrix.signing_key_update":
		var keys []string
		for k := range c {
			if k != "user_id" {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		return e.Type + " " + strings.Join(keys, "+")
	}
	return e.Type
}

// keysOneAtATime are the signing-key updates of the master key's poke and
// then the self-signing key's, read apart.
var keysOneAtATime = []string{
	"m.signing_key_update master_key", "org.matrix.signing_key_update master_key",
	"m.signing_key_update self_signing_key", "org.matrix.signing_key_update self_signing_key",
}

func summaries(got []eduSent, dest string) []string {
	var out []string
	for _, e := range got {
		if e.Destinations[0] == dest {
			out = append(out, summary(e))
		}
	}
	return out
}

// On a first start, every unsent poke of the recording without a sender
// goes out, grouped per destination as Synapse groups one read of its
// pokes: the newest change per device, both cross-signing keys in one
// update (twice, stable and unstable type), prev_id chaining the devices.
func TestDeviceListsFirstStart(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	src, err := synapse.NewDeviceLists(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	start, err := src.Start(t.Context())
	if err != nil || start != 0 {
		t.Fatalf("Start = %d, %v; want 0: every unsent poke is owed", start, err)
	}
	msgs, pos := drainSource(t, src, start)
	if pos != 26 {
		t.Fatalf("position %d, want 26, the newest poke", pos)
	}
	got := decodeEDUs(t, msgs)
	for dest, want := range map[string][]string{
		synapsefixture.HS3: {
			"m.signing_key_update master_key+self_signing_key", "org.matrix.signing_key_update master_key+self_signing_key",
			"dl 22 prev=[] keys signed by 2", "dl 25 prev=[22] deleted",
		},
		synapsefixture.HS2: {
			"m.signing_key_update master_key+self_signing_key", "org.matrix.signing_key_update master_key+self_signing_key",
			"dl 23 prev=[] keys signed by 2", "dl 26 prev=[23] deleted",
		},
	} {
		if s := summaries(got, dest); !slices.Equal(s, want) {
			t.Errorf("to %s:\n%q\nwant\n%q", dest, s, want)
		}
	}
	for _, e := range got {
		stream := map[string]string{synapsefixture.HS2: "20", synapsefixture.HS3: "19"}[e.Destinations[0]]
		if e.Type == "m.device_list_update" {
			stream = strconv.FormatInt(int64(e.Content["stream_id"].(float64)), 10)
		}
		if e.Source != "device_list "+stream || !strings.HasSuffix(e.ID, "-"+e.Destinations[0]+"-"+stream) {
			t.Errorf("%s to %v: %s %q, Nats-Msg-Id %q; want device_list %s", e.Type, e.Destinations, synapse.HeaderSource, e.Source, e.ID, stream)
		}
	}

	// The signing keys are what Synapse stores and sent: the same fields.
	onWire := wireEDUs(t, "transactions-hs2.jsonl", "m.signing_key_update")[0]
	if !reflect.DeepEqual(keysOf(got[0].Content), keysOf(onWire)) ||
		!reflect.DeepEqual(keysOf(got[0].Content["master_key"]), keysOf(onWire["master_key"])) {
		t.Errorf("signing-key update %v, Synapse sent %v", got[0].Content, onWire)
	}
	if !reflect.DeepEqual(got[0].Content, got[1].Content) {
		t.Errorf("org.matrix.signing_key_update differs from m.signing_key_update")
	}
	// The device's update has the fields of Synapse's, no display name.
	var dl map[string]any
	for _, c := range wireEDUs(t, "transactions-hs2.jsonl", "m.device_list_update") {
		if c["stream_id"].(float64) == 23 {
			dl = c
		}
	}
	if !reflect.DeepEqual(keysOf(got[2].Content), keysOf(dl)) || !reflect.DeepEqual(keysOf(got[2].Content["keys"]), keysOf(dl["keys"])) {
		t.Errorf("device-list update %v, Synapse sent %v", got[2].Content, dl)
	}

	// A replay stores nothing twice.
	if n := f.publish(t, msgs); n != len(msgs) {
		t.Fatalf("first publish stored %d of %d", n, len(msgs))
	}
	again, _ := drainSource(t, src, start)
	if n := f.publish(t, again); n != 0 {
		t.Fatalf("replay stored %d messages again, want 0", n)
	}
}

// Fed with the recorded replication rows as they came, the updates to hs3
// are exactly the chain Synapse's sender delivered to hs3 in the main
// recording (same stream ids, same prev_ids, master and self-signing keys
// apart); hs2's differ only where Synapse's sender had a transaction in
// flight and read two changes at once.
func TestDeviceListsFollowReplication(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	var now time.Time
	f.deps.Now = func() time.Time { return now }
	src, err := synapse.NewDeviceLists(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	var got []eduSent
	var pos int64
	for _, l := range synapsefixture.ReplicationLog(t, "unsent/redis-replication.log") {
		fields := strings.SplitN(l.Command, " ", 5)
		if fields[0] != "RDATA" || fields[1] != "device_lists" || fields[3] == "batch" {
			continue
		}
		token, err := strconv.ParseInt(fields[3], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		now = time.UnixMilli(l.T)
		src.Observe("device_lists", token, json.RawMessage(fields[4]))
		var msgs = drainFrom(t, src, &pos)
		got = append(got, decodeEDUs(t, msgs)...)
	}
	if pos != 26 {
		t.Fatalf("position %d, want 26", pos)
	}
	var wireHS3 []eduSent
	for _, c := range wireDeviceLists(t, "transactions-hs3.jsonl") {
		wireHS3 = append(wireHS3, c)
	}
	want := summaries(wireHS3, synapsefixture.HS3)
	ours := summaries(got, synapsefixture.HS3)
	// The end-state database no longer has ALICEPHONE, and has the first
	// device signed by the self-signing key: the early updates differ from
	// those Synapse sent at the time in that only.
	for _, list := range [][]string{want, ours} {
		for i, s := range list {
			switch {
			case strings.HasPrefix(s, "dl 6 ") || strings.HasPrefix(s, "dl 9 "):
				list[i] = s[:strings.Index(s, "]")+1]
			case strings.HasPrefix(s, "dl 12 "):
				list[i] = strings.Replace(s, "signed by 2", "signed by 1", 1)
			}
		}
	}
	if !slices.Equal(ours, want) {
		t.Errorf("to hs3:\n%q\nSynapse sent\n%q", ours, want)
	}
	hs2 := summaries(got, synapsefixture.HS2)
	wantHS2 := slices.Concat([]string{"dl 7 prev=[] deleted", "dl 10 prev=[7] deleted", "dl 13 prev=[10] keys signed by 2"},
		keysOneAtATime, []string{"dl 23 prev=[20] keys signed by 2", "dl 26 prev=[23] deleted"})
	if !slices.Equal(hs2, wantHS2) {
		t.Errorf("to hs2:\n%q\nwant\n%q", hs2, wantHS2)
	}
}

// drainFrom is drainSource that keeps the position.
func drainFrom(t *testing.T, s synapse.Source, pos *int64) []*nats.Msg {
	t.Helper()
	msgs, p := drainSource(t, s, *pos)
	*pos = p
	return msgs
}

// wireDeviceLists returns the device-list EDUs Synapse sent to one server, as sent.
func wireDeviceLists(t *testing.T, file string) []eduSent {
	t.Helper()
	var out []eduSent
	dest := map[string]string{"transactions-hs2.jsonl": synapsefixture.HS2, "transactions-hs3.jsonl": synapsefixture.HS3}[file]
	for _, tx := range synapsefixture.Transactions(t, file) {
		for _, e := range tx.Body.EDUs {
			switch e.EDUType {
			case "m.device_list_update", "m.signing_key_update", "org.matrix.signing_key_update":
				var c map[string]any
				if err := json.Unmarshal(e.Content, &c); err != nil {
					t.Fatal(err)
				}
				out = append(out, eduSent{Type: e.EDUType, Content: c, Destinations: []string{dest}})
			}
		}
	}
	return out
}

// After the bookkeeping recorded a delivery, and while an earlier batch is
// published but not yet delivered, the next update names the last one.
func TestDeviceListsPrevIDAcrossBatches(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	f.deps.ShareDeviceNames = true
	src, err := synapse.NewDeviceLists(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	hs2 := synapsefixture.HS2
	f.exec(t, `INSERT INTO device_lists_outbound_pokes VALUES ($1, 27, '@alice:localhost:28481', 'RAZEJQFIWD', false, 0, '{}')`, hs2)
	// Someone else's signature of alice's device is not hers to send.
	f.exec(t, `INSERT INTO e2e_cross_signing_signatures VALUES ('@bob:localhost:28482', 'ed25519:BOBKEY', '@alice:localhost:28481', 'RAZEJQFIWD', 'sig')`)
	src.Observe("device_lists", 27, nil)

	// Published up to 26, nothing delivered yet.
	got := decodeEDUs(t, drainFrom(t, src, at(26)))
	if s := summaries(got, hs2); !slices.Equal(s, []string{"dl 27 prev=[26] keys signed by 2 named"}) {
		t.Errorf("after a published batch: %q, want dl 27 prev=[26] with the device's name (shared)", s)
	}
	// Delivered: Synapse's bookkeeping marks the pokes sent and keeps the
	// last stream id per destination and user.
	f.exec(t, `UPDATE device_lists_outbound_pokes SET sent = true WHERE stream_id <= 26`)
	f.exec(t, `INSERT INTO device_lists_outbound_last_success VALUES ($1, '@alice:localhost:28481', 26)`, hs2)
	f.exec(t, `DELETE FROM device_lists_outbound_pokes WHERE sent`)
	got = decodeEDUs(t, drainFrom(t, src, at(26)))
	if s := summaries(got, hs2); !slices.Equal(s, []string{"dl 27 prev=[26] keys signed by 2 named"}) {
		t.Errorf("after delivery: %q, want dl 27 prev=[26]", s)
	}
	// Unsent pokes before the position are not read again.
	f.exec(t, `UPDATE device_lists_outbound_pokes SET sent = true`)
	if msgs := drainFrom(t, src, at(0)); len(msgs) != 0 {
		t.Errorf("%d updates from pokes marked sent, want 0", len(msgs))
	}
}

func at(n int64) *int64 { return &n }

// Read two stream ids at a time, the pokes come out as Synapse's sender
// sent them to hs3 one change at a time: the same stream ids and prev_ids.
func TestDeviceListsSmallBatches(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	f.deps.BatchSize = 2
	src, err := synapse.NewDeviceLists(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	msgs, pos := drainSource(t, src, 0)
	if pos != 26 {
		t.Fatalf("position %d, want 26", pos)
	}
	var got []string
	for _, s := range summaries(decodeEDUs(t, msgs), synapsefixture.HS3) {
		got = append(got, strings.SplitN(s, " keys", 2)[0])
	}
	want := slices.Concat([]string{"dl 6 prev=[] deleted", "dl 9 prev=[6] deleted", "dl 12 prev=[9]"},
		keysOneAtATime, []string{"dl 22 prev=[19]", "dl 25 prev=[22] deleted"})
	if !slices.Equal(got, want) {
		t.Fatalf("to hs3:\n%q\nwant\n%q", got, want)
	}
}
