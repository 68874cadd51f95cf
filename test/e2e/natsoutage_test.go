package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

// natsServer is an external NATS server with JetStream on a fixed port and
// a file store in a temporary directory. stop and start make a real outage:
// the listener and every connection close, as on SIGTERM to nats-server,
// and the server started again recovers the same streams from its store.
type natsServer struct {
	t    *testing.T
	opts server.Options
	srv  *server.Server
	url  string
	// bin, when set, runs the server as a nats-server process, proc,
	// logging to log.
	bin  string
	proc *exec.Cmd
	log  *os.File
}

// startNATS starts a single NATS server with JetStream.
func startNATS(t *testing.T) *natsServer {
	t.Helper()
	ns := newNATSServer(t, "outage", server.Options{})
	ns.start()
	return ns
}

// newNATSServer returns a server named name with opts (cluster settings,
// say) on a fixed port of its own, not started yet. It is stopped when the
// test ends.
func newNATSServer(t *testing.T, name string, opts server.Options) *natsServer {
	t.Helper()
	opts.ServerName, opts.Host, opts.Port = name, "127.0.0.1", freePort(t)
	opts.JetStream, opts.StoreDir, opts.NoSigs, opts.NoLog = true, t.TempDir(), true, true
	ns := &natsServer{t: t, url: fmt.Sprintf("nats://127.0.0.1:%d", opts.Port), opts: opts}
	t.Cleanup(ns.stop)
	return ns
}

func (ns *natsServer) start() {
	ns.t.Helper()
	if ns.bin != "" {
		ns.startProcess()
		return
	}
	opts := ns.opts // the server keeps and changes its options
	srv, err := server.NewServer(&opts)
	if err != nil {
		ns.t.Fatalf("NATS server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		ns.t.Fatalf("NATS server on %s not ready within 30s", ns.url)
	}
	ns.srv = srv
}

func (ns *natsServer) stop() {
	ns.stopProcess(syscall.SIGTERM)
	if ns.srv != nil {
		ns.srv.Shutdown()
		ns.srv.WaitForShutdown()
		ns.srv = nil
	}
}

// TestNATSOutage stops the NATS server fedsender uses while a transaction
// is in flight and a destination is failing, starts it again after the
// outage, and checks what an operator sees.
func TestNATSOutage(t *testing.T) {
	for _, outage := range []time.Duration{time.Second, 15 * time.Second} {
		t.Run(outage.String(), func(t *testing.T) {
			natsOutage(t, startNATS(t), outage, nil)
		})
	}
	t.Run("1s with the PostgreSQL read model", func(t *testing.T) {
		srv := pgtest.Own(t)
		schema := pgtest.Schema(t, srv.URL)
		natsOutage(t, startNATS(t), time.Second, func(c *config.Config) {
			c.Postgres.URL, c.Postgres.Schema = srv.URL, schema
		})
	})
}

// natsOutage runs fedsender against ns and puts the writes of the outage's
// deliveries and failures in flight when it stops ns: offsets and the
// watermark of a destination whose transaction is answered during the
// outage, and the failure events of a destination that is down. After ns
// starts again, it checks that every PDU is delivered, that the
// admin API's last_successful_stream_ordering and the watermarks move again
// without restarting fedsender, that /readyz answered 503 throughout the
// outage and answers 200 after it, and that no compare-and-swap conflict
// was taken for another writer.
func natsOutage(t *testing.T, ns *natsServer, outage time.Duration, mutate func(*config.Config)) {
	h := outageHarness(t, ns.url, mutate)
	ok, down := h.receiver(nil), h.receiver(nil)
	dests := []string{ok.ServerName(), down.ServerName()}
	const room = "!outage:origin.test"
	want := map[string][]string{}
	var last uint64
	publish := func(n int) {
		var id string
		id, last = h.publishEventually(60*time.Second, room, n, dests...)
		want[room] = append(want[room], id)
	}

	eventually(t, 30*time.Second, func() bool { code, _ := h.adminRaw("GET", "/readyz"); return code == http.StatusOK },
		"/readyz does not answer 200 before the outage")
	ok.SetFault(receiver.Fault{Hang: true})
	down.SetFault(receiver.Fault{Hang: true})
	for n := 1; n <= 3; n++ {
		publish(n)
	}
	for _, r := range []*receiver.Receiver{ok, down} {
		eventually(t, time.Minute, func() bool { return r.InFlight() > 0 }, "no transaction in flight to %s", r.ServerName())
	}

	ns.stop()
	stoppedAt := time.Now()
	// Deliveries and failures go on without NATS; their writes wait for it.
	ok.SetFault(receiver.Fault{})
	down.Stop()
	down.SetFault(receiver.Fault{}) // from its restart on
	// /readyz must answer 503 as soon as the client sees the connection
	// close, and until NATS is back.
	var unready time.Duration // when /readyz first answered 503
	ready200 := 0             // 200s after that
	for time.Now().Before(stoppedAt.Add(outage)) {
		code, body := h.adminRaw("GET", "/readyz")
		switch {
		case code == http.StatusServiceUnavailable && unready == 0:
			unready = max(time.Since(stoppedAt), time.Nanosecond)
			t.Logf("/readyz %v after NATS stopped: %d %s", unready.Round(time.Millisecond), code, body)
		case code == http.StatusOK && unready > 0:
			ready200++
		}
		time.Sleep(50 * time.Millisecond)
	}
	if unready == 0 || unready > time.Second || ready200 > 0 {
		t.Errorf("/readyz during the %v outage: 503 first after %v (want within 1s), then 200 %d times", outage, unready, ready200)
	}
	eventually(t, 30*time.Second, func() bool { return uniqueCount(ok) >= 3 }, // NATS still down
		"%s has %d of 3 PDUs with NATS down", ok.ServerName(), uniqueCount(ok))

	ns.start()
	back := time.Now()
	if err := down.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() bool { code, _ := h.adminRaw("GET", "/readyz"); return code == http.StatusOK },
		"/readyz does not answer 200 again after NATS came back")
	ready := time.Since(back)
	publish(4)
	published := time.Since(back)
	publish(5)
	eventually(t, time.Minute, func() bool { return uniqueCount(ok) >= 5 }, "%s has %d of 5 PDUs", ok.ServerName(), uniqueCount(ok))
	delivered := time.Since(back)
	eventually(t, 90*time.Second, func() bool { return h.storedOffset(dests[0]) >= last && h.storedOffset(dests[1]) >= last },
		"the stored offsets are %d and %d, want %d", h.storedOffset(dests[0]), h.storedOffset(dests[1]), last)
	stored := time.Since(back)
	offsetsAt := func(seq uint64) bool {
		for _, d := range dests {
			got := h.destination(d).LastSuccessfulStreamOrdering
			if got == nil || *got < seq {
				return false
			}
		}
		return true
	}
	eventually(t, 90*time.Second, func() bool { return offsetsAt(last) },
		"the admin API shows last_successful_stream_ordering %s and %s, want %d for both (receivers have %d and %d PDUs)",
		ordering(h.destination(dests[0])), ordering(h.destination(dests[1])), last, uniqueCount(ok), uniqueCount(down))
	moving := time.Since(back)
	// The read model follows within a projector flush or two, not after
	// the watchers' own heartbeat check (up to 20 s).
	if lag := moving - stored; lag > 5*time.Second {
		t.Errorf("the admin API showed the stored offsets %v after they were stored, want within 5s", lag.Round(time.Millisecond))
	}
	for _, r := range []*receiver.Receiver{ok, down} {
		eventually(t, 30*time.Second, func() bool { return uniqueCount(r) >= 5 }, "%s has %d of 5 PDUs", r.ServerName(), uniqueCount(r))
		inOrder(t, r, want)
	}
	for _, d := range dests {
		p := streams.Partition(d, h.cfg.Queue.Partitions)
		eventually(t, 30*time.Second, func() bool { return h.watermark(p).Seq >= last },
			"partition %d's watermark is %d, want %d", p, h.watermark(p).Seq, last)
	}

	// And it keeps moving.
	publish(6)
	eventually(t, 30*time.Second, func() bool { return offsetsAt(last) },
		"after one more PDU the admin API shows last_successful_stream_ordering %s and %s, want %d",
		ordering(h.destination(dests[0])), ordering(h.destination(dests[1])), last)

	counts := h.noOtherWriter()
	t.Logf("outage %v; after NATS came back: /readyz 200 %v, first publish %v, delivered %v, offsets stored %v, shown by the admin API %v; conflicts %v",
		outage, ready.Round(time.Millisecond), published.Round(time.Millisecond), delivered.Round(time.Millisecond),
		stored.Round(time.Millisecond), moving.Round(time.Millisecond), counts)
}

// outageHarness runs fedsender against the external NATS server(s) at url,
// retrying failed destinations within seconds, with the configuration
// changed by mutate (nil: none).
func outageHarness(t *testing.T, url string, mutate func(*config.Config)) *harness {
	t.Helper()
	return newHarness(t, func(c *config.Config) {
		c.NATS.URL = url
		c.Backoff.MinInterval = 500 * time.Millisecond
		c.Backoff.MaxInterval = 2 * time.Second
		if mutate != nil {
			mutate(c)
		}
	})
}

// noOtherWriter fails the test if fedsender logged a conflict with another
// replica or counted one, and returns fedsender_cas_conflicts_total by
// kind/cause, the causes that are not 0.
func (h *harness) noOtherWriter() map[string]float64 {
	t := h.t
	t.Helper()
	if logs := h.logs.String(); strings.Contains(logs, "another replica") {
		t.Errorf("fedsender blamed another replica with none running:\n%s", logs)
	}
	conflicts := scrape(t, "http://"+h.svc.MetricsAddr+"/metrics")["fedsender_cas_conflicts_total"]
	if conflicts == nil {
		t.Fatal("/metrics has no fedsender_cas_conflicts_total")
	}
	counts := map[string]float64{} // kind/cause: count, when not 0
	for _, m := range conflicts.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if n := m.GetCounter().GetValue(); n != 0 {
			counts[labels["kind"]+"/"+labels["cause"]] = n
			if labels["cause"] == "other_writer" {
				t.Errorf("fedsender_cas_conflicts_total%v = %v with one fedsender", labels, n)
			}
		}
	}
	return counts
}

// publishEventually publishes the n-th PDU of room, trying again while NATS
// cannot take it, and returns its event id and stream sequence.
func (h *harness) publishEventually(within time.Duration, room string, n int, dests ...string) (string, uint64) {
	h.t.Helper()
	id, env := h.envelope(room, n, dests...)
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		seq, _, err := h.pub.Publish(ctx, env)
		cancel()
		if err == nil {
			return id, seq
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("publish %s: not within %v: %v", id, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// watermark is partition p's watermark as stored (zero when none).
func (h *harness) watermark(p int) eventlog.Watermark {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var w eventlog.Watermark
	kv, err := h.js.KeyValue(ctx, streams.PartitionBucket)
	if err != nil {
		return w
	}
	e, err := kv.Get(ctx, streams.PartitionKey(p))
	if err != nil {
		return w
	}
	if err := json.Unmarshal(e.Value(), &w); err != nil {
		h.t.Fatalf("watermark of partition %d: %v in %s", p, err, e.Value())
	}
	return w
}

// storedOffset is dest's offset in the offsets bucket (0 when none).
func (h *harness) storedOffset(dest string) uint64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := h.js.KeyValue(ctx, streams.OffsetBucket)
	if err != nil {
		return 0
	}
	e, err := kv.Get(ctx, streams.OffsetKey(streams.Partition(dest, h.cfg.Queue.Partitions), dest))
	if err != nil {
		return 0
	}
	off, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		h.t.Fatalf("offset of %s: %v in %q", dest, err, e.Value())
	}
	return off
}

func ordering(d destinationInfo) string {
	if d.LastSuccessfulStreamOrdering == nil {
		return "null"
	}
	return fmt.Sprint(*d.LastSuccessfulStreamOrdering)
}
