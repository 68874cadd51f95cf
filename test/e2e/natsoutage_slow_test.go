//go:build slow

// The slow fault tests: `go tool task test:slow` runs them (the build tag
// keeps them out of the main suite, so they are never skipped there).

package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

// TestLongNATSOutage is TestNATSOutage for a minute and for five.
func TestLongNATSOutage(t *testing.T) {
	for _, outage := range []time.Duration{time.Minute, 5 * time.Minute} {
		t.Run(outage.String(), func(t *testing.T) {
			natsOutage(t, startNATS(t), outage, nil)
		})
	}
}

// TestNATSClusterRollingRestart runs fedsender against a three-node NATS
// cluster with every stream on three replicas, restarts each node in turn
// while PDUs are published and a destination fails now and then, and
// checks what an operator sees: every PDU delivered in order, offsets and
// watermarks moving again, /readyz 200 at the end, and no conflict taken
// for another writer.
func TestNATSClusterRollingRestart(t *testing.T) {
	c := startNATSCluster(t)
	waitJetStream(t, c.url())
	h := outageHarness(t, c.url(), func(cfg *config.Config) { cfg.NATS.Replicas = 3 })
	ok, flaky := h.receiver(nil), h.receiver(nil)
	dests := []string{ok.ServerName(), flaky.ServerName()}
	const room = "!rolling:origin.test"
	want := map[string][]string{}
	var last uint64
	n := 0
	publish := func(k int) {
		for range k {
			n++
			var id string
			id, last = h.publishEventually(2*time.Minute, room, n, dests...)
			want[room] = append(want[room], id)
		}
	}
	offsetsAt := func(seq uint64) bool {
		for _, d := range dests {
			if got := h.destination(d).LastSuccessfulStreamOrdering; got == nil || *got < seq {
				return false
			}
		}
		return true
	}

	publish(5)
	eventually(t, 2*time.Minute, func() bool { return uniqueCount(ok) >= n }, "%s has %d of %d PDUs before the restarts", ok.ServerName(), uniqueCount(ok), n)
	for i, node := range c.nodes {
		// A transaction answered while the node goes down, and failures:
		// their writes are in flight when it stops.
		ok.SetFault(receiver.Fault{Hang: true})
		publish(2)
		eventually(t, time.Minute, func() bool { return ok.InFlight() > 0 }, "no transaction in flight to %s", ok.ServerName())
		flaky.SetFault(receiver.Fault{Status: http.StatusServiceUnavailable, Times: 2})
		connected := node.fedsenderConnected()
		node.stop()
		stopped := time.Now()
		ok.SetFault(receiver.Fault{})
		publish(5) // to the other two nodes
		published := time.Since(stopped)
		eventually(t, 2*time.Minute, func() bool { return h.storedOffset(dests[0]) >= last && h.storedOffset(dests[1]) >= last },
			"with node %s down, the stored offsets are %d and %d, want %d", node.opts.ServerName, h.storedOffset(dests[0]), h.storedOffset(dests[1]), last)
		stored := time.Since(stopped)
		eventually(t, 2*time.Minute, func() bool { return offsetsAt(last) },
			"with node %s down, the admin API shows last_successful_stream_ordering %s and %s, want %d",
			node.opts.ServerName, ordering(h.destination(dests[0])), ordering(h.destination(dests[1])), last)
		t.Logf("node %s down (fedsender was connected to it: %v): 5 PDUs published %v, their offsets stored %v and shown by the admin API %v after it stopped",
			node.opts.ServerName, connected, published.Round(time.Millisecond), stored.Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
		node.start()
		c.waitHealthy(t, i)
		back := time.Now()
		publish(5)
		eventually(t, 2*time.Minute, func() bool { return offsetsAt(last) },
			"after node %s came back, the admin API shows last_successful_stream_ordering %s and %s, want %d",
			node.opts.ServerName, ordering(h.destination(dests[0])), ordering(h.destination(dests[1])), last)
		t.Logf("node %s back: offsets at the newest PDU %v after it was healthy", node.opts.ServerName, time.Since(back).Round(time.Millisecond))
	}

	for _, r := range []*receiver.Receiver{ok, flaky} {
		eventually(t, time.Minute, func() bool { return uniqueCount(r) >= n }, "%s has %d of %d PDUs", r.ServerName(), uniqueCount(r), n)
		inOrder(t, r, want)
	}
	for _, d := range dests {
		p := streams.Partition(d, h.cfg.Queue.Partitions)
		eventually(t, time.Minute, func() bool { return h.watermark(p).Seq >= last },
			"partition %d's watermark is %d, want %d", p, h.watermark(p).Seq, last)
	}
	eventually(t, time.Minute, func() bool { code, _ := h.adminRaw("GET", "/readyz"); return code == http.StatusOK },
		"/readyz does not answer 200 after the rolling restart")
	t.Logf("compare-and-swap conflicts: %v", h.noOtherWriter())
}

// fedsenderConnected reports whether fedsender's connection is to ns.
func (ns *natsServer) fedsenderConnected() bool {
	ns.t.Helper()
	connz, err := ns.srv.Connz(&server.ConnzOptions{})
	if err != nil {
		ns.t.Fatal(err)
	}
	for _, c := range connz.Conns {
		if c.Name == "fedsender" {
			return true
		}
	}
	return false
}
