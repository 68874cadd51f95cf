package pgprojection

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
)

// queryTimeout bounds each read; the admin surfaces answer 503 past it.
const queryTimeout = 5 * time.Second

// Synced is what the Reader asks of the projector before it is ready.
type Synced interface{ Synced() bool }

// Reader answers the admin surfaces from the destinations table. It
// implements admin.Reader: Ready is false until the projector has caught
// up, and while PostgreSQL cannot be read (a failed query marks it so, and
// Run's health check clears it), so the surfaces answer 503 instead of an
// empty list.
type Reader struct {
	pool    *pgxpool.Pool
	synced  Synced
	log     *slog.Logger
	healthy atomic.Bool
}

// NewReader returns a reader over pool; synced may be nil (always synced).
func NewReader(pool *pgxpool.Pool, synced Synced, log *slog.Logger) *Reader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reader{pool: pool, synced: synced, log: log}
	r.healthy.Store(true)
	return r
}

// Ready reports whether the reader can answer: the projector is synced and
// the last read of PostgreSQL worked.
func (r *Reader) Ready() bool {
	return r.healthy.Load() && (r.synced == nil || r.synced.Synced())
}

// Run checks PostgreSQL every second while reads fail, so that Ready comes
// back once it is reachable again. It returns nil when ctx ends.
func (r *Reader) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if r.healthy.Load() {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, queryTimeout)
			err := r.pool.Ping(pctx)
			cancel()
			if err == nil {
				r.log.Info("pgprojection: PostgreSQL is readable again")
				r.healthy.Store(true)
			}
		}
	}
}

// Healthy reports whether the last read of PostgreSQL worked.
func (r *Reader) Healthy() bool { return r.healthy.Load() }

func (r *Reader) failed(err error) {
	if r.healthy.Swap(false) {
		r.log.Warn("pgprojection: cannot read PostgreSQL; the admin surfaces answer 503", "error", err)
	}
}

const selectColumns = `SELECT destination, retry_last_ts, retry_interval, failure_ts, last_successful_stream_ordering, catching_up FROM destinations`

// Get is admin.Reader's: one destination by exact name.
func (r *Reader) Get(name string) (destination.State, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	s, err := scanState(r.pool.QueryRow(ctx, selectColumns+` WHERE destination = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return destination.State{}, false
	}
	if err != nil {
		r.failed(err)
		return destination.State{}, false
	}
	return s, true
}

// orderSQL is the ORDER BY of each order and direction; each has an index
// (see migrations/0001_destinations.sql). NULL sorts as 0.
var orderSQL = [2]map[projection.Order]string{
	{ // forwards
		projection.ByDestination:                  "destination ASC",
		projection.ByRetryLastTS:                  "retry_last_ts ASC, destination ASC",
		projection.ByRetryInterval:                "retry_interval ASC, destination ASC",
		projection.ByFailureTS:                    "failure_ts ASC NULLS FIRST, destination ASC",
		projection.ByLastSuccessfulStreamOrdering: "last_successful_stream_ordering ASC NULLS FIRST, destination ASC",
	},
	{ // backwards
		projection.ByDestination:                  "destination DESC",
		projection.ByRetryLastTS:                  "retry_last_ts DESC, destination ASC",
		projection.ByRetryInterval:                "retry_interval DESC, destination ASC",
		projection.ByFailureTS:                    "failure_ts DESC NULLS LAST, destination ASC",
		projection.ByLastSuccessfulStreamOrdering: "last_successful_stream_ordering DESC NULLS LAST, destination ASC",
	},
}

// PageSQL returns the list query of q and its arguments (exported for the
// EXPLAIN test and the docs).
func PageSQL(q projection.Query) (string, []any) {
	dir := 0
	if q.Backwards {
		dir = 1
	}
	where, args := searchSQL(q.Search)
	args = append(args, q.Limit, q.From)
	n := len(args)
	return selectColumns + where + " ORDER BY " + orderSQL[dir][q.Order] +
		" LIMIT $" + itoa(n-1) + " OFFSET $" + itoa(n), args
}

// searchSQL is the WHERE clause of a search: ILIKE with % and _ escaped,
// which in the C collation ignores ASCII case only, as projection.Matcher.
func searchSQL(search string) (string, []any) {
	if search == "" {
		return "", nil
	}
	esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(search)
	return ` WHERE destination ILIKE $1`, []any{"%" + esc + "%"}
}

// totalSQL counts the destinations a search matches; with no search, it
// reads the count the triggers keep (migrations/0002_destinations_total.sql).
func totalSQL(search string) (string, []any) {
	if search == "" {
		return "SELECT n FROM destinations_total", nil
	}
	where, args := searchSQL(search)
	return "SELECT count(*) FROM destinations" + where, args
}

func itoa(n int) string { return string(rune('0' + n)) } // n is 1..3

// Page is admin.Reader's: one page of the list and the number matching.
func (r *Reader) Page(q projection.Query) projection.Page {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	page, err := r.page(ctx, q)
	if err != nil {
		r.failed(err)
		return projection.Page{Destinations: []destination.State{}}
	}
	return page
}

func (r *Reader) page(ctx context.Context, q projection.Query) (projection.Page, error) {
	out := projection.Page{Destinations: []destination.State{}}
	sql, args := totalSQL(q.Search)
	if err := r.pool.QueryRow(ctx, sql, args...).Scan(&out.Total); err != nil {
		return out, err
	}
	if q.Limit == 0 || q.From >= int64(out.Total) {
		return out, nil
	}
	sql, args = PageSQL(q)
	rows, err := r.pool.Query(ctx, sql, args...)
	if err != nil {
		return out, err
	}
	out.Destinations, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (destination.State, error) {
		return scanState(row)
	})
	if out.Destinations == nil {
		out.Destinations = []destination.State{}
	}
	return out, err
}

func scanState(row pgx.Row) (destination.State, error) {
	var (
		s            destination.State
		failure, off *int64
	)
	if err := row.Scan(&s.Destination, &s.RetryLastTS, &s.RetryInterval, &failure, &off, &s.CatchingUp); err != nil {
		return s, err
	}
	if failure != nil {
		s.FailureTS = *failure
	}
	if off != nil && *off > 0 {
		s.Offset = uint64(*off)
	}
	return s, nil
}
