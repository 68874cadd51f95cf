package main

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
)

// listJSON runs deadletter list --json and decodes its lines.
func listJSON(t *testing.T, url string) []deadletterJSON {
	t.Helper()
	code, out, errs := runCmd(t, "", "deadletter", "list", "--json", "--server", url)
	if code != 0 {
		t.Fatalf("deadletter list: exit %d: %s", code, errs)
	}
	var records []deadletterJSON
	for line := range strings.Lines(out) {
		var r deadletterJSON
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("list --json line %q: %v", line, err)
		}
		records = append(records, r)
	}
	return records
}

func seqs(records []deadletterJSON) []uint64 {
	var out []uint64
	for _, r := range records {
		out = append(out, r.Seq)
	}
	return out
}

func TestDeadLetterListAndReplay(t *testing.T) {
	_, js, url := projectiontest.JetStream(t)
	ctx := context.Background()
	// Records as the PDU reader writes them.
	env1 := `{"room_id":"!r:a.org","event_id":"$1","pdu":{"type":"m.room.message"},"destinations":["b.org","[::1"]}`
	env2 := `{"room_id":"!r:a.org","event_id":"$2","pdu":{},"destinations":["c.org","[::1"]}`
	env3 := `{"room_id":"!r:a.org","event_id":"$3","pdu":{"body":"<&>"},"destinations":["d.org","E.org"]}`
	decode := func(env string) *streams.PDU {
		pdu, err := streams.DecodePDU([]byte(env))
		if err != nil {
			t.Fatal(err)
		}
		return pdu
	}
	refusedDest := func(pdu *streams.PDU, seq uint64, ref streams.RefusedDestination) *nats.Msg {
		m, err := streams.DestinationDeadLetter(pdu, seq, ref)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	pdu2 := decode(env2)
	for _, m := range []*nats.Msg{
		// Refused whole by a fedsender that refused an envelope for one bad destination.
		streams.DeadLetter([]byte(env1), 5, errors.New("invalid envelope: destinations[1] \"[::1\": ...")),
		refusedDest(pdu2, 6, pdu2.Refused[0]),
		// Refused by a fedsender with other checks.
		refusedDest(decode(env3), 7, streams.RefusedDestination{Index: 1, Name: "E.org", Reason: errors.New("refused by an older fedsender")}),
		streams.DeadLetter([]byte("not json"), 8, errors.New("invalid envelope: not a JSON envelope")),
	} {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	records := listJSON(t, url)
	if !slices.Equal(seqs(records), []uint64{1, 2, 3, 4}) {
		t.Fatalf("list --json: records %v, want 1-4", seqs(records))
	}
	r := records[1]
	if r.SourceSeq != 6 || r.Destination == nil || *r.Destination != "[::1" || r.DestinationIndex == nil || *r.DestinationIndex != 1 ||
		r.Envelope != `{"room_id":"!r:a.org","event_id":"$2","pdu":{},"destinations":["[::1"]}` ||
		!strings.Contains(r.Reason, `invalid server name "[::1"`) || r.ID != "pdu-6-1" || r.Time.IsZero() {
		t.Errorf("list --json record 2 = %+v", r)
	}
	if records[0].Destination != nil || records[3].Envelope != "not json" {
		t.Errorf("list --json records 1 and 4 = %+v, %+v", records[0], records[3])
	}
	if code, out, _ := runCmd(t, "", "deadletter", "list", "--server", url); code != 0 ||
		!strings.Contains(out, `"[::1"`) || !strings.Contains(out, "(envelope)") || !strings.Contains(out, "total 4") {
		t.Errorf("deadletter list: exit %d:\n%s", code, out)
	}

	// A refused destination is replayed alone.
	code, out, errs := runCmd(t, "", "deadletter", "replay", "--seq", "3", "--server", url)
	if code != 0 || !strings.Contains(out, "record 3 replayed as PDU 1") {
		t.Fatalf("replay --seq 3: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	pdus, err := js.Stream(ctx, streams.PDUStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := pdus.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"room_id":"!r:a.org","event_id":"$3","pdu":{"body":"<&>"},"destinations":["E.org"]}`; string(m.Data) != want {
		t.Errorf("replayed envelope %s, want %s", m.Data, want)
	}
	if !slices.Equal(seqs(listJSON(t, url)), []uint64{1, 2, 4}) {
		t.Errorf("record 3 was not deleted after its replay")
	}

	// A replay acknowledged before, whose record was not deleted, is not
	// sent twice.
	prior := nats.NewMsg(streams.PDUSubject)
	prior.Data = []byte(env1)
	prior.Header.Set(jetstream.MsgIDHeader, "replay-pdu-5")
	if _, err := js.PublishMsg(ctx, prior); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runCmd(t, "", "deadletter", "replay", "--all", "--server", url)
	if code != 1 || !strings.Contains(out, "record 1 replayed as PDU 2 (already replayed)") ||
		!strings.Contains(errs, "record 2 kept") || !strings.Contains(errs, "record 4 kept") ||
		!strings.Contains(errs, "2 of 3 records would be refused again") {
		t.Errorf("replay --all: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if n := pduCount(t, js); n != 2 {
		t.Errorf("the PDU stream holds %d envelopes, want 2", n)
	}
	if !slices.Equal(seqs(listJSON(t, url)), []uint64{2, 4}) {
		t.Errorf("records left: want the two still refused")
	}

	for _, args := range [][]string{{"replay"}, {"replay", "--seq", "1", "--all"}, {"replay", "--seq", "99"}, {"frob"}} {
		if code, _, errs := runCmd(t, "", append(append([]string{"deadletter"}, args...), "--server", url)...); code == 0 || errs == "" {
			t.Errorf("deadletter %v: exit %d, stderr %q", args, code, errs)
		}
	}
}
