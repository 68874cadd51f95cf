package kvprojection

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// reconnections returns a channel that receives each time the NATS
// connection is established again, and the func that stops it.
//
// nats.go's KV watchers (ordered push consumers) find out that the server
// restarted, and their consumer with it, only when their heartbeat check
// fires, up to 20 s after the reconnection; until then the admin surfaces
// would show the state from before the outage. The projector and the index
// start a new watch at once instead.
func reconnections(js jetstream.JetStream) (<-chan nats.Status, func()) {
	nc := js.Conn()
	ch := nc.StatusChanged(nats.CONNECTED)
	return ch, func() { nc.RemoveStatusListener(ch) }
}
