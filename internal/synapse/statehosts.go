package synapse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// Keys of Synapse's external cache on Redis (replication/tcp/external_cache.py):
// the event creator writes both for each event it persists, with a 1 h
// expiry; never for events of partial-state rooms.
const (
	cachePrevStateGroup = "cache_v1:event_to_prev_state_group:"
	cacheJoinedHosts    = "cache_v1:get_joined_hosts:"
)

// joinedHosts computes the servers joined to a room in the state before an
// event: from Synapse's external cache when it has the answer, otherwise
// from the state groups in the database. State groups never change, so
// their hosts are kept in memory (bounded).
type joinedHosts struct {
	db    *pgxpool.Pool
	redis *redis.Client // nil: no external cache

	mu    sync.Mutex
	bySG  map[int64][]string
	limit int
	// cacheOffUntil: after a Redis error (not a miss) the cache is not
	// asked until then, so an unreachable Redis does not cost a timeout
	// per event.
	cacheOffUntil time.Time
}

// cachePause is how long Synapse's cache is left alone after an error.
const cachePause = 10 * time.Second

func newJoinedHosts(db *pgxpool.Pool, rc *redis.Client) *joinedHosts {
	return &joinedHosts{db: db, redis: rc, bySG: map[int64][]string{}, limit: 20000}
}

// errNoState means the event has no state group (an outlier): Synapse's
// sender skips such an event.
var errNoState = errors.New("the event has no state group")

// before returns the hosts joined in the state before the event. isState
// says whether the event is an accepted state event (which got a state
// group of its own).
func (j *joinedHosts) before(ctx context.Context, eventID string, isState bool) ([]string, error) {
	if hosts, ok := j.fromCache(ctx, eventID); ok {
		return hosts, nil
	}
	groups, err := j.prevStateGroups(ctx, eventID, isState)
	if err != nil {
		return nil, err
	}
	var all []string
	for _, sg := range groups {
		hosts, err := j.atStateGroup(ctx, sg)
		if err != nil {
			return nil, err
		}
		all = append(all, hosts...)
	}
	return all, nil
}

// fromCache reads Synapse's external cache; any miss or error falls back
// to the database.
func (j *joinedHosts) fromCache(ctx context.Context, eventID string) ([]string, bool) {
	if j.redis == nil || !j.cacheUsable() {
		return nil, false
	}
	sg, err := j.redis.Get(ctx, cachePrevStateGroup+eventID).Int64()
	if err != nil {
		j.cacheFailed(err)
		return nil, false
	}
	if hosts, ok := j.remembered(sg); ok {
		return hosts, true
	}
	raw, err := j.redis.Get(ctx, cacheJoinedHosts+strconv.FormatInt(sg, 10)).Bytes()
	if err != nil {
		j.cacheFailed(err)
		return nil, false
	}
	var hosts []string
	if err := json.Unmarshal(raw, &hosts); err != nil {
		return nil, false
	}
	j.remember(sg, hosts)
	return hosts, true
}

func (j *joinedHosts) cacheUsable() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return time.Now().After(j.cacheOffUntil)
}

func (j *joinedHosts) cacheFailed(err error) {
	if errors.Is(err, redis.Nil) {
		return // a miss
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.cacheOffUntil = time.Now().Add(cachePause)
}

// prevStateGroups returns the state group(s) of the state before the
// event: for an event that is not an accepted state event its own group;
// for a state event the group its own was built on (state_group_edges),
// or, when Synapse stored its group without an edge, the groups of its
// prev_events (their hosts are united: sending more rather than less).
func (j *joinedHosts) prevStateGroups(ctx context.Context, eventID string, isState bool) ([]int64, error) {
	var sg int64
	err := j.db.QueryRow(ctx, "SELECT state_group FROM event_to_state_groups WHERE event_id = $1", eventID).Scan(&sg)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNoState
	}
	if err != nil {
		return nil, fmt.Errorf("event_to_state_groups: %w", err)
	}
	if !isState {
		return []int64{sg}, nil
	}
	var prev int64
	err = j.db.QueryRow(ctx, "SELECT prev_state_group FROM state_group_edges WHERE state_group = $1", sg).Scan(&prev)
	if err == nil {
		return []int64{prev}, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("state_group_edges: %w", err)
	}
	rows, err := j.db.Query(ctx, `SELECT DISTINCT g.state_group FROM event_edges e
		JOIN event_to_state_groups g ON g.event_id = e.prev_event_id WHERE e.event_id = $1`, eventID)
	if err != nil {
		return nil, fmt.Errorf("event_edges: %w", err)
	}
	groups, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("event_edges: %w", err)
	}
	if len(groups) == 0 {
		return nil, errNoState
	}
	return groups, nil
}

// joinedAtStateGroup resolves a state group's membership through its
// chain of deltas (for each member, the group nearest to the start of the
// chain wins, as Synapse's state store reads it) and keeps the servers of
// joined members.
const joinedAtStateGroup = `
WITH RECURSIVE chain(state_group, hop) AS (
	VALUES ($1::bigint, 0)
	UNION ALL
	SELECT e.prev_state_group, c.hop + 1 FROM state_group_edges e JOIN chain c ON c.state_group = e.state_group
), members AS (
	SELECT DISTINCT ON (s.state_key) s.state_key, s.event_id
	FROM chain c JOIN state_groups_state s ON s.state_group = c.state_group AND s.type = 'm.room.member'
	ORDER BY s.state_key, c.hop
)
SELECT DISTINCT substr(m.state_key, strpos(m.state_key, ':') + 1)
FROM members m JOIN room_memberships r ON r.event_id = m.event_id
WHERE r.membership = 'join'`

func (j *joinedHosts) atStateGroup(ctx context.Context, sg int64) ([]string, error) {
	if hosts, ok := j.remembered(sg); ok {
		return hosts, nil
	}
	rows, err := j.db.Query(ctx, joinedAtStateGroup, sg)
	if err != nil {
		return nil, fmt.Errorf("joined hosts at state group %d: %w", sg, err)
	}
	hosts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("joined hosts at state group %d: %w", sg, err)
	}
	j.remember(sg, hosts)
	return hosts, nil
}

func (j *joinedHosts) remembered(sg int64) ([]string, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	h, ok := j.bySG[sg]
	return h, ok
}

func (j *joinedHosts) remember(sg int64, hosts []string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.bySG) >= j.limit {
		clear(j.bySG)
	}
	j.bySG[sg] = hosts
}
