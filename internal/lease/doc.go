// Package lease gives one holder at a time a named lease kept in the NATS
// KV bucket fedsender-leases.
//
// A lease is a key written with a per-key TTL (the bucket has
// LimitMarkerTTL, so an expired key leaves a delete marker watchers see).
// The holder renews it with compare-and-swap on the key's revision, every
// third of the TTL; another holder can create the key only once it is gone:
// released, or expired on the server because nobody renewed it. NATS is the
// arbiter: there is no other consensus.
//
// Fencing: Valid reports whether the holder may still act. It is true until
// the TTL, less a safety margin, has passed since the last successful
// renewal was sent (measured on the local monotonic clock). The server
// counts the TTL from when it stored that renewal, which is later, so a
// paused or partitioned holder stops acting before the key can expire and
// another holder can take it, as long as the two clocks' rates differ by
// less than the margin over one TTL. Callers check Valid before every
// action that must not happen twice (a send), not only when they started.
//
// Both the Synapse feed's single active reader and the replicas' partition
// ownership hold their leases through this package.
package lease
