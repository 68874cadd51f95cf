//go:build slow

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/fedsender/fedsender/streams"
)

// TestReplicasSurviveNATSNodeFaults runs three replicas under load on a
// three-node cluster of nats-server processes, every stream and bucket on
// three replicas: one node is killed -9 (sending goes on), started again
// (it catches up), then every node is restarted in turn; nothing is lost,
// rooms stay in order, no destination gets two transactions at once, and
// every request is sent under its partition's lease.
func TestReplicasSurviveNATSNodeFaults(t *testing.T) {
	c := startNATSProcessCluster(t)
	f := newFleet(t, c, 9)
	for _, name := range []string{"r1", "r2", "r3"} {
		f.start(name)
	}
	stop := f.load(40)
	f.settle(90 * time.Second)

	// goesOn waits until 40 more PDUs are published and delivered
	// everywhere, and returns how long that took.
	goesOn := func(what string) time.Duration {
		t.Helper()
		start := time.Now()
		n := f.published() + 40
		eventually(t, 2*time.Minute, func() bool { return f.published() >= n }, "%s: the load stopped publishing", what)
		for _, r := range f.rs {
			eventually(t, 2*time.Minute, func() bool { return uniqueCount(r) >= n }, "%s: %s has %d of %d PDUs", what, r.ServerName(), uniqueCount(r), n)
		}
		return time.Since(start)
	}

	victim := c.nodes[0]
	victim.kill9()
	killed := time.Now()
	t.Logf("NATS node %s killed -9; 40 more PDUs delivered everywhere %v later", victim.opts.ServerName, goesOn("node killed").Round(time.Millisecond))
	victim.start()
	c.waitHealthy(t, 0)
	seq := f.lastSeq()
	eventually(t, 2*time.Minute, func() bool { return c.nodeLastSeq(t, 0, streams.PDUStream) >= seq },
		"NATS node %s's copy of %s is at %d, want %d", victim.opts.ServerName, streams.PDUStream, c.nodeLastSeq(t, 0, streams.PDUStream), seq)
	t.Logf("NATS node %s back and current %v after the kill", victim.opts.ServerName, time.Since(killed).Round(time.Millisecond))
	goesOn("node back")

	for i, node := range c.nodes {
		node.stop()
		t.Logf("NATS node %s stopped; 40 more PDUs delivered everywhere %v later", node.opts.ServerName, goesOn("rolling restart").Round(time.Millisecond))
		node.start()
		c.waitHealthy(t, i)
		goesOn("rolling restart")
	}
	stop()
	// A lease whose leader moved may lapse and be taken over: allow a
	// few changes of sender, never two at once (fenced, Violations).
	f.verify(2 * (len(c.nodes) + 1))
	t.Logf("%d PDUs published to %d destinations through a kill -9 and a rolling restart of the NATS cluster", f.published(), len(f.dests))
}

// lastSeq is the PDU stream's last sequence, as the cluster reports it.
func (f *fleet) lastSeq() uint64 {
	f.t.Helper()
	var seq uint64
	eventually(f.t, time.Minute, func() bool {
		s, err := f.js.Stream(f.t.Context(), streams.PDUStream)
		if err != nil {
			return false
		}
		info, err := s.Info(f.t.Context())
		if err != nil {
			return false
		}
		seq = info.State.LastSeq
		return true
	}, "the cluster does not answer for %s", streams.PDUStream)
	return seq
}

// nodeLastSeq is the last sequence of node i's copy of stream, from its
// monitoring endpoint (0 when it has none yet).
func (c *natsCluster) nodeLastSeq(t *testing.T, i int, stream string) uint64 {
	t.Helper()
	resp, err := http.Get(c.monitor[i] + "/jsz?accounts=true&streams=true")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name  string `json:"name"`
				State struct {
					LastSeq uint64 `json:"last_seq"`
				} `json:"state"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		t.Fatal(fmt.Errorf("/jsz of node %d: %w", i, err))
	}
	for _, a := range jsz.Accounts {
		for _, s := range a.Streams {
			if s.Name == stream {
				return s.State.LastSeq
			}
		}
	}
	return 0
}
