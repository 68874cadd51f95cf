package resolve

import "errors"

// ErrNoAddresses is wrapped when a name (or every SRV target of it) has no
// A or AAAA records.
var ErrNoAddresses = errors.New("resolve: no addresses")

// ErrServiceUnavailable is wrapped when an SRV lookup answers with the single
// target ".", which RFC 2782 defines as "the service is decidedly not
// available at this domain".
var ErrServiceUnavailable = errors.New("resolve: SRV says the service is not available")

// errWellKnown is wrapped by .well-known fetch failures. They never reach
// Resolve's callers: a failed fetch means "no delegation".
var errWellKnown = errors.New("no usable .well-known/matrix/server")
