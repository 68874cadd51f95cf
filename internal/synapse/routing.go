package synapse

import (
	"slices"

	"github.com/fedsender/fedsender/internal/servername"
)

// Routing is the last step of every source's destination list, as
// Synapse's sender applies it: never our own server, only servers on
// federation_domain_whitelist when one is configured, each server once,
// in a stable order.
type Routing struct {
	// ServerName is Synapse's (and fedsender's) own server name.
	ServerName string
	// Whitelist is Synapse's federation_domain_whitelist; empty allows
	// every server.
	Whitelist []string
}

// Filter returns the destinations hosts should go to.
func (r Routing) Filter(hosts []string) []string {
	self := servername.Normalize(r.ServerName)
	var allowed map[string]bool
	if len(r.Whitelist) > 0 {
		allowed = make(map[string]bool, len(r.Whitelist))
		for _, w := range r.Whitelist {
			allowed[servername.Normalize(w)] = true
		}
	}
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		n := servername.Normalize(h)
		if n == "" || n == self || (allowed != nil && !allowed[n]) {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
