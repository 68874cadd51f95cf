// Package streams holds everything fedsender keeps in NATS JetStream as data:
// the list of streams and KV buckets, the typed functions that build their
// subjects and keys, the lossless encoding of Matrix server names into subject
// tokens, the ingest envelope a homeserver publishes, and the publisher client.
//
// The pipeline, in subjects:
//
//	fedsender.pdu                       homeserver -> FEDSENDER_PDU (the queue; one message per PDU)
//	fedsender.deadletter.pdu            invalid envelopes and destinations, with the reason in a header
//	fedsender.events.<p>.<dest>         FEDSENDER_DEST_EVENTS: each destination's event log
//	KV fedsender-offsets  <p>.<dest>    last_successful_stream_ordering per destination
//	KV fedsender-partitions  p<p>       each partition's resume watermark
//	KV fedsender-destinations  <dest>   read model: one JSON document per destination
//	fedsender.admin.destinations.*      the NATS micro service "fedsender" (list, show, rooms, reset)
//	fedsender.control.<p>.reset         core NATS: reset commands to the owner of partition <p>
//
// <p> is the destination's partition (see Partition) and <dest> its token
// (see EncodeToken).
//
// Headers of a PDU message: Nats-Msg-Id, the event id (JetStream drops a
// republish within the duplicate window), and optionally the W3C trace
// context, traceparent and tracestate with lower-case keys, which fedsender
// continues (Publisher injects its context's).
package streams
