// Package receiver is a strict Matrix federation receiver for fedsender's
// end-to-end tests and its benchmark program: an HTTPS server that plays a
// remote homeserver and accepts `PUT /_matrix/federation/v1/send/{txnId}`.
//
// It checks everything a sender can get wrong — the X-Matrix signature, the
// destination, the transaction limits, one transaction in flight at a time,
// txnId reuse with a different body — records every breach as a violation and
// answers it the way Synapse would, so that a correct run ends with
// [Receiver.Violations] empty. Faults ([Fault]) make it fail, throttle, hang,
// go down ([Receiver.Stop]) or present an untrusted certificate
// ([Receiver.UseBadCert]) on demand.
//
// The core API does not need package testing; [Start] and the Must helpers
// are thin wrappers for tests. Accepted PDUs are stored compactly (a few
// dozen bytes each, no pointers for the garbage collector to scan) so that a
// benchmark can run a couple of hundred receivers in one process.
package receiver
