// Package memprojection is the in-memory read model of every destination,
// the one the admin API answers from.
//
// It is event-sourced: it reads FEDSENDER_DEST_EVENTS (where every event
// carries the destination's full state after it) and watches the
// fedsender-offsets KV bucket, and keeps each destination's newest state with
// last_successful_stream_ordering raised to the bucket's offset when that is
// newer (offsets move on every acknowledged transaction, events only when the
// state changes). Any replica can run one; it owns nothing and writes nothing.
//
// Start is fast because the event log is first read last-per-subject (one
// message per destination), then followed; the bucket is read the same way
// by its watcher. Ready reports when both initial reads are done.
package memprojection
