// Package destination is the actor of one remote server. It holds the
// destination's bounded in-memory queue of PDUs, keeps exactly one
// transaction in flight, retries the same transaction (same id, same body)
// after a failure, backs off as Synapse does, and catches up (newest PDU of
// each room, up to 50 rooms a transaction) when its queue was dropped.
//
// It is spawned lazily by its partition supervisor (package partition), which
// feeds it PDUs, owns its timers, persists the events it reports, and
// restarts it after a panic.
package destination
