package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
)

// pduCount is how many messages the PDU stream holds.
func pduCount(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), streams.PDUStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func jsonLine(n int, dests ...string) string {
	return fmt.Sprintf(`{"room_id":"!r:a.org","event_id":"$%d","pdu":{"type":"m.room.message"},"destinations":["%s"]}`,
		n, strings.Join(dests, `","`)) + "\n"
}

func TestPublishWithOnlyAServerWarnsOfInvalidDestinations(t *testing.T) {
	_, js, url := projectiontest.JetStream(t)
	in := jsonLine(1, "b.org") + jsonLine(2, "127.0.0.1:1", "[::1")
	// No configuration: --server is all publish needs.
	code, out, errs := runCmd(t, in, "publish", "--server", url)
	if code != 0 {
		t.Fatalf("publish: exit %d, stderr %q", code, errs)
	}
	if !strings.Contains(out, "published 2 envelopes") {
		t.Errorf("stdout %q", out)
	}
	if !strings.Contains(errs, `line 2: destinations[1] "[::1"`) || !strings.Contains(errs, "refuses this destination") {
		t.Errorf("stderr %q: want a warning naming line 2 and the destination", errs)
	}
	if n := pduCount(t, js); n != 2 {
		t.Errorf("the PDU stream holds %d envelopes, want 2", n)
	}
}

func TestPublishNamesTheLineAndTheLimitOfAnOversizeEnvelope(t *testing.T) {
	_, js, url := projectiontest.JetStream(t)
	// A 20 MiB PDU: over the Matrix limit.
	huge := `{"room_id":"!r:a.org","event_id":"$big","pdu":{"body":"` + strings.Repeat("x", 20<<20) + `"},"destinations":["b.org"]}` + "\n"
	code, _, errs := runCmd(t, jsonLine(1, "b.org")+huge, "publish", "--server", url)
	if code == 0 || !strings.Contains(errs, "line 2") || !strings.Contains(errs, "over the 65536-byte limit") {
		t.Errorf("20 MiB PDU: exit %d, stderr %q; want an error naming line 2 and the 64 KiB limit", code, errs)
	}
	// A valid PDU for 60,000 servers: over the NATS server's max_payload.
	dests := make([]string, 60_000)
	for i := range dests {
		dests[i] = fmt.Sprintf("s%05d.example.org", i)
	}
	code, _, errs = runCmd(t, jsonLine(1, "b.org")+jsonLine(2, dests...), "publish", "--server", url)
	if code == 0 || !strings.Contains(errs, "line 2") || !strings.Contains(errs, "over the NATS server's max_payload of 1048576 bytes") {
		t.Errorf("envelope over max_payload: exit %d, stderr %q; want an error naming line 2 and the limit", code, errs)
	}
	if n := pduCount(t, js); n != 0 {
		t.Errorf("the PDU stream holds %d envelopes: an oversize line must stop the file before anything is published", n)
	}
}
