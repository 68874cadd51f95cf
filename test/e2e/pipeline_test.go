package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

func TestDeliversEveryPDUInOrderToEveryDestination(t *testing.T) {
	h := newHarness(t, nil)
	rs := []*receiver.Receiver{h.receiver(nil), h.receiver(nil), h.receiver(nil)}
	dests := []string{rs[0].ServerName(), rs[1].ServerName(), rs[2].ServerName()}
	want := map[string][]string{}
	for i := range 150 {
		room := fmt.Sprintf("!room%d:origin.test", i%5)
		want[room] = append(want[room], h.publish(room, i, dests...))
	}
	for _, r := range rs {
		eventually(t, 20*time.Second, func() bool { return r.PDUCount() >= 150 }, "%s got %d of 150 PDUs", r.ServerName(), r.PDUCount())
		inOrder(t, r, want)
		if r.RedeliveredPDUs() != 0 {
			t.Errorf("%s got %d PDUs twice without any failure", r.ServerName(), r.RedeliveredPDUs())
		}
		for _, tx := range r.Transactions() {
			if tx.PDUs > 50 {
				t.Errorf("transaction %s carried %d PDUs", tx.TxnID, tx.PDUs)
			}
		}
	}
	// The admin API shows each destination's stream ordering (the sequence
	// of the last PDU it acknowledged) and no failure.
	for _, d := range dests {
		eventually(t, 5*time.Second, func() bool {
			info := h.destination(d)
			return info.LastSuccessfulStreamOrdering != nil && *info.LastSuccessfulStreamOrdering == 150
		}, "admin API: %s last_successful_stream_ordering = %+v, want 150", d, h.destination(d))
		if info := h.destination(d); info.RetryLastTS != 0 || info.FailureTS != nil || info.RetryInterval != 0 {
			t.Errorf("admin API shows a healthy destination as failing: %+v", info)
		}
	}
}

func TestDeadDestinationDoesNotDelayOthers(t *testing.T) {
	// One send slot: the hanging transaction must not keep it.
	h := newHarness(t, func(c *config.Config) {
		c.Federation.RequestTimeout = time.Minute
		c.Federation.SendSlots = 1
	})
	dead := h.receiver(nil)
	dead.SetFault(receiver.Fault{Hang: true})
	live := []*receiver.Receiver{h.receiver(nil), h.receiver(nil)}
	want := map[string][]string{}
	for i := range 300 {
		room := fmt.Sprintf("!r%d:origin.test", i%3)
		want[room] = append(want[room], h.publish(room, i, dead.ServerName(), live[0].ServerName(), live[1].ServerName()))
	}
	// The dead server holds its first transaction for a minute; the others
	// must be served long before that.
	for _, r := range live {
		eventually(t, 15*time.Second, func() bool { return r.PDUCount() >= 300 }, "%s got %d of 300 PDUs while another destination hangs", r.ServerName(), r.PDUCount())
		inOrder(t, r, want)
	}
	if dead.PDUCount() != 0 {
		t.Fatalf("the hanging receiver accepted %d PDUs", dead.PDUCount())
	}
}

func TestBackoffThenAdminResetDelivers(t *testing.T) {
	h := newHarness(t, nil)
	r := h.receiver(nil)
	d := r.ServerName()
	r.SetFault(receiver.Fault{Status: http.StatusInternalServerError})
	first := h.publish("!a:origin.test", 1, d)
	eventually(t, 10*time.Second, func() bool { return h.destination(d).RetryLastTS != 0 }, "admin API never showed %s failing", d)
	info := h.destination(d)
	if info.RetryInterval != (10*time.Minute).Milliseconds() || info.FailureTS == nil || *info.FailureTS != info.RetryLastTS {
		t.Fatalf("after one failure: %+v; want retry_interval 600000 and failure_ts = retry_last_ts", info)
	}
	if info.LastSuccessfulStreamOrdering != nil {
		t.Fatalf("last_successful_stream_ordering = %d before any success, want null", *info.LastSuccessfulStreamOrdering)
	}
	r.SetFault(receiver.Fault{})
	second := h.publish("!a:origin.test", 2, d)
	// Backing off for ten minutes: nothing may be sent before the reset.
	requests := r.Requests()
	if code := h.admin("POST", "/_synapse/admin/v1/federation/destinations/"+d+"/reset_connection", nil); code != http.StatusOK {
		t.Fatalf("reset_connection answered %d", code)
	}
	eventually(t, 10*time.Second, func() bool { return r.PDUCount() >= 2 }, "after reset, %s got %d of 2 PDUs", d, r.PDUCount())
	if r.Requests() < requests+1 {
		t.Fatal("no request after reset")
	}
	inOrder(t, r, map[string][]string{"!a:origin.test": {first, second}})
	eventually(t, 5*time.Second, func() bool {
		i := h.destination(d)
		return i.RetryLastTS == 0 && i.RetryInterval == 0 && i.FailureTS == nil
	}, "timings not cleared after success: %+v", h.destination(d))
	if code := h.admin("POST", "/_synapse/admin/v1/federation/destinations/"+d+"/reset_connection", nil); code != http.StatusBadRequest {
		t.Fatalf("reset of a healthy destination answered %d, want 400", code)
	}
}

func TestRateLimitHonoursRetryAfter(t *testing.T) {
	h := newHarness(t, nil)
	r := h.receiver(nil)
	r.SetFault(receiver.Fault{Status: http.StatusTooManyRequests, RetryAfter: "1", Times: 1})
	start := time.Now()
	id := h.publish("!a:origin.test", 1, r.ServerName())
	eventually(t, 10*time.Second, func() bool { return r.PDUCount() >= 1 }, "PDU not delivered after a 429 with Retry-After: 1")
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("retried after %v, before Retry-After", waited)
	}
	inOrder(t, r, map[string][]string{"!a:origin.test": {id}})
}

func TestCatchUpSendsNewestPDUOfEachRoomManyRoomsPerTransaction(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.Backoff.MinInterval = 100 * time.Millisecond
		c.Backoff.MaxInterval = 500 * time.Millisecond
		c.Backoff.CatchUpAfter = 150 * time.Millisecond
		c.Queue.MaxPending = 4
	})
	r := h.receiver(nil)
	d := r.ServerName()
	r.Stop()
	h.publish("!first:origin.test", 0, d)
	// Failures double the interval until it passes catch_up_after.
	eventually(t, 10*time.Second, func() bool { return h.destination(d).RetryInterval > 150 }, "backoff never passed catch_up_after: %+v", h.destination(d))
	newest := map[string]string{}
	for i := 1; i <= 30; i++ {
		room := fmt.Sprintf("!room%d:origin.test", i%3)
		newest[room] = h.publish(room, i, d)
	}
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return holds(r, newest) }, "catch-up did not deliver the newest PDU of every room")
	if n := r.PDUCount(); n >= 31 {
		t.Fatalf("catch-up sent all %d PDUs; want only the newest of each room", n)
	}
	multi := false
	for _, tx := range r.Transactions() {
		if tx.PDUs > 1 {
			multi = true
		}
	}
	if !multi {
		t.Fatal("catch-up sent one room per transaction")
	}
	// Live again: the next PDU is sent at once.
	next := h.publish("!room1:origin.test", 31, d)
	eventually(t, 10*time.Second, func() bool { return holds(r, map[string]string{"": next}) }, "PDU after catch-up not delivered")
	if v := r.Violations(); len(v) > 0 {
		t.Fatalf("violations: %v", v)
	}
}

func TestRestartResumesWithoutCatchUp(t *testing.T) {
	h := newHarness(t, nil)
	r := h.receiver(nil)
	d := r.ServerName()
	want := map[string][]string{}
	for i := range 40 {
		room := fmt.Sprintf("!r%d:origin.test", i%2)
		want[room] = append(want[room], h.publish(room, i, d))
	}
	eventually(t, 10*time.Second, func() bool { return r.PDUCount() >= 40 }, "got %d of 40 before restart", r.PDUCount())
	h.shutdown()
	// PDUs published while fedsender is down wait in the stream.
	h.start()
	for i := 40; i < 100; i++ {
		room := fmt.Sprintf("!r%d:origin.test", i%2)
		want[room] = append(want[room], h.publish(room, i, d))
	}
	eventually(t, 10*time.Second, func() bool { return uniqueCount(r) >= 100 }, "got %d of 100 after restart", uniqueCount(r))
	inOrder(t, r, want)
}

// holds reports whether the receiver has accepted every event id in ids.
func holds(r *receiver.Receiver, ids map[string]string) bool {
	got := map[string]bool{}
	for _, p := range r.PDUs() {
		got[p.EventID] = true
	}
	for _, id := range ids {
		if !got[id] {
			return false
		}
	}
	return true
}

func uniqueCount(r *receiver.Receiver) int {
	seen := map[string]bool{}
	for _, p := range r.PDUs() {
		seen[p.EventID] = true
	}
	return len(seen)
}

func TestInvalidEnvelopesAreDeadLetteredAndValidOnesStillSent(t *testing.T) {
	h := newHarness(t, nil)
	r := h.receiver(nil)
	bad := map[string]string{
		`not json`: "not a JSON envelope",
		`{"room_id":"!a:o","event_id":"$x","pdu":{}}`:                                 "destinations",
		`{"room_id":"!a:o","event_id":"$y","pdu":{},"destinations":["bad name!"]}`:    "destinations[0]",
		`{"room_id":"!a:o","event_id":"$z","pdu":{"n":1.5},"destinations":["a.org"]}`: "pdu",
	}
	for data := range bad {
		// Published without fedsender's client, as a homeserver might.
		if _, err := h.js.Publish(context.Background(), streams.PDUSubject, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	id := h.publish("!a:origin.test", 1, r.ServerName())
	eventually(t, 10*time.Second, func() bool { return r.PDUCount() >= 1 }, "valid PDU after invalid ones not delivered")
	inOrder(t, r, map[string][]string{"!a:origin.test": {id}})

	cons, err := h.js.OrderedConsumer(context.Background(), streams.DeadLetterStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for range bad {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("dead letters: got %d of %d: %v", len(got), len(bad), err)
		}
		got[string(msg.Data())] = msg.Headers().Get(streams.HeaderReason)
	}
	for data, reason := range bad {
		if r, ok := got[data]; !ok || !strings.Contains(r, reason) {
			t.Errorf("dead letter for %s: reason %q, want one naming %q", data, r, reason)
		}
	}
}

func TestOverflowOfAHealthyDestinationLosesNothing(t *testing.T) {
	// A healthy destination whose queue overflows reads the stream itself,
	// at once (no timer wakes it) and without skipping any PDU.
	h := newHarness(t, func(c *config.Config) { c.Queue.MaxPending = 5 })
	r := h.receiver(nil)
	d := r.ServerName()
	r.SetFault(receiver.Fault{Hang: true})
	want := map[string][]string{"!hold:origin.test": {h.publish("!hold:origin.test", 0, d)}} // in flight, hanging
	eventually(t, 10*time.Second, func() bool { return r.InFlight() == 1 }, "first transaction never arrived")
	for i := 1; i <= 40; i++ {
		room := fmt.Sprintf("!o%d:origin.test", i%4)
		want[room] = append(want[room], h.publish(room, i, d))
	}
	r.SetFault(receiver.Fault{}) // the hanging transaction now succeeds
	eventually(t, 10*time.Second, func() bool { return uniqueCount(r) >= 41 },
		"an overflowed healthy destination got %d of 41 PDUs", uniqueCount(r))
	inOrder(t, r, want)
}

func TestBacklogManyTimesMaxPendingIsSentInPages(t *testing.T) {
	// 15 times max_pending waits behind a hanging transaction; when the
	// destination answers again it reads the stream in pages of max_pending
	// and sends every PDU, in order.
	h := newHarness(t, func(c *config.Config) { c.Queue.MaxPending = 200 })
	r := h.receiver(nil)
	d := r.ServerName()
	r.SetFault(receiver.Fault{Hang: true})
	want := map[string][]string{"!r0:origin.test": {h.publish("!r0:origin.test", 0, d)}}
	eventually(t, 10*time.Second, func() bool { return r.InFlight() == 1 }, "first transaction never arrived")
	for i := 1; i < 3000; i++ {
		room := fmt.Sprintf("!r%d:origin.test", i%3)
		want[room] = append(want[room], h.publish(room, i, d))
	}
	r.SetFault(receiver.Fault{})
	eventually(t, 30*time.Second, func() bool { return uniqueCount(r) >= 3000 }, "got %d of 3000", uniqueCount(r))
	inOrder(t, r, want)
}

func TestBackoffSurvivesRestart(t *testing.T) {
	h := newHarness(t, nil)
	r := h.receiver(nil)
	d := r.ServerName()
	r.SetFault(receiver.Fault{Status: http.StatusServiceUnavailable})
	h.publish("!a:origin.test", 1, d)
	eventually(t, 10*time.Second, func() bool { return h.destination(d).RetryLastTS != 0 }, "never failed")
	before := h.destination(d)
	r.SetFault(receiver.Fault{})
	requests := r.Requests()

	h.restart()
	eventually(t, 10*time.Second, func() bool { return h.destination(d).RetryLastTS != 0 }, "after restart the admin API lost the backoff: %+v", h.destination(d))
	after := h.destination(d)
	if after.RetryLastTS != before.RetryLastTS || after.RetryInterval != before.RetryInterval || *after.FailureTS != *before.FailureTS {
		t.Fatalf("backoff changed across a restart: before %+v, after %+v", before, after)
	}
	// Still backing off for ten minutes: a PDU published now must wait.
	h.publish("!a:origin.test", 2, d)
	barrier := h.receiver(nil)
	h.publish("!b:origin.test", 3, barrier.ServerName())
	eventually(t, 10*time.Second, func() bool { return barrier.PDUCount() == 1 }, "a healthy destination got nothing after the restart")
	if got := r.Requests(); got != requests {
		t.Fatalf("the backing-off destination got %d requests after the restart", got-requests)
	}
}

func TestWakeUpsAfterStartAreRateLimited(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.Backoff.MinInterval = 300 * time.Millisecond
		c.Queue.StartupWakeRate = 2
	})
	var rs []*receiver.Receiver
	for i := range 6 {
		r := h.receiver(nil)
		r.SetFault(receiver.Fault{Status: http.StatusServiceUnavailable})
		h.publish("!a:origin.test", i, r.ServerName())
		rs = append(rs, r)
	}
	var due time.Time
	for _, r := range rs {
		eventually(t, 10*time.Second, func() bool { return h.destination(r.ServerName()).RetryLastTS != 0 }, "%s never failed", r.ServerName())
		info := h.destination(r.ServerName())
		if at := time.UnixMilli(info.RetryLastTS + info.RetryInterval); at.After(due) {
			due = at
		}
	}
	h.shutdown()
	for _, r := range rs {
		r.SetFault(receiver.Fault{})
	}
	// Start once every retry time has passed, so all six are due at once.
	time.Sleep(time.Until(due))
	h.start()
	var first, last time.Time
	for _, r := range rs {
		eventually(t, 15*time.Second, func() bool { return r.PDUCount() == 1 }, "%s not retried after the restart", r.ServerName())
		at := r.PDUs()[0].Received
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	// Two a second: the six wake-ups spread over about 2.5 s, not a herd.
	if spread := last.Sub(first); spread < 2*time.Second {
		t.Fatalf("six due destinations were retried within %v at a wake rate of 2/s", spread)
	}
}

func TestSlowButAliveDestinationDoesNotPaceTheOthers(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.Queue.MaxPending = 400
	})
	slow := h.receiver(nil)
	// Up, but each transaction takes 200 ms: 250 PDUs a second at best,
	// and it always makes progress, so it never looks stalled.
	slow.SetFault(receiver.Fault{Delay: 200 * time.Millisecond})
	fast := h.receiver(nil)
	const n = 3000
	for i := range n {
		h.publish("!r:origin.test", i, slow.ServerName(), fast.ServerName())
	}
	// Paced by the slow one, the fast one would need 3000/250 = 12 s.
	eventually(t, 6*time.Second, func() bool { return fast.PDUCount() >= n },
		"the fast destination got %d of %d PDUs while another was slow (slow: %d PDUs in %d requests)",
		fast.PDUCount(), n, slow.PDUCount(), slow.Requests())
}
