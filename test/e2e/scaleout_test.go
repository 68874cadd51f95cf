package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/ownership"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/fedsenderproc"
	"github.com/fedsender/fedsender/test/receiver"
)

// scaleoutTTL is the replicas' lease TTL in these tests: short, so that a
// lost lease shows quickly, but not so short that a loaded machine delays
// renewals past it.
const scaleoutTTL = 4 * time.Second

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
	rs, dests := a.receivers(8)
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
		deadline := time.Now().Add(10 * time.Second)
		for problem := h.partitionsMismatch(h.owners()); problem != ""; problem = h.partitionsMismatch(h.owners()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s, for 10s: %s", h.cfg.InstanceName, problem)
			}
			time.Sleep(50 * time.Millisecond)
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

// partitionsMismatch says how GET /_fedsender/partitions and
// fedsender.admin.partitions differ from want ("" when both show it).
func (h *harness) partitionsMismatch(want map[int]string) string {
	type answer struct {
		Partitions []ownership.PartitionOwner `json:"partitions"`
		Unowned    int                        `json:"unowned"`
	}
	var overHTTP, overNATS answer
	if code := h.admin("GET", "/_fedsender/partitions", &overHTTP); code != 200 {
		return fmt.Sprintf("GET /_fedsender/partitions: %d", code)
	}
	msg, err := h.nc.Request("fedsender.admin.partitions", nil, 5*time.Second)
	if err != nil {
		return fmt.Sprintf("fedsender.admin.partitions: %v", err)
	}
	if err := json.Unmarshal(msg.Data, &overNATS); err != nil {
		return fmt.Sprintf("fedsender.admin.partitions answered %s: %v", msg.Data, err)
	}
	for _, got := range []answer{overHTTP, overNATS} {
		if got.Unowned != 0 || len(got.Partitions) != len(want) {
			return fmt.Sprintf("partitions %+v, want %v", got, want)
		}
		for _, o := range got.Partitions {
			if o.Owner != want[o.Partition] {
				return fmt.Sprintf("partition %d owned by %q, want %q", o.Partition, o.Owner, want[o.Partition])
			}
		}
	}
	return ""
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

// receivers starts n receivers and returns them with their server names.
func (h *harness) receivers(n int) ([]*receiver.Receiver, []string) {
	var rs []*receiver.Receiver
	var dests []string
	for range n {
		r := h.receiver(nil)
		rs = append(rs, r)
		dests = append(dests, r.ServerName())
	}
	return rs, dests
}

// replicaProcess runs a real `fedsender run` named name beside h (same
// key, CA and NATS), which a test can kill -9.
func (h *harness) replicaProcess(name string) *process {
	h.t.Helper()
	t := h.t
	dir := t.TempDir()
	keyPath, caPath := filepath.Join(dir, "signing.key"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(keyPath, h.key.MarshalKeyFile(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caPath, h.ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "fedsender.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`server_name: %s
instance_name: %s
signing_key_path: %s
data_dir: %s
log: {level: info}
nats: {url: %q}
admin: {listen: "127.0.0.1:0", token: t}
metrics: {listen: ""}
federation:
  ca_file: %s
  ip_range_allowlist: [127.0.0.0/8]
  request_timeout: 5s
queue: {partitions: %d, checkpoint_interval: %s}
`, origin, name, keyPath, filepath.Join(dir, "data"), h.cfg.NATS.URL, caPath, h.cfg.Queue.Partitions, h.cfg.Queue.CheckpointInterval)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := fedsenderproc.NewProcess(t, dir, name, conf)
	p.Start()
	return p
}

// TestAKilledReplicasDestinationsAreServedWithin10s: a replica process
// (default lease TTL, 6 s) is killed with kill -9 under load; the
// survivor takes its partitions when their leases expire, and each of its
// destinations gets its next delivery within 10 s of the kill; nothing is
// lost, every room stays in order, and no two transactions overlap.
func TestAKilledReplicasDestinationsAreServedWithin10s(t *testing.T) {
	ns := startNATS(t)
	a := newHarness(t, func(c *config.Config) {
		c.NATS.URL = ns.url
		c.InstanceName = "fedsender-a"
	})
	rs, dests := a.receivers(8)
	b := a.replicaProcess("fedsender-b")
	live := []string{"fedsender-a", "fedsender-b"}
	owners := balanced(t, a, live, a)
	var ofB []*receiver.Receiver
	for _, r := range rs {
		if owners[streams.Partition(r.ServerName(), a.cfg.Queue.Partitions)] == "fedsender-b" {
			ofB = append(ofB, r)
		}
	}
	if len(ofB) == 0 {
		t.Fatal("fedsender-b owns none of the destinations' partitions")
	}
	pub := a.startPublishing(dests, 10*time.Millisecond)
	eventually(t, 30*time.Second, func() bool {
		for _, r := range ofB {
			if len(r.PDUs()) < 20 {
				return false
			}
		}
		return true
	}, "fedsender-b's destinations are not being served")
	killed := time.Now()
	b.Kill9()
	for _, r := range ofB {
		eventually(t, 30*time.Second, func() bool {
			for _, p := range r.PDUs() {
				if p.Received.After(killed) {
					return true
				}
			}
			return false
		}, "%s got nothing after fedsender-b was killed", r.ServerName())
		first := time.Time{}
		for _, p := range r.PDUs() {
			if p.Received.After(killed) && (first.IsZero() || p.Received.Before(first)) {
				first = p.Received
			}
		}
		failover := first.Sub(killed)
		t.Logf("%s: next delivery %v after the kill", r.ServerName(), failover.Round(time.Millisecond))
		if failover > 10*time.Second {
			t.Errorf("%s: next delivery %v after the kill, want under 10s", r.ServerName(), failover)
		}
	}
	sent := pub.finish(t)
	total := 0
	for _, ids := range sent {
		total += len(ids)
	}
	for _, r := range rs {
		eventually(t, 60*time.Second, func() bool { return distinct(r) >= total },
			"%s received %d of %d PDUs", r.ServerName(), distinct(r), total)
		inOrder(t, r, sent)
	}
}

// distinct counts the distinct PDUs r received.
func distinct(r *receiver.Receiver) int {
	seen := map[string]bool{}
	for _, p := range r.PDUs() {
		seen[p.EventID] = true
	}
	return len(seen)
}

// TestToDeviceMessagesFollowTheirPartition: to-device messages published
// while a second replica joins and takes its share reach every
// destination once each, in order, whichever replica sent them.
func TestToDeviceMessagesFollowTheirPartition(t *testing.T) {
	ns := startNATS(t)
	a := scaleoutHarness(t, ns.url)
	rs, dests := a.receivers(8)
	balanced(t, a, []string{"fedsender-a"}, a)
	const total = 1500
	var want []string
	done := make(chan error, 1)
	go func() {
		for i := range total {
			id := fmt.Sprintf("m%d", i)
			env, err := json.Marshal(streams.EDUEnvelope{EDUType: "m.direct_to_device", Content: json.RawMessage(toDeviceContent(id)), Destinations: dests})
			if err == nil {
				_, err = a.pub.PublishAsync(env)
			}
			if err != nil {
				done <- err
				return
			}
			if i%10 == 9 {
				time.Sleep(15 * time.Millisecond)
			}
		}
		done <- nil
	}()
	for i := range total {
		want = append(want, fmt.Sprintf("m%d", i))
	}
	eventually(t, 30*time.Second, func() bool { return len(rs[0].EDUs()) > 100 }, "no to-device message arrived")
	b := a.replica("fedsender-b")
	balanced(t, a, []string{"fedsender-a", "fedsender-b"}, a, b)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := counter(t, b, "fedsender_federation_client_sent_edus_total"); n == 0 {
		t.Error("fedsender-b sent no EDU: the handover happened after the last one")
	}
	for _, r := range rs {
		eventually(t, 60*time.Second, func() bool { ids, _ := firstArrivals(r); return len(ids) >= total },
			"%s: %d of %d to-device messages", r.ServerName(), len(eduField(r, "m.direct_to_device", "message_id")), total)
		ids, again := firstArrivals(r)
		if !slices.Equal(ids, want) {
			t.Errorf("%s: to-device messages out of order or missing", r.ServerName())
		}
		if again != 0 {
			t.Errorf("%s: %d to-device messages arrived twice", r.ServerName(), again)
		}
		r.RequireNoViolations(t)
	}
}
