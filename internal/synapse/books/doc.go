// Package books keeps Synapse's own federation tables in Synapse's
// database as Synapse's federation sender keeps them, from what
// fedsender's pipeline did, so that Synapse's admin API (which reads them)
// shows fedsender's work and Synapse's own sender could take over again:
//
//   - destinations and destination_rooms for every destination of every
//     PDU, with Synapse's stream ordering (the feed's
//     Fedsender-Synapse-Stream-Ordering header), as Synapse stores them
//     when it queues a PDU;
//   - destinations' retry timings from the destination event log
//     (failures, recovery, resets), with Synapse's conditional upsert made
//     monotonic in time, so that fedsender never undoes a newer backoff
//     Synapse's main process recorded for its own requests;
//   - destinations.last_successful_stream_ordering from the offsets bucket,
//     each offset (a PDU stream sequence) mapped to the stream ordering of
//     that PDU;
//   - after a destination's 200, device_federation_outbox rows deleted,
//     device_lists_outbound_pokes deleted and
//     device_lists_outbound_last_success moved, as Synapse 1.92 does, from
//     the EDU offsets bucket and the must-deliver EDUs' Fedsender-Synapse-Source
//     header.
//
// It runs beside the pipeline like the projections: it only reads
// fedsender's streams and buckets, and PostgreSQL being slow or down
// delays only the tables (it retries with backoff). One replica does the
// work, under the lease synapse-books; each stream's progress is a
// checkpoint in the KV bucket fedsender-synapse-books, written with
// compare-and-swap after the SQL committed. Every write is idempotent and
// monotonic (rows only move forward), so what is applied again after a
// crash, or by two replicas during a lease handover, changes nothing.
package books
