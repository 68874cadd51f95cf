package books

import (
	"context"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
)

// storeFailure is Synapse's conditional upsert of retry timings
// (set_destination_retry_timings), made monotonic in time: a failure is
// written unless the row shows a later failed attempt, or the same one
// with a longer interval. Synapse's own rule also lets a longer interval
// overwrite a later attempt; that case is an older failure applied late
// (after a restart), which must not undo what Synapse's main process
// recorded since. failure_ts is kept while the destination is failing,
// as Synapse's retry limiter keeps it.
const storeFailure = `
INSERT INTO destinations AS d (destination, failure_ts, retry_last_ts, retry_interval)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
ON CONFLICT (destination) DO UPDATE SET
	failure_ts = CASE WHEN d.retry_last_ts > 0 AND d.failure_ts IS NOT NULL
		THEN LEAST(d.failure_ts, excluded.failure_ts) ELSE excluded.failure_ts END,
	retry_last_ts = excluded.retry_last_ts,
	retry_interval = excluded.retry_interval
WHERE d.retry_last_ts IS NULL
	OR d.retry_last_ts < excluded.retry_last_ts
	OR (d.retry_last_ts = excluded.retry_last_ts AND COALESCE(d.retry_interval, 0) < excluded.retry_interval)`

// storeClear is Synapse's write after a success or a reset: (NULL, 0, 0),
// only when there is a backoff to clear, and here only when that backoff
// is not newer than the success (a failure Synapse's main process
// recorded afterwards stays).
const storeClear = `
UPDATE destinations AS d SET failure_ts = NULL, retry_last_ts = 0, retry_interval = 0
FROM unnest($1::text[], $2::bigint[]) AS c(destination, at)
WHERE d.destination = c.destination AND d.retry_last_ts > 0 AND d.retry_last_ts <= c.at`

// applyTimings writes the retry timings of a batch of destination events:
// per destination the newest failure, recovery or reset.
func (b *Books) applyTimings(ctx context.Context, msgs []jetstream.Msg) error {
	newest := map[string]destination.Event{}
	for _, m := range msgs {
		ev, err := eventlog.DecodeEvent(m.Subject(), m.Data())
		if err != nil {
			b.opts.Log.Warn("books: skipped destination event", "subject", m.Subject(), "error", err)
			continue
		}
		switch ev.Type {
		case destination.Failed, destination.Recovered, destination.Reset:
			newest[ev.State.Destination] = ev
		}
	}
	names := make([]string, 0, len(newest))
	for name := range newest {
		names = append(names, name)
	}
	slices.Sort(names) // writers lock rows in the same order
	var (
		failed               []string
		failureTS, last, ivs []int64
		cleared              []string
		clearedAt            []int64
	)
	for _, name := range names {
		ev := newest[name]
		if ev.Type == destination.Failed {
			s := ev.State
			failed, failureTS, last, ivs = append(failed, name), append(failureTS, s.FailureTS),
				append(last, s.RetryLastTS), append(ivs, s.RetryInterval)
			continue
		}
		cleared, clearedAt = append(cleared, name), append(clearedAt, ev.At)
	}
	if len(names) == 0 {
		return nil
	}
	var inv []invalidation
	err := pgx.BeginFunc(ctx, b.opts.DB, func(tx pgx.Tx) error {
		var changed []string
		for _, w := range []struct {
			sql  string
			args []any
		}{{storeFailure, []any{failed, failureTS, last, ivs}}, {storeClear, []any{cleared, clearedAt}}} {
			if len(w.args[0].([]string)) == 0 {
				continue
			}
			rows, err := tx.Query(ctx, w.sql+" RETURNING d.destination", w.args...)
			if err != nil {
				return err
			}
			names, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			changed = append(changed, names...)
		}
		var err error
		inv, err = b.invalidate(ctx, tx, changed)
		return err
	})
	if err != nil {
		return err
	}
	b.announce(ctx, inv)
	return nil
}
