package pgprojection

import (
	"context"
	"errors"
	"fmt"
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

// rowColumns are the columns of a destination.State, in scanState's order.
const rowColumns = `d.destination, d.retry_last_ts, d.retry_interval, d.failure_ts, d.last_successful_stream_ordering, d.catching_up`

// Get is admin.Reader's: one destination by exact name.
func (r *Reader) Get(name string) (destination.State, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	s, err := scanState(r.pool.QueryRow(ctx, `SELECT `+rowColumns+` FROM destinations AS d WHERE destination = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return destination.State{}, false
	}
	if err != nil {
		r.failed(err)
		return destination.State{}, false
	}
	return s, true
}

// EventSeq returns the event-log sequence of the newest event the
// destinations table shows for a destination (0 if none, or no row).
func (r *Reader) EventSeq(ctx context.Context, name string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var seq int64
	err := r.pool.QueryRow(ctx, `SELECT event_seq FROM destinations WHERE destination = $1`, name).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		r.failed(err)
		return 0, fmt.Errorf("pgprojection: event_seq of %s: %w", name, err)
	}
	return uint64(max(seq, 0)), nil
}

// Sync has nothing to wait for: every replica reads the same tables, and
// a read sees every transaction that committed before it began.
func (r *Reader) Sync(context.Context) error { return nil }

// sortColumns is the column of each order, and whether it may be NULL
// (NULL sorts as 0: first when ascending). Ties are broken by destination
// ascending in both directions, as Synapse does; each order and direction
// has an index on (column, destination) (see
// migrations/0001_destinations.sql).
var sortColumns = map[projection.Order]struct {
	name     string
	nullable bool
}{
	projection.ByDestination:                  {"destination", false},
	projection.ByRetryLastTS:                  {"retry_last_ts", false},
	projection.ByRetryInterval:                {"retry_interval", false},
	projection.ByFailureTS:                    {"failure_ts", true},
	projection.ByLastSuccessfulStreamOrdering: {"last_successful_stream_ordering", true},
}

// orderBy is the ORDER BY of q's order and direction, each column name
// preceded by prefix; reversed, it is that order read from its end, which
// is the same index scanned backwards.
func orderBy(q projection.Query, prefix string, reversed bool) string {
	c := sortColumns[q.Order]
	dir, tie := "ASC", "ASC"
	switch back := q.Backwards != reversed; {
	case back && c.nullable:
		dir = "DESC NULLS LAST"
	case back:
		dir = "DESC"
	case c.nullable:
		dir = "ASC NULLS FIRST"
	}
	if reversed {
		tie = "DESC"
	}
	if c.name == "destination" {
		return prefix + "destination " + dir
	}
	return prefix + c.name + " " + dir + ", " + prefix + "destination " + tie
}

// PageSQL returns the list query of q, when total destinations match it
// (q.From < total), and its arguments (exported for the EXPLAIN test and
// the docs).
//
// OFFSET walks the order's index up to the page. A page past the middle
// walks from the other end instead (the same index scanned backwards), so
// no page walks more than half of the index; the outer ORDER BY then puts
// the page back in q's order (a sort of the page only).
//
// Past the first few pages it is a deferred join: the inner query walks
// the index reading only the index (an index-only scan, where the
// visibility map is set: see migrations/0003_destinations_autovacuum.sql),
// and only the page's rows are read from the table, one primary-key lookup
// each. LIMIT 1 keeps that lookup a nested loop, which keeps the index
// order. A lookup costs about what walking ten index entries with their
// rows does, so a page no deeper than deferDepth of its lengths reads the
// rows as it walks instead.
func PageSQL(q projection.Query, total int) (string, []any) {
	where, args := searchSQL(q.Search)
	limit, offset := q.Limit, q.From
	rest := int64(total) - q.From // rows from the page's start to the end
	reversed := q.From > rest
	if reversed {
		limit, offset = rest, 0
		if q.Limit < rest {
			limit, offset = q.Limit, rest-q.Limit
		}
	}
	args = append(args, limit, offset)
	n := len(args)
	walk := " ORDER BY " + orderBy(q, "", reversed) + " LIMIT $" + itoa(n-1) + " OFFSET $" + itoa(n)
	if offset/deferDepth < limit {
		page := "SELECT " + rowColumns + " FROM destinations AS d" + where + walk
		if !reversed {
			return page, args
		}
		return "SELECT * FROM (" + page + ") AS d ORDER BY " + orderBy(q, "d.", false), args
	}
	key := "destination"
	if c := sortColumns[q.Order].name; c != "destination" {
		key += ", " + c
	}
	return "SELECT " + rowColumns + " FROM (SELECT " + key + " FROM destinations" + where + walk + ") AS p" +
		" CROSS JOIN LATERAL (SELECT * FROM destinations AS d WHERE d.destination = p.destination LIMIT 1) AS d" +
		" ORDER BY " + orderBy(q, "p.", false), args
}

// deferDepth: a page whose offset is at least deferDepth times its limit
// is read with a deferred join (see PageSQL).
const deferDepth = 10

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

// page reads the total and the page in one snapshot: PageSQL's walk from
// the end needs the total the page is counted against.
func (r *Reader) page(ctx context.Context, q projection.Query) (projection.Page, error) {
	out := projection.Page{Destinations: []destination.State{}}
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	err := pgx.BeginTxFunc(ctx, r.pool, opts, func(tx pgx.Tx) error {
		sql, args := totalSQL(q.Search)
		if err := tx.QueryRow(ctx, sql, args...).Scan(&out.Total); err != nil {
			return err
		}
		if q.Limit == 0 || q.From >= int64(out.Total) {
			return nil
		}
		sql, args = PageSQL(q, out.Total)
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		out.Destinations, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (destination.State, error) {
			return scanState(row)
		})
		return err
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
