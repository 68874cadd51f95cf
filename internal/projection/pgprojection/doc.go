// Package pgprojection keeps the admin surfaces' read model in PostgreSQL,
// in Synapse-compatible tables (destinations, destination_rooms) inside a
// configured schema, and answers the admin API from it with SQL.
//
// Three parts: Migrate creates and upgrades the schema from embedded,
// versioned SQL files under an advisory lock, so replicas may start at
// once; a Projector consumes FEDSENDER_DEST_EVENTS with its own durable
// consumer and the offsets bucket, and applies them in batches, each in one
// transaction with its checkpoint (a redelivered or older event changes
// nothing); a Reader answers projection queries with one index scan per
// order. PostgreSQL being down stops only the read model (the admin
// surfaces answer 503, the projector retries with backoff): sending never
// waits for it.
package pgprojection
