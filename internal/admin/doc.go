// Package admin is fedsender's admin surfaces: Synapse's federation admin
// API (list, details, rooms and reset of destinations, under
// /_synapse/admin/v1/federation/destinations) over HTTP, so that operators'
// tools and the synapse-admin web UI work unchanged, plus /healthz (also
// /livez) and /readyz for Kubernetes probes; and the same four calls as the NATS micro
// service "fedsender" (ServeMicro), taking the HTTP API's parameters as a
// JSON object and answering the same JSON.
//
// Both surfaces run the same operations with the same parameter parsing and
// one error table (errors.go). Reads are answered from read models (any
// replica can answer; see internal/projection): a Reader that pages the
// destinations itself, and Rooms; a reset is handed to the destination's
// owner through a Resetter. As in Synapse, which writes before it answers,
// a reset answers 200 only once every read that starts afterwards shows
// it, on any replica: the owner answers once the reset's event is stored,
// with its event-log sequence; the reset waits until its Reader shows the
// destination as of that sequence; and every read first syncs its Reader
// with the store all replicas share (Reader.Sync).
//
// Where this package follows Synapse rather than the letter of the brief it
// says so; in short:
//
//   - Authentication is Synapse's: the access token comes from
//     "Authorization: Bearer <token>" or from the deprecated access_token query
//     parameter (not both); no token -> 401 M_MISSING_TOKEN, an unknown one ->
//     401 M_UNKNOWN_TOKEN. Every configured token is an admin's, so the 403
//     M_FORBIDDEN Synapse gives non-admins is given only when no token is
//     configured at all (the admin API is then off).
//   - Destination names in paths are percent-decoded one segment at a time
//     (so %3A and a raw ':' are the same name). Synapse does not validate
//     them: it looks the name up and answers 404 M_NOT_FOUND "Unknown
//     destination". An invalid server name can never be known, so this package
//     answers the same 404 for it, without a lookup.
//   - Query strings are split and decoded as Synapse's web server (Twisted)
//     does, not as Go's url.ParseQuery: '&' and ';' both separate pairs,
//     and a bad percent-escape is kept, so no parameter is dropped
//     (query.go).
//   - Error texts are Synapse's, word for word.
package admin
