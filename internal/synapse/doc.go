// Package synapse is the Synapse feed: it takes the place of Synapse's
// federation_sender workers by reading what Synapse persisted (its
// PostgreSQL database, the truth) when Synapse's replication stream on
// Redis says something changed, and publishing PDU and EDU envelopes into
// fedsender's streams. Everything after the envelopes (fan-out,
// transactions, backoff, catch-up) is the ordinary pipeline, which does
// not know where they came from.
//
// The feed is a set of sources (Source), one per kind of work Synapse's
// sender picks up: events, to-device messages, device-list and
// signing-key updates, receipts, presence, typing. Each reads forward from
// its saved position, builds envelopes with the headers below, and the
// feed publishes them and saves the position only once JetStream
// acknowledged every one (Nats-Msg-Id makes a replay after a crash send
// nothing twice). One replica feeds at a time, under a lease
// (internal/lease). Synapse's own bookkeeping (its destinations,
// destination_rooms, device_federation_outbox, device-list and
// federation_stream_position tables) is kept as Synapse's sender keeps it,
// from what the pipeline delivered.
package synapse
