// Package replication listens to Synapse's replication stream on Redis:
// the pub/sub channel named after the homeserver's server name, on which
// every Synapse process publishes the rows it wrote (RDATA), its stream
// positions (POSITION) and REMOTE_SERVER_UP. The Synapse feed uses it only
// to wake up: Synapse's database stays the truth, so a missed or repeated
// line loses nothing. While Redis is unreachable the client reports itself
// down and reconnects with backoff; the feed polls in the meantime.
package replication
