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

// cacheJoinedHosts is the key prefix of Synapse's external cache on Redis
// (replication/tcp/external_cache.py) holding the servers joined at a
// state group, as a JSON list; the event creator writes it with a 1 h
// expiry, never for partial-state rooms. (Its companion,
// cache_v1:event_to_prev_state_group:<event>, is not needed: the state
// group before each event of a batch comes from one query.)
const cacheJoinedHosts = "cache_v1:get_joined_hosts:"

// joinedHosts computes the servers joined to a room in the state before an
// event: the state group before it from the database (one query per
// batch), then that group's hosts from memory (state groups never
// change), Synapse's external cache, or the state groups in the database.
type joinedHosts struct {
	db    *pgxpool.Pool
	redis *redis.Client // nil: no external cache

	mu    sync.Mutex
	bySG  map[int64][]string
	limit int
	// cacheOffUntil: after a Redis error (not a miss) the cache is not
	// asked until then, so an unreachable Redis does not cost a timeout
	// per state group.
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

// eventState is what groupsBefore needs of an event.
type eventState struct {
	EventID string
	// IsState: an accepted state event, which got a state group of its
	// own on top of the state before it.
	IsState bool
}

// groupsBefore returns, per event, the state group(s) of the state before
// it: for an event that is not an accepted state event its own group; for
// a state event the group its own was built on (state_group_edges), or,
// when Synapse stored its group without an edge, the groups of its
// prev_events (their hosts are united: sending more rather than less). An
// event without a state group is absent.
func (j *joinedHosts) groupsBefore(ctx context.Context, evs []eventState) (map[string][]int64, error) {
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.EventID
	}
	rows, err := j.db.Query(ctx, `SELECT g.event_id, g.state_group, e.prev_state_group
		FROM event_to_state_groups g LEFT JOIN state_group_edges e ON e.state_group = g.state_group
		WHERE g.event_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("event_to_state_groups: %w", err)
	}
	type group struct{ own, prev *int64 }
	found := map[string]group{}
	var id string
	var own, prev *int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &own, &prev}, func() error {
		found[id] = group{own, prev}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("event_to_state_groups: %w", err)
	}
	out := make(map[string][]int64, len(evs))
	for _, ev := range evs {
		g, ok := found[ev.EventID]
		switch {
		case !ok:
		case !ev.IsState:
			out[ev.EventID] = []int64{*g.own}
		case g.prev != nil:
			out[ev.EventID] = []int64{*g.prev}
		default:
			groups, err := j.prevEventsGroups(ctx, ev.EventID)
			if err != nil {
				return nil, err
			}
			if len(groups) > 0 {
				out[ev.EventID] = groups
			}
		}
	}
	return out, nil
}

func (j *joinedHosts) prevEventsGroups(ctx context.Context, eventID string) ([]int64, error) {
	rows, err := j.db.Query(ctx, `SELECT DISTINCT g.state_group FROM event_edges e
		JOIN event_to_state_groups g ON g.event_id = e.prev_event_id WHERE e.event_id = $1`, eventID)
	if err != nil {
		return nil, fmt.Errorf("event_edges: %w", err)
	}
	groups, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("event_edges: %w", err)
	}
	return groups, nil
}

// atGroups returns the servers joined at any of the state groups.
func (j *joinedHosts) atGroups(ctx context.Context, groups []int64) ([]string, error) {
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

// before returns the hosts joined in the state before one event.
func (j *joinedHosts) before(ctx context.Context, eventID string, isState bool) ([]string, error) {
	groups, err := j.groupsBefore(ctx, []eventState{{eventID, isState}})
	if err != nil {
		return nil, err
	}
	if _, ok := groups[eventID]; !ok {
		return nil, errNoState
	}
	return j.atGroups(ctx, groups[eventID])
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

// atStateGroup returns the servers joined at sg: remembered, from
// Synapse's cache, or from the database.
func (j *joinedHosts) atStateGroup(ctx context.Context, sg int64) ([]string, error) {
	if hosts, ok := j.remembered(sg); ok {
		return hosts, nil
	}
	if hosts, ok := j.fromCache(ctx, sg); ok {
		j.remember(sg, hosts)
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

// fromCache reads Synapse's external cache; a miss or an error falls back
// to the database.
func (j *joinedHosts) fromCache(ctx context.Context, sg int64) ([]string, bool) {
	if j.redis == nil || !j.cacheUsable() {
		return nil, false
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
