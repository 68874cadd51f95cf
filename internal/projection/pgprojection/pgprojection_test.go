package pgprojection_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
	p := pgprojection.NewProjector(pgprojection.ProjectorOptions{JS: js, Pool: pool, MaxBackoff: 200 * time.Millisecond,
		Origin: "origin.example"})
	projectiontest.Start(t, p.Run)
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
	return rowsAsText(t, pool, `SELECT concat_ws('|', destination, retry_last_ts, retry_interval,
		failure_ts, last_successful_stream_ordering, catching_up, event_seq) FROM destinations ORDER BY destination`)
}

// rowsAsText returns the single text column of every row query answers.
func rowsAsText(t *testing.T, pool *pgxpool.Pool, query string) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), query)
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
		mu      sync.Mutex
		applied []int
	)
	concurrently(t, 3, 30*time.Second, "migrate", func(int) error {
		pool, err := pgxpool.New(t.Context(), url)
		if err != nil {
			return err
		}
		defer pool.Close()
		got, err := pgprojection.Migrate(t.Context(), pool, schema)
		mu.Lock()
		applied = append(applied, got...)
		mu.Unlock()
		return err
	})
	if want := []int{1, 2, 3, 4, 5}; !slices.Equal(applied, want) {
		t.Errorf("applied %v between the three, want %v", applied, want)
	}
}

// concurrently runs f(0) to f(n-1) at once and fails t with their errors,
// or if they have not all returned within d.
func concurrently(t *testing.T, n int, d time.Duration, what string, f func(i int) error) {
	t.Helper()
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- f(i) }()
	}
	deadline := time.After(d)
	for range n {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case <-deadline:
			t.Fatalf("%s: not every call returned within %v", what, d)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestTotalFollowsWrites: the list's total, read from the count the
// triggers keep, stays the number of destinations through every way the
// table is written: inserts, upserts that insert some rows and update
// others, inserts that skip known names (as the rooms projector does),
// updates, deletes, a rolled-back insert, TRUNCATE (as Rebuild does), a
// writer naming the table by its schema from another search_path, and
// concurrent writers inserting the same names.
func TestTotalFollowsWrites(t *testing.T) {
	url := pgtest.URL(t)
	pool, schema := connect(t, url)
	ctx := t.Context()
	r := pgprojection.NewReader(pool, nil, nil)
	other, err := pgxpool.New(ctx, url) // search_path without the schema
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	qualified := pgx.Identifier{schema, "destinations"}.Sanitize()
	steps := []struct {
		name     string
		pool     *pgxpool.Pool
		sql      string
		rollback bool
		want     int
	}{
		{"insert", pool, `INSERT INTO destinations (destination) SELECT 'a' || i FROM generate_series(1, 100) i`, false, 100},
		{"upsert", pool, `INSERT INTO destinations (destination, retry_interval) SELECT 'a' || i, 5 FROM generate_series(91, 110) i
			ON CONFLICT (destination) DO UPDATE SET retry_interval = excluded.retry_interval`, false, 110},
		{"insert or skip", pool, `INSERT INTO destinations (destination) SELECT 'a' || i FROM generate_series(101, 120) i
			ON CONFLICT DO NOTHING`, false, 120},
		{"skip every one", pool, `INSERT INTO destinations (destination) VALUES ('a1'), ('a2') ON CONFLICT DO NOTHING`, false, 120},
		{"update", pool, `UPDATE destinations SET retry_last_ts = 7`, false, 120},
		{"delete", pool, `DELETE FROM destinations WHERE destination IN ('a1', 'a2', 'a3', 'nope')`, false, 117},
		{"rolled back", pool, `INSERT INTO destinations (destination) VALUES ('b1'), ('b2')`, true, 117},
		{"other search_path", other, `INSERT INTO ` + qualified + ` (destination) VALUES ('b3')`, false, 118},
		{"truncate", pool, `TRUNCATE destinations, destination_rooms, projection_checkpoints`, false, 0},
		{"insert after truncate", pool, `INSERT INTO destinations (destination) VALUES ('c1'), ('c2')`, false, 2},
	}
	for _, st := range steps {
		tx, err := st.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, st.sql); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		end := tx.Commit
		if st.rollback {
			end = tx.Rollback
		}
		if err := end(ctx); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		checkTotal(t, pool, r, st.name, st.want)
	}

	// Four writers insert overlapping names, sorted as the projectors
	// do, with the rooms projector's statement; one upserts.
	concurrently(t, 4, 30*time.Second, "insert", func(w int) error {
		for i := range 50 {
			names := []string{fmt.Sprintf("w%02d", (i*7+w*13)%100), fmt.Sprintf("x%02d", (i*11+w)%100)}
			sql := `INSERT INTO destinations (destination) SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING`
			if w == 0 {
				sql = `INSERT INTO destinations (destination) SELECT * FROM unnest($1::text[])
					ON CONFLICT (destination) DO UPDATE SET retry_interval = destinations.retry_interval + 1`
			}
			if _, err := pool.Exec(ctx, sql, names); err != nil {
				return err
			}
		}
		return nil
	})
	checkTotal(t, pool, r, "concurrent inserts", -1)
}

// checkTotal fails t unless the list's total is the number of rows and,
// unless want is -1, want.
func checkTotal(t *testing.T, pool *pgxpool.Pool, r *pgprojection.Reader, step string, want int) {
	t.Helper()
	var rows int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM destinations").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	got := r.Page(projection.Query{Limit: 1})
	if !r.Ready() {
		t.Fatalf("%s: the reader failed", step)
	}
	if got.Total != rows || (want >= 0 && rows != want) {
		t.Errorf("after %s: total %d, %d rows, want %d", step, got.Total, rows, want)
	}
}

// TestMigrateWithoutTrigramIndex: a role that may not use pg_trgm (here:
// it is installed in a schema the role cannot use) still migrates, without
// the search index, and answers every query as the reference does.
func TestMigrateWithoutTrigramIndex(t *testing.T) {
	srv := pgtest.Own(t)
	ctx := t.Context()
	admin, err := pgxpool.New(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, sql := range []string{
		"CREATE SCHEMA private",
		"CREATE EXTENSION pg_trgm SCHEMA private",
		"CREATE ROLE fedsender LOGIN",
		"GRANT CREATE ON DATABASE postgres TO fedsender",
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	pool, err := pgprojection.Connect(ctx, srv.URL+" user=fedsender", "fedsender")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pgprojection.Migrate(ctx, pool, "fedsender"); err != nil {
		t.Fatal(err)
	}
	var indexes []string
	rows, err := pool.Query(ctx, "SELECT indexname FROM pg_indexes WHERE schemaname = 'fedsender' AND tablename = 'destinations'")
	if err == nil {
		indexes, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(indexes, "destinations_destination_trgm") {
		t.Fatalf("a trigram index was created with pg_trgm out of reach: %v", indexes)
	}
	_, js, _ := projectiontest.JetStream(t)
	states := append(projectiontest.Fixture(), projectiontest.Generate(300, 2)...)
	appendStates(t, js, states)
	p := runProjector(t, js, pool)
	projectiontest.Eventually(t, 10*time.Second, p.Synced, "projector not synced")
	projectiontest.Check(t, pgprojection.NewReader(pool, p, nil), states)
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

// planNode is a node of EXPLAIN (FORMAT JSON).
type planNode struct {
	NodeType  string     `json:"Node Type"`
	IndexName string     `json:"Index Name"`
	Direction string     `json:"Scan Direction"`
	Plans     []planNode `json:"Plans"`
}

// explain returns the plan of sql.
func explain(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) planNode {
	t.Helper()
	var out []struct{ Plan planNode }
	if err := pool.QueryRow(t.Context(), "EXPLAIN (FORMAT JSON) "+sql, args...).Scan(&out); err != nil {
		t.Fatalf("EXPLAIN %s: %v", sql, err)
	}
	return out[0].Plan
}

// walk calls f on n and every node under it, depth first, with whether a
// Limit is above it.
func (n planNode) walk(underLimit bool, f func(n planNode, underLimit bool)) {
	f(n, underLimit)
	for _, c := range n.Plans {
		c.walk(underLimit || n.NodeType == "Limit", f)
	}
}

// TestExplainUsesIndexes: every list order and direction walks its own
// index (from its start, or from its end for a page past the middle),
// without reading the whole table and without sorting more than the page,
// at a size where a sequential scan would otherwise win: reading the rows
// as it walks for a page near either end, and the index alone deeper,
// the page's rows then read by primary key. The total is read from the
// kept count, and a search's count uses the trigram index.
func TestExplainUsesIndexes(t *testing.T) {
	url := pgtest.URL(t)
	pool, _ := connect(t, url)
	ctx := t.Context()
	const total = 20000
	if _, err := pool.Exec(ctx, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts, last_successful_stream_ordering)
		SELECT 's' || i || '.example.org', i % 50, i % 7, NULLIF(i % 13, 0), NULLIF(i % 101, 0) FROM generate_series(1, $1) i`, total); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE destinations"); err != nil {
		t.Fatal(err)
	}
	index := map[projection.Order]string{
		projection.ByDestination:                  "destinations_pkey",
		projection.ByRetryLastTS:                  "destinations_retry_last_ts_",
		projection.ByRetryInterval:                "destinations_retry_interval_",
		projection.ByFailureTS:                    "destinations_failure_ts_",
		projection.ByLastSuccessfulStreamOrdering: "destinations_lsso_",
	}
	pages := []struct {
		from     int64
		scan     string
		reversed bool
	}{
		{100, "Index Scan", false}, {5000, "Index Only Scan", false},
		{total - 150, "Index Scan", true}, {total - 5000, "Index Only Scan", true},
	}
	for _, o := range projection.Orders() {
		for _, back := range []bool{false, true} {
			want, dirs := index[o], [2]string{"Forward", "Backward"}
			switch {
			case o == projection.ByDestination && back:
				dirs = [2]string{"Backward", "Forward"}
			case o == projection.ByDestination:
			case back:
				want += "desc"
			default:
				want += "asc"
			}
			for _, pg := range pages {
				dir := dirs[0]
				if pg.reversed {
					dir = dirs[1]
				}
				sql, args := pgprojection.PageSQL(projection.Query{Order: o, Backwards: back, From: pg.from, Limit: 100}, total)
				var scans []string
				explain(t, pool, sql, args...).walk(false, func(n planNode, underLimit bool) {
					if n.NodeType == "Seq Scan" || n.NodeType == "Sort" && underLimit {
						t.Errorf("order %v backwards %v from %d: a %s under the page's limit:\n%s", o, back, pg.from, n.NodeType, sql)
					}
					if strings.HasSuffix(n.NodeType, "Scan") {
						scans = append(scans, n.NodeType+" "+n.IndexName+" "+n.Direction)
					}
				})
				if first := pg.scan + " " + want + " " + dir; len(scans) == 0 || scans[0] != first {
					t.Errorf("order %v backwards %v from %d: scans %q, want the first to be %q", o, back, pg.from, scans, first)
				}
			}
		}
	}
	if n := explain(t, pool, "SELECT n FROM destinations_total"); n.NodeType != "Seq Scan" || len(n.Plans) > 0 {
		t.Errorf("the total reads more than its one row: %+v", n)
	}
	var trgm bool
	if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE tablename = 'destinations' AND schemaname = current_schema() "+
		"AND indexname = 'destinations_destination_trgm')").Scan(&trgm); err != nil {
		t.Fatal(err)
	}
	if !trgm {
		t.Fatalf("no trigram index: the migration could not create pg_trgm (Debian's postgresql ships it; "+
			"in a database named by %s, run CREATE EXTENSION pg_trgm as a superuser)", pgtest.EnvURL)
	}
	var used bool
	explain(t, pool, "SELECT count(*) FROM destinations WHERE destination ILIKE $1", "%1234%").walk(false, func(n planNode, _ bool) {
		used = used || n.IndexName == "destinations_destination_trgm"
	})
	if !used {
		t.Error("a search's count does not use the trigram index")
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

// TestConsumersDeletedDuringABatch: the consumers deleted (as `fedsender
// projection rebuild` does) while the projector writes a batch, not while
// it waits for the next one: it still notices, starts over, and the events
// appended afterwards reach the table.
func TestConsumersDeletedDuringABatch(t *testing.T) {
	url := pgtest.URL(t)
	_, js, _ := projectiontest.JetStream(t)
	pool, _ := connect(t, url)
	ctx := t.Context()
	states := projectiontest.Generate(100, 5)
	log := newEventLog(t, js)
	log.append(t, states[:50])
	p := runProjector(t, js, pool)
	r := pgprojection.NewReader(pool, p, nil)
	total := func() int { return r.Page(projection.Query{Limit: 1}).Total }
	projectiontest.Eventually(t, 10*time.Second, func() bool { return total() == 50 },
		"the projector did not write the first destinations")

	// Hold a row, so that the projector's next batch waits for it.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "SELECT 1 FROM destinations WHERE destination = $1 FOR UPDATE", states[0].Destination); err != nil {
		t.Fatal(err)
	}
	changed := states[0]
	changed.RetryLastTS, changed.RetryInterval, changed.FailureTS = 0, 0, 0
	changed.Offset += 100
	log.append(t, []destination.State{changed})
	cons, err := js.Consumer(ctx, streams.EventStream, pgprojection.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	projectiontest.Eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending > 0
	}, "the projector did not fetch the new event")
	for _, c := range [][2]string{{streams.PDUStream, pgprojection.RoomsConsumerName}, {streams.EventStream, pgprojection.ConsumerName}} {
		if err := js.DeleteConsumer(ctx, c[0], c[1]); err != nil {
			t.Fatalf("delete consumer %s: %v", c[1], err)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	log.append(t, states[50:])
	projectiontest.Eventually(t, 20*time.Second, func() bool { return total() == len(states) },
		"the destinations appended after the consumers were deleted are not in the table")
	projectiontest.Check(t, r, append([]destination.State{changed}, states[1:]...))
}

// TestTablesEmptiedUnderTheConsumer: the tables emptied while the
// consumers keep their progress (what a rebuild leaves when the server
// gives the re-created consumer the deleted one's state, as it may while
// it is still removing it): the next projector reads the event log again
// instead of finding nothing left to read.
func TestTablesEmptiedUnderTheConsumer(t *testing.T) {
	url := pgtest.URL(t)
	_, js, _ := projectiontest.JetStream(t)
	pool, _ := connect(t, url)
	states := projectiontest.Generate(100, 5)
	appendStates(t, js, states)
	r := pgprojection.NewReader(pool, nil, nil)
	total := func() int { return r.Page(projection.Query{Limit: 1}).Total }
	stop := projectiontest.Start(t, pgprojection.NewProjector(pgprojection.ProjectorOptions{JS: js, Pool: pool}).Run)
	projectiontest.Eventually(t, 10*time.Second, func() bool { return total() == len(states) },
		"the projector did not write every destination")
	stop()
	if _, err := pool.Exec(t.Context(), "TRUNCATE destinations, destination_rooms, projection_checkpoints"); err != nil {
		t.Fatal(err)
	}
	runProjector(t, js, pool)
	projectiontest.Eventually(t, 20*time.Second, func() bool { return total() == len(states) },
		"the projector did not write every destination again into the emptied table")
	projectiontest.Check(t, r, states)
}
