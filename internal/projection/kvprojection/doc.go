// Package kvprojection is the read model the admin surfaces answer from: a
// JetStream KV bucket with one readable JSON document per destination, and
// an in-memory Index over it that answers every order, direction, page and
// substring search of Synapse's destinations list without sorting.
//
// Two parts, each usable alone:
//
//   - Projector reads FEDSENDER_DEST_EVENTS (last event per destination, then
//     every new one; each event carries the full state after it) and the
//     fedsender-offsets bucket, and writes each destination's document to the
//     fedsender-destinations bucket, coalesced every FlushInterval (250 ms by
//     default). It owns nothing: every replica may run one. Writes are
//     compare-and-swap on the key's revision and merge with what is stored
//     (the fields of the newer event sequence, the larger stream ordering),
//     so two projectors never move a document backwards. A deleted bucket is
//     recreated and refilled from the event log: the bucket is a cache of the
//     log, rebuildable at any time.
//   - Index watches the bucket and keeps the documents in memory, in one
//     ordered block list per (order_by, dir). A page without a search is
//     O(log n + limit); a search walks one ordered list, O(n) string
//     matches (a few ms at 100,000 destinations). It notices a recreated
//     bucket and loads it anew, answering from the old contents meanwhile.
//     Sync waits until it shows every write to the bucket that completed
//     before the call (it asks the bucket's stream for its last sequence),
//     so that a read on any replica shows what another replica's write
//     made visible; EventSeq says as of which event a destination is shown.
//
// # Keys and documents
//
// The key of a destination is streams.DestinationKey(name), which is
// streams.EncodeToken(name): ASCII letters, digits and '-' stand for
// themselves, '.' becomes '_', every other byte '=' and two hex digits. So
//
//	matrix.org        -> matrix_org
//	example.com:8448  -> example_com=3A8448
//	[::1]:8448        -> =5B=3A=3A1=5D=3A8448
//
// and `nats kv get fedsender-destinations matrix_org` shows
//
//	{"destination":"matrix.org","retry_last_ts":0,"retry_interval":0,
//	 "failure_ts":null,"last_successful_stream_ordering":42,
//	 "catching_up":false,"event_sequence":17,"pending_edus":0}
//
// The first five fields are Synapse's destination object exactly as the
// admin API shows it; catching_up is fedsender's, and event_sequence is the
// FEDSENDER_DEST_EVENTS sequence of the newest event folded in (0: none),
// which orders concurrent writers. pending_edus counts the must-deliver
// EDUs the destination has not acknowledged (from fedsender-edu-pending,
// whose revision, pending_edus_revision, orders concurrent writers). A document whose destination field does
// not match its key is ignored by the Index.
package kvprojection
