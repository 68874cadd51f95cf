package service_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/service"
	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// synapseConfig is a fedsender sending as the recording's hs1, with the
// admin and metrics listeners on free ports.
func synapseConfig(t *testing.T, databaseURL string) config.Config {
	t.Helper()
	key, err := xmatrix.GenerateKey("test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := config.Default()
	cfg.ServerName = synapsefixture.HS1
	cfg.SigningKeyPath = filepath.Join(dir, "signing.key")
	if err := os.WriteFile(cfg.SigningKeyPath, key.MarshalKeyFile(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Queue.Partitions = 4
	cfg.Synapse.DatabaseURL = databaseURL
	cfg.Synapse.PollInterval = 200 * time.Millisecond
	return cfg
}

// TestSynapseStartErrorsNameTheKey: `fedsender run` refuses to start
// against an unreachable database or one that is not Synapse's, naming
// synapse.database_url.
func TestSynapseStartErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  string
		want string
	}{
		{"unreachable", "postgres://fedsender@127.0.0.1:1/synapse?connect_timeout=2", "synapse.database_url: cannot connect"},
		{"not Synapse's", pgtest.URL(t), "synapse.database_url: not a Synapse database: it has no table events"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := service.Run(ctx, synapseConfig(t, tc.url), service.Deps{Log: slog.New(slog.DiscardHandler)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestSynapseFeedInRun: with synapse.database_url and redis_url set,
// `fedsender run` feeds what the recording without a sender left owed;
// /readyz says "ok", and with Redis down "ok, degraded" naming
// synapse.redis_url, as fedsender_synapse_feed_polling does.
func TestSynapseFeedInRun(t *testing.T) {
	redisURL := synapsefixture.Redis(t)
	dbURL := synapsefixture.Database(t, synapsefixture.Unsent)
	cfg := synapseConfig(t, synapsefixture.Role(t, dbURL))
	cfg.Synapse.RedisURL = redisURL
	svc := runService(t, cfg)

	readyz := func() (int, string) {
		resp, err := http.Get("http://" + svc.AdminAddr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	gauge := func(name string) string {
		resp, err := http.Get("http://" + svc.MetricsAddr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
				return line[strings.LastIndex(line, " ")+1:]
			}
		}
		return ""
	}
	projectiontest.Eventually(t, 30*time.Second, func() bool { code, body := readyz(); return code == 200 && body == "ok" },
		"/readyz to answer 200 ok")
	projectiontest.Eventually(t, 30*time.Second, func() bool {
		return gauge("fedsender_synapse_feed_polling") == "0" && gauge("fedsender_synapse_feed_active") == "1"
	}, "the gauges to say: active, not polling")

	nc, err := nats.Connect(svc.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	projectiontest.Eventually(t, time.Minute, func() bool {
		return pduCount(t, js) == owedPDUs
	}, "the %d owed PDUs to be published (%d are)", owedPDUs, pduCount(t, js))

	opts, _ := redis.ParseURL(redisURL)
	rc := redis.NewClient(opts)
	defer rc.Close()
	_ = rc.Shutdown(context.Background()).Err()
	projectiontest.Eventually(t, 30*time.Second, func() bool {
		code, body := readyz()
		return code == 200 && strings.HasPrefix(body, "ok, degraded: ") && strings.Contains(body, "synapse.redis_url")
	}, "/readyz to say the feed polls")
	if got := gauge("fedsender_synapse_feed_polling"); got != "1" {
		t.Errorf("fedsender_synapse_feed_polling = %q with Redis down, want 1", got)
	}

	// Polling feeds, without Synapse's cache on the unreachable Redis.
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var r2 string
	if err := pool.QueryRow(context.Background(), "SELECT room_id FROM rooms WHERE room_id LIKE '!hQsg%'").Scan(&r2); err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		for range 3 {
			if _, _, err := synapsefixture.InsertEvent(context.Background(), tx, synapsefixture.Event{RoomID: r2,
				Type: "m.room.message", Sender: "@alice:localhost:28481", Content: map[string]any{"body": "polled"}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	projectiontest.Eventually(t, 30*time.Second, func() bool { return pduCount(t, js) == owedPDUs+3 },
		"the 3 events sent while Redis is down to be published")
}

// owedPDUs is how many PDU envelopes the recording without a sender owes:
// one per event, R1 55, R2 33, R3 8, R4 18 (the synapse package's
// TestEventsOwedWithoutSender checks them per destination).
const owedPDUs = 114

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

// runService runs fedsender with cfg until the test ends, and returns it
// once it is ready.
func runService(t *testing.T, cfg config.Config) *service.Service {
	t.Helper()
	ready := make(chan *service.Service, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, cfg, service.Deps{Log: slog.New(slog.DiscardHandler), Ready: ready})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case svc := <-ready:
		return svc
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("fedsender did not start within a minute")
	}
	return nil
}
