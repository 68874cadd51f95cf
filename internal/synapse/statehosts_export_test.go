package synapse

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// JoinedHosts is joinedHosts, for the benchmarks of package synapse_test.
type JoinedHosts = joinedHosts

// NewJoinedHosts is newJoinedHosts without Synapse's Redis cache.
func NewJoinedHosts(db *pgxpool.Pool) *JoinedHosts { return newJoinedHosts(db, nil) }

// Before is before.
func (j *joinedHosts) Before(ctx context.Context, eventID string, isState bool) ([]string, error) {
	return j.before(ctx, eventID, isState)
}
