package ownership_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/ownership"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
)

const partitions = 16

var ttl = lease.Options{TTL: 2 * time.Second}

// cluster is the partitions' servers as the handlers saw them: it fails
// the test the moment two replicas serve one partition.
type cluster struct {
	t       *testing.T
	mu      sync.Mutex
	serving map[int]string
	moves   map[int][]string // each partition's servers, in order
}

func newCluster(t *testing.T) *cluster {
	return &cluster{t: t, serving: map[int]string{}, moves: map[int][]string{}}
}

// handler is one replica's Handler.
type handler struct {
	c    *cluster
	name string
}

func (h handler) Serve(_ context.Context, p int, l *lease.Lease) error {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	if other, ok := h.c.serving[p]; ok {
		h.c.t.Errorf("%s serves partition %d while %s still serves it", h.name, p, other)
	}
	if !l.Valid() {
		h.c.t.Errorf("%s got partition %d with a lease that is not valid", h.name, p)
	}
	h.c.serving[p] = h.name
	h.c.moves[p] = append(h.c.moves[p], h.name)
	return nil
}

func (h handler) stop(p int) {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	if h.c.serving[p] != h.name {
		h.c.t.Errorf("%s stopped partition %d, which %q serves", h.name, p, h.c.serving[p])
	}
	delete(h.c.serving, p)
}

func (h handler) Drain(_ context.Context, p int) { h.stop(p) }
func (h handler) Stop(p int)                     { h.stop(p) }

// snapshot returns who serves each partition, and how many moves each
// partition has seen.
func (c *cluster) snapshot() (map[int]string, map[int]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	moves := map[int]int{}
	for p, m := range c.moves {
		moves[p] = len(m)
	}
	return maps(c.serving), moves
}

func maps(m map[int]string) map[int]string {
	out := make(map[int]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// replica runs one Manager on its own NATS connection; stop ends it
// gracefully, and cut closes its connection (a crash or a partition, as
// far as NATS can tell).
type replica struct {
	m    *ownership.Manager
	nc   *nats.Conn
	stop func()
	cut  atomic.Bool
}

func start(t *testing.T, c *cluster, url, name string) *replica {
	t.Helper()
	nc, err := nats.Connect(url, nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	m := ownership.New(ownership.Options{JS: js, Instance: name, Partitions: partitions, Lease: ttl,
		DrainTimeout: 5 * time.Second, Handler: handler{c: c, name: name}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	r := &replica{m: m, nc: nc}
	r.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !r.cut.Load() {
				t.Errorf("%s: Run: %v", name, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("%s: Run did not return 15s after its context ended", name)
		}
		nc.Close()
	})
	t.Cleanup(r.stop)
	return r
}

// settled waits until every partition is served by its desired owner
// among live, and returns who serves what.
func settled(t *testing.T, c *cluster, live []string) map[int]string {
	t.Helper()
	var got map[int]string
	projectiontest.Eventually(t, 20*time.Second, func() bool {
		got, _ = c.snapshot()
		for p := range partitions {
			if got[p] != ownership.Owner(p, live) {
				return false
			}
		}
		return true
	}, "partitions not served by their desired owners among %v", live)
	return got
}

// TestReplicasShareThePartitions: one replica serves every partition; a
// second and third take only their shares; one that stops hands over only
// its own; never two at once (the handler fails the test at once).
func TestReplicasShareThePartitions(t *testing.T) {
	_, _, url := projectiontest.JetStream(t)
	c := newCluster(t)
	a := start(t, c, url, "fedsender-a")
	settled(t, c, []string{"fedsender-a"})
	projectiontest.Eventually(t, 5*time.Second, a.m.Ready, "a is not ready")

	before := settled(t, c, []string{"fedsender-a"})
	start(t, c, url, "fedsender-b")
	after := settled(t, c, []string{"fedsender-a", "fedsender-b"})
	onlyMoved(t, before, after, "fedsender-b")

	before = after
	cr := start(t, c, url, "fedsender-c")
	after = settled(t, c, []string{"fedsender-a", "fedsender-b", "fedsender-c"})
	onlyMoved(t, before, after, "fedsender-c")
	if n := len(cr.m.Owned()); n == 0 {
		t.Fatal("c owns nothing")
	}

	// c stops (SIGTERM): it drains and releases at once, well before its
	// leases could expire.
	before = after
	stopped := time.Now()
	cr.stop()
	after = settled(t, c, []string{"fedsender-a", "fedsender-b"})
	if took := time.Since(stopped); took > ttl.TTL {
		t.Errorf("c's partitions were taken %v after it stopped: it did not release them (TTL %v)", took, ttl.TTL)
	}
	for p := range partitions {
		if before[p] != after[p] && before[p] != "fedsender-c" {
			t.Errorf("partition %d moved from %s to %s when c left", p, before[p], after[p])
		}
	}
}

// onlyMoved fails unless every partition that changed hands went to joined.
func onlyMoved(t *testing.T, before, after map[int]string, joined string) {
	t.Helper()
	moved := 0
	for p := range partitions {
		if before[p] != after[p] {
			moved++
			if after[p] != joined {
				t.Errorf("partition %d moved from %s to %s, not to the new %s", p, before[p], after[p], joined)
			}
		}
	}
	if moved == 0 {
		t.Errorf("no partition moved to %s", joined)
	}
}

// TestACutOffReplicaStopsBeforeAnotherStarts: a replica that loses NATS
// (crash, network partition) stops serving its partitions before their
// leases expire and the survivor takes them, within the TTL and a bit.
func TestACutOffReplicaStopsBeforeAnotherStarts(t *testing.T) {
	_, _, url := projectiontest.JetStream(t)
	c := newCluster(t)
	a := start(t, c, url, "fedsender-a")
	b := start(t, c, url, "fedsender-b")
	before := settled(t, c, []string{"fedsender-a", "fedsender-b"})
	var ofB []int
	for p, s := range before {
		if s == "fedsender-b" {
			ofB = append(ofB, p)
		}
	}
	slices.Sort(ofB)
	cut := time.Now()
	b.cut.Store(true)
	b.nc.Close() // b cannot renew: the handler's invariant checks b stops first
	settled(t, c, []string{"fedsender-a"})
	took := time.Since(cut)
	t.Logf("b's partitions %v served by a %v after b was cut off (TTL %v)", ofB, took, ttl.TTL)
	if took < ttl.TTL-time.Second {
		t.Errorf("a took b's partitions %v after the cut, before b's leases (TTL %v) could expire", took, ttl.TTL)
	}
	if took > 3*ttl.TTL {
		t.Errorf("a took b's partitions only %v after the cut (TTL %v)", took, ttl.TTL)
	}
	_, moves := c.snapshot()
	for _, p := range ofB {
		if moves[p] < 2 {
			t.Errorf("partition %d: %d moves, want a's after b's", p, moves[p])
		}
	}
	_ = a
}

// TestOwnersListsEachPartitionsHolder: what operators read.
func TestOwnersListsEachPartitionsHolder(t *testing.T) {
	_, js, url := projectiontest.JetStream(t)
	c := newCluster(t)
	start(t, c, url, "fedsender-a")
	start(t, c, url, "fedsender-b")
	want := settled(t, c, []string{"fedsender-a", "fedsender-b"})
	got, err := ownership.Owners(t.Context(), js, partitions)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range got {
		if o.Owner != want[o.Partition] || o.Since == nil {
			t.Errorf("partition %d: Owners says %q (since %v), the handlers %q", o.Partition, o.Owner, o.Since, want[o.Partition])
		}
	}
	if fmt.Sprint(len(got)) != fmt.Sprint(partitions) {
		t.Errorf("Owners listed %d partitions, want %d", len(got), partitions)
	}
}
