package streams

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/fedsender/fedsender/internal/servername"
)

// RefusedDestination is a destination an envelope named that is not a
// valid server name.
type RefusedDestination struct {
	Index  int    // its index in the envelope's destinations
	Name   string // as the envelope gave it
	Reason error  // wraps servername.ErrInvalid
}

// Error reads "destinations[1] "[::1": invalid server name ...".
func (r RefusedDestination) Error() string {
	return fmt.Sprintf("destinations[%d] %s: %v", r.Index, quoteName(r.Name), r.Reason)
}

// Unwrap returns the reason.
func (r RefusedDestination) Unwrap() error { return r.Reason }

// SplitDestinations sorts an envelope's destinations into the valid ones,
// normalised (servername.Normalize) and without duplicates, in their order,
// and the invalid ones with the reason. Every reader of the PDU stream
// splits them this way, so that all agree on who a PDU is for.
func SplitDestinations(names []string) (valid []string, refused []RefusedDestination) {
	seen := make(map[string]struct{}, len(names))
	valid = make([]string, 0, len(names))
	for i, d := range names {
		if err := servername.Validate(d); err != nil {
			refused = append(refused, RefusedDestination{Index: i, Name: d, Reason: err})
			continue
		}
		d = servername.Normalize(d)
		if _, dup := seen[d]; dup {
			continue
		}
		seen[d] = struct{}{}
		valid = append(valid, d)
	}
	return valid, refused
}

// DropOrigin returns dests without the origin (fedsender's own
// server_name, compared as normalised names), dests being normalised as
// SplitDestinations returns them: a server never sends to itself. It
// never changes dests' backing array.
func DropOrigin(dests []string, origin string) []string {
	origin = servername.Normalize(origin)
	for i, d := range dests {
		if d == origin {
			return append(dests[:i:i], dests[i+1:]...)
		}
	}
	return dests
}

// describeRefused lists the first few refused destinations for an error.
func describeRefused(refused []RefusedDestination) string {
	const shown = 3
	parts := make([]string, 0, shown+1)
	for i, r := range refused {
		if i == shown {
			parts = append(parts, "and "+strconv.Itoa(len(refused)-shown)+" more")
			break
		}
		parts = append(parts, r.Error())
	}
	return strings.Join(parts, "; ")
}

// quoteName quotes a name as it may appear in a header or a log line:
// escaped, and cut short when the input is hostile.
func quoteName(name string) string {
	const max = 64
	if len(name) > max {
		return strconv.Quote(name[:max]) + "..."
	}
	return strconv.Quote(name)
}
