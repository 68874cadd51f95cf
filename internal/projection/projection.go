package projection

import (
	"cmp"
	"slices"
	"strings"

	"github.com/fedsender/fedsender/internal/destination"
)

// Order is a column the destinations list is ordered by (Synapse's order_by).
type Order int

// The orders of Synapse's destinations list.
const (
	ByDestination Order = iota
	ByRetryLastTS
	ByRetryInterval
	ByFailureTS
	ByLastSuccessfulStreamOrdering
	numOrders
)

var orderNames = [numOrders]string{
	"destination", "retry_last_ts", "retry_interval", "failure_ts", "last_successful_stream_ordering",
}

// String is the order's name in Synapse's API.
func (o Order) String() string {
	if o < 0 || o >= numOrders {
		return "Order(?)"
	}
	return orderNames[o]
}

// Orders returns every order, in Synapse's declaration order (its error
// message lists them so).
func Orders() []Order {
	out := make([]Order, numOrders)
	for i := range out {
		out[i] = Order(i)
	}
	return out
}

// ParseOrder returns the order named s (exactly, case-sensitive, as Synapse).
func ParseOrder(s string) (Order, bool) {
	i := slices.Index(orderNames[:], s)
	return Order(i), i >= 0
}

// Shown is a state as the admin surfaces show it: a destination that is not
// failing (retry_last_ts 0) shows failure_ts null and retry_interval 0, as
// Synapse's details answer does. Lists sort by what is shown.
func Shown(s destination.State) destination.State {
	if !s.Failing() {
		s.FailureTS, s.RetryInterval = 0, 0
	}
	return s
}

// Key is the value a destination sorts by in an order other than
// ByDestination: the shown column, null as 0 (first when ascending, as in
// SQLite; Synapse on PostgreSQL puts NULL last).
func Key(s destination.State, o Order) int64 {
	s = Shown(s)
	switch o {
	case ByRetryLastTS:
		return s.RetryLastTS
	case ByRetryInterval:
		return s.RetryInterval
	case ByFailureTS:
		return s.FailureTS
	case ByLastSuccessfulStreamOrdering:
		return int64(min(s.Offset, 1<<63-1))
	}
	return 0
}

// Compare orders two destinations as Synapse's list does: ORDER BY <column>
// <dir>, destination ASC. Names compare byte by byte (the C collation Synapse
// requires of PostgreSQL), and ties on the column fall back to the name
// ascending in both directions.
func Compare(a, b destination.State, o Order, backwards bool) int {
	var c int
	if o == ByDestination {
		c = strings.Compare(a.Destination, b.Destination)
	} else {
		c = cmp.Compare(Key(a, o), Key(b, o))
	}
	if backwards {
		c = -c
	}
	if c != 0 {
		return c
	}
	return strings.Compare(a.Destination, b.Destination)
}

// Query asks for one page of the destinations list.
type Query struct {
	// Search keeps the names that contain it, ignoring ASCII case (Synapse:
	// LOWER(destination) LIKE %lower(search)%, but '%' and '_' are not
	// wildcards here; no server name contains them). "" keeps every name.
	Search    string
	Order     Order
	Backwards bool
	// From is how many matching destinations to skip; Limit the most to
	// return. Both are non-negative.
	From, Limit int64
}

// Page is an answer to a Query: the page, and how many destinations match.
type Page struct {
	Destinations []destination.State
	Total        int
}

// Matcher reports whether names contain a search, ignoring ASCII case.
type Matcher struct{ lower string }

// NewMatcher returns a matcher for search.
func NewMatcher(search string) Matcher { return Matcher{lower: ToLowerASCII(search)} }

// String is the search, lower-cased.
func (m Matcher) String() string { return m.lower }

// All reports whether the matcher keeps every name.
func (m Matcher) All() bool { return m.lower == "" }

// Match reports whether name (already lower-cased with ToLowerASCII)
// contains the search.
func (m Matcher) Match(lowerName string) bool {
	return m.lower == "" || strings.Contains(lowerName, m.lower)
}

// ToLowerASCII lowers ASCII letters only, as every server name is ASCII.
func ToLowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// Window returns the bounds of the page [start, end) in a list of total
// items.
func Window(from, limit int64, total int) (start, end int) {
	t := int64(total)
	s := min(from, t)
	e := t
	if limit < t-s {
		e = s + limit
	}
	return int(s), int(e)
}

// Select is the reference answer to q over every destination: it sorts a
// copy, so it costs O(n log n) per call. Read models with many destinations
// keep an index instead, and must give the same answers.
func Select(all []destination.State, q Query) Page {
	m := NewMatcher(q.Search)
	ds := make([]destination.State, 0, len(all))
	for _, s := range all {
		if m.Match(ToLowerASCII(s.Destination)) {
			ds = append(ds, s)
		}
	}
	slices.SortFunc(ds, func(a, b destination.State) int { return Compare(a, b, q.Order, q.Backwards) })
	start, end := Window(q.From, q.Limit, len(ds))
	return Page{Destinations: ds[start:end:end], Total: len(ds)}
}

// Room is a row of Synapse's destination_rooms: a room with PDUs for the
// destination, and the stream ordering (the PDU stream sequence) of the
// newest of them.
type Room struct {
	RoomID         string
	StreamOrdering uint64
}

// RoomQuery asks for one page of a destination's rooms, ordered by room id.
type RoomQuery struct {
	Backwards   bool
	From, Limit int64
}

// RoomPage is an answer to a RoomQuery.
type RoomPage struct {
	Rooms []Room
	Total int
}

// SelectRooms is the reference answer to q over a destination's rooms.
func SelectRooms(all []Room, q RoomQuery) RoomPage {
	rs := slices.Clone(all)
	slices.SortFunc(rs, func(a, b Room) int {
		if q.Backwards {
			return strings.Compare(b.RoomID, a.RoomID)
		}
		return strings.Compare(a.RoomID, b.RoomID)
	})
	start, end := Window(q.From, q.Limit, len(rs))
	return RoomPage{Rooms: rs[start:end:end], Total: len(rs)}
}
