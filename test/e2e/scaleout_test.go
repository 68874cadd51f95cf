package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/ownership"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

// scaleoutTTL is the replicas' lease TTL in these tests: short, so that a
// lost lease shows quickly.
const scaleoutTTL = 2 * time.Second

// scaleoutHarness is the first replica, fedsender-a, on the external NATS
// server at url.
func scaleoutHarness(t *testing.T, url string) *harness {
	t.Helper()
	return newHarness(t, func(c *config.Config) {
		c.NATS.URL = url
		c.InstanceName = "fedsender-a"
		c.Ownership.LeaseTTL = scaleoutTTL
		c.Ownership.DrainTimeout = 10 * time.Second
	})
}

// replica starts another replica named name beside h: the same
// configuration, key and NATS, its own data directory and listeners.
func (h *harness) replica(name string) *harness {
	h.t.Helper()
	cfg := h.cfg
	cfg.InstanceName = name
	cfg.DataDir = filepath.Join(h.t.TempDir(), name)
	r := &harness{t: h.t, cfg: cfg, key: h.key, ca: h.ca}
	r.start()
	h.t.Cleanup(r.shutdown)
	return r
}

// owners returns each partition's owner as the lease bucket has it.
func (h *harness) owners() map[int]string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := ownership.Owners(ctx, h.js, h.cfg.Queue.Partitions)
	if err != nil {
		h.t.Fatalf("owners: %v", err)
	}
	out := map[int]string{}
	for _, o := range list {
		out[o.Partition] = o.Owner
	}
	return out
}

// balanced waits until every partition is owned by its desired owner
// among live, and every replica is ready.
func balanced(t *testing.T, h *harness, live []string, replicas ...*harness) map[int]string {
	t.Helper()
	var got map[int]string
	eventually(t, 30*time.Second, func() bool {
		got = h.owners()
		for p := range h.cfg.Queue.Partitions {
			if got[p] != ownership.Owner(p, live) {
				return false
			}
		}
		for _, r := range replicas {
			if code, _ := r.adminRaw("GET", "/readyz"); code != 200 {
				return false
			}
		}
		return true
	}, "partitions not owned by their desired owners among %v: %v", live, got)
	return got
}

// publisher publishes PDUs of a few rooms to every destination until
// stopped, and remembers the order per room.
type publisher struct {
	h     *harness
	dests []string
	mu    sync.Mutex
	sent  map[string][]string
	stop  chan struct{}
	done  chan error
}

func (h *harness) startPublishing(dests []string, every time.Duration) *publisher {
	p := &publisher{h: h, dests: dests, sent: map[string][]string{}, stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		for n := 1; ; n++ {
			select {
			case <-p.stop:
				p.done <- nil
				return
			case <-time.After(every):
			}
			room := fmt.Sprintf("!room%d:origin.test", n%4)
			id, env := h.envelope(room, n, dests...)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, _, err := h.pub.Publish(ctx, env)
			cancel()
			if err != nil {
				p.done <- fmt.Errorf("publish %s: %w", id, err)
				return
			}
			p.mu.Lock()
			p.sent[room] = append(p.sent[room], id)
			p.mu.Unlock()
		}
	}()
	return p
}

// finish stops publishing and returns what was published, per room.
func (p *publisher) finish(t *testing.T) map[string][]string {
	t.Helper()
	close(p.stop)
	if err := <-p.done; err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}

// exactlyOnce checks that r received every published PDU once, in order
// per room, with no transaction overlapping another.
func exactlyOnce(t *testing.T, r *receiver.Receiver, sent map[string][]string) {
	t.Helper()
	total := 0
	for _, ids := range sent {
		total += len(ids)
	}
	eventually(t, 60*time.Second, func() bool { return len(r.PDUs()) >= total },
		"%s received %d of %d PDUs", r.ServerName(), len(r.PDUs()), total)
	count := map[string]int{}
	for _, p := range r.PDUs() {
		count[p.EventID]++
	}
	for id, n := range count {
		if n != 1 {
			t.Errorf("%s received %s %d times", r.ServerName(), id, n)
		}
	}
	inOrder(t, r, sent)
}

// TestReplicasShareDestinationsUnderLoad: under a steady load, a second
// and a third replica join and take only their shares, then the second
// stops (SIGTERM); every destination gets every PDU exactly once, in order
// per room, never two transactions at once, and none falls into catch-up:
// each continues from the offset its previous owner left.
func TestReplicasShareDestinationsUnderLoad(t *testing.T) {
	ns := startNATS(t)
	a := scaleoutHarness(t, ns.url)
	var rs []*receiver.Receiver
	var dests []string
	for range 8 {
		r := a.receiver(nil)
		rs = append(rs, r)
		dests = append(dests, r.ServerName())
	}
	balanced(t, a, []string{"fedsender-a"}, a)
	pub := a.startPublishing(dests, 5*time.Millisecond)

	before := balanced(t, a, []string{"fedsender-a"})
	b := a.replica("fedsender-b")
	after := balanced(t, a, []string{"fedsender-a", "fedsender-b"}, a, b)
	movedOnlyTo(t, before, after, "fedsender-b")

	before = after
	c := a.replica("fedsender-c")
	after = balanced(t, a, []string{"fedsender-a", "fedsender-b", "fedsender-c"}, a, b, c)
	movedOnlyTo(t, before, after, "fedsender-c")

	before = after
	stopped := time.Now()
	b.shutdown()
	after = balanced(t, a, []string{"fedsender-a", "fedsender-c"}, a, c)
	t.Logf("b's partitions owned by a or c %v after b was told to stop", time.Since(stopped).Round(time.Millisecond))
	for p := range a.cfg.Queue.Partitions {
		if before[p] != after[p] && before[p] != "fedsender-b" {
			t.Errorf("partition %d moved from %s to %s when b left", p, before[p], after[p])
		}
	}
	sent := pub.finish(t)
	for _, r := range rs {
		exactlyOnce(t, r, sent)
	}
	// Operators see the same owners on either surface of any replica, and
	// each replica's gauge counts its own.
	for _, h := range []*harness{a, c} {
		var overHTTP struct {
			Partitions []ownership.PartitionOwner `json:"partitions"`
			Unowned    int                        `json:"unowned"`
		}
		if code := h.admin("GET", "/_fedsender/partitions", &overHTTP); code != 200 {
			t.Fatalf("%s: GET /_fedsender/partitions: %d", h.cfg.InstanceName, code)
		}
		msg, err := h.nc.Request("fedsender.admin.partitions", nil, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: fedsender.admin.partitions: %v", h.cfg.InstanceName, err)
		}
		var overNATS struct {
			Partitions []ownership.PartitionOwner `json:"partitions"`
		}
		if err := json.Unmarshal(msg.Data, &overNATS); err != nil {
			t.Fatalf("fedsender.admin.partitions answered %s: %v", msg.Data, err)
		}
		if overHTTP.Unowned != 0 || len(overHTTP.Partitions) != a.cfg.Queue.Partitions || len(overNATS.Partitions) != len(overHTTP.Partitions) {
			t.Fatalf("%s: partitions over HTTP %+v, over NATS %+v", h.cfg.InstanceName, overHTTP, overNATS)
		}
		for i, o := range overHTTP.Partitions {
			if o.Owner != after[o.Partition] || overNATS.Partitions[i].Owner != o.Owner {
				t.Errorf("%s: partition %d owned by %q over HTTP, %q over NATS, want %s", h.cfg.InstanceName, o.Partition,
					o.Owner, overNATS.Partitions[i].Owner, after[o.Partition])
			}
		}
	}
	owned := 0.0
	for _, h := range []*harness{a, c} {
		owned += gauge(t, h, "fedsender_partitions_owned")
		if n := counter(t, h, "fedsender_partition_handovers_total"); n == 0 {
			t.Errorf("%s counted no handover", h.cfg.InstanceName)
		}
	}
	if int(owned) != a.cfg.Queue.Partitions {
		t.Errorf("fedsender_partitions_owned of a and c add up to %v, want %d", owned, a.cfg.Queue.Partitions)
	}
	for _, h := range []*harness{a, c} {
		if n := counter(t, h, "fedsender_federation_catchup_runs_total"); n != 0 {
			t.Errorf("%s ran %v catch-up scans: a healthy destination fell into catch-up when its partition moved", h.cfg.InstanceName, n)
		}
		if logs := h.logs.String(); strings.Contains(logs, "another replica") {
			t.Errorf("%s logged a conflict with another replica:\n%s", h.cfg.InstanceName, logs)
		}
	}
}

// movedOnlyTo fails unless every partition that changed owner went to
// joined.
func movedOnlyTo(t *testing.T, before, after map[int]string, joined string) {
	t.Helper()
	for p, was := range before {
		if after[p] != was && after[p] != joined {
			t.Errorf("partition %d moved from %s to %s, not to the new %s", p, was, after[p], joined)
		}
	}
}

// counter sums a counter's series on h's /metrics.
func counter(t *testing.T, h *harness, name string) float64 {
	t.Helper()
	f := scrape(t, "http://"+h.svc.MetricsAddr+"/metrics")[name]
	if f == nil {
		t.Fatalf("%s: /metrics has no %s", h.cfg.InstanceName, name)
	}
	sum := 0.0
	for _, m := range f.GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

// gauge is a gauge's value (its one series) on h's /metrics.
func gauge(t *testing.T, h *harness, name string) float64 {
	t.Helper()
	f := scrape(t, "http://"+h.svc.MetricsAddr+"/metrics")[name]
	if f == nil || len(f.GetMetric()) != 1 {
		t.Fatalf("%s: /metrics has no single %s: %v", h.cfg.InstanceName, name, f)
	}
	return f.GetMetric()[0].GetGauge().GetValue()
}

// TestAReplicaThatLostItsLeaseSendsNothingMore: the lease of a partition
// is taken from its owner (an operator's `nats kv del`, then another
// holder): the owner stops sending for the partition's destinations while
// it does not hold the lease, and once it has it back, delivers what was
// published meanwhile, from its offset, once, in order.
func TestAReplicaThatLostItsLeaseSendsNothingMore(t *testing.T) {
	ns := startNATS(t)
	a := scaleoutHarness(t, ns.url)
	r := a.receiver(nil)
	dest := r.ServerName()
	p := streams.Partition(dest, a.cfg.Queue.Partitions)
	balanced(t, a, []string{"fedsender-a"}, a)
	room := "!lease:origin.test"
	want := []string{a.publish(room, 1, dest)}
	eventually(t, 30*time.Second, func() bool { return len(r.PDUs()) == 1 }, "the first PDU did not arrive")

	kv, err := a.js.KeyValue(t.Context(), lease.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	var intruder *lease.Lease
	eventually(t, 10*time.Second, func() bool {
		if err := kv.Delete(t.Context(), ownership.PartitionKey(p)); err != nil {
			t.Fatal(err)
		}
		intruder, err = lease.TryAcquire(t.Context(), a.js, ownership.PartitionKey(p), "intruder", lease.Options{TTL: scaleoutTTL})
		if err != nil && !errors.Is(err, lease.ErrHeld) {
			t.Fatal(err)
		}
		return err == nil
	}, "could not take partition %d's lease", p)
	eventually(t, 3*scaleoutTTL, func() bool { return strings.Contains(a.logs.String(), "partition lease lost") },
		"fedsender-a did not notice it lost partition %d's lease", p)

	// While the intruder holds the lease, nothing is sent to dest.
	for n := 2; n <= 20; n++ {
		want = append(want, a.publish(room, n, dest))
	}
	held := time.Now()
	for time.Since(held) < 2*scaleoutTTL {
		if got := len(r.PDUs()); got != 1 {
			t.Fatalf("%d PDUs reached %s while another holder had its partition's lease", got, dest)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := intruder.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	exactlyOnce(t, r, map[string][]string{room: want})
	if d := a.destination(dest); d.LastSuccessfulStreamOrdering == nil {
		t.Errorf("the admin API shows no offset for %s", dest)
	}
}

// TestSIGTERMDrainsTheTransactionInFlight: the owner of a slow
// destination is stopped while a transaction to it is in flight; it
// finishes that transaction and stores the offset before it releases the
// partition, so the replica taking over neither overlaps it nor sends a
// PDU again.
func TestSIGTERMDrainsTheTransactionInFlight(t *testing.T) {
	ns := startNATS(t)
	a := scaleoutHarness(t, ns.url)
	b := a.replica("fedsender-b")
	live := []string{"fedsender-a", "fedsender-b"}
	var r *receiver.Receiver
	for r == nil || ownership.Owner(streams.Partition(r.ServerName(), a.cfg.Queue.Partitions), live) != "fedsender-a" {
		r = a.receiver(nil)
	}
	dest := r.ServerName()
	balanced(t, a, live, a, b)
	room := "!drain:origin.test"
	want := []string{a.publish(room, 1, dest)}
	eventually(t, 30*time.Second, func() bool { return len(r.PDUs()) == 1 }, "the first PDU did not arrive")

	r.SetFault(receiver.Fault{Delay: 1500 * time.Millisecond})
	want = append(want, a.publish(room, 2, dest))
	eventually(t, 10*time.Second, func() bool { return r.Requests() >= 2 }, "the second transaction did not start")
	stopping := time.Now()
	a.shutdown() // returns once a has drained and left
	took := time.Since(stopping)
	if got := len(r.PDUs()); got != 2 {
		t.Errorf("after a drained, %s has %d PDUs, want the in-flight one accepted too (2)", dest, got)
	}
	if took > a.cfg.Ownership.DrainTimeout {
		t.Errorf("a took %v to stop, more than drain_timeout %v", took, a.cfg.Ownership.DrainTimeout)
	}
	r.SetFault(receiver.Fault{})
	for n := 3; n <= 10; n++ {
		want = append(want, b.publish(room, n, dest))
	}
	exactlyOnce(t, r, map[string][]string{room: want})
	t.Logf("a drained in %v with a transaction in flight", took.Round(time.Millisecond))
}
