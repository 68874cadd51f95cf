package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/internal/synapse/grants"
	"github.com/fedsender/fedsender/internal/synapse/replication"
	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// synapseResult is the synapse part's outcome: how fast the Synapse feed
// turns events Synapse persisted into envelopes JetStream acknowledged,
// with and without Synapse's Redis cache of joined hosts, and the delay
// from an event's commit to its envelope at a fifth of that rate, with
// Redis wake-ups.
type synapseResult struct {
	Rooms      int     `json:"rooms"`
	Members    int     `json:"member_events"`
	Servers    int     `json:"servers"`
	WriterRate float64 `json:"writer_events_per_sec"`
	Cached     drain   `json:"cached"`
	Uncached   drain   `json:"uncached"`
	LagRate    float64 `json:"lag_events_per_sec"`
	LagEvents  int     `json:"lag_events"`
	LagP50     float64 `json:"lag_p50_ms"`
	LagP99     float64 `json:"lag_p99_ms"`
	LagMax     float64 `json:"lag_max_ms"`
	LagDBMs    float64 `json:"lag_db_ms_per_event"`
	LagMissing int     `json:"lag_missing"`
	// FromRDATAP99 is the lag from each event's RDATA line instead of its
	// commit: the feed's own share, without the wait for earlier
	// transactions to commit (which the stream's order imposes).
	FromRDATAP50 float64 `json:"from_rdata_p50_ms"`
	FromRDATAP99 float64 `json:"from_rdata_p99_ms"`
	SetupSecond  float64 `json:"setup_seconds"`
}

// drain is the feed reading a backlog of events.
type drain struct {
	Events       int     `json:"events"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	DBMsPerEvent float64 `json:"db_ms_per_event"`
}

// synapseBench is the set-up of the synapse part: a Synapse-shaped
// database (the fixture's schema), Redis, NATS, and the rooms.
type synapseBench struct {
	e         *env
	pg        *pgtest.Server
	admin     *pgxpool.Pool // as Synapse, for the writer and the statistics
	feedURL   string        // as the feed's own role
	feedRole  uint32        // its oid, to tell its statements apart
	redisURL  string
	rdb       *redis.Client
	stopRedis func()
	ns        *natsServer
	w         *synapsefixture.Writer
	rooms     []*synapsefixture.Room

	mu        sync.Mutex
	seen      map[int64]time.Time // stream ordering: when its envelope was published
	announced map[int64]time.Time // stream ordering: when its RDATA was published
	counted   atomic.Int64
}

// runSynapse measures the Synapse feed: 1,000 rooms of 2 to 200 servers
// each in a database restored from the fixture's schema (hs1's, the
// Unsent dump), events written as Synapse writes them
// (synapsefixture.Writer: the rows, the external cache, RDATA on Redis in
// stream order); the feed is fedsender's own (the events source and the
// replication client), publishing into JetStream on an embedded NATS
// server, with its own PostgreSQL role so that pg_stat_statements tells
// its database time from the writer's. Delivery is not part of it: the
// other parts measure the pipeline after the envelopes.
//
//   - cached, then uncached: a backlog written while the feed is stopped,
//     then read by a new feed: events/s from its first envelope to its
//     last, and the feed's database time per event; uncached after the
//     Redis cache was flushed (the joined hosts come from the state
//     groups).
//   - lag: events written at a fifth of the cached rate, spread over the
//     rooms by 8 writers, the feed woken by RDATA; the time from each
//     event's commit to its envelope published (p50, p99, max).
func runSynapse(ctx context.Context, e *env) (*synapseResult, error) {
	start := time.Now()
	b, err := newSynapseBench(ctx, e)
	if err != nil {
		return nil, err
	}
	defer b.close()
	res := &synapseResult{Rooms: len(b.rooms), Servers: 200}
	for _, r := range b.rooms {
		res.Members += len(r.Hosts)
	}
	res.SetupSecond = time.Since(start).Seconds()
	e.progress("synapse: %d rooms, %d servers, set up in %.0fs", res.Rooms, res.Servers, res.SetupSecond)

	backlog := 20000
	if e.p.short {
		backlog = 3000
	}
	var rate float64
	if res.Cached, rate, err = b.drain(ctx, backlog, false); err != nil {
		return nil, fmt.Errorf("cached drain: %w", err)
	}
	res.WriterRate = rate
	e.progress("synapse: cached: %d events in %.1fs, %.0f events/s, %.3f ms database per event (writer %.0f/s)",
		res.Cached.Events, res.Cached.Seconds, res.Cached.EventsPerSec, res.Cached.DBMsPerEvent, rate)
	if res.Uncached, _, err = b.drain(ctx, backlog/2, true); err != nil {
		return nil, fmt.Errorf("uncached drain: %w", err)
	}
	e.progress("synapse: uncached: %d events in %.1fs, %.0f events/s, %.3f ms database per event",
		res.Uncached.Events, res.Uncached.Seconds, res.Uncached.EventsPerSec, res.Uncached.DBMsPerEvent)
	if err := b.w.CacheJoinedHosts(ctx, b.rooms); err != nil {
		return nil, err
	}
	if err := b.lag(ctx, res); err != nil {
		return nil, fmt.Errorf("lag: %w", err)
	}
	e.progress("synapse: lag at %.0f events/s: p50 %.1f ms, p99 %.1f ms, max %.1f ms; from RDATA p50 %.1f ms, p99 %.1f ms",
		res.LagRate, res.LagP50, res.LagP99, res.LagMax, res.FromRDATAP50, res.FromRDATAP99)
	return res, nil
}

func newSynapseBench(ctx context.Context, e *env) (_ *synapseBench, err error) {
	b := &synapseBench{e: e, seen: map[int64]time.Time{}, announced: map[int64]time.Time{}}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if b.pg, err = pgtest.Start(); err != nil {
		return nil, err
	}
	if err := b.statementStatistics(ctx); err != nil {
		return nil, err
	}
	url, err := synapsefixture.Restore(ctx, b.pg.URL, "synapse_bench", synapsefixture.Unsent)
	if err != nil {
		return nil, err
	}
	if b.admin, err = pgxpool.New(ctx, url+" pool_max_conns=16"); err != nil {
		return nil, err
	}
	if b.feedURL, b.feedRole, err = b.feedLogin(ctx, url); err != nil {
		return nil, err
	}
	redisDir := filepath.Join(e.root, "synapse-redis")
	if err := os.MkdirAll(redisDir, 0o700); err != nil {
		return nil, err
	}
	if b.redisURL, b.stopRedis, err = synapsefixture.StartRedis(redisDir); err != nil {
		return nil, err
	}
	opts, err := redis.ParseURL(b.redisURL)
	if err != nil {
		return nil, err
	}
	b.rdb = redis.NewClient(opts)
	if b.ns, err = startNATS(filepath.Join(e.root, "synapse-nats")); err != nil {
		return nil, err
	}
	if err := streams.Ensure(ctx, b.ns.js, streams.Options{}); err != nil {
		return nil, err
	}
	if _, err := b.ns.nc.Subscribe(streams.PDUSubject, b.observe); err != nil {
		return nil, err
	}
	key, err := xmatrix.LoadKeyFile(synapsefixture.Path("signing.key"))
	if err != nil {
		return nil, err
	}
	if b.w, err = synapsefixture.NewWriter(ctx, synapsefixture.WriterDeps{Pool: b.admin, Redis: b.rdb,
		ServerName: synapsefixture.HS1, Key: key, OnAnnounce: b.announce}); err != nil {
		return nil, err
	}
	rooms := 1000
	if e.p.short {
		rooms = 100
	}
	if err := b.createRooms(ctx, rooms, 200); err != nil {
		return nil, err
	}
	// As autovacuum would soon after such a load: the planner's
	// statistics of the tables the rooms filled.
	if _, err := b.admin.Exec(ctx, "ANALYZE"); err != nil {
		return nil, err
	}
	// The feed starts after the rooms' creation, as a sender put in place
	// of another one does.
	_, err = b.admin.Exec(ctx, `DELETE FROM federation_stream_position;
		INSERT INTO federation_stream_position (type, stream_id, instance_name)
		SELECT 'events', max(stream_ordering), 'fedsender' FROM events
		UNION ALL SELECT 'federation', -1, 'fedsender'`)
	return b, err
}

func (b *synapseBench) close() {
	if b.rdb != nil {
		b.rdb.Close()
	}
	if b.stopRedis != nil {
		b.stopRedis()
	}
	if b.ns != nil {
		b.ns.close()
	}
	if b.admin != nil {
		b.admin.Close()
	}
	if b.pg != nil {
		b.pg.Close()
	}
}

// statementStatistics turns pg_stat_statements on (a restart of the
// throwaway server).
func (b *synapseBench) statementStatistics(ctx context.Context) error {
	pool, err := pgxpool.New(ctx, b.pg.URL)
	if err != nil {
		return err
	}
	_, err = pool.Exec(ctx, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
	pool.Close()
	if err != nil {
		return err
	}
	if err := b.pg.Stop(); err != nil {
		return err
	}
	return b.pg.Restart()
}

// feedLogin creates the feed's role with the grants fedsender documents
// (grants.Tables),
// and returns its connection string and oid.
func (b *synapseBench) feedLogin(ctx context.Context, url string) (string, uint32, error) {
	stmts := append([]string{"CREATE EXTENSION pg_stat_statements", "CREATE ROLE fedsender_feed LOGIN"},
		grants.Statements("public", "fedsender_feed")...)
	for _, s := range stmts {
		if _, err := b.admin.Exec(ctx, s); err != nil {
			return "", 0, fmt.Errorf("%s: %w", s, err)
		}
	}
	var oid uint32
	if err := b.admin.QueryRow(ctx, "SELECT oid FROM pg_roles WHERE rolname = 'fedsender_feed'").Scan(&oid); err != nil {
		return "", 0, err
	}
	var fields []string
	for _, f := range strings.Fields(url) {
		if !strings.HasPrefix(f, "user=") {
			fields = append(fields, f)
		}
	}
	return strings.Join(append(fields, "user=fedsender_feed"), " "), oid, nil
}

// createRooms makes n rooms; room i has 2 + i*(maxServers-2)/(n-1)
// servers (hs1 and that many minus one of a pool of maxServers-1 remote
// servers, picked at random), one joined member each.
func (b *synapseBench) createRooms(ctx context.Context, n, maxServers int) error {
	r := rand.New(rand.NewPCG(11, 12))
	pool := make([]string, maxServers-1)
	for i := range pool {
		pool[i] = fmt.Sprintf("s%03d.bench.example", i)
	}
	var specs []synapsefixture.RoomSpec
	for i := range n {
		servers := 2 + i*(maxServers-2)/(n-1)
		r.Shuffle(len(pool), func(a, c int) { pool[a], pool[c] = pool[c], pool[a] })
		spec := synapsefixture.RoomSpec{ID: fmt.Sprintf("!bench%04d:%s", i, synapsefixture.HS1), Creator: "@alice:" + synapsefixture.HS1}
		for _, s := range pool[:servers-1] {
			spec.Members = append(spec.Members, "@u:"+s)
		}
		specs = append(specs, spec)
		if len(specs) == 50 || i == n-1 {
			rooms, err := b.w.CreateRooms(ctx, specs)
			if err != nil {
				return err
			}
			b.rooms = append(b.rooms, rooms...)
			specs = nil
		}
	}
	return nil
}

// announce records when each event's RDATA line was published.
func (b *synapseBench) announce(so int64, at time.Time) {
	b.mu.Lock()
	b.announced[so] = at
	b.mu.Unlock()
}

// observe records when each envelope was published.
func (b *synapseBench) observe(m *nats.Msg) {
	at := time.Now()
	so, err := strconv.ParseInt(m.Header.Get(synapse.HeaderStreamOrdering), 10, 64)
	if err != nil {
		return
	}
	b.mu.Lock()
	if _, dup := b.seen[so]; !dup {
		b.seen[so] = at
		b.counted.Add(1)
	}
	b.mu.Unlock()
}

// runFeed starts a feed (the events source and the replication client)
// as fedsender's service does, and waits until it holds its lease and
// listens on Redis; it runs until the returned stop is called.
func (b *synapseBench) runFeed(ctx context.Context) (stop func() error, err error) {
	pool, err := pgxpool.New(ctx, b.feedURL)
	if err != nil {
		return nil, err
	}
	opts, err := redis.ParseURL(b.redisURL)
	if err != nil {
		pool.Close()
		return nil, err
	}
	rdb := redis.NewClient(opts)
	events := synapse.NewEvents(synapse.EventsOptions{DB: pool, Redis: rdb, Routing: synapse.Routing{ServerName: synapsefixture.HS1},
		InstanceName: "fedsender", Publisher: streams.NewPublisher(b.ns.js), Log: discardLogger})
	feed := synapse.NewFeed(synapse.FeedOptions{JS: b.ns.js, Sources: []synapse.Source{events}, Holder: "bench",
		PollInterval: time.Second, Log: discardLogger})
	rep, err := replication.New(replication.Options{URL: b.redisURL, Channel: synapsefixture.HS1,
		OnRow: feed.OnRow, OnPosition: feed.OnPosition, OnState: feed.OnState, Log: discardLogger})
	if err != nil {
		pool.Close()
		rdb.Close()
		return nil, err
	}
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Go(func() { errs[0] = feed.Run(fctx) })
	wg.Go(func() { errs[1] = rep.Run(fctx) })
	stop = func() error {
		cancel()
		wg.Wait()
		pool.Close()
		rdb.Close()
		return errors.Join(errs...)
	}
	deadline := time.Now().Add(time.Minute)
	for !feed.Active() || !rep.Up() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, errors.Join(errors.New("the feed is not active and listening within a minute"), stop())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return stop, nil
}

// feedDBMs is the feed role's statement time so far, in ms.
func (b *synapseBench) feedDBMs(ctx context.Context) (float64, error) {
	var ms float64
	err := b.admin.QueryRow(ctx, "SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements WHERE userid = $1", b.feedRole).Scan(&ms)
	return ms, err
}

// write persists n messages on 8 writers, over the rooms at random, and
// returns them in stream order.
func (b *synapseBench) write(ctx context.Context, n int, pace time.Duration) ([]synapsefixture.Persisted, error) {
	jobs := make(chan int)
	out := make(chan synapsefixture.Persisted, n)
	var wg sync.WaitGroup
	var first error
	var once sync.Once
	for range 8 {
		wg.Go(func() {
			for i := range jobs {
				ev, err := b.w.Message(ctx, b.rooms[i%len(b.rooms)], "bench message "+strconv.Itoa(i))
				if err != nil {
					once.Do(func() { first = err })
					continue
				}
				out <- ev
			}
		})
	}
	r := rand.New(rand.NewPCG(uint64(n), 13))
	next := time.Now()
	for range n {
		if pace > 0 {
			next = next.Add(pace)
			time.Sleep(time.Until(next))
		}
		select {
		case jobs <- r.IntN(len(b.rooms)):
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	close(out)
	var evs []synapsefixture.Persisted
	for ev := range out {
		evs = append(evs, ev)
	}
	slices.SortFunc(evs, func(a, c synapsefixture.Persisted) int { return int(a.StreamOrdering - c.StreamOrdering) })
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return evs, first
}

// waitSeen waits until every event's envelope was seen.
func (b *synapseBench) waitSeen(ctx context.Context, evs []synapsefixture.Persisted, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		missing := 0
		b.mu.Lock()
		for _, ev := range evs {
			if _, ok := b.seen[ev.StreamOrdering]; !ok {
				missing++
			}
		}
		b.mu.Unlock()
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d envelopes not published within %v", missing, len(evs), within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// drain writes a backlog with the feed stopped, then runs a new feed over
// it (after flushing Redis, when uncached).
func (b *synapseBench) drain(ctx context.Context, n int, uncached bool) (drain, float64, error) {
	t0 := time.Now()
	evs, err := b.write(ctx, n, 0)
	if err != nil {
		return drain{}, 0, err
	}
	writerRate := float64(len(evs)) / time.Since(t0).Seconds()
	if uncached {
		if err := b.rdb.FlushDB(ctx).Err(); err != nil {
			return drain{}, 0, err
		}
	}
	before, err := b.feedDBMs(ctx)
	if err != nil {
		return drain{}, 0, err
	}
	stop, err := b.runFeed(ctx)
	if err != nil {
		return drain{}, 0, err
	}
	werr := b.waitSeen(ctx, evs, 5*time.Minute)
	if err := errors.Join(werr, stop()); err != nil {
		return drain{}, 0, err
	}
	after, err := b.feedDBMs(ctx)
	if err != nil {
		return drain{}, 0, err
	}
	b.mu.Lock()
	firstAt, lastAt := b.seen[evs[0].StreamOrdering], b.seen[evs[0].StreamOrdering]
	for _, ev := range evs {
		at := b.seen[ev.StreamOrdering]
		if at.Before(firstAt) {
			firstAt = at
		}
		if at.After(lastAt) {
			lastAt = at
		}
	}
	b.mu.Unlock()
	secs := lastAt.Sub(firstAt).Seconds()
	return drain{Events: len(evs), Seconds: secs, EventsPerSec: float64(len(evs)-1) / secs,
		DBMsPerEvent: (after - before) / float64(len(evs))}, writerRate, nil
}

// lag writes at a fifth of the cached rate with the feed running, woken
// by RDATA, and measures each event's commit to its envelope.
func (b *synapseBench) lag(ctx context.Context, res *synapseResult) error {
	res.LagRate = b.e.p.latencyPct * res.Cached.EventsPerSec
	d := 20 * time.Second
	if b.e.p.short {
		d = 5 * time.Second
	}
	n := int(res.LagRate * d.Seconds())
	stop, err := b.runFeed(ctx)
	if err != nil {
		return err
	}
	before, err := b.feedDBMs(ctx)
	if err != nil {
		stop()
		return err
	}
	evs, err := b.write(ctx, n, time.Duration(float64(time.Second)/res.LagRate))
	if err == nil {
		err = b.waitSeen(ctx, evs, time.Minute)
	}
	if err := errors.Join(err, stop()); err != nil {
		return err
	}
	after, err := b.feedDBMs(ctx)
	if err != nil {
		return err
	}
	var lags, fromRDATA []int64
	b.mu.Lock()
	for _, ev := range evs {
		if at, ok := b.seen[ev.StreamOrdering]; ok {
			lags = append(lags, int64(at.Sub(ev.Committed)))
			fromRDATA = append(fromRDATA, int64(at.Sub(b.announced[ev.StreamOrdering])))
		} else {
			res.LagMissing++
		}
	}
	b.mu.Unlock()
	slices.Sort(lags)
	slices.Sort(fromRDATA)
	res.FromRDATAP50, res.FromRDATAP99 = percentile(fromRDATA, 0.50), percentile(fromRDATA, 0.99)
	res.LagEvents = len(evs)
	res.LagP50, res.LagP99, res.LagMax = percentile(lags, 0.50), percentile(lags, 0.99), percentile(lags, 1)
	res.LagDBMs = (after - before) / float64(len(evs))
	return nil
}

func (r *results) synapseRows(row func(name, value, lo, hi, setup string)) {
	sy := r.synapse
	if sy == nil {
		if slices.Contains(r.parts, "synapse") {
			row("synapse feed events/s", "-", "", "", skipped(r, "synapse"))
		}
		return
	}
	setup := fmt.Sprintf("%d rooms of 2-200 of %d servers (%d members), Synapse's schema; backlog read by a new feed, first to last envelope", sy.Rooms, sy.Servers, sy.Members)
	row("synapse feed events/s", f0(sy.Cached.EventsPerSec), "", "", setup+"; target ≥ 2000")
	row("  database ms / event", f2(sy.Cached.DBMsPerEvent), "", "", fmt.Sprintf("the feed role's statements (pg_stat_statements) over %d events", sy.Cached.Events))
	row("  without the Redis cache", f0(sy.Uncached.EventsPerSec), "", "", fmt.Sprintf("events/s, %.2f ms database per event: joined hosts from the state groups", sy.Uncached.DBMsPerEvent))
	row("  writer events/s", f0(sy.WriterRate), "", "", "Synapse's side here: 8 writers, a transaction per event")
	row("synapse feed lag p99 ms", f1(sy.LagP99), "", "", fmt.Sprintf("commit → envelope published, %.0f events/s (%.0f%% of the rate) with RDATA wake-ups, %d events; target < 50",
		sy.LagRate, 100*r.params.latencyPct, sy.LagEvents))
	row("  lag p50 / max ms", f1(sy.LagP50)+" / "+f1(sy.LagMax), "", "", fmt.Sprintf("%.2f ms database per event; %d missing", sy.LagDBMs, sy.LagMissing))
	row("  from RDATA p50 / p99 ms", f1(sy.FromRDATAP50)+" / "+f1(sy.FromRDATAP99), "", "",
		"RDATA line → envelope: the feed's share, without the wait for earlier commits that the stream's order imposes")
}
