package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/eventlog"
	dto "github.com/prometheus/client_model/go"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/deadletter"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

// publishEDU publishes an EDU envelope; id, if set, is its Nats-Msg-Id.
func (h *harness) publishEDU(eduType, key, content, id string, dests ...string) {
	h.t.Helper()
	env, err := json.Marshal(streams.EDUEnvelope{EDUType: eduType, Content: json.RawMessage(content), Destinations: dests, Key: key})
	if err != nil {
		h.t.Fatal(err)
	}
	if _, _, err := h.pub.PublishWithID(context.Background(), env, id); err != nil {
		h.t.Fatalf("publish %s: %v", eduType, err)
	}
}

func toDeviceContent(id string) string {
	return fmt.Sprintf(`{"message_id":%q,"messages":{"@bob:r":{"DEV":{"body":%q}}},"sender":"@alice:origin.test","type":"m.room_key_request"}`, id, id)
}

// eduField reads one string field of each EDU of a type the receiver
// accepted, in arrival order.
func eduField(r *receiver.Receiver, eduType, field string) []string {
	var out []string
	for _, e := range r.EDUs() {
		if e.Type != eduType {
			continue
		}
		var c map[string]json.RawMessage
		if json.Unmarshal(e.Content, &c) != nil {
			continue
		}
		out = append(out, strings.Trim(string(c[field]), `"`))
	}
	return out
}

func TestEDUsTravelWithPDUsAndAloneInTheirShapes(t *testing.T) {
	h := newHarness(t, nil)
	r := h.receiver(nil)
	d := r.ServerName()
	h.publishEDU("m.typing", "", `{"room_id":"!a:origin.test","typing":true,"user_id":"@alice:origin.test"}`, "", d)
	h.publishEDU("m.direct_to_device", "", toDeviceContent("td1"), "td1", d)
	eventually(t, 10*time.Second, func() bool { return len(r.EDUs()) >= 2 }, "%s got %d of 2 EDUs without any PDU", d, len(r.EDUs()))
	if txns := r.Transactions(); txns[0].PDUs != 0 {
		t.Errorf("first transaction carried %d PDUs, want an EDU-only one", txns[0].PDUs)
	}
	ev := h.publish("!a:origin.test", 1, d)
	h.publishEDU("m.receipt", "", `{"!a:origin.test":{"m.read":{"@alice:origin.test":{"data":{"ts":1},"event_ids":["`+ev+`"]}}}}`, "", d)
	h.publishEDU("m.presence", "", `{"push":[{"currently_active":true,"last_active_ago":1,"presence":"online","user_id":"@alice:origin.test"}]}`, "", d)
	h.publishEDU("org.example.custom", "", `{"x":1}`, "", d)
	eventually(t, 10*time.Second, func() bool { return len(r.EDUs()) >= 5 && r.PDUCount() == 1 }, "%s got %d of 5 EDUs", d, len(r.EDUs()))
	var got []string
	for _, e := range r.EDUs() {
		got = append(got, e.Type)
	}
	slices.Sort(got)
	if want := []string{"m.direct_to_device", "m.presence", "m.receipt", "m.typing", "org.example.custom"}; !slices.Equal(got, want) {
		t.Errorf("EDU types %v, want %v", got, want)
	}
	if ids := eduField(r, "m.direct_to_device", "message_id"); !slices.Equal(ids, []string{"td1"}) {
		t.Errorf("to-device message ids %v, want [td1] once", ids)
	}
	r.RequireNoViolations(t)
}

func TestDeviceListUpdatesGetPrevIDPerDestinationAcrossRestarts(t *testing.T) {
	h := newHarness(t, nil)
	r1, r2 := h.receiver(nil), h.receiver(nil)
	update := func(streamID int, extra string, dests ...string) {
		h.publishEDU("m.device_list_update", "", fmt.Sprintf(`{"device_id":"D","stream_id":%d,"user_id":"@alice:origin.test"%s}`, streamID, extra), "", dests...)
	}
	update(10, "", r1.ServerName())
	update(11, "", r1.ServerName(), r2.ServerName())
	eventually(t, 10*time.Second, func() bool { return len(r1.EDUs()) == 2 && len(r2.EDUs()) == 1 }, "device-list updates not delivered")
	h.restart()
	update(12, "", r1.ServerName())
	update(13, `,"prev_id":[99]`, r1.ServerName())
	// An update may be sent again after a restart (at least once): it
	// carries the same prev_id each time.
	want1 := map[string]string{"10": "[]", "11": "[10]", "12": "[11]", "13": "[99]"}
	eventually(t, 10*time.Second, func() bool { return len(prevIDs(r1)) == len(want1) }, "updates after the restart not delivered")
	if got := prevIDs(r1); fmt.Sprint(got) != fmt.Sprint(want1) {
		t.Errorf("%s saw prev_id by stream_id %v, want %v: the chain across the restart, a given prev_id kept", r1.ServerName(), got, want1)
	}
	if got := prevIDs(r2); fmt.Sprint(got) != "map[11:[]]" {
		t.Errorf("%s saw prev_id by stream_id %v: its first update has none", r2.ServerName(), got)
	}
}

// prevIDs maps the stream_id of each device-list update a receiver got to
// its prev_id, or to "differs" when two deliveries of it differ.
func prevIDs(r *receiver.Receiver) map[string]string {
	out := map[string]string{}
	streamIDs := eduField(r, "m.device_list_update", "stream_id")
	for i, prev := range eduField(r, "m.device_list_update", "prev_id") {
		if old, ok := out[streamIDs[i]]; ok && old != prev {
			prev = "differs"
		}
		out[streamIDs[i]] = prev
	}
	return out
}

func TestInvalidEDUEnvelopesAreDeadLetteredAndOneBadDestinationDropsNothing(t *testing.T) {
	h := newHarness(t, nil)
	r := h.receiver(nil)
	d := r.ServerName()
	ctx := context.Background()
	bad := map[string]string{
		`{"edu_type":`: "not a JSON EDU envelope",
		`{"edu_type":"m.typing","content":{},"destinations":[]}`:                                                    "destinations is missing or empty",
		`{"edu_type":"m.typing","content":[],"destinations":["` + d + `"]}`:                                         "content is not a JSON object",
		`{"edu_type":"m.typing","content":{"b":"` + strings.Repeat("x", 70000) + `"},"destinations":["` + d + `"]}`: "over the 65536-byte limit",
	}
	for env := range bad {
		if _, err := h.js.Publish(ctx, streams.EDUSubject, []byte(env)); err != nil {
			t.Fatal(err)
		}
	}
	h.publishEDU("m.direct_to_device", "", toDeviceContent("ok"), "", "[::1", d, "origin.test")
	eventually(t, 10*time.Second, func() bool { return len(r.EDUs()) == 1 }, "the valid EDU did not reach %s", d)
	var recs []deadletter.Record
	eventually(t, 10*time.Second, func() bool {
		var err error
		recs, err = deadletter.List(ctx, h.js)
		return err == nil && len(recs) == len(bad)+1
	}, "dead letters: %d, want %d", len(recs), len(bad)+1)
	for env, reason := range bad {
		found := false
		for _, rec := range recs {
			found = found || (string(rec.Envelope) == env && strings.Contains(rec.Reason, reason))
		}
		if !found {
			t.Errorf("no dead letter saying %q for %.60s", reason, env)
		}
	}
	refused := 0
	for _, rec := range recs {
		if rec.Destination == "[::1" && strings.HasPrefix(rec.ID, "edu-") {
			refused++
		}
	}
	if refused != 1 {
		t.Errorf("%d dead letters for the refused destination, want 1: %+v", refused, recs)
	}
	r.RequireNoViolations(t)
}

func TestMustDeliverEDUsSurviveBackoffAndRestartExactlyOnce(t *testing.T) {
	h := newHarness(t, nil)
	r := h.receiver(nil)
	d := r.ServerName()
	r.SetFault(receiver.Fault{Status: http.StatusServiceUnavailable})
	h.publishEDU("m.direct_to_device", "", toDeviceContent("m0"), "m0", d)
	eventually(t, 10*time.Second, func() bool { return h.destination(d).RetryLastTS != 0 }, "%s never failed", d)
	// Backing off for ten minutes: typing is dropped, to-device kept.
	h.publishEDU("m.typing", "", `{"room_id":"!a:origin.test","typing":true,"user_id":"@alice:origin.test"}`, "", d)
	var want []string
	for i := 1; i <= 150; i++ {
		id := fmt.Sprintf("m%d", i)
		h.publishEDU("m.direct_to_device", "", toDeviceContent(id), id, d)
	}
	// A publisher's retry with the same id is not sent twice.
	h.publishEDU("m.direct_to_device", "", toDeviceContent("m1"), "m1", d)
	h.publishEDU("m.signing_key_update", "", `{"master_key":{},"user_id":"@alice:origin.test"}`, "", d)
	// A destination in backoff does not hold the EDU watermark back: it
	// passes the pending EDUs, which the next start reads from the stream.
	eventually(t, 10*time.Second, func() bool {
		wm := eduWatermark(t, h, d)
		return wm.EDUSeq >= 153 && strings.Contains(wm.EDUPending, d+"=0")
	}, "the EDU watermark stayed behind the backing-off %s, or does not list it: %+v", d, eduWatermark(t, h, d))
	h.restart()
	r.SetFault(receiver.Fault{})
	eventually(t, 10*time.Second, func() bool {
		return h.admin("POST", "/_synapse/admin/v1/federation/destinations/"+d+"/reset_connection", nil) == http.StatusOK
	}, "reset_connection of %s never answered 200", d)
	for i := 0; i <= 150; i++ {
		want = append(want, fmt.Sprintf("m%d", i))
	}
	eventually(t, 20*time.Second, func() bool { return len(eduField(r, "m.direct_to_device", "message_id")) >= len(want) },
		"%s got %d of %d to-device messages", d, len(eduField(r, "m.direct_to_device", "message_id")), len(want))
	eventually(t, 5*time.Second, func() bool { return len(eduField(r, "m.signing_key_update", "user_id")) == 1 }, "no signing-key update")
	if got := eduField(r, "m.direct_to_device", "message_id"); !slices.Equal(got, want) {
		t.Errorf("to-device arrived as %v\nwant each once, in order", got)
	}
	if n := len(eduField(r, "m.typing", "user_id")); n != 0 {
		t.Errorf("typing published during backoff was sent %d times, want never", n)
	}
	for _, txn := range r.Transactions() {
		if txn.EDUs > 100 {
			t.Errorf("transaction %s carried %d EDUs", txn.TxnID, txn.EDUs)
		}
	}
	r.RequireNoViolations(t)
}

// serverUp publishes the homeserver's signal that dest is up.
func (h *harness) serverUp(dest string) {
	h.t.Helper()
	if err := h.nc.Publish(streams.ServerUpSubject, []byte(`{"destination":"`+dest+`"}`)); err != nil {
		h.t.Fatal(err)
	}
}

func TestServerUpWakesABackingOffDestinationAtOnceAndIsRateLimited(t *testing.T) {
	h := newHarness(t, nil)
	r := h.receiver(nil)
	d := r.ServerName()
	r.SetFault(receiver.Fault{Status: http.StatusServiceUnavailable, Times: 2})
	h.publishEDU("m.direct_to_device", "", toDeviceContent("up1"), "", d)
	eventually(t, 10*time.Second, func() bool { return h.destination(d).RetryLastTS != 0 }, "%s never failed", d)
	first := h.destination(d).RetryLastTS
	// Backing off for ten minutes: the signal retries now (and fails again).
	h.serverUp(d)
	eventually(t, 10*time.Second, func() bool { return r.Requests() == 2 && h.destination(d).RetryLastTS > first },
		"server_up did not retry %s: %d requests", d, r.Requests())
	// A second signal within the minute is not acted on. Nothing can show
	// that it was ignored but the absence of a request: watch for a second.
	h.serverUp(d)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if r.Requests() != 2 {
			t.Fatalf("a second server_up within a minute retried %s", d)
		}
	}
	eventually(t, 10*time.Second, func() bool {
		return h.admin("POST", "/_synapse/admin/v1/federation/destinations/"+d+"/reset_connection", nil) == http.StatusOK
	}, "reset_connection of %s never answered 200", d)
	eventually(t, 10*time.Second, func() bool { return len(r.EDUs()) == 1 }, "to-device not delivered after the reset")
	if r.Requests() != 3 {
		t.Errorf("%d requests, want 3: the failure, the server_up retry, the reset's", r.Requests())
	}
	// A healthy destination is left alone: no request without anything to send.
	h.serverUp(d)
	h.publishEDU("m.direct_to_device", "", toDeviceContent("up2"), "", d)
	eventually(t, 10*time.Second, func() bool { return len(r.EDUs()) == 2 }, "second to-device not delivered")
	if r.Requests() != 4 {
		t.Errorf("%d requests, want 4", r.Requests())
	}
	r.RequireNoViolations(t)
}

func TestDownDestinationGetsNewestPresenceAndReceiptsWhenBackAndMetricsCountEDUs(t *testing.T) {
	h := newHarness(t, nil)
	r := h.receiver(nil)
	d := r.ServerName()
	metrics := "http://" + h.svc.MetricsAddr + "/metrics"
	r.SetFault(receiver.Fault{Status: http.StatusServiceUnavailable})
	h.publishEDU("m.direct_to_device", "", toDeviceContent("p0"), "", d)
	eventually(t, 10*time.Second, func() bool { return h.destination(d).RetryLastTS != 0 }, "%s never failed", d)
	presence := func(state string) string {
		return `{"push":[{"presence":"` + state + `","user_id":"@alice:origin.test"}]}`
	}
	receipt := func(ev string) string {
		return `{"!a:origin.test":{"m.read":{"@alice:origin.test":{"data":{"ts":1},"event_ids":["` + ev + `"]}}}}`
	}
	h.publishEDU("m.presence", "", presence("online"), "", d)
	h.publishEDU("m.presence", "", presence("unavailable"), "", d)
	h.publishEDU("m.receipt", "", receipt("$old"), "", d)
	h.publishEDU("m.receipt", "", receipt("$new"), "", d)
	h.publishEDU("m.typing", "", `{"room_id":"!a:origin.test","typing":true,"user_id":"@alice:origin.test"}`, "", d)
	h.publishEDU("m.direct_to_device", "", toDeviceContent("p1"), "", d)
	h.publishEDU("org.example.custom", "", `{}`, "", d)
	eventually(t, 10*time.Second, func() bool {
		fs := scrape(t, metrics)
		return value(fs["fedsender_federation_edus_coalesced_total"], map[string]string{"type": "m.presence"}) == 1 &&
			value(fs["fedsender_federation_edus_coalesced_total"], map[string]string{"type": "m.receipt"}) == 1 &&
			value(fs["fedsender_federation_edus_dropped_total"], map[string]string{"type": "m.typing", "reason": "backoff"}) == 1 &&
			sum(fs["fedsender_federation_transaction_queue_pending_edus"]) == 2 &&
			sum(fs["fedsender_federation_edus_held_bytes"]) > 0
	}, "metrics while %s is down: coalesced presence and receipt, dropped typing, 2 pending to-device, bytes held for presence, receipt and custom", d)
	r.SetFault(receiver.Fault{})
	h.serverUp(d)
	eventually(t, 10*time.Second, func() bool { return len(r.EDUs()) == 5 }, "%s got %d of 5 EDUs once back", d, len(r.EDUs()))
	var c struct{ Push []struct{ Presence string } }
	for _, e := range r.EDUs() {
		switch e.Type {
		case "m.presence":
			if json.Unmarshal(e.Content, &c) != nil || len(c.Push) != 1 || c.Push[0].Presence != "unavailable" {
				t.Errorf("presence %s, want only the newest state", e.Content)
			}
		case "m.receipt":
			if !strings.Contains(string(e.Content), `"$new"`) || strings.Contains(string(e.Content), `"$old"`) {
				t.Errorf("receipt %s, want only the newest", e.Content)
			}
		}
	}
	eventually(t, 10*time.Second, func() bool {
		fs := scrape(t, metrics)
		sent := fs["fedsender_federation_client_sent_edus_by_type_total"]
		return value(sent, map[string]string{"type": "m.direct_to_device"}) == 2 && value(sent, map[string]string{"type": "m.presence"}) == 1 &&
			value(sent, map[string]string{"type": "m.receipt"}) == 1 && value(sent, map[string]string{"type": "other"}) == 1 &&
			sum(fs["fedsender_federation_transaction_queue_pending_edus"]) == 0 &&
			sum(fs["fedsender_federation_edus_held_bytes"]) == 0
	}, "metrics once %s is back: nothing pending, no bytes held", d)
	r.RequireNoViolations(t)
}

// sum adds the values of every series of a gauge (-1 when absent).
func sum(f *dto.MetricFamily) float64 {
	if f == nil {
		return -1
	}
	total := 0.0
	for _, m := range f.GetMetric() {
		total += m.GetGauge().GetValue()
	}
	return total
}

func TestToDeviceIsSentDuringCatchUpAndAcrossOverflow(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.Backoff.MinInterval = 100 * time.Millisecond
		c.Backoff.MaxInterval = 500 * time.Millisecond
		c.Backoff.CatchUpAfter = 150 * time.Millisecond
		c.Queue.MaxPending = 4
	})
	r := h.receiver(nil)
	d := r.ServerName()
	r.SetFault(receiver.Fault{Hang: true})
	h.publish("!first:origin.test", 0, d) // in flight, hanging
	eventually(t, 10*time.Second, func() bool { return r.InFlight() == 1 }, "first transaction never arrived")
	var want []string
	for i := 1; i <= 30; i++ {
		h.publish(fmt.Sprintf("!room%d:origin.test", i%3), i, d) // overflows the queue of 4: catch-up
		id := fmt.Sprintf("c%d", i)
		want = append(want, id)
		h.publishEDU("m.direct_to_device", "", toDeviceContent(id), "", d)
	}
	// Down, long enough to catch up with only the newest PDU of each room.
	r.SetFault(receiver.Fault{Status: http.StatusServiceUnavailable})
	eventually(t, 10*time.Second, func() bool { return h.destination(d).RetryInterval > 150 }, "backoff never passed catch_up_after: %+v", h.destination(d))
	for i := 31; i <= 60; i++ {
		id := fmt.Sprintf("c%d", i)
		want = append(want, id)
		h.publishEDU("m.direct_to_device", "", toDeviceContent(id), "", d)
		h.publish(fmt.Sprintf("!room%d:origin.test", i%3), i, d)
	}
	r.SetFault(receiver.Fault{})
	eventually(t, 20*time.Second, func() bool { ids, _ := firstArrivals(r); return len(ids) == len(want) },
		"%s got %d of %d to-device messages through overflow, backoff and catch-up", d, len(eduField(r, "m.direct_to_device", "message_id")), len(want))
	if ids, again := firstArrivals(r); !slices.Equal(ids, want) || again != 0 {
		t.Errorf("to-device arrived as %v (%d twice), want each once in order", ids, again)
	}
	if n := uniqueCount(r); n >= 61 {
		t.Errorf("%d PDUs arrived: the destination never caught up with the newest PDU of each room, the test proves nothing", n)
	}
	r.RequireNoViolations(t)
}

func TestReceiptsInLargeRoomsArePacedUnlessTheEventIsRecent(t *testing.T) {
	const rate = 2 // receipts per second
	h := newHarness(t, func(c *config.Config) { c.Federation.ReceiptsPerRoomPerSecond = rate })
	var rs []*receiver.Receiver
	var dests []string
	for range 12 {
		r := h.receiver(nil)
		rs = append(rs, r)
		dests = append(dests, r.ServerName())
	}
	receipt := func(ev string) string {
		return `{"!big:origin.test":{"m.read":{"@alice:origin.test":{"data":{"ts":1},"event_ids":["` + ev + `"]}}}}`
	}
	arrivals := func(start time.Time) []time.Duration {
		var out []time.Duration
		for _, r := range rs {
			for _, e := range r.EDUs() {
				if e.Type == "m.receipt" && e.Received.After(start) {
					out = append(out, e.Received.Sub(start))
				}
			}
		}
		return out
	}
	// A receipt for an event fedsender read just now goes to all at once.
	ev := h.publish("!big:origin.test", 1, dests...)
	eventually(t, 10*time.Second, func() bool { return uniqueCountAll(rs) == len(rs) }, "the PDU did not reach every server")
	start := time.Now()
	h.publishEDU("m.receipt", "", receipt(ev), "", dests...)
	eventually(t, 10*time.Second, func() bool { return len(arrivals(start)) == len(rs) }, "the receipt of a recent event did not reach every server")
	if last := slices.Max(arrivals(start)); last > 5*time.Second {
		t.Errorf("a receipt of a recent event took %v to reach the last server; want no pacing", last)
	}
	// A receipt for an older (here: unknown) event is paced: server i gets
	// it after i/rate seconds, unless a transaction goes there anyway.
	start = time.Now()
	h.publishEDU("m.receipt", "", receipt("$old"), "", dests...)
	h.publishEDU("m.direct_to_device", "", toDeviceContent("carrier"), "", dests[len(dests)-1])
	eventually(t, 20*time.Second, func() bool { return len(arrivals(start)) == len(rs) }, "the paced receipt did not reach every server")
	got := map[string]time.Duration{}
	for i, r := range rs {
		for _, e := range r.EDUs() {
			if e.Type == "m.receipt" && e.Received.After(start) {
				got[dests[i]] = e.Received.Sub(start)
			}
		}
	}
	want := time.Duration(len(rs)-2) * time.Second / rate
	if paced := got[dests[len(dests)-2]]; paced < want-time.Second/2 {
		t.Errorf("server %d got the receipt after %v, want about %v: not paced", len(rs)-2, paced, want)
	}
	if carried := got[dests[len(dests)-1]]; carried > 4*time.Second {
		t.Errorf("the last server got the receipt after %v: it should have gone with the to-device message at once", carried)
	}
	for _, r := range rs {
		r.RequireNoViolations(t)
	}
}

// uniqueCountAll is how many receivers got at least one PDU.
func uniqueCountAll(rs []*receiver.Receiver) int {
	n := 0
	for _, r := range rs {
		if uniqueCount(r) > 0 {
			n++
		}
	}
	return n
}

// eduWatermark is the watermark of dest's partition.
func eduWatermark(t *testing.T, h *harness, dest string) eventlog.Watermark {
	t.Helper()
	kv, err := h.js.KeyValue(context.Background(), streams.PartitionBucket)
	if err != nil {
		t.Fatal(err)
	}
	var wm eventlog.Watermark
	e, err := kv.Get(context.Background(), streams.PartitionKey(streams.Partition(dest, h.cfg.Queue.Partitions)))
	if err != nil {
		return wm
	}
	if err := json.Unmarshal(e.Value(), &wm); err != nil {
		t.Fatal(err)
	}
	return wm
}
