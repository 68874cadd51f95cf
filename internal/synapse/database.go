package synapse

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fedsender/fedsender/internal/synapse/grants"
)

// ErrNotSynapse is returned by CheckDatabase for a database that lacks the
// tables Synapse keeps.
var ErrNotSynapse = errors.New("not a Synapse database")

// CheckDatabase returns an error when the database at pool cannot be
// reached, or is not Synapse's (ErrNotSynapse, naming the first table
// missing of those grants.Tables names).
func CheckDatabase(ctx context.Context, pool *pgxpool.Pool) error {
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("cannot connect: %w", err)
	}
	for _, g := range grants.Tables {
		t := g.Table
		var found bool
		err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", t).Scan(&found)
		if err != nil {
			return fmt.Errorf("read the schema: %w", err)
		}
		if !found {
			return fmt.Errorf("%w: it has no table %s", ErrNotSynapse, t)
		}
	}
	return nil
}

// resetFederationPositions gives instance its federation_stream_position
// rows as Synapse does when its list of senders changed (1.92's
// _reset_federation_positions_txn): when rows of other instances exist or
// ours is missing, ours is set, per type, to the smallest position found
// (re-sending rather than dropping) and the others are deleted. It returns
// instance's events position.
func resetFederationPositions(ctx context.Context, pool *pgxpool.Pool, instance string) (int64, error) {
	var pos int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "LOCK TABLE federation_stream_position IN EXCLUSIVE MODE"); err != nil {
			return err
		}
		var others, ours int
		if err := tx.QueryRow(ctx, `SELECT count(*) FILTER (WHERE instance_name <> $1), count(*) FILTER (WHERE instance_name = $1)
			FROM federation_stream_position`, instance).Scan(&others, &ours); err != nil {
			return err
		}
		if others > 0 || ours == 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO federation_stream_position (type, stream_id, instance_name)
				SELECT type, min(stream_id), $1 FROM federation_stream_position GROUP BY type
				ON CONFLICT (type, instance_name) DO UPDATE SET stream_id = excluded.stream_id`, instance); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "DELETE FROM federation_stream_position WHERE instance_name <> $1", instance); err != nil {
				return err
			}
		}
		return tx.QueryRow(ctx, `SELECT stream_id FROM federation_stream_position
			WHERE type = 'events' AND instance_name = $1`, instance).Scan(&pos)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: federation_stream_position has no events row", ErrNotSynapse)
	}
	if err != nil {
		return 0, fmt.Errorf("federation_stream_position: %w", err)
	}
	return pos, nil
}

// saveFederationPosition records instance's events position as Synapse's
// sender does after each batch.
func saveFederationPosition(ctx context.Context, pool *pgxpool.Pool, instance string, pos int64) error {
	_, err := pool.Exec(ctx, `INSERT INTO federation_stream_position (type, stream_id, instance_name)
		VALUES ('events', $1, $2)
		ON CONFLICT (type, instance_name) DO UPDATE SET stream_id = excluded.stream_id`, pos, instance)
	if err != nil {
		return fmt.Errorf("federation_stream_position: %w", err)
	}
	return nil
}
