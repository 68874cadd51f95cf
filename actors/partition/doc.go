// Package partition is the supervisor of one partition of destinations. The
// reader (package ingest) hands it each PDU's destinations of this partition;
// it spawns destination actors lazily, feeds them, owns their backoff timers,
// schedules rate-limited wake-ups after a start, turns an actor's panic into
// a catch-up instead of a crash, persists the actors' events and offsets
// (package eventlog), and keeps the partition's resume watermark and the
// read-ahead gate that paces the reader.
package partition
