package books

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// retryTimingsCache is the cache of Synapse's processes that holds each
// destination's retry timings (get_destination_retry_timings): the
// details page of the admin API and every process's backoff checks read
// it, not the table.
const retryTimingsCache = "get_destination_retry_timings"

// invalidation is a row of Synapse's caches stream.
type invalidation struct {
	streamID int64
	dest     string
	ts       int64
}

// invalidate records, in the transaction that changed the retry timings of
// dests, that Synapse's processes must drop their cached timings, as
// Synapse's own writers do (_invalidate_cache_and_stream): a row of the
// caches stream, numbered from Synapse's sequence, under fedsender's
// instance name. Without Synapse's Redis there is no one to tell, and
// nothing is written.
func (b *Books) invalidate(ctx context.Context, tx pgx.Tx, dests []string) ([]invalidation, error) {
	if b.opts.Redis == nil || len(dests) == 0 {
		return nil, nil
	}
	now := time.Now().UnixMilli()
	rows, err := tx.Query(ctx, `INSERT INTO cache_invalidation_stream_by_instance
		(stream_id, instance_name, cache_func, keys, invalidation_ts)
		SELECT nextval('cache_invalidation_stream_seq'), $1, $2, ARRAY[d], $3 FROM unnest($4::text[]) AS d
		RETURNING stream_id, keys[1]`, b.opts.InstanceName, retryTimingsCache, now, dests)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (invalidation, error) {
		inv := invalidation{ts: now}
		err := row.Scan(&inv.streamID, &inv.dest)
		return inv, err
	})
}

// announce publishes the committed invalidations on Synapse's replication
// channel as Synapse's processes do (RDATA caches <instance> <stream id>
// [cache, keys, ts]), so that its main process drops the cached timings at
// once and its admin API shows them. A message lost (Redis down) leaves
// that cache stale until its next invalidation, as it would for Synapse's
// own writers; it is logged.
func (b *Books) announce(ctx context.Context, invs []invalidation) {
	for _, inv := range invs {
		row, _ := json.Marshal([]any{retryTimingsCache, []string{inv.dest}, inv.ts})
		cmd := "RDATA caches " + b.opts.InstanceName + " " + strconv.FormatInt(inv.streamID, 10) + " " + string(row)
		if err := b.opts.Redis.Publish(ctx, b.opts.Origin, cmd).Err(); err != nil {
			b.opts.Log.Warn("books: could not tell Synapse's processes that retry timings changed",
				"destination", inv.dest, "error", err)
		}
	}
}
