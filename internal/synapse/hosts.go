package synapse

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5/pgxpool"
)

// roomHosts returns, per room, the servers in it now, as Synapse's
// get_current_hosts_in_room_or_partial_state_approximation answers for
// receipts, presence and typing: the servers of the members joined in the
// room's current state, and for a room Synapse joined with partial state
// also the servers the join listed (partial_state_rooms_servers, whose
// rows Synapse deletes once it has the full state). Our own server is in
// the list; Routing.Filter takes it out. Rooms without any are absent.
func roomHosts(ctx context.Context, db *pgxpool.Pool, roomIDs []string) (map[string][]string, error) {
	if len(roomIDs) == 0 {
		return map[string][]string{}, nil
	}
	// current_state_events.membership is filled by Synapse since 1.6x; the
	// join to room_memberships covers rows from before its background
	// update finished.
	rows, err := db.Query(ctx, `
		SELECT c.room_id, c.state_key
		  FROM current_state_events c
		  LEFT JOIN room_memberships m ON m.event_id = c.event_id
		 WHERE c.room_id = ANY($1) AND c.type = 'm.room.member'
		   AND coalesce(c.membership, m.membership) = 'join'
		UNION ALL
		SELECT room_id, ':' || server_name FROM partial_state_rooms_servers WHERE room_id = ANY($1)`, roomIDs)
	if err != nil {
		return nil, fmt.Errorf("synapse: hosts in %d rooms: %w", len(roomIDs), err)
	}
	defer rows.Close()
	hosts := make(map[string][]string, len(roomIDs))
	for rows.Next() {
		var room, member string
		if err := rows.Scan(&room, &member); err != nil {
			return nil, fmt.Errorf("synapse: hosts: %w", err)
		}
		if h := serverOf(member); h != "" {
			hosts[room] = append(hosts[room], h)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("synapse: hosts: %w", err)
	}
	for room, list := range hosts {
		slices.Sort(list)
		hosts[room] = slices.Compact(list)
	}
	return hosts, nil
}
