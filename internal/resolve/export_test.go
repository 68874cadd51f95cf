package resolve

// Waiters reports how many Resolve calls share the running lookup of name.
func (r *Resolver) Waiters(name string) int { return r.flights.waiters(name) }

// CachedTargets reports how many Targets the cache holds.
func (r *Resolver) CachedTargets() int { return r.targets.len() }
