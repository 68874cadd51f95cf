// Package resolve turns a Matrix server name into where and how to connect:
// the addresses to dial, the TLS server name the certificate must match and
// the HTTP Host header, following the server-server specification's
// resolution algorithm (IP literal, explicit port, .well-known/matrix/server
// delegation, SRV _matrix-fed._tcp and _matrix._tcp, port 8448).
//
// The federation client calls Resolve for every new connection, so results
// are cached: .well-known answers for as long as their Cache-Control or
// Expires headers say (24 h by default, 48 h at most, failures for a shorter
// configurable time), complete results for a short DNS time to live. Both
// caches are bounded LRUs, so sending to 100,000 destinations does not grow
// memory without bound, and concurrent lookups of one name share one
// resolution.
//
// Resolve only finds addresses; it never connects to them except to fetch
// .well-known files, through an HTTP client whose dialer should carry a
// netguard.Guard (see federation.NewWellKnownClient).
package resolve
