package pgprojection_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/projection/pgprojection"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// connect opens a pool on a fresh, migrated schema of url.
func connect(t *testing.T, url string) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := t.Context()
	schema := pgtest.Schema(t, url)
	pool, err := pgprojection.Connect(ctx, url, schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pgprojection.Migrate(ctx, pool, schema); err != nil {
		t.Fatal(err)
	}
	return pool, schema
}

// eventLog appends events, remembering each destination's last sequence.
type eventLog struct {
	store *eventlog.Store
	last  map[string]uint64
}

func newEventLog(t *testing.T, js jetstream.JetStream) *eventLog {
	t.Helper()
	store, err := eventlog.Open(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	return &eventLog{store: store, last: map[string]uint64{}}
}

// append writes one event per state.
func (l *eventLog) append(t *testing.T, states []destination.State) {
	t.Helper()
	for _, s := range states {
		ev := destination.Event{Type: destination.Failed, At: 1, State: s}
		seq, err := l.store.Append(t.Context(), streams.Partition(s.Destination, 8), ev, l.last[s.Destination])
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		l.last[s.Destination] = seq
	}
}

// appendStates writes one event per state to a fresh event log.
func appendStates(t *testing.T, js jetstream.JetStream, states []destination.State) {
	t.Helper()
	newEventLog(t, js).append(t, states)
}

// runProjector runs a projector until the test ends.
func runProjector(t *testing.T, js jetstream.JetStream, pool *pgxpool.Pool) *pgprojection.Projector {
	t.Helper()
	p := pgprojection.NewProjector(pgprojection.ProjectorOptions{JS: js, Pool: pool, MaxBackoff: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context ending")
		}
	})
	return p
}

// TestContract: the PostgreSQL read model answers every page and Get as
// the reference does.
func TestContract(t *testing.T) {
	url := pgtest.URL(t)
	projectiontest.Run(t, func(t *testing.T, states []destination.State) projectiontest.Reader {
		_, js, _ := projectiontest.JetStream(t)
		pool, _ := connect(t, url)
		appendStates(t, js, states)
		p := runProjector(t, js, pool)
		r := pgprojection.NewReader(pool, p, nil)
		projectiontest.Eventually(t, 10*time.Second, p.Synced, "projector not synced")
		return r
	})
}

// dump returns every row of the destinations table, as text.
func dump(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT concat_ws('|', destination, retry_last_ts, retry_interval,
		failure_ts, last_successful_stream_ordering, catching_up, event_seq) FROM destinations ORDER BY destination`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReplayIsIdempotent: reading the whole stream a second time (a new
// durable consumer after its deletion, the checkpoint kept) leaves every
// row as it was, and older events never overwrite newer ones.
func TestReplayIsIdempotent(t *testing.T) {
	url := pgtest.URL(t)
	_, js, _ := projectiontest.JetStream(t)
	pool, _ := connect(t, url)
	states := projectiontest.Generate(200, 7)
	log := newEventLog(t, js)
	log.append(t, states)
	// A second, newer event for some: the replay must keep the newest.
	newer := slices.Clone(states[:20])
	for i := range newer {
		newer[i].RetryLastTS, newer[i].RetryInterval, newer[i].FailureTS = 0, 0, 0
		newer[i].Offset += 100
	}
	log.append(t, newer)
	want := append(slices.Clone(newer), states[20:]...)

	project := func() []string {
		ctx, cancel := context.WithCancel(t.Context())
		p := pgprojection.NewProjector(pgprojection.ProjectorOptions{JS: js, Pool: pool})
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		projectiontest.Eventually(t, 10*time.Second, p.Synced, "projector not synced")
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		return dump(t, pool)
	}
	first := project()
	projectiontest.Check(t, pgprojection.NewReader(pool, nil, nil), want)
	if err := js.DeleteConsumer(t.Context(), streams.EventStream, pgprojection.ConsumerName); err != nil {
		t.Fatal(err)
	}
	second := project()
	if !slices.Equal(first, second) {
		t.Errorf("replay changed the rows:\nfirst  %v\nsecond %v", first, second)
	}
	if len(first) != len(want) {
		t.Errorf("%d rows, want %d", len(first), len(want))
	}
}

// TestConcurrentMigrations: three connections migrating at once apply each
// migration exactly once between them.
func TestConcurrentMigrations(t *testing.T) {
	url := pgtest.URL(t)
	schema := pgtest.Schema(t, url)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		applied []int
		errs    []error
	)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pool, err := pgxpool.New(t.Context(), url)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer pool.Close()
			got, err := pgprojection.Migrate(t.Context(), pool, schema)
			mu.Lock()
			defer mu.Unlock()
			applied = append(applied, got...)
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("migrations did not finish within 30s")
	}
	if len(errs) > 0 {
		t.Fatalf("migrate: %v", errs)
	}
	if want := []int{1}; !slices.Equal(applied, want) {
		t.Errorf("applied %v between the three, want %v", applied, want)
	}
}

// TestPostgresRestart: PostgreSQL stopped while events flow, then started
// again: the reader answers not ready meanwhile, and every event is in the
// table afterwards.
func TestPostgresRestart(t *testing.T) {
	srv := pgtest.Own(t)
	_, js, _ := projectiontest.JetStream(t)
	pool, _ := connect(t, srv.URL)
	p := runProjector(t, js, pool)
	r := pgprojection.NewReader(pool, p, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = r.Run(ctx) }()

	states := projectiontest.Generate(300, 3)
	appendStates(t, js, states[:100])
	projectiontest.Eventually(t, 10*time.Second, func() bool { return r.Page(projection.Query{Limit: 1}).Total == 100 },
		"the first 100 destinations are not in PostgreSQL")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	appendStates(t, js, states[100:200])
	r.Page(projection.Query{Limit: 1})
	if r.Ready() {
		t.Error("reader ready while PostgreSQL is down")
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	appendStates(t, js, states[200:])
	projectiontest.Eventually(t, 30*time.Second, func() bool {
		return r.Ready() && r.Page(projection.Query{Limit: 1}).Total == len(states)
	}, "not every destination reached PostgreSQL after its restart")
	projectiontest.Check(t, r, states)
}

// TestExplainUsesIndexes: every list order and direction is an index scan,
// with no sort, at a size where a sequential scan would otherwise win.
func TestExplainUsesIndexes(t *testing.T) {
	url := pgtest.URL(t)
	pool, _ := connect(t, url)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts, last_successful_stream_ordering)
		SELECT 's' || i || '.example.org', i % 50, i % 7, NULLIF(i % 13, 0), NULLIF(i % 101, 0) FROM generate_series(1, 20000) i`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE destinations"); err != nil {
		t.Fatal(err)
	}
	for _, o := range projection.Orders() {
		for _, back := range []bool{false, true} {
			sql, args := pgprojection.PageSQL(projection.Query{Order: o, Backwards: back, From: 100, Limit: 100})
			var plan []string
			rows, err := pool.Query(ctx, "EXPLAIN "+sql, args...)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			rows.Close()
			text := strings.Join(plan, "\n")
			if !strings.Contains(text, "Index Scan") || strings.Contains(text, "Sort") {
				t.Errorf("order %v backwards %v is not an index scan:\n%s", o, back, text)
			}
			if o == projection.ByFailureTS && !back {
				t.Logf("plan of %s:\n%s", sql, text)
			}
		}
	}
}

// TestRebuildWhileRunning: `fedsender projection rebuild` (Rebuild) under
// a running projector empties the table, and the projector reads the whole
// event log again into it.
func TestRebuildWhileRunning(t *testing.T) {
	url := pgtest.URL(t)
	_, js, _ := projectiontest.JetStream(t)
	pool, _ := connect(t, url)
	states := projectiontest.Generate(100, 5)
	appendStates(t, js, states)
	p := runProjector(t, js, pool)
	r := pgprojection.NewReader(pool, p, nil)
	projectiontest.Eventually(t, 10*time.Second, func() bool { return r.Page(projection.Query{Limit: 1}).Total == len(states) },
		"the projector did not write every destination")
	if err := pgprojection.Rebuild(t.Context(), js, pool); err != nil {
		t.Fatal(err)
	}
	projectiontest.Eventually(t, 20*time.Second, func() bool { return r.Page(projection.Query{Limit: 1}).Total == len(states) },
		"the projector did not write every destination again after the rebuild")
	projectiontest.Check(t, r, states)
}
