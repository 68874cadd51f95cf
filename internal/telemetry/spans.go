package telemetry

import "go.opentelemetry.io/otel/attribute"

// Span names. docs/OBSERVABILITY.md describes each.
const (
	SpanIngest      = "fedsender.ingest"      // reading and validating one envelope
	SpanFanOut      = "fedsender.fanout"      // handing one PDU to its destinations' supervisors
	SpanTransaction = "fedsender.transaction" // one attempt of one transaction to one destination
	SpanResolve     = "fedsender.resolve"     // resolving a server name
	SpanCatchUp     = "fedsender.catchup"     // one catch-up scan of the PDU stream
)

// Attribute keys of fedsender's spans. Where OpenTelemetry's semantic
// conventions have one (messaging.*, http.*, server.*), it is used.
const (
	KeyMessagingSystem      = attribute.Key("messaging.system")
	KeyMessagingDestination = attribute.Key("messaging.destination.name")
	KeyMessagingMessageID   = attribute.Key("messaging.message.id")
	KeyHTTPStatus           = attribute.Key("http.response.status_code")
	KeyServerAddress        = attribute.Key("server.address")

	KeyStreamSequence   = attribute.Key("fedsender.stream_sequence")
	KeyEventID          = attribute.Key("matrix.event_id")
	KeyRoomID           = attribute.Key("matrix.room_id")
	KeyValid            = attribute.Key("fedsender.valid")
	KeyInvalidReason    = attribute.Key("fedsender.invalid_reason")
	KeyDestinations     = attribute.Key("fedsender.destinations")
	KeyDuplicateDests   = attribute.Key("fedsender.destinations.duplicates")
	KeyPartitions       = attribute.Key("fedsender.partitions")
	KeyDestination      = attribute.Key("fedsender.destination")
	KeyTxnID            = attribute.Key("fedsender.txn_id")
	KeyPDUs             = attribute.Key("fedsender.pdus")
	KeyEDUs             = attribute.Key("fedsender.edus")
	KeyAttempt          = attribute.Key("fedsender.attempt")
	KeyResult           = attribute.Key("fedsender.result") // success or a failure class
	KeyBackoff          = attribute.Key("fedsender.backoff_ms")
	KeyCatchUp          = attribute.Key("fedsender.catch_up") // the transaction or failure started catch-up, or is part of one
	KeyPDUErrors        = attribute.Key("fedsender.pdu_errors")
	KeyResolveCache     = attribute.Key("fedsender.resolve.cache") // hit, miss, stale or ip_literal
	KeyResolveAddresses = attribute.Key("fedsender.resolve.addresses")
	KeyCatchUpFrom      = attribute.Key("fedsender.catchup.from")
	KeyCatchUpThrough   = attribute.Key("fedsender.catchup.through")
	KeyCatchUpExact     = attribute.Key("fedsender.catchup.exact")
	KeyCatchUpItems     = attribute.Key("fedsender.catchup.items")
)

// ResultSuccess is KeyResult of an accepted transaction.
const ResultSuccess = "success"
