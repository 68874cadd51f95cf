package synapse

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/internal/service"
	"github.com/fedsender/fedsender/test/pki"
	"github.com/fedsender/fedsender/test/receiver"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// waitFor bounds the waits for deliveries: the fixture's few hundred PDUs
// take seconds, more on a loaded machine.
const waitFor = 2 * time.Minute

// remotes starts strict receivers for hs2 and hs3 under their recorded
// names. The names carry their ports (localhost:28482), so fedsender
// connects to those ports of localhost: the receivers listen there, on
// 127.0.0.1, with a certificate for localhost from ca. They verify the
// X-Matrix signatures with hs1's public key and name Synapse's PDUs (room
// version 10, no event_id) by their reference hash.
func remotes(t *testing.T, ca *pki.CA) (hs2, hs3 *receiver.Receiver) {
	t.Helper()
	key := synapsefixture.SigningKey(t)
	start := func(name string) *receiver.Receiver {
		_, port, _ := strings.Cut(name, ":")
		return receiver.Start(t, receiver.Options{
			Origin: synapsefixture.HS1, OriginKey: key.Public(), OriginKeyID: key.KeyID(),
			Cert: ca.MustLeaf(t, "localhost"), Addr: "127.0.0.1:" + port, ServerName: name,
			ExpectHost: name, RoomVersion: "10",
		})
	}
	return start(synapsefixture.HS2), start(synapsefixture.HS3)
}

// fedsenderConfig is fedsender as hs1's sender: hs1's server name and
// signing key, the Synapse database and Redis, and 127.0.0.0/8 allowed
// (the receivers' addresses).
func fedsenderConfig(t *testing.T, databaseURL, redisURL string) config.Config {
	t.Helper()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "signing.key")
	key, err := os.ReadFile(synapsefixture.Path("signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.ServerName = synapsefixture.HS1
	cfg.SigningKeyPath = keyPath
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.NATS.MaxStore = 1 << 30
	cfg.NATS.MaxMemory = 64 << 20
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Admin.Token = "golden-admin-token"
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Federation.IPRangeAllowlist = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.Federation.RequestTimeout = 5 * time.Second
	cfg.Queue.Partitions = 4
	cfg.Queue.CheckpointInterval = 200 * time.Millisecond
	cfg.Log.Level = "warn"
	cfg.Synapse.DatabaseURL = databaseURL
	cfg.Synapse.RedisURL = redisURL
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	return cfg
}

// started records the Synapse feed's sources that have read their
// starting position (its "source started" log records), passing every
// warning and error on to stderr.
type started struct {
	slog.Handler
	mu      *sync.Mutex
	sources map[string]int64
}

func (h started) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo
}

func (h started) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "synapse feed: source started" {
		var name string
		var pos int64
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "source":
				name = a.Value.String()
			case "position":
				pos = a.Value.Int64()
			}
			return true
		})
		h.mu.Lock()
		h.sources[name] = pos
		h.mu.Unlock()
	}
	if r.Level < slog.LevelWarn {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h started) WithAttrs(as []slog.Attr) slog.Handler {
	return started{h.Handler.WithAttrs(as), h.mu, h.sources}
}

func (h started) WithGroup(name string) slog.Handler {
	return started{h.Handler.WithGroup(name), h.mu, h.sources}
}

// fedsender is fedsender running in-process.
type fedsender struct {
	svc *service.Service
	log started
}

// waitSources waits until each of the Synapse feed's sources named has
// read its starting position.
func (f *fedsender) waitSources(t *testing.T, names ...string) {
	t.Helper()
	poll(t, func() string {
		f.log.mu.Lock()
		defer f.log.mu.Unlock()
		return fmt.Sprintf("the feed's sources %v did not all start: started %v", names, f.log.sources)
	}, func() bool {
		f.log.mu.Lock()
		defer f.log.mu.Unlock()
		for _, n := range names {
			if _, ok := f.log.sources[n]; !ok {
				return false
			}
		}
		return true
	})
}

// runFedsender runs fedsender in-process until the test ends.
func runFedsender(t *testing.T, cfg config.Config, ca *pki.CA) *fedsender {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *service.Service, 1)
	done := make(chan error, 1)
	f := &fedsender{log: started{slog.NewTextHandler(os.Stderr, nil), &sync.Mutex{}, map[string]int64{}}}
	log := slog.New(f.log)
	go func() { done <- service.Run(ctx, cfg, service.Deps{Log: log, RootCAs: ca.Pool, Ready: ready}) }()
	var svc *service.Service
	select {
	case svc = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("fedsender did not start: %v", err)
	case <-time.After(time.Minute):
		cancel()
		t.Fatal("fedsender did not start within a minute")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("fedsender stopped with an error: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("fedsender did not stop within 30s")
		}
	})
	f.svc = svc
	return f
}

// pool connects to a restored Synapse database as its owner, for the
// test's own reads and writes.
func pool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func execSQL(t *testing.T, db *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := db.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// poll waits up to waitFor for cond, failing with what() if it never holds.
func poll(t *testing.T, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s: %s", waitFor, what())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// byRoom is the event ids a receiver accepted, per room, in the order it
// accepted them.
func byRoom(r *receiver.Receiver) map[string][]string {
	out := map[string][]string{}
	for _, p := range r.PDUs() {
		out[p.RoomID] = append(out[p.RoomID], p.EventID)
	}
	return out
}

// wire is what Synapse's sender delivered to one server in the main
// recording, per room in order, each PDU named by its reference hash
// (checked against the receiving Synapse's answer).
type wire struct {
	rooms map[string][]string
	at    map[string]int64 // event id: when its transaction arrived (unix ms)
	txns  []synapsefixture.Transaction
}

func recorded(t *testing.T, file string) wire {
	t.Helper()
	w := wire{rooms: map[string][]string{}, at: map[string]int64{}}
	w.txns = synapsefixture.Transactions(t, file)
	for _, tx := range w.txns {
		for _, raw := range tx.Body.PDUs {
			id, err := receiver.EventID("10", raw)
			if err != nil {
				t.Fatalf("%s txn %s: %v", file, tx.TxnID, err)
			}
			if _, ok := tx.Response.PDUs[id]; !ok {
				t.Fatalf("%s txn %s: PDU %s is not in the answer %v", file, tx.TxnID, id, tx.Response.PDUs)
			}
			var room struct {
				RoomID string `json:"room_id"`
			}
			if err := json.Unmarshal(raw, &room); err != nil {
				t.Fatal(err)
			}
			w.rooms[room.RoomID] = append(w.rooms[room.RoomID], id)
			w.at[id] = tx.T
		}
	}
	return w
}

func count(m map[string][]string) int {
	n := 0
	for _, l := range m {
		n += len(l)
	}
	return n
}

// diff describes how got differs from want, per room, for a failure
// message.
func diff(got, want map[string][]string) string {
	var b strings.Builder
	rooms := map[string]bool{}
	for r := range got {
		rooms[r] = true
	}
	for r := range want {
		rooms[r] = true
	}
	for _, r := range slices.Sorted(maps.Keys(rooms)) {
		g, w := got[r], want[r]
		if slices.Equal(g, w) {
			continue
		}
		i := 0
		for i < len(g) && i < len(w) && g[i] == w[i] {
			i++
		}
		fmt.Fprintf(&b, "\n  %s: got %d, want %d; first difference at %d: got %s, want %s", r, len(g), len(w), i, at(g, i), at(w, i))
	}
	return b.String()
}

func at(l []string, i int) string {
	if i < len(l) {
		return l[i]
	}
	return "(end)"
}

// feedDatabase is the URL fedsender is given for Synapse's database:
// logged in as a role holding exactly the grants docs/SYNAPSE.md lists.
func feedDatabase(t *testing.T, url string) string {
	t.Helper()
	return synapsefixture.Role(t, url)
}
