// Package ownership shares the partitions among the replicas running on
// the same NATS streams, with NATS as the only arbiter.
//
// Membership: each replica holds the lease member.<instance token> in the
// KV bucket fedsender-leases (internal/lease) while it runs; the live
// members are the member keys that exist, which every replica watches. A
// crashed replica's key expires with its lease's TTL.
//
// Ownership: partition p's desired owner is the live member with the
// highest rendezvous weight for p (Owner). Adding or removing a replica
// changes the desired owner of that replica's share of the partitions
// only. A replica serves partition p only while it holds the lease
// partition.<p>, which it creates once the previous holder released it or
// it expired; it drains and releases the partitions whose desired owner is
// another member. So each partition is served by at most one replica at a
// time, and, once membership settles, by exactly one.
//
// The Manager tells a Handler (the service) when to start serving a
// partition, when to drain it, and when its lease was lost. It counts and
// traces every handover.
package ownership
