package admin

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/servername"
)

// destinationJSON is Synapse's destination object, fields in its order.
type destinationJSON struct {
	Destination   string `json:"destination"`
	RetryLastTS   int64  `json:"retry_last_ts"`
	RetryInterval int64  `json:"retry_interval"`
	// FailureTS is null when the destination is not failing.
	FailureTS *int64 `json:"failure_ts"`
	// LastSuccessfulStreamOrdering is null when nothing was ever sent.
	LastSuccessfulStreamOrdering *uint64 `json:"last_successful_stream_ordering"`
}

// view is what the API shows of a state: when retry_last_ts is 0 the
// destination is not failing, and Synapse's details answer then shows
// failure_ts null and both retry fields 0. The list shows the same, so that
// both answers agree and sorting follows what is shown.
func view(s destination.State) destinationJSON {
	d := destinationJSON{Destination: s.Destination}
	if s.Failing() {
		d.RetryLastTS, d.RetryInterval = s.RetryLastTS, s.RetryInterval
		if s.FailureTS != 0 {
			d.FailureTS = &s.FailureTS
		}
	}
	if s.Offset != 0 {
		d.LastSuccessfulStreamOrdering = &s.Offset
	}
	return d
}

// orderKey is a value of order_by and the column it sorts by (nil: the name).
type orderKey struct {
	name string
	key  func(destinationJSON) int64
}

// orderKeys are the values of order_by, in Synapse's order (its error lists
// them so), each with the column it sorts by. null sorts as 0, first when
// ascending (SQLite's order; Synapse on PostgreSQL puts NULL last).
var orderKeys = []orderKey{
	{"destination", nil},
	{"retry_last_ts", func(d destinationJSON) int64 { return d.RetryLastTS }},
	{"retry_interval", func(d destinationJSON) int64 { return d.RetryInterval }},
	{"failure_ts", func(d destinationJSON) int64 { return deref(d.FailureTS) }},
	{"last_successful_stream_ordering", func(d destinationJSON) int64 {
		return int64(min(deref(d.LastSuccessfulStreamOrdering), 1<<63-1))
	}},
}

func deref[T int64 | uint64](p *T) T {
	if p == nil {
		return 0
	}
	return *p
}

// sortDestinations orders by the key, then by name ascending whatever the
// direction (Synapse: ORDER BY <key> <dir>, destination ASC). Names compare
// byte by byte, as under the C collation Synapse requires of PostgreSQL.
func sortDestinations(ds []destinationJSON, key func(destinationJSON) int64, backwards bool) {
	slices.SortFunc(ds, func(a, b destinationJSON) int {
		var c int
		if key == nil {
			c = strings.Compare(a.Destination, b.Destination)
		} else {
			c = cmp.Compare(key(a), key(b))
		}
		if backwards {
			c = -c
		}
		if c != 0 {
			return c
		}
		return strings.Compare(a.Destination, b.Destination)
	})
}

type listJSON struct {
	Destinations []destinationJSON `json:"destinations"`
	Total        int               `json:"total"`
	NextToken    string            `json:"next_token,omitempty"`
}

// list is GET /destinations.
func (h *handler) list(w http.ResponseWriter, r *http.Request, _ string) error {
	q := r.URL.Query()
	pg, err := pageParams(q)
	if err != nil {
		return err
	}
	search, err := stringParam(q, "destination", "")
	if err != nil {
		return err
	}
	names := make([]string, len(orderKeys))
	for i, k := range orderKeys {
		names[i] = k.name
	}
	orderBy, err := stringParam(q, "order_by", "destination", names...)
	if err != nil {
		return err
	}
	backwards, err := dirParam(q)
	if err != nil {
		return err
	}
	rd, err := h.reader()
	if err != nil {
		return err
	}

	// Synapse: WHERE LOWER(destination) LIKE %lower(search)%. Here the search
	// is a plain substring ('%' and '_' are not wildcards; no server name
	// contains them anyway).
	search = strings.ToLower(search)
	all := rd.List()
	ds := make([]destinationJSON, 0, len(all))
	for _, s := range all {
		if search == "" || strings.Contains(strings.ToLower(s.Destination), search) {
			ds = append(ds, view(s))
		}
	}
	i := slices.IndexFunc(orderKeys, func(k orderKey) bool { return k.name == orderBy })
	sortDestinations(ds, orderKeys[i].key, backwards)
	start, end, next := pg.window(len(ds))
	writeJSON(w, http.StatusOK, listJSON{Destinations: ds[start:end], Total: len(ds), NextToken: next})
	return nil
}

// known returns the state of a destination named in a path.
func (h *handler) known(name string) (destination.State, error) {
	if servername.Validate(name) != nil {
		return destination.State{}, ErrUnknownDestination // Synapse: not in its table, so 404
	}
	rd, err := h.reader()
	if err != nil {
		return destination.State{}, err
	}
	s, ok := rd.Get(name)
	if !ok {
		return destination.State{}, ErrUnknownDestination
	}
	return s, nil
}

// details is GET /destinations/{destination}.
func (h *handler) details(w http.ResponseWriter, _ *http.Request, dest string) error {
	s, err := h.known(dest)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, view(s))
	return nil
}

type roomsJSON struct {
	Rooms     []roomJSON `json:"rooms"`
	Total     int        `json:"total"`
	NextToken string     `json:"next_token,omitempty"`
}

type roomJSON struct {
	RoomID         string `json:"room_id"`
	StreamOrdering uint64 `json:"stream_ordering"`
}

// rooms is GET /destinations/{destination}/rooms. Like Synapse it checks the
// destination before its parameters.
//
// The rooms of a destination (Synapse's destination_rooms: each room's newest
// PDU for it) need a read model of their own, a later feature; until then
// every known destination has no rooms.
func (h *handler) rooms(w http.ResponseWriter, r *http.Request, dest string) error {
	if _, err := h.known(dest); err != nil {
		return err
	}
	q := r.URL.Query()
	pg, err := pageParams(q)
	if err != nil {
		return err
	}
	if _, err := dirParam(q); err != nil {
		return err
	}
	rooms := []roomJSON{}
	start, end, next := pg.window(len(rooms))
	writeJSON(w, http.StatusOK, roomsJSON{Rooms: rooms[start:end], Total: len(rooms), NextToken: next})
	return nil
}

// reset is POST /destinations/{destination}/reset_connection. The body is
// not read (Synapse ignores it too). The reset is handed to the destination's
// owner and answered at once; the owner clears the timings and wakes the
// destination, and the read model shows it when the Reset event arrives.
func (h *handler) reset(w http.ResponseWriter, r *http.Request, dest string) error {
	s, err := h.known(dest)
	if err != nil {
		return err
	}
	if !s.Failing() {
		return ErrResetNotNeeded
	}
	if h.opts.Resetter == nil {
		return fmt.Errorf("admin: reset %s: no resetter configured", dest)
	}
	ctx, cancel := context.WithTimeout(r.Context(), resetTimeout)
	defer cancel()
	if err := h.opts.Resetter.Reset(ctx, dest); err != nil {
		return fmt.Errorf("admin: reset %s: %w", dest, err)
	}
	h.opts.Log.Info("admin reset of retry timings handed over", "destination", dest)
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}
