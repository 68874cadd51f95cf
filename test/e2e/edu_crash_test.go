package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

// firstArrivals is the message_ids of the to-device EDUs a receiver got, in
// order of first arrival, and how many arrived more than once.
func firstArrivals(r *receiver.Receiver) (ids []string, again int) {
	seen := map[string]bool{}
	for _, id := range eduField(r, "m.direct_to_device", "message_id") {
		if seen[id] {
			again++
			continue
		}
		seen[id] = true
		ids = append(ids, id)
	}
	return ids, again
}

func TestKill9LosesNoMustDeliverEDU(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	p, key, ca, natsPort := newCrashProcess(t)
	opts := receiver.Options{Origin: origin, OriginKey: key.Public(), OriginKeyID: key.KeyID(), Cert: ca.MustLeaf(t, "127.0.0.1")}
	up, down := receiver.Start(t, opts), receiver.Start(t, opts)
	down.SetFault(receiver.Fault{Status: http.StatusServiceUnavailable})
	dests := []string{up.ServerName(), down.ServerName()}

	p.Start()
	nc, js, pub := publisherOf(t, natsPort)
	const total = 3000
	updates := 0
	for i := range total {
		eduType, content := "m.direct_to_device", toDeviceContent(fmt.Sprintf("k%d", i))
		if i%10 == 9 {
			updates++
			eduType, content = "m.device_list_update", fmt.Sprintf(`{"device_id":"D","stream_id":%d,"user_id":"@alice:origin.test"}`, updates)
		}
		env, _ := json.Marshal(streams.EDUEnvelope{EDUType: eduType, Content: json.RawMessage(content), Destinations: dests})
		if _, err := pub.PublishAsync(env); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishing did not complete")
	}
	eventually(t, 60*time.Second, func() bool { return len(up.EDUs()) >= total/5 }, "no progress before the kill: %d", len(up.EDUs()))
	p.Kill9()
	atKill := len(up.EDUs())
	if atKill >= total {
		t.Fatal("everything was delivered before the kill: the test proves nothing; publish more")
	}
	if n := len(down.EDUs()); n != 0 {
		t.Fatalf("the failing server accepted %d EDUs", n)
	}
	down.SetFault(receiver.Fault{})
	p.Start()
	// An asynchronous publish retried after "no responders" (JetStream
	// still starting) is stored after later ones: the stream's order, not
	// the publishing order, is what must arrive in order.
	eventually(t, 60*time.Second, func() bool {
		_, err := js.Stream(t.Context(), streams.EDUStream)
		return err == nil
	}, "the restarted fedsender's NATS never answered")
	want, updateOrder := eduStreamOrder(t, js)
	if len(want) != total-updates || len(updateOrder) != updates {
		t.Fatalf("the stream holds %d to-device messages and %d device-list updates, want %d and %d",
			len(want), len(updateOrder), total-updates, updates)
	}
	// The homeserver sees the server up: it is retried at once.
	eventually(t, 60*time.Second, func() bool {
		return nc.Publish(streams.ServerUpSubject, []byte(`{"destination":"`+down.ServerName()+`"}`)) == nil && len(down.EDUs()) > 0
	}, "%s not retried after server_up", down.ServerName())
	for _, r := range []*receiver.Receiver{up, down} {
		eventually(t, 90*time.Second, func() bool { ids, _ := firstArrivals(r); return len(ids) >= len(want) },
			"%s: %d of %d to-device messages after kill -9 and restart", r.ServerName(), len(eduField(r, "m.direct_to_device", "message_id")), len(want))
		eventually(t, 30*time.Second, func() bool { return len(prevIDs(r)) == updates }, "%s: %d of %d device-list updates", r.ServerName(), len(prevIDs(r)), updates)
		ids, again := firstArrivals(r)
		if !slices.Equal(ids, want) {
			i := 0
			for i < len(ids) && i < len(want) && ids[i] == want[i] {
				i++
			}
			t.Errorf("%s: to-device messages out of order or missing: first difference at %d: got %v, want %v",
				r.ServerName(), i, ids[i:min(i+5, len(ids))], want[i:min(i+5, len(want))])
		}
		chain := prevIDs(r)
		for i, id := range updateOrder {
			wantPrev := "[]"
			if i > 0 {
				wantPrev = "[" + updateOrder[i-1] + "]"
			}
			if got := chain[id]; got != wantPrev {
				t.Errorf("%s: device-list update %s has prev_id %s, want %s", r.ServerName(), id, got, wantPrev)
				break
			}
		}
		r.RequireNoViolations(t)
		t.Logf("%s: %d to-device messages delivered again after the crash", r.ServerName(), again)
	}
	if _, again := firstArrivals(down); again != 0 {
		t.Errorf("%s got %d to-device messages twice: nothing reached it before the crash, each must arrive once", down.ServerName(), again)
	}
}

// eduStreamOrder reads the EDU stream: the to-device message ids and the
// device-list stream ids, in the stream's order.
func eduStreamOrder(t *testing.T, js jetstream.JetStream) (toDevice, deviceLists []string) {
	t.Helper()
	cons, err := js.OrderedConsumer(t.Context(), streams.EDUStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("read %s: %v", streams.EDUStream, err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatalf("read %s: %v", streams.EDUStream, err)
	}
	for n := info.NumPending; n > 0; n-- {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("read %s: %v", streams.EDUStream, err)
		}
		var env struct {
			EDUType string `json:"edu_type"`
			Content struct {
				MessageID string          `json:"message_id"`
				StreamID  json.RawMessage `json:"stream_id"`
			} `json:"content"`
		}
		if err := json.Unmarshal(msg.Data(), &env); err != nil {
			t.Fatalf("read %s: %v", streams.EDUStream, err)
		}
		if env.EDUType == "m.direct_to_device" {
			toDevice = append(toDevice, env.Content.MessageID)
		} else {
			deviceLists = append(deviceLists, string(env.Content.StreamID))
		}
	}
	return toDevice, deviceLists
}
