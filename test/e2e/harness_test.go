package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/service"
	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/pki"
	"github.com/fedsender/fedsender/test/receiver"
)

const (
	origin     = "origin.test"
	adminToken = "e2e-admin-token"
)

// harness runs fedsender in-process against real HTTPS receivers.
type harness struct {
	t    *testing.T
	cfg  config.Config
	key  xmatrix.SigningKey
	ca   *pki.CA
	svc  *service.Service
	stop func()
	nc   *nats.Conn
	js   jetstream.JetStream
	pub  *streams.Publisher
	tp   trace.TracerProvider
	mp   metric.MeterProvider
	// logs has what fedsender logged at error level, for tests that check
	// an error was not logged.
	logs lockedBuffer
}

func newHarness(t *testing.T, mutate func(*config.Config)) *harness {
	t.Helper()
	return newObservedHarness(t, mutate, nil, nil)
}

// newObservedHarness is newHarness with fedsender's tracer and meter
// providers replaced (nil: as configured).
func newObservedHarness(t *testing.T, mutate func(*config.Config), tp trace.TracerProvider, mp metric.MeterProvider) *harness {
	t.Helper()
	key, err := xmatrix.GenerateKey("e2e")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(keyPath, key.MarshalKeyFile(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.ServerName = origin
	cfg.SigningKeyPath = keyPath
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.NATS.MaxStore = 1 << 30
	cfg.NATS.MaxMemory = 64 << 20
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Admin.Token = adminToken
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Federation.IPRangeAllowlist = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.Federation.RequestTimeout = 5 * time.Second
	cfg.Queue.Partitions = 8
	cfg.Queue.CheckpointInterval = 200 * time.Millisecond
	cfg.Log.Level = "warn"
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	h := &harness{t: t, cfg: cfg, key: key, ca: pki.MustCA(t), tp: tp, mp: mp}
	h.start()
	t.Cleanup(h.shutdown)
	return h
}

func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *service.Service, 1)
	done := make(chan error, 1)
	// Goroutines of a stopping service may still log after the test ends,
	// where t.Log would panic: log errors to stderr instead.
	log := slog.New(slog.NewTextHandler(io.MultiWriter(os.Stderr, &h.logs), &slog.HandlerOptions{Level: slog.LevelError}))
	go func() {
		done <- service.Run(ctx, h.cfg, service.Deps{Log: log, RootCAs: h.ca.Pool, Ready: ready,
			TracerProvider: h.tp, MeterProvider: h.mp})
	}()
	select {
	case h.svc = <-ready:
	case err := <-done:
		cancel()
		h.t.Fatalf("fedsender did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		h.t.Fatal("fedsender did not start within 30s")
	}
	h.stop = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("fedsender stopped with an error: %v", err)
			}
		case <-time.After(30 * time.Second):
			h.t.Error("fedsender did not stop within 30s")
		}
	}
	// The embedded server's URL, or nats.url, with fedsender's login.
	url := h.svc.NATSURL
	if url == "" {
		url = h.cfg.NATS.URL
	}
	opts, err := service.NATSOptions(h.cfg.NATS)
	if err != nil {
		h.t.Fatal(err)
	}
	// The test's own connection rides out NATS outages as a homeserver's would.
	nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.nc = nc
	h.js, err = jetstream.New(nc)
	if err != nil {
		h.t.Fatal(err)
	}
	h.pub = streams.NewPublisher(h.js)
}

// restart stops fedsender gracefully and starts it again on the same data.
func (h *harness) restart() {
	h.t.Helper()
	h.shutdown()
	h.start()
}

func (h *harness) shutdown() {
	if h.stop != nil {
		h.nc.Close()
		h.stop()
		h.stop = nil
	}
}

func (h *harness) receiver(mutate func(*receiver.Options)) *receiver.Receiver {
	h.t.Helper()
	opts := receiver.Options{
		Origin:      origin,
		OriginKey:   h.key.Public(),
		OriginKeyID: h.key.KeyID(),
		Cert:        h.ca.MustLeaf(h.t, "127.0.0.1"),
	}
	if mutate != nil {
		mutate(&opts)
	}
	return receiver.Start(h.t, opts)
}

// publish sends one PDU to the destinations and returns its event id.
func (h *harness) publish(room string, n int, dests ...string) string {
	h.t.Helper()
	return h.publishContext(context.Background(), room, n, dests...)
}

// publishContext is publish carrying the trace context of ctx.
func (h *harness) publishContext(ctx context.Context, room string, n int, dests ...string) string {
	h.t.Helper()
	id, env := h.envelope(room, n, dests...)
	if _, _, err := h.pub.Publish(ctx, env); err != nil {
		h.t.Fatalf("publish %s: %v", id, err)
	}
	return id
}

// envelope is the n-th test PDU of room for the destinations, and its event id.
func (h *harness) envelope(room string, n int, dests ...string) (string, []byte) {
	h.t.Helper()
	id := fmt.Sprintf("$%s-%d", strings.TrimPrefix(room, "!"), n)
	env, err := json.Marshal(streams.Envelope{
		RoomID:       room,
		EventID:      id,
		PDU:          json.RawMessage(fmt.Sprintf(`{"event_id":%q,"room_id":%q,"type":"m.room.message","content":{"body":"hello %d","emoji":"\u00e9\u2028"},"depth":%d}`, id, room, n, n)),
		Destinations: dests,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return id, env
}

// admin calls the admin API and decodes the JSON answer.
func (h *harness) admin(method, path string, out any) int {
	h.t.Helper()
	status, body := h.adminRaw(method, path)
	if out != nil && status == http.StatusOK {
		if err := json.Unmarshal([]byte(body), out); err != nil {
			h.t.Fatalf("%s %s: %v in %s", method, path, err, body)
		}
	}
	return status
}

// destinationInfo is Synapse's destination object.
type destinationInfo struct {
	Destination                  string  `json:"destination"`
	RetryLastTS                  int64   `json:"retry_last_ts"`
	RetryInterval                int64   `json:"retry_interval"`
	FailureTS                    *int64  `json:"failure_ts"`
	LastSuccessfulStreamOrdering *uint64 `json:"last_successful_stream_ordering"`
}

func (h *harness) destination(name string) destinationInfo {
	h.t.Helper()
	var d destinationInfo
	if code := h.admin("GET", "/_synapse/admin/v1/federation/destinations/"+name, &d); code != http.StatusOK {
		return destinationInfo{}
	}
	return d
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: "+format, append([]any{within}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// inOrder checks that, per room, the first arrival of each event follows the
// publish order, and that every expected event arrived.
func inOrder(t *testing.T, r *receiver.Receiver, want map[string][]string) {
	t.Helper()
	seen := map[string]bool{}
	got := map[string][]string{}
	for _, p := range r.PDUs() {
		if !seen[p.EventID] {
			seen[p.EventID] = true
			got[p.RoomID] = append(got[p.RoomID], p.EventID)
		}
	}
	for room, ids := range want {
		if fmt.Sprint(got[room]) != fmt.Sprint(ids) {
			t.Errorf("%s: room %s arrived as\n %v\nwant\n %v", r.ServerName(), room, got[room], ids)
		}
	}
	if v := r.Violations(); len(v) > 0 {
		t.Errorf("%s saw protocol violations: %v", r.ServerName(), v)
	}
}
