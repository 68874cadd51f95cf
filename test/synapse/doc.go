// Package synapse tests fedsender in place of Synapse's federation_sender
// workers, end to end: Synapse's database restored into a real PostgreSQL,
// a real redis-server carrying Synapse's replication traffic, fedsender
// with its synapse section, and strict HTTPS receivers standing in for the
// other homeservers under their recorded server names (package
// test/synapsefixture has the recording of Synapse 1.92). The golden test
// compares what fedsender delivers with what Synapse's own sender delivered;
// the crash test kills fedsender with -9 while Synapse writes.
package synapse
