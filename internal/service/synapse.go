package service

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/internal/synapse/books"
	"github.com/fedsender/fedsender/internal/synapse/replication"
	"github.com/fedsender/fedsender/internal/telemetry"
	"github.com/fedsender/fedsender/streams"
)

// synapseFeed is the Synapse feed (synapse.database_url set): the sources
// reading Synapse's database, woken by its replication stream.
type synapseFeed struct {
	pool     *pgxpool.Pool
	cache    *redis.Client       // Synapse's external cache; nil without redis_url
	rep      *replication.Client // nil without redis_url
	feed     *synapse.Feed
	serverUp *synapse.ServerUp
	books    *books.Books // Synapse's own federation tables
	poll     time.Duration
}

// newSynapseFeed connects to Synapse's database and checks it is
// Synapse's; a failure names the setting.
func newSynapseFeed(ctx context.Context, cfg config.Config, js jetstream.JetStream, nc *nats.Conn, log *slog.Logger) (*synapseFeed, error) {
	sc := cfg.Synapse
	pool, err := pgxpool.New(ctx, sc.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("synapse.database_url: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := synapse.CheckDatabase(cctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("synapse.database_url: %w", err)
	}
	s := &synapseFeed{pool: pool, poll: sc.PollInterval}
	routing := synapse.Routing{ServerName: cfg.ServerName, Whitelist: sc.FederationDomainWhitelist}
	if sc.RedisURL != "" {
		redis.SetLogger(redisLog{log})
		opts, err := redis.ParseURL(sc.RedisURL)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("synapse.redis_url: %w", err)
		}
		// The cache is an optimisation: never wait long for it.
		opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.MaxRetries = time.Second, time.Second, time.Second, -1
		s.cache = redis.NewClient(opts)
	}
	publisher := streams.NewPublisher(js)
	sources, err := synapse.Sources(
		synapse.EventsOptions{DB: pool, Redis: s.cache, Routing: routing, InstanceName: sc.InstanceName,
			Publisher: publisher, Log: log},
		synapse.EDUDeps{DB: pool, Routing: routing, Messages: publisher, Logger: log})
	if err != nil {
		s.close()
		return nil, err
	}
	s.serverUp = synapse.NewServerUp(synapse.ServerUpOptions{DB: pool, NATS: nc, Routing: routing, Log: log})
	host, _ := os.Hostname()
	holder := host + "/" + strconv.Itoa(os.Getpid())
	s.feed = synapse.NewFeed(synapse.FeedOptions{JS: js, Sources: sources, Observers: []synapse.Observer{s.serverUp},
		Holder: holder, PollInterval: sc.PollInterval, Log: log})
	s.books = books.New(books.Options{JS: js, DB: pool, Origin: cfg.ServerName, Redis: s.cache,
		InstanceName: sc.InstanceName, Holder: holder, Log: log})
	if sc.RedisURL != "" {
		s.rep, err = replication.New(replication.Options{URL: sc.RedisURL, Channel: cfg.ServerName,
			OnRow: s.feed.OnRow, OnPosition: s.feed.OnPosition, OnState: s.feed.OnState, Log: log})
		if err != nil {
			s.close()
			return nil, fmt.Errorf("synapse.redis_url: %w", err)
		}
	}
	log.Info("synapse feed configured", "instance_name", sc.InstanceName, "sources", len(sources),
		"redis", sc.RedisURL != "", "poll_interval", sc.PollInterval)
	return s, nil
}

// start runs the feed, the bookkeeping, the server-up signal and the
// replication client.
func (s *synapseFeed) start(run func(string, func(context.Context) error)) {
	run("synapse feed", s.feed.Run)
	run("synapse books", s.books.Run)
	run("synapse server-up signal", s.serverUp.Run)
	if s.rep != nil {
		run("synapse replication", s.rep.Run)
	}
}

// degraded says, for /readyz, that the feed polls Synapse's database
// because its replication Redis is unreachable; "" otherwise.
func (s *synapseFeed) degraded() string {
	if s.rep == nil || !s.feed.Polling() {
		return ""
	}
	return fmt.Sprintf("Synapse's replication Redis (synapse.redis_url) is unreachable: polling Synapse's database every %s", s.poll)
}

// observe registers the feed's gauges: fedsender_synapse_feed_polling (1
// while the feed polls Synapse's database because replication is down or
// not configured) and fedsender_synapse_feed_active (1 on the replica that
// feeds).
func (s *synapseFeed) observe(o *observability) error {
	bit := func(b bool) int64 {
		if b {
			return 1
		}
		return 0
	}
	if err := o.observeGauge(telemetry.MetricSynapseFeedPolling,
		"1 while the Synapse feed polls Synapse's database because its replication Redis is down or not configured.", "{state}",
		func(_ context.Context, obs metric.Observer, g metric.Int64ObservableGauge) {
			obs.ObserveInt64(g, bit(s.feed.Polling()))
		}); err != nil {
		return err
	}
	return o.observeGauge(telemetry.MetricSynapseFeedActive,
		"1 on the replica whose Synapse feed holds the lease and feeds.", "{state}",
		func(_ context.Context, obs metric.Observer, g metric.Int64ObservableGauge) {
			obs.ObserveInt64(g, bit(s.feed.Active()))
		})
}

func (s *synapseFeed) close() {
	if s.cache != nil {
		_ = s.cache.Close()
	}
	s.pool.Close()
}

// redisLog routes go-redis's own messages (a connection pool failing to
// dial while Redis is down, once per attempt) to fedsender's log at debug
// level: the replication client reports the outage once, with its cause.
type redisLog struct{ log *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
