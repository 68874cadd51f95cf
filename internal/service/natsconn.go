package service

import (
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
)

// natsReconnect keeps the connection to an external NATS server through an
// outage of any length: reconnect for ever, backing off from 100 ms to 2 s
// (with jitter, so that many replicas do not come back in step), and hold
// up to 8 MiB of publishes meanwhile (sent on reconnect; the writers settle
// the conflicts these late writes cause, see actors/partition). A server
// that vanishes without closing the connection (a network partition) is
// noticed after at most three missed pings, 30 s, instead of nats.go's
// default of several minutes.
var natsReconnect = []nats.Option{
	nats.MaxReconnects(-1),
	nats.CustomReconnectDelay(reconnectDelay),
	nats.ReconnectBufSize(8 << 20),
	nats.PingInterval(10 * time.Second),
	nats.MaxPingsOutstanding(3),
}

// reconnectDelay is the wait after the attempts-th failed pass over the
// server list.
func reconnectDelay(attempts int) time.Duration {
	d := min(100*time.Millisecond<<min(attempts, 5), 2*time.Second)
	return d + rand.N(d/5+1)
}
