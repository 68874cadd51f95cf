package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/fedsenderproc"
	"github.com/fedsender/fedsender/test/receiver"
)

// The scale-out tests run several real `fedsender run` processes with the
// same server_name, key and NATS cluster, and check what the receivers see:
// every PDU delivered in order per room, no concurrent transaction to one
// destination, and every request sent by the replica that held the
// destination's partition lease at that moment.

const (
	fleetPartitions = 8
	fleetRooms      = 6
	// fleetFailover is the longest a destination of a killed replica may
	// wait for its next delivery: the lease TTL (6 s) and the time to take
	// it over.
	fleetFailover = 10 * time.Second
)

// fleet is N fedsender processes on one 3-node NATS cluster, the strict
// receivers they deliver to, and a publisher.
type fleet struct {
	t       *testing.T
	c       *natsCluster
	dir     string
	keyPath string
	caPath  string
	rs      []*receiver.Receiver
	dests   []string
	js      jetstream.JetStream
	pub     *streams.Publisher

	mu       sync.Mutex
	replicas map[string]*replica // by instance name
	pids     map[int]string      // every process started: pid -> instance name
	want     map[string][]string // room -> event ids, in publish order
	n        int                 // PDUs published
	leases   []leaseEntry        // every revision of the lease bucket seen
}

// replica is one `fedsender run` process of the fleet.
type replica struct {
	name    string
	p       *process
	admin   string // host:port
	metrics string
}

// leaseEntry is one revision of the lease bucket, as the KV watcher saw
// it. The bucket keeps one revision per key: a revision superseded while
// the watcher was cut off (a NATS node lost) is never seen, and shows as a
// gap in the revisions.
type leaseEntry struct {
	rev    uint64
	key    string
	holder string // "" when deleted or expired
	at     time.Time
}

// newFleet starts the NATS cluster (every stream and bucket on three
// replicas) and nDests receivers; no fedsender yet.
func newFleet(t *testing.T, c *natsCluster, nDests int) *fleet {
	t.Helper()
	waitJetStream(t, c.url())
	dir := t.TempDir()
	key, ca, keyPath, caPath := keyAndCAFiles(t, dir, "fleet")
	f := &fleet{t: t, c: c, dir: dir, keyPath: keyPath, caPath: caPath,
		replicas: map[string]*replica{}, pids: map[int]string{}, want: map[string][]string{}}
	for range nDests {
		r := receiver.Start(t, receiver.Options{Origin: origin, OriginKey: key.Public(), OriginKeyID: key.KeyID(),
			Cert: ca.MustLeaf(t, "127.0.0.1"), Peer: f.peer})
		f.rs = append(f.rs, r)
		f.dests = append(f.dests, r.ServerName())
	}
	return f
}

// peer names the fedsender process that holds the client socket of a
// connection a receiver accepted from addr.
func (f *fleet) peer(addr string) string {
	f.mu.Lock()
	pids := make([]int, 0, len(f.pids))
	for pid := range f.pids {
		pids = append(pids, pid)
	}
	f.mu.Unlock()
	pid, err := fedsenderproc.SocketOwner(addr, pids)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pids[pid]
}

// start starts replica name (a new one, or one stopped before) and waits
// until /readyz answers 200.
func (f *fleet) start(name string) *replica {
	t := f.t
	t.Helper()
	f.mu.Lock()
	r := f.replicas[name]
	f.mu.Unlock()
	if r == nil {
		r = f.newReplica(name)
	}
	r.p.Start()
	f.mu.Lock()
	f.replicas[name] = r
	f.pids[r.p.Pid()] = name
	f.mu.Unlock()
	eventually(t, 90*time.Second, func() bool {
		if r.p.Exited() {
			t.Fatalf("%s exited at start", name)
		}
		return r.readyz() == http.StatusOK
	}, "%s's /readyz does not answer 200", name)
	if f.pub == nil {
		f.connect()
	}
	return r
}

// newReplica writes the configuration of replica name: the fleet's
// server_name, key and NATS cluster, its own instance_name, data_dir and
// ports.
func (f *fleet) newReplica(name string) *replica {
	t := f.t
	t.Helper()
	dir := filepath.Join(f.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name,
		admin:   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		metrics: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	conf := filepath.Join(dir, "fedsender.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`server_name: %s
instance_name: %s
signing_key_path: %s
data_dir: %s
log: {level: info}
nats: {url: %q, replicas: 3}
admin: {listen: %q, token: %s}
metrics: {listen: %q}
federation:
  ca_file: %s
  ip_range_allowlist: [127.0.0.0/8]
  request_timeout: 5s
queue: {partitions: %d, checkpoint_interval: 100ms}
`, origin, name, f.keyPath, filepath.Join(dir, "data"), f.c.url(), r.admin, adminToken, r.metrics, f.caPath, fleetPartitions)), 0o600); err != nil {
		t.Fatal(err)
	}
	r.p = fedsenderproc.NewProcess(t, dir, name, conf)
	return r
}

func (r *replica) readyz() int {
	resp, err := http.Get("http://" + r.admin + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// connect connects the publisher and starts watching the partition leases.
func (f *fleet) connect() {
	t := f.t
	t.Helper()
	nc, err := nats.Connect(f.c.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if f.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	f.pub = streams.NewPublisher(f.js)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := f.js.KeyValue(ctx, lease.Bucket)
	if err != nil {
		t.Fatalf("the lease bucket %s: %v", lease.Bucket, err)
	}
	w, err := kv.Watch(ctx, ">", jetstream.IncludeHistory())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			le := leaseEntry{rev: e.Revision(), key: e.Key(), at: e.Created()}
			if e.Operation() == jetstream.KeyValuePut {
				var rec lease.Record
				if err := json.Unmarshal(e.Value(), &rec); err == nil {
					le.holder = rec.Holder
				}
			}
			f.mu.Lock()
			f.leases = append(f.leases, le)
			f.mu.Unlock()
		}
	}()
}

// publish publishes the next PDU, to every destination, retrying while the
// cluster cannot take it.
func (f *fleet) publish() {
	t := f.t
	f.mu.Lock()
	n := f.n + 1
	f.mu.Unlock()
	room := fmt.Sprintf("!scale%d:origin.test", n%fleetRooms)
	id := fmt.Sprintf("$scale-%d", n)
	env, err := json.Marshal(streams.Envelope{RoomID: room, EventID: id, Destinations: f.dests,
		PDU: json.RawMessage(fmt.Sprintf(`{"event_id":%q,"room_id":%q,"type":"m.room.message","depth":%d}`, id, room, n))})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _, err := f.pub.Publish(ctx, env)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("publish %s: not within 2m: %v", id, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.mu.Lock()
	f.n = n
	f.want[room] = append(f.want[room], id)
	f.mu.Unlock()
}

// load publishes about rate PDUs a second until the returned function is
// called; it returns once the last publish is done.
func (f *fleet) load(rate int) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				f.publish()
			}
		}
	}()
	return func() { close(done); <-stopped }
}

func (f *fleet) published() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// senders returns, per destination, the replicas whose transactions it
// accepted since since.
func (f *fleet) senders(since time.Time) map[string][]string {
	out := map[string][]string{}
	for _, r := range f.rs {
		var peers []string
		for _, tx := range r.Transactions() {
			if tx.Received.After(since) && !slices.Contains(peers, tx.Peer) {
				peers = append(peers, tx.Peer)
			}
		}
		sort.Strings(peers)
		out[r.ServerName()] = peers
	}
	return out
}

// settle waits until every destination got a transaction in the last
// window and all of them from one replica: the replicas have shared the
// partitions out. It returns each destination's sender.
func (f *fleet) settle(within time.Duration) map[string]string {
	t := f.t
	t.Helper()
	const window = 2 * time.Second
	start := time.Now()
	var last map[string][]string
	for {
		time.Sleep(100 * time.Millisecond)
		if time.Since(start) < window {
			continue
		}
		last = f.senders(time.Now().Add(-window))
		one := true
		for _, peers := range last {
			one = one && len(peers) == 1
		}
		if one {
			break
		}
		if time.Since(start) > within {
			t.Fatalf("not within %v: the destinations' senders in the last %v are %v: each destination must get transactions from exactly one replica, the owner of its partition",
				within, window, last)
		}
	}
	owners := map[string]string{}
	for d, peers := range last {
		owners[d] = peers[0]
	}
	return owners
}

// ownedBy is the destinations whose sender is name, in owners.
func ownedBy(owners map[string]string, name string) []string {
	var ds []string
	for d, o := range owners {
		if o == name {
			ds = append(ds, d)
		}
	}
	sort.Strings(ds)
	return ds
}

// receiverOf is the receiver of destination d.
func (f *fleet) receiverOf(d string) *receiver.Receiver {
	for _, r := range f.rs {
		if r.ServerName() == d {
			return r
		}
	}
	f.t.Fatalf("no receiver for %s", d)
	return nil
}

// nextFrom waits for d's first transaction accepted after after from a
// replica other than not, and returns when it arrived and from whom.
func (f *fleet) nextFrom(d string, after time.Time, not string, within time.Duration) (time.Time, string) {
	f.t.Helper()
	r := f.receiverOf(d)
	var at time.Time
	var from string
	eventually(f.t, within, func() bool {
		for _, tx := range r.Transactions() {
			if tx.Received.After(after) && tx.Peer != not {
				at, from = tx.Received, tx.Peer
				return true
			}
		}
		return false
	}, "%s got no transaction from a replica other than %s after %s", d, not, after.Format("15:04:05.000"))
	return at, from
}

// verify waits for every published PDU at every receiver and checks what
// the operator's users would see: each room in order, no protocol
// violation (a concurrent transaction to one destination is one), every
// request sent by the replica that held the destination's partition lease
// at that moment, and at most changes sender changes per destination. It
// returns the requests fenced could not judge.
func (f *fleet) verify(changes int) (unjudged []receiver.SendRequest) {
	t := f.t
	t.Helper()
	n := f.published()
	f.mu.Lock()
	want := map[string][]string{}
	for room, ids := range f.want {
		want[room] = slices.Clone(ids)
	}
	f.mu.Unlock()
	for _, r := range f.rs {
		eventually(t, 2*time.Minute, func() bool { return uniqueCount(r) >= n }, "%s has %d of %d PDUs", r.ServerName(), uniqueCount(r), n)
		inOrder(t, r, want)
		var runs []string
		for _, tx := range r.Transactions() {
			if len(runs) == 0 || runs[len(runs)-1] != tx.Peer {
				runs = append(runs, tx.Peer)
			}
		}
		if len(runs)-1 > changes {
			t.Errorf("%s: transactions came from %v in turn (%d changes of sender, at most %d expected): more than one replica delivers to it",
				r.ServerName(), abbreviate(runs), len(runs)-1, changes)
		}
	}
	return f.fenced()
}

// fenced checks every PUT /send a receiver saw against the partition lease
// history: the sender must have held the destination's partition lease
// when the request arrived. A request is judged only when the watcher saw
// every revision of the bucket from the lease's revision before it to the
// one after it; it returns those it could not judge.
func (f *fleet) fenced() (unjudged []receiver.SendRequest) {
	t := f.t
	t.Helper()
	f.mu.Lock()
	seen := map[uint64]bool{}
	history := map[string][]leaseEntry{}
	var top uint64
	for _, e := range f.leases {
		if !seen[e.rev] {
			seen[e.rev] = true
			history[e.key] = append(history[e.key], e)
			top = max(top, e.rev)
		}
	}
	f.mu.Unlock()
	for _, es := range history {
		sort.Slice(es, func(i, j int) bool { return es[i].rev < es[j].rev })
	}
	// complete reports whether every revision in [from, to] was seen.
	complete := func(from, to uint64) bool {
		for rev := from; rev <= to; rev++ {
			if !seen[rev] {
				return false
			}
		}
		return true
	}
	for _, r := range f.rs {
		key := fmt.Sprintf("partition.%d", streams.Partition(r.ServerName(), fleetPartitions))
		bad := 0
		for _, req := range r.SendRequests() {
			es := history[key]
			i := sort.Search(len(es), func(i int) bool { return es[i].at.After(req.At) }) // the first after
			next := top
			if i < len(es) {
				next = es[i].rev
			}
			if i == 0 || !complete(es[i-1].rev, next) {
				unjudged = append(unjudged, req)
				continue
			}
			if holder := es[i-1].holder; holder != req.Peer {
				if bad < 3 {
					t.Errorf("%s: %s sent txn %s at %s while %s was held by %q (revision %d, from %s): a replica sent without holding the destination's partition",
						r.ServerName(), req.Peer, req.TxnID, req.At.Format("15:04:05.000"), key, holder, es[i-1].rev, es[i-1].at.Format("15:04:05.000"))
				}
				bad++
			}
		}
		if bad > 3 {
			t.Errorf("%s: %d more requests sent without holding %s", r.ServerName(), bad-3, key)
		}
	}
	if len(unjudged) > 0 {
		by := map[string]int{}
		for _, req := range unjudged {
			by[req.Peer]++
		}
		t.Logf("requests not judged against the leases (the watcher missed revisions around them), by sender: %v", by)
	}
	return unjudged
}

// abbreviate shortens a long list of senders for a message.
func abbreviate(runs []string) string {
	if len(runs) <= 12 {
		return fmt.Sprint(runs)
	}
	return fmt.Sprintf("%v ... (%d more)", runs[:12], len(runs)-12)
}

// noCatchUp checks that no destination entered catch-up: a healthy
// destination keeps its queue when its partition moves.
func (f *fleet) noCatchUp() {
	t := f.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := f.js.Stream(ctx, streams.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(0); seq < info.State.LastSeq; {
		msg, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		md, _ := msg.Metadata()
		seq = md.Sequence.Stream
		var ev struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
			State  struct {
				Destination string `json:"destination"`
			} `json:"state"`
		}
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			t.Fatalf("event %d: %v in %s", seq, err, msg.Data())
		}
		if ev.Type == "catch_up_started" {
			t.Errorf("%s entered catch-up (%s): a healthy destination must not when its partition moves", ev.State.Destination, msg.Data())
		}
	}
}

// ownedGauge is fedsender_partitions_owned of replica r, -1 when absent.
func (r *replica) ownedGauge(t *testing.T) float64 {
	fams := scrape(t, "http://"+r.metrics+"/metrics")
	m := fams["fedsender_partitions_owned"]
	if m == nil || len(m.GetMetric()) == 0 {
		return -1
	}
	return m.GetMetric()[0].GetGauge().GetValue()
}

// ownedBalanced waits until the live replicas' fedsender_partitions_owned
// add up to the partition count (every partition has a live owner), and
// returns them.
func (f *fleet) ownedBalanced(live ...string) map[string]float64 {
	t := f.t
	t.Helper()
	got := map[string]float64{}
	eventually(t, time.Minute, func() bool {
		sum := 0.0
		for _, name := range live {
			f.mu.Lock()
			r := f.replicas[name]
			f.mu.Unlock()
			got[name] = r.ownedGauge(t)
			if got[name] < 0 {
				return false
			}
			sum += got[name]
		}
		return sum == fleetPartitions
	}, "fedsender_partitions_owned of %v is %v (-1: absent), want them adding up to %d", live, got, fleetPartitions)
	t.Logf("partitions owned: %v", got)
	return got
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

// destination is the admin API's destination object for d, as replica r
// answers it (zero when it does not answer 200).
func (r *replica) destination(t *testing.T, d string) destinationInfo {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+r.admin+"/_synapse/admin/v1/federation/destinations/"+d, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return destinationInfo{}
	}
	defer resp.Body.Close()
	var info destinationInfo
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&info) != nil {
		return destinationInfo{}
	}
	return info
}

// threeUnderLoad starts three replicas and a load of 40 PDUs a second to
// nine destinations, waits until each destination has one sender, and
// returns the replica that sends to the most of them, and those.
func threeUnderLoad(t *testing.T, doing string) (f *fleet, stop func(), busiest string, mine []string) {
	t.Helper()
	f = newFleet(t, startNATSCluster(t), 9)
	for _, name := range []string{"r1", "r2", "r3"} {
		f.start(name)
	}
	stop = f.load(40)
	owners := f.settle(90 * time.Second)
	count := map[string]int{}
	for _, o := range owners {
		count[o]++
		if busiest == "" || count[o] > count[busiest] || count[o] == count[busiest] && o < busiest {
			busiest = o
		}
	}
	mine = ownedBy(owners, busiest)
	t.Logf("senders: %v; %s %s, which sends to %d destinations", owners, doing, busiest, len(mine))
	return f, stop, busiest, mine
}

// TestReplicaKilledUnderLoad kills -9 one of three replicas while PDUs are
// published and measures, for each destination it served, the time from
// the kill to the next delivery.
func TestReplicaKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS cluster and three fedsender processes")
	}
	f, stop, victim, mine := threeUnderLoad(t, "killing")

	f.replicas[victim].p.Kill9()
	killed := time.Now()
	var worst time.Duration
	for _, d := range mine {
		at, from := f.nextFrom(d, killed, victim, time.Minute)
		took := at.Sub(killed)
		worst = max(worst, took)
		t.Logf("failover of %s: next delivery %v after the kill, by %s", d, took.Round(time.Millisecond), from)
		if took > fleetFailover {
			t.Errorf("%s waited %v after %s was killed for its next delivery, want under %v", d, took.Round(time.Millisecond), victim, fleetFailover)
		}
	}
	t.Logf("failover after kill -9: %v at worst over %d destinations", worst.Round(time.Millisecond), len(mine))
	f.settleAfter(killed)
	stop()
	f.verify(1)
	redelivered := 0
	for _, r := range f.rs {
		redelivered += r.RedeliveredPDUs()
	}
	t.Logf("%d PDUs published; %d sent again after the kill (delivered but not yet checkpointed by %s)", f.published(), redelivered, victim)
}

// settleAfter waits until the destinations are served by one replica each
// again, with some load published after t0.
func (f *fleet) settleAfter(t0 time.Time) {
	f.t.Helper()
	n := f.published()
	eventually(f.t, time.Minute, func() bool { return f.published() >= n+20 }, "the load stopped publishing after %s", t0.Format("15:04:05.000"))
	f.settle(time.Minute)
}

// TestPausedReplicaDoesNotSendAfterItsLease stops one of three replicas
// (SIGSTOP) under load for longer than its lease, lets the others take
// its destinations over, then wakes it (SIGCONT): from the takeover on,
// it must not send to them again unless it holds their partition again.
func TestPausedReplicaDoesNotSendAfterItsLease(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS cluster and three fedsender processes")
	}
	f, stop, zombie, mine := threeUnderLoad(t, "pausing")

	z := f.replicas[zombie]
	z.p.Signal(syscall.SIGSTOP)
	paused := time.Now()
	var takeover time.Time
	for _, d := range mine {
		at, from := f.nextFrom(d, paused, zombie, time.Minute)
		t.Logf("%s taken over by %s %v after the pause", d, from, at.Sub(paused).Round(time.Millisecond))
		if at.After(takeover) {
			takeover = at
		}
	}
	// PDUs published while it sleeps wait in its connection to NATS:
	// awake, it reads them at once, with transactions for its old
	// destinations in its queues. Keep it asleep past twice its lease.
	eventually(t, time.Minute, func() bool { return time.Since(paused) > 12*time.Second }, "the pause did not last")
	z.p.Signal(syscall.SIGCONT)
	woke := time.Now()
	t.Logf("%s paused for %v; its destinations were all taken over %v after the pause", zombie,
		woke.Sub(paused).Round(time.Millisecond), takeover.Sub(paused).Round(time.Millisecond))
	// Awake, it rejoins and takes its share back, under fresh leases.
	eventually(t, time.Minute, func() bool { return z.ownedGauge(t) > 0 }, "%s owns no partition after waking up: fedsender_partitions_owned %v", zombie, z.ownedGauge(t))
	f.ownedBalanced("r1", "r2", "r3")
	n := f.published()
	eventually(t, time.Minute, func() bool { return f.published() >= n+200 }, "the load stopped publishing")
	stop()
	// Whatever it sent after the takeover must be under a partition lease
	// it took again (fenced checks that); verify also checks the rest.
	for _, req := range f.verify(2) {
		if req.Peer == zombie && req.At.After(paused) {
			t.Errorf("%s's txn %s at %s could not be checked against the partition leases: the lease watcher missed revisions around it",
				zombie, req.TxnID, req.At.Format("15:04:05.000"))
		}
	}
	for _, d := range mine {
		for _, req := range f.receiverOf(d).SendRequests() {
			if req.Peer == zombie && req.At.After(paused) && req.At.Before(woke) {
				t.Errorf("%s: a request from %s while it was stopped: the process attribution is wrong", d, zombie)
			}
		}
	}
}

// TestScaleOutAndIn runs one replica under load, adds two, then stops one
// with SIGTERM: nothing is lost, rooms stay in order, no destination gets
// two transactions at once, and each destination continues from the
// previous owner's offset (no PDU sent twice, no catch-up).
func TestScaleOutAndIn(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS cluster and three fedsender processes")
	}
	f := newFleet(t, startNATSCluster(t), 9)
	f.start("r1")
	stop := f.load(40)
	f.settle(time.Minute)
	f.ownedBalanced("r1")

	scaled := time.Now()
	f.start("r2")
	f.start("r3")
	f.settleAfter(scaled)
	f.ownedBalanced("r1", "r2", "r3")
	moved := 0
	for _, peers := range f.senders(scaled) {
		if len(peers) > 1 {
			moved++
		}
	}
	t.Logf("1 -> 3: %d of %d destinations moved; senders now %v", moved, len(f.dests), f.senders(time.Now().Add(-2*time.Second)))

	leaving := f.replicas["r2"]
	mine := ownedBy(f.settle(time.Minute), "r2")
	down := time.Now()
	drained := leaving.p.Terminate()
	t.Logf("3 -> 2: r2 drained and exited %v after SIGTERM; it sent to %v", drained.Round(time.Millisecond), mine)
	for _, d := range mine {
		at, from := f.nextFrom(d, down, "r2", time.Minute)
		t.Logf("handover of %s: next delivery %v after SIGTERM, by %s", d, at.Sub(down).Round(time.Millisecond), from)
	}
	f.settleAfter(down)
	f.ownedBalanced("r1", "r3")
	stop()
	f.verify(2)
	for _, r := range f.rs {
		if n := r.RedeliveredPDUs(); n > 0 {
			t.Errorf("%s got %d PDUs a second time: a graceful handover must continue from the previous owner's offset", r.ServerName(), n)
		}
	}
	f.noCatchUp()
	// Any replica's admin API answers for every destination, with the
	// offset the last owner stored.
	seq := f.lastSeq()
	for _, name := range []string{"r1", "r3"} {
		r := f.replicas[name]
		for _, d := range f.dests {
			eventually(t, 30*time.Second, func() bool {
				got := r.destination(t, d).LastSuccessfulStreamOrdering
				return got != nil && *got == seq
			}, "%s's admin API shows last_successful_stream_ordering %s for %s, want %d", name, ordering(r.destination(t, d)), d, seq)
		}
	}
	t.Logf("%d PDUs published to %d destinations; every destination's offset is %d on both replicas' admin API", f.published(), len(f.dests), seq)
}
