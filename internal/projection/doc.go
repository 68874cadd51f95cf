// Package projection defines the questions fedsender's read models answer
// for the admin surfaces (the HTTP admin API and the NATS micro service):
// one destination by name, a page of destinations in one of Synapse's orders
// with a substring search, and a page of a destination's rooms.
//
// The read models themselves live in sub-packages named after what backs
// them: kvprojection (a JetStream KV bucket with one JSON document per
// destination, and an in-memory index over it), pgprojection
// (Synapse-compatible tables in PostgreSQL, when postgres.url is set) and
// roomindex (each destination's rooms, from the PDU stream). Select and
// SelectRooms are the reference answers every implementation must give
// (package projectiontest checks them).
package projection
