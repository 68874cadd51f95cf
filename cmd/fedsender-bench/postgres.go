package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

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
}

// runPostgres preloads adminDests destinations (as the admin part does),
// projects them into PostgreSQL (FEDSENDER_BENCH_POSTGRES_URL, or a
// throwaway server from the installed binaries), and times Reader.Page:
// pages of 100 at random offsets, each order in both directions. It times
// the SQL read model itself, without the HTTP layer the admin part adds.
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
	schema := fmt.Sprintf("bench_%d", time.Now().UnixNano())
	pool, err := pgprojection.Connect(ctx, url, schema)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	defer pool.Exec(context.WithoutCancel(ctx), "DROP SCHEMA "+schema+" CASCADE") //nolint:errcheck // best effort
	if _, err := pgprojection.Migrate(ctx, pool, schema); err != nil {
		return nil, err
	}

	proj := pgprojection.NewProjector(pgprojection.ProjectorOptions{JS: s.js, Pool: pool, Log: errLogger})
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- proj.Run(pctx) }()
	deadline := time.Now().Add(10 * time.Minute)
	for !proj.Synced() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			<-done
			return nil, errors.New("the projector did not catch up within 10 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	stop()
	if err := <-done; err != nil {
		return nil, err
	}
	res := &postgresResult{Destinations: n, Events: n, Seconds: elapsed.Seconds(), EventsPerSec: float64(n) / elapsed.Seconds()}
	e.progress("postgres: %d events projected in %.1fs", n, elapsed.Seconds())

	rd := pgprojection.NewReader(pool, nil, errLogger)
	if got := rd.Page(projection.Query{Limit: 1}).Total; got != n {
		return nil, fmt.Errorf("PostgreSQL holds %d destinations, want %d", got, n)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, o := range projection.Orders() {
		for _, back := range []bool{false, true} {
			var ds []time.Duration
			for range e.p.adminRequests {
				q := projection.Query{Order: o, Backwards: back, From: int64(r.IntN(n)), Limit: 100}
				t0 := time.Now()
				rd.Page(q)
				ds = append(ds, time.Since(t0))
			}
			if !rd.Ready() {
				return nil, errors.New("a list query failed")
			}
			name := o.String() + " f"
			if back {
				name = o.String() + " b"
			}
			l := listLatency{OrderBy: name, latencySummary: summarize(ds)}
			res.Orders = append(res.Orders, l)
			res.WorstP99 = max(res.WorstP99, l.P99)
		}
	}
	return res, nil
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
	row("postgres list p99 ms", f2(pg.WorstP99), "", "", fmt.Sprintf("Reader.Page (count + page of 100 at random offsets), worst of %d order/dir, %d destinations", len(pg.Orders), pg.Destinations))
	for _, l := range pg.Orders {
		row("  "+l.OrderBy, f2(l.P99), f2(l.P50), f2(l.Max), "p99 (p50, max)")
	}
}
