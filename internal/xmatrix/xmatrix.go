// Package xmatrix signs and verifies Matrix federation requests (the X-Matrix
// Authorization scheme) and JSON objects with ed25519 keys kept in Synapse's
// key-file format.
//
// Everything signed here is canonical JSON built by package canonicaljson, so
// that receivers (Synapse, Dendrite, Conduit, ...) that re-encode with their
// own canonicaliser get the same bytes.
package xmatrix

import "errors"

// ErrBadKeyFile, ErrBadAuthorization and ErrBadSignature are wrapped by the
// errors of this package.
var (
	ErrBadKeyFile       = errors.New("xmatrix: bad signing key file")
	ErrBadAuthorization = errors.New("xmatrix: bad Authorization header")
	ErrBadSignature     = errors.New("xmatrix: signature does not verify")
)

// ErrBadKeyID is wrapped by errors for a key version outside [A-Za-z0-9_]+,
// the character set the spec allows in key ids, and for keys that are not
// ed25519 keys of the right size.
var ErrBadKeyID = errors.New("xmatrix: bad key id")
