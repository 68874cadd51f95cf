// Package roomindex is the read model of Synapse's destination_rooms: for
// each destination, the rooms it had PDUs for and the stream ordering (the
// FEDSENDER_PDU sequence) of the newest of them. The admin surfaces answer
// GET .../destinations/<d>/rooms from it.
//
// fedsender writes no JetStream message per (PDU, destination): that was
// measured to cost most of a delivery. So this index lives in each
// replica's memory and is fed for free by the PDU reader (internal/ingest
// calls Observe with every batch it reads). At start, Run reads the part of
// the stream the reader skips (from the stream's first message up to where
// the reader resumes) once, decoding only room_id and destinations, so every
// replica answers alike. Until that backfill is done, Ready is false.
//
// # Bounds and cost
//
//   - It covers the PDUs the stream retains (queue.retention, 14 days by
//     default): once a minute, rooms whose newest PDU for a destination left
//     the stream are dropped, as catch-up could not send them anyway.
//   - It holds at most MaxPairs (destination, room) pairs (default
//     2,000,000). Over that, the oldest pairs (by stream ordering) are
//     dropped until 90% of the bound remain, and a warning is logged;
//     answers then cover only the newer PDUs.
//   - Memory: room ids are interned once; a pair is a map entry of a room
//     number and a sequence. Measured (BenchmarkMemory): 1,000,000 pairs
//     over 100,000 destinations and 10,000 rooms take 42 MiB, about 45
//     bytes per pair all included, so the default bound is about 90 MiB.
//   - Observe costs one map update per (PDU, destination) under a lock; a
//     rooms query copies and sorts the destination's rooms (BenchmarkRooms:
//     2.3 ms for a destination in 10,000 rooms).
//
// Not kept: rooms of PDUs the reader dead-lettered (invalid envelopes),
// except that the backfill checks only room_id, event_id, pdu and
// destinations, so an envelope refused for its PDU's contents (not
// canonical JSON, over 64 KiB) shows after a restart.
package roomindex
