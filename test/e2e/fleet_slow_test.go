//go:build slow

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/lease"
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

	// The worst node to lose: the leader of the lease bucket, whose
	// renewals then wait for a new leader.
	vi := c.leaderOf(t, f, "KV_"+lease.Bucket)
	victim := c.nodes[vi]
	victim.kill9()
	killed := time.Now()
	took := goesOn("node killed")
	t.Logf("NATS node %s (the lease bucket's leader) killed -9; 40 more PDUs delivered everywhere %v later; the longest a destination went without a delivery: %v",
		victim.opts.ServerName, took.Round(time.Millisecond), f.longestGap(killed).Round(time.Millisecond))
	victim.start()
	c.waitHealthy(t, vi)
	seq := f.lastSeq()
	eventually(t, 2*time.Minute, func() bool { return c.nodeLastSeq(t, vi, streams.PDUStream) >= seq },
		"NATS node %s's copy of %s is at %d, want %d", victim.opts.ServerName, streams.PDUStream, c.nodeLastSeq(t, vi, streams.PDUStream), seq)
	t.Logf("NATS node %s back and current %v after the kill", victim.opts.ServerName, time.Since(killed).Round(time.Millisecond))
	goesOn("node back")

	for i, node := range c.nodes {
		node.stop()
		stopped := time.Now()
		took := goesOn("rolling restart")
		t.Logf("NATS node %s stopped; 40 more PDUs delivered everywhere %v later; the longest a destination went without a delivery: %v",
			node.opts.ServerName, took.Round(time.Millisecond), f.longestGap(stopped).Round(time.Millisecond))
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

// leaderOf is the index of the node that leads stream.
func (c *natsCluster) leaderOf(t *testing.T, f *fleet, stream string) int {
	t.Helper()
	s, err := f.js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i, ns := range c.nodes {
		if info.Cluster != nil && ns.opts.ServerName == info.Cluster.Leader {
			return i
		}
	}
	t.Fatalf("no node leads %s: %+v", stream, info.Cluster)
	return 0
}

// longestGap is the longest time after since that a destination went
// without a transaction, until its last one.
func (f *fleet) longestGap(since time.Time) time.Duration {
	var gap time.Duration
	for _, r := range f.rs {
		last := since
		for _, tx := range r.Transactions() {
			if tx.Received.After(last) {
				gap = max(gap, tx.Received.Sub(last))
				last = tx.Received
			}
		}
	}
	return gap
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
