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
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/projection/pgprojection"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
)

// postgresResult is the postgres part's outcome: how fast the projector
// fills PostgreSQL from the event log, and the list latency of its reader.
type postgresResult struct {
	Destinations int     `json:"destinations"`
	Events       int     `json:"events"`
	Seconds      float64 `json:"projector_seconds"`
	EventsPerSec float64 `json:"projector_events_per_sec"`
	Orders       []listLatency
	WorstP99     float64 `json:"worst_p99_ms"`
	// Search is searches for a random number below 1000; Updated is list
	// pages after a hundredth of the rows changed since the last VACUUM.
	Search  listLatency `json:"search"`
	Updated listLatency `json:"updated"`
	Changed int64       `json:"updated_rows"`
	// Load is the pipeline's load with PostgreSQL on, and the rooms
	// projector on backlogs.
	Load *pgLoadResult `json:"load"`
}

// runPostgres preloads adminDests destinations (as the admin part does),
// projects them into PostgreSQL (FEDSENDER_BENCH_POSTGRES_URL, or a
// throwaway server from the installed binaries), runs VACUUM ANALYZE as
// autovacuum would within a minute of such a load, and times Reader.Page:
// pages of 100 at random offsets, each order in both directions; searches;
// and pages again after a hundredth of the rows changed (just under the
// autovacuum threshold of migrations/0003_destinations_autovacuum.sql). It
// times the SQL read model itself, without the HTTP layer the admin part
// adds.
func runPostgres(ctx context.Context, e *env) (*postgresResult, error) {
	n := e.p.adminDests
	url := os.Getenv("FEDSENDER_BENCH_POSTGRES_URL")
	if url == "" {
		srv, err := pgtest.Start()
		if err != nil {
			return nil, err
		}
		defer srv.Close()
		url = srv.URL
	}
	dir := filepath.Join(e.root, "postgres")
	if err := preloadStates(ctx, dir, n, 64); err != nil {
		return nil, err
	}
	s, err := startNATS(filepath.Join(dir, "nats"))
	if err != nil {
		return nil, err
	}
	defer s.close()
	pool, _, drop, err := benchSchema(ctx, url, "bench")
	if err != nil {
		return nil, err
	}
	defer drop()
	elapsed, err := project(ctx, s.js, pool)
	if err != nil {
		return nil, err
	}
	res := &postgresResult{Destinations: n, Events: n, Seconds: elapsed.Seconds(), EventsPerSec: float64(n) / elapsed.Seconds()}
	e.progress("postgres: %d events projected in %.1fs", n, elapsed.Seconds())
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE destinations"); err != nil {
		return nil, err
	}

	rd := pgprojection.NewReader(pool, nil, errLogger)
	if got := rd.Page(projection.Query{Limit: 1}).Total; got != n {
		return nil, fmt.Errorf("PostgreSQL holds %d destinations, want %d", got, n)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, o := range projection.Orders() {
		for _, back := range []bool{false, true} {
			name := o.String() + " f"
			if back {
				name = o.String() + " b"
			}
			l, err := timePages(rd, name, e.p.adminRequests, func(int) projection.Query {
				return projection.Query{Order: o, Backwards: back, From: int64(r.IntN(n)), Limit: 100}
			})
			if err != nil {
				return nil, err
			}
			res.Orders = append(res.Orders, l)
			res.WorstP99 = max(res.WorstP99, l.P99)
		}
	}
	orders := projection.Orders()
	res.Search, err = timePages(rd, "destination=<search>", e.p.adminRequests, func(i int) projection.Query {
		return projection.Query{Order: orders[i%len(orders)], Search: strconv.Itoa(r.IntN(1000)), Limit: 100}
	})
	if err != nil {
		return nil, err
	}
	// Every row whose hash ends in 00 (one in a hundred, on pages all over
	// the table) changes, as a failure or a new stream ordering would.
	tag, err := pool.Exec(ctx, "UPDATE destinations SET retry_last_ts = retry_last_ts + 1 WHERE hashtext(destination) % 100 = 0")
	if err != nil {
		return nil, err
	}
	res.Changed = tag.RowsAffected()
	res.Updated, err = timePages(rd, "after updates", e.p.adminRequests, func(i int) projection.Query {
		return projection.Query{Order: orders[i/2%len(orders)], Backwards: i%2 == 1, From: int64(r.IntN(n)), Limit: 100}
	})
	if err != nil {
		return nil, err
	}
	res.Load, err = runPGLoad(ctx, e, url)
	return res, err
}

// benchSchema connects to a new schema of url named after prefix and
// migrates it; drop removes the schema and closes the pool.
func benchSchema(ctx context.Context, url, prefix string) (pool *pgxpool.Pool, schema string, drop func(), err error) {
	schema = fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano())
	if pool, err = pgprojection.Connect(ctx, url, schema); err != nil {
		return nil, "", nil, err
	}
	drop = func() {
		pool.Exec(context.WithoutCancel(ctx), "DROP SCHEMA "+schema+" CASCADE") //nolint:errcheck // best effort
		pool.Close()
	}
	if _, err := pgprojection.Migrate(ctx, pool, schema); err != nil {
		drop()
		return nil, "", nil, err
	}
	return pool, schema, drop, nil
}

// project runs a projector on js's streams into pool until it is synced,
// and returns how long it took.
func project(ctx context.Context, js jetstream.JetStream, pool *pgxpool.Pool) (time.Duration, error) {
	proj := pgprojection.NewProjector(pgprojection.ProjectorOptions{JS: js, Pool: pool, Log: errLogger})
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- proj.Run(pctx) }()
	deadline := time.Now().Add(10 * time.Minute)
	for !proj.Synced() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			<-done
			return 0, errors.New("the projector did not catch up within 10 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	stop()
	return elapsed, <-done
}

// timePages times count pages of rd, the i-th asking query(i).
func timePages(rd *pgprojection.Reader, name string, count int, query func(i int) projection.Query) (listLatency, error) {
	ds := make([]time.Duration, 0, count)
	for i := range count {
		q := query(i)
		t0 := time.Now()
		rd.Page(q)
		ds = append(ds, time.Since(t0))
	}
	if !rd.Ready() {
		return listLatency{}, fmt.Errorf("postgres: a %s query failed", name)
	}
	return listLatency{OrderBy: name, latencySummary: summarize(ds)}, nil
}

// postgresRows prints the postgres part.
func (r *results) postgresRows(row func(name, value, lo, hi, setup string)) {
	pg := r.postgres
	if pg == nil {
		if slices.Contains(r.parts, "postgres") {
			row("postgres projector events/s", "-", "", "", skipped(r, "postgres"))
		}
		return
	}
	row("postgres projector events/s", f0(pg.EventsPerSec), "", "", fmt.Sprintf("%d destination events into an empty schema in %.1fs (batches of 500, one transaction each)", pg.Events, pg.Seconds))
	row("postgres list p99 ms", f2(pg.WorstP99), "", "", fmt.Sprintf("Reader.Page (total + page of 100 at random offsets) after VACUUM ANALYZE, worst of %d order/dir, %d destinations", len(pg.Orders), pg.Destinations))
	for _, l := range pg.Orders {
		row("  "+l.OrderBy, f2(l.P99), f2(l.P50), f2(l.Max), "p99 (p50, max)")
	}
	row("  "+pg.Search.OrderBy, f2(pg.Search.P99), f2(pg.Search.P50), f2(pg.Search.Max),
		fmt.Sprintf("%d searches for a random number below 1000 (never asked before), order_by rotated", pg.Search.Requests))
	row("  "+pg.Updated.OrderBy, f2(pg.Updated.P99), f2(pg.Updated.P50), f2(pg.Updated.Max),
		fmt.Sprintf("%d pages, every order/dir, after %d rows changed since the VACUUM (just under autovacuum's threshold)", pg.Updated.Requests, pg.Changed))
}
