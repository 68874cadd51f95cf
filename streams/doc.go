// Package streams holds everything fedsender keeps in NATS JetStream as data:
// the list of streams and KV buckets, the typed functions that build their
// subjects and keys, the lossless encoding of Matrix server names into subject
// tokens, the ingest envelope a homeserver publishes, and the publisher client.
//
// The pipeline, in subjects:
//
//	fedsender.pdu                       homeserver -> FEDSENDER_PDU (the queue; one message per PDU)
//	fedsender.edu                       homeserver -> FEDSENDER_EDU (one message per EDU)
//	fedsender.deadletter.pdu            invalid envelopes and destinations, with the reason in a header
//	fedsender.deadletter.edu            the same for EDU envelopes
//	fedsender.server_up                 core NATS: {"destination"} seen up by the homeserver
//	fedsender.events.<p>.<dest>         FEDSENDER_DEST_EVENTS: each destination's event log
//	KV fedsender-offsets  <p>.<dest>    last_successful_stream_ordering per destination
//	KV fedsender-edu-offsets  <p>.<dest>  per destination, must-deliver EDUs acknowledged
//	KV fedsender-device-lists <dest>.<user>  device-list chain (prev_id) per destination and user
//	KV fedsender-partitions  p<p>       each partition's resume watermarks (PDU and EDU streams)
//	KV fedsender-destinations  <dest>   read model: one JSON document per destination
//	fedsender.admin.destinations.*      the NATS micro service "fedsender" (list, show, rooms, reset)
//	fedsender.control.<p>.reset         core NATS: reset commands to the owner of partition <p>
//
// <p> is the destination's partition (see Partition) and <dest> its token
// (see EncodeToken).
//
// An EDU message may carry a Nats-Msg-Id of its publisher's choosing (a
// to-device message_id, say), so that a retry is not sent twice.
//
// Headers of a PDU message: Nats-Msg-Id, the event id (JetStream drops a
// republish within the duplicate window), and optionally the W3C trace
// context, traceparent and tracestate with lower-case keys, which fedsender
// continues (Publisher injects its context's).
package streams
