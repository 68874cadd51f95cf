package receiver

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"github.com/fedsender/fedsender/test/synapsefixture"
)

// A receiver told the room version names the PDUs Synapse sent, which carry
// no event_id, by the event ids Synapse's own receiver answered with.
func TestRoomVersionNamesPDUsByReferenceHash(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.RoomVersion = "10" })
	var want []string
	for i, tx := range synapsefixture.Transactions(t, "transactions-hs2.jsonl") {
		if len(tx.Body.PDUs) == 0 {
			continue
		}
		body, err := json.Marshal(map[string]any{"origin": origin, "origin_server_ts": tx.Body.OriginServerTS, "pdus": tx.Body.PDUs})
		if err != nil {
			t.Fatal(err)
		}
		ids := slices.Sorted(maps.Keys(tx.Response.PDUs))
		e.send(tx.TxnID, body).wantPDUs(t, okAll(ids...))
		want = append(want, ids...)
		if i > 40 {
			break
		}
	}
	e.rcv.RequireNoViolations(t)
	var got []string
	for _, p := range e.rcv.PDUs() {
		got = append(got, p.EventID)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the receiver named the PDUs %q, Synapse %q", got, want)
	}
}

func TestWithoutRoomVersionAPDUWithoutEventIDIsAViolation(t *testing.T) {
	e := newEnv(t, nil)
	tx := synapsefixture.Transactions(t, "transactions-hs2.jsonl")[0]
	body, err := json.Marshal(map[string]any{"origin": origin, "origin_server_ts": 1, "pdus": tx.Body.PDUs[:1]})
	if err != nil {
		t.Fatal(err)
	}
	e.send("t1", body)
	e.wantViolations(1, "event_id")
}
