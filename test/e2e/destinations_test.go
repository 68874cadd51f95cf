package e2e

import (
	"context"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/telemetry"
	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

// deadLetters reads the first n records of the dead-letter stream.
func (h *harness) deadLetters(n int) []jetstream.Msg {
	h.t.Helper()
	cons, err := h.js.OrderedConsumer(context.Background(), streams.DeadLetterStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < n {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			h.t.Fatalf("dead letters: got %d of %d: %v", len(out), n, err)
		}
		out = append(out, msg)
	}
	return out
}

func TestInvalidDestinationsAreRefusedOneByOne(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	h := newObservedHarness(t, nil, nil, sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	m := &metrics{t: t, reader: reader}
	r := h.receiver(nil)
	// Published without fedsender's client, as a homeserver might.
	env := `{"room_id":"!a:origin.test","event_id":"$mixed","pdu":{"event_id":"$mixed","room_id":"!a:origin.test","type":"m.room.message"},` +
		`"destinations":["[::1","` + r.ServerName() + `","bad name!"]}`
	if _, err := h.js.Publish(context.Background(), streams.PDUSubject, []byte(env)); err != nil {
		t.Fatal(err)
	}
	r.WaitPDUs(t, 1)
	inOrder(t, r, map[string][]string{"!a:origin.test": {"$mixed"}})

	// One record per refused destination, naming it and why.
	want := map[string]string{"0": `"[::1"`, "2": `"bad name!"`}
	for _, dl := range h.deadLetters(2) {
		hd := dl.Headers()
		i := hd.Get(streams.HeaderDestinationIndex)
		name, ok := want[i]
		if !ok {
			t.Errorf("dead letter for destination index %q: want one of 0, 2", i)
			continue
		}
		delete(want, i)
		if got := hd.Get(streams.HeaderDestination); got != name {
			t.Errorf("dead letter %s names destination %s, want %s", i, got, name)
		}
		if reason := hd.Get(streams.HeaderReason); !strings.Contains(reason, "invalid server name") {
			t.Errorf("dead letter %s: reason %q does not say the server name is invalid", i, reason)
		}
		// The envelope with only the refused destination: what a replay
		// republishes.
		only := `{"room_id":"!a:origin.test","event_id":"$mixed","pdu":{"event_id":"$mixed","room_id":"!a:origin.test","type":"m.room.message"},"destinations":[` + name + `]}`
		if string(dl.Data()) != only {
			t.Errorf("dead letter %s carries %s, want %s", i, dl.Data(), only)
		}
	}
	m.waitFor(func() bool { return m.sum(telemetry.MetricDestinationsRefused, "reason=invalid_server_name") == 2 }, "two refused destinations")
	if n := m.sum(telemetry.MetricDeadLetters, ""); n != 0 {
		t.Errorf("%s = %v: the envelope was valid", telemetry.MetricDeadLetters, n)
	}

	// An envelope without a single valid destination is refused whole.
	all := `{"room_id":"!a:origin.test","event_id":"$none","pdu":{},"destinations":["[::1","a b"]}`
	if _, err := h.js.Publish(context.Background(), streams.PDUSubject, []byte(all)); err != nil {
		t.Fatal(err)
	}
	dl := h.deadLetters(3)[2]
	if reason := dl.Headers().Get(streams.HeaderReason); !strings.Contains(reason, "no valid destination") ||
		!strings.Contains(reason, "destinations[1]") || dl.Headers().Get(streams.HeaderDestination) != "" {
		t.Errorf("whole-envelope dead letter: headers %v", dl.Headers())
	}
	m.waitFor(func() bool { return m.sum(telemetry.MetricDeadLetters, "") == 1 }, "one refused envelope")
}

// localhostHarness runs fedsender as server_name self ("localhost:PORT",
// empty: a free port), with receivers named by host name rather than IP.
type localhostHarness struct {
	*harness
	self string
	key  xmatrix.SigningKey
}

func newLocalhostHarness(t *testing.T, mutate func(*config.Config)) *localhostHarness {
	t.Helper()
	key, err := xmatrix.GenerateKey("self")
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "signing.key")
	if err := os.WriteFile(keyPath, key.MarshalKeyFile(), 0o600); err != nil {
		t.Fatal(err)
	}
	self := "localhost:" + strconv.Itoa(freePort(t))
	h := newHarness(t, func(c *config.Config) {
		c.ServerName = self
		c.SigningKeyPath = keyPath
		// localhost resolves to ::1 as well.
		c.Federation.IPRangeAllowlist = append(c.Federation.IPRangeAllowlist, netip.MustParsePrefix("::1/128"))
		if mutate != nil {
			mutate(c)
		}
	})
	return &localhostHarness{harness: h, self: self, key: key}
}

// receiverAt starts a receiver for name, "localhost:PORT".
func (h *localhostHarness) receiverAt(name string) *receiver.Receiver {
	h.t.Helper()
	_, port, _ := strings.Cut(name, ":")
	return receiver.Start(h.t, receiver.Options{Origin: h.self, OriginKey: h.key.Public(), OriginKeyID: h.key.KeyID(),
		Cert: h.ca.MustLeaf(h.t, "localhost"), Addr: "127.0.0.1:" + port, ServerName: name})
}

func TestNeverSendsToItselfAndHostCaseIsOneDestination(t *testing.T) {
	h := newLocalhostHarness(t, nil)
	self := h.self
	// A receiver answers in fedsender's own name: a transaction to itself
	// would reach it.
	mirror := h.receiverAt(self)
	other := h.receiverAt("localhost:" + strconv.Itoa(freePort(t)))
	upper := strings.ToUpper(self)
	otherMixed := "LocalHost:" + strings.TrimPrefix(other.ServerName(), "localhost:")

	h.publish("!a:"+self, 1, self, upper, other.ServerName(), otherMixed)
	other.WaitPDUs(t, 1)
	// The read model shows the delivery once the other's offset is stored,
	// after any transaction to self would have been sent in the same batch.
	eventually(t, 20*time.Second, func() bool {
		d := h.destination(other.ServerName())
		return d.LastSuccessfulStreamOrdering != nil && *d.LastSuccessfulStreamOrdering == 1
	}, "admin API never showed %s delivered", other.ServerName())
	if n := mirror.Requests(); n != 0 {
		t.Errorf("fedsender sent %d requests to its own server_name %s", n, self)
	}
	for _, name := range []string{self, upper} {
		if code := h.admin("GET", "/_synapse/admin/v1/federation/destinations/"+name, nil); code != http.StatusNotFound {
			t.Errorf("admin API knows destination %s (%d), want 404", name, code)
		}
	}
	// The other spelling is the same destination, stored as the lower-case one.
	if d := h.destination(otherMixed); d.Destination != other.ServerName() {
		t.Errorf("admin API answers %q for %s, want the destination %s", d.Destination, otherMixed, other.ServerName())
	}
	if txns := len(other.Transactions()); txns != 1 || other.PDUCount() != 1 {
		t.Errorf("%s got %d transactions with %d PDUs, want one with one", other.ServerName(), txns, other.PDUCount())
	}
	if v := other.Violations(); len(v) > 0 {
		t.Errorf("%s saw protocol violations: %v", other.ServerName(), v)
	}
}

func TestCatchUpFindsPDUsAddressedInAnotherCase(t *testing.T) {
	// An overflowed destination reads the stream itself: it must find the
	// PDUs whose envelopes spell its host name in another case.
	h := newLocalhostHarness(t, func(c *config.Config) { c.Queue.MaxPending = 5 })
	r := h.receiverAt("localhost:" + strconv.Itoa(freePort(t)))
	d := r.ServerName()
	mixed := "LocalHost:" + strings.TrimPrefix(d, "localhost:")
	r.SetFault(receiver.Fault{Hang: true})
	room := "!c:" + h.self
	want := []string{h.publish(room, 0, d)} // in flight, hanging
	eventually(t, 10*time.Second, func() bool { return r.InFlight() == 1 }, "first transaction never arrived")
	for i := 1; i <= 20; i++ {
		want = append(want, h.publish(room, i, mixed))
	}
	r.SetFault(receiver.Fault{})
	eventually(t, 20*time.Second, func() bool { return uniqueCount(r) >= len(want) },
		"%s got %d of %d PDUs", d, uniqueCount(r), len(want))
	inOrder(t, r, map[string][]string{room: want})
}
