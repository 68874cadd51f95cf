package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/fedsenderproc"
	"github.com/fedsender/fedsender/test/receiver"
)

// The scaleout part (only when -only names it) runs fedsender as real
// processes (`fedsender run`, the binary built from this tree) against a
// three-node NATS cluster in this process (JetStream, every stream and
// bucket on three replicas), with the pipeline part's receivers:
//
//   - the sustained deliveries/s of one replica, then of three (two more
//     started, the partitions shared out), same cluster, same load;
//   - what each replica reads from NATS (bytes and messages the servers
//     sent to its connections) per PDU published, at one and at three
//     replicas, and a projection to 20;
//   - at a fifth of the one-replica rate, the publish-to-receiver latency
//     steady, then around a kill -9 of the replica that serves the most
//     destinations (its failover: from the kill to the next delivery to
//     each of them), then around a graceful rebalance (the killed replica
//     started again takes its share back).

// scaleoutResult is the result of the scaleout part.
type scaleoutResult struct {
	Dests, Partitions int
	One, Three        rates
	// ReadOne and ReadThree are per replica, per PDU published.
	ReadOne, ReadThree readCost
	// Failover is each of the killed replica's destinations' wait from
	// the kill to its next delivery, seconds.
	Failover                       []float64
	Killed                         string
	Rate                           float64 // PDUs/s of the latency phases
	Steady, AroundKill, AroundJoin phaseLatency
	Checks                         checks
}

type readCost struct {
	Bytes, Msgs float64 // per PDU published, per replica (mean over replicas)
	PDUBytes    float64 // the envelope's size, for scale
}

type phaseLatency struct {
	PDUs, Missing int
	P50, P99, Max float64
}

// cluster is three in-process NATS servers routed into one cluster.
type cluster struct {
	srvs []*server.Server
	urls []string
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startCluster(root string) (*cluster, error) {
	c := &cluster{}
	var ports, cports []int
	var routes []string
	for range 3 {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		cp, err := freePort()
		if err != nil {
			return nil, err
		}
		ports, cports = append(ports, p), append(cports, cp)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cp))
	}
	for i := range 3 {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: ports[i],
			JetStream: true, StoreDir: filepath.Join(root, fmt.Sprintf("nats-n%d", i+1)),
			Cluster: server.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: cports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
			NoSigs:  true, NoLog: true,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			c.close()
			return nil, err
		}
		s.Start()
		c.srvs = append(c.srvs, s)
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	for _, s := range c.srvs {
		if !s.ReadyForConnections(30 * time.Second) {
			c.close()
			return nil, errors.New("a NATS node was not ready within 30s")
		}
	}
	if err := fedsenderproc.WaitJetStream(c.url(), 3, time.Minute); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *cluster) url() string { return strings.Join(c.urls, ",") }

func (c *cluster) close() {
	for _, s := range c.srvs {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// reads is what the cluster's servers sent to each process's connections
// so far: bytes and messages, by pid.
func (c *cluster) reads(pids []int) (map[int][2]int64, error) {
	out := map[int][2]int64{}
	for _, s := range c.srvs {
		connz, err := s.Connz(&server.ConnzOptions{})
		if err != nil {
			return nil, err
		}
		for _, ci := range connz.Conns {
			pid, err := fedsenderproc.SocketOwner(fmt.Sprintf("%s:%d", ci.IP, ci.Port), pids)
			if err != nil {
				continue // the bench's own connection
			}
			v := out[pid]
			v[0] += ci.OutBytes
			v[1] += ci.OutMsgs
			out[pid] = v
		}
	}
	return out, nil
}

// replicaProc is one `fedsender run` process.
type replicaProc struct {
	name, admin, metrics string
	conf                 string
	cmd                  *exec.Cmd
	log                  *os.File
}

func (e *env) newReplica(bin, name, natsURL string, partitions int) (*replicaProc, error) {
	dir := filepath.Join(e.root, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ap, err := freePort()
	if err != nil {
		return nil, err
	}
	mp, err := freePort()
	if err != nil {
		return nil, err
	}
	caPath := filepath.Join(e.root, "ca.pem")
	if err := os.WriteFile(caPath, e.ca.PEM(), 0o600); err != nil {
		return nil, err
	}
	r := &replicaProc{name: name, admin: fmt.Sprintf("127.0.0.1:%d", ap), metrics: fmt.Sprintf("127.0.0.1:%d", mp),
		conf: filepath.Join(dir, "fedsender.yaml")}
	conf := fmt.Sprintf(`server_name: %s
instance_name: %s
signing_key_path: %s
data_dir: %s
log: {level: error}
nats: {url: %q, replicas: 3}
admin: {listen: %q, token: %s}
metrics: {listen: %q}
federation:
  ca_file: %s
  ip_range_allowlist: [127.0.0.0/8]
queue: {partitions: %d}
`, origin, name, e.keyPath, filepath.Join(dir, "data"), natsURL, r.admin, adminToken, r.metrics, caPath, partitions)
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if r.log, err = os.Create(filepath.Join(dir, "fedsender.log")); err != nil {
		return nil, err
	}
	return r, r.start(bin)
}

func (r *replicaProc) start(bin string) error {
	r.cmd = exec.Command(bin, "run", "--config", r.conf)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { r.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-exited:
			data, _ := os.ReadFile(r.log.Name())
			return fmt.Errorf("%s exited at start: %s", r.name, tail(data, 2000))
		default:
		}
		if resp, err := http.Get("http://" + r.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: /readyz not 200 within 90s", r.name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (r *replicaProc) pid() int { return r.cmd.Process.Pid }

func (r *replicaProc) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// owned is the replica's fedsender_partitions_owned (-1: not readable).
func (r *replicaProc) owned() float64 {
	resp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return -1
	}
	m := fams["fedsender_partitions_owned"]
	if m == nil || len(m.GetMetric()) == 0 {
		return -1
	}
	return m.GetMetric()[0].GetGauge().GetValue()
}

// balanced waits until the replicas' owned partitions add up to
// partitions, each owning some.
func balanced(ctx context.Context, rs []*replicaProc, partitions int) error {
	var got []float64
	ok := waitFor(ctx, 90*time.Second, func() bool {
		got = got[:0]
		sum := 0.0
		for _, r := range rs {
			n := r.owned()
			got = append(got, n)
			if n <= 0 {
				return false
			}
			sum += n
		}
		return sum == float64(partitions)
	})
	if !ok {
		return fmt.Errorf("fedsender_partitions_owned is %v, want all above 0 adding up to %d", got, partitions)
	}
	return nil
}

// peers names, per receiver connection, the replica process that made it.
type peers struct {
	mu    sync.Mutex
	names map[int]string // pid -> replica
}

func (p *peers) add(r *replicaProc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.names[r.pid()] = r.name
}

func (p *peers) name(addr string) string {
	p.mu.Lock()
	pids := make([]int, 0, len(p.names))
	for pid := range p.names {
		pids = append(pids, pid)
	}
	p.mu.Unlock()
	pid, err := fedsenderproc.SocketOwner(addr, pids)
	if err != nil {
		return "?"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.names[pid]
}

func runScaleout(ctx context.Context, e *env) (*scaleoutResult, error) {
	p := e.p
	const partitions = 64
	res := &scaleoutResult{Dests: p.dests, Partitions: partitions}
	bin, err := fedsenderproc.Build()
	if err != nil {
		return nil, err
	}
	c, err := startCluster(e.root)
	if err != nil {
		return nil, err
	}
	defer c.close()
	nc, err := nats.Connect(c.url(), nats.Name("fedsender-bench"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	pub := streams.NewPublisher(js)

	ps := &peers{names: map[int]string{}}
	var rec sync.Map // tag -> *latencyRecorder
	f, err := e.newFleetWith(p.dests, func(eventID string, at time.Time) {
		tag, _, _ := strings.Cut(strings.TrimPrefix(eventID, "$"), "_")
		if l, ok := rec.Load(tag); ok {
			l.(*latencyRecorder).onPDU(eventID, at)
		}
	}, nil, func(o *receiver.Options) { o.Peer = ps.name })
	if err != nil {
		return nil, err
	}
	defer f.close()

	var replicas []*replicaProc
	defer func() {
		for _, r := range replicas {
			r.kill()
		}
	}()
	start := func(name string) (*replicaProc, error) {
		r, err := e.newReplica(bin, name, c.url(), partitions)
		if r != nil && r.cmd != nil && r.cmd.Process != nil {
			replicas = append(replicas, r)
			ps.add(r)
		}
		return r, err
	}
	if _, err := start("r1"); err != nil {
		return nil, err
	}
	if err := balanced(ctx, replicas, partitions); err != nil {
		return nil, err
	}
	factory := newPDUFactory(f.names, p.pduSize)
	res.ReadOne.PDUBytes = float64(len(factory.envelope("one", 0, roomName(0))))

	// sustained measures the rate and each replica's reads per PDU.
	sustained := func(tag string) (rates, readCost, error) {
		pids := make([]int, len(replicas))
		for i, r := range replicas {
			pids[i] = r.pid()
		}
		before, err := c.reads(pids)
		if err != nil {
			return rates{}, readCost{}, err
		}
		base := f.minCount()
		r, published, err := e.measureSustained(ctx, f, pub, tag)
		if err != nil {
			return r, readCost{}, err
		}
		if !waitFor(ctx, 60*time.Second, func() bool { return f.minCount() >= base+published }) {
			return r, readCost{}, fmt.Errorf("%s: deliveries did not drain: %s", tag, pipelineState(f, base+published))
		}
		after, err := c.reads(pids)
		if err != nil {
			return r, readCost{}, err
		}
		var rc readCost
		for _, pid := range pids {
			rc.Bytes += float64(after[pid][0]-before[pid][0]) / float64(published)
			rc.Msgs += float64(after[pid][1]-before[pid][1]) / float64(published)
		}
		rc.Bytes /= float64(len(pids))
		rc.Msgs /= float64(len(pids))
		rc.PDUBytes = res.ReadOne.PDUBytes
		return r, rc, nil
	}

	e.progress("scaleout: 1 replica, %d receivers, NATS cluster %s; warm-up %v, then %d × %v", p.dests, c.url(), p.warmup, p.windows, p.window)
	if res.One, res.ReadOne, err = sustained("one"); err != nil {
		return nil, fmt.Errorf("1 replica: %w", err)
	}
	e.progress("scaleout: 1 replica: %.0f deliveries/s; starting two more", res.One.Mean)
	for _, name := range []string{"r2", "r3"} {
		if _, err := start(name); err != nil {
			return nil, err
		}
	}
	if err := balanced(ctx, replicas, partitions); err != nil {
		return nil, err
	}
	if res.Three, res.ReadThree, err = sustained("three"); err != nil {
		return nil, fmt.Errorf("3 replicas: %w", err)
	}
	e.progress("scaleout: 3 replicas: %.0f deliveries/s", res.Three.Mean)

	// Latency phases at a fifth of the one-replica rate.
	res.Rate = res.One.Mean / float64(p.dests) * 0.2
	phase := func(tag string, d time.Duration, at time.Duration, event func() error) (phaseLatency, error) {
		n := max(1, int(res.Rate*d.Seconds()))
		l := newLatencyRecorder(tag, n, p.dests)
		rec.Store(tag, l)
		errc := make(chan error, 1)
		go func() {
			if event == nil {
				errc <- nil
				return
			}
			select {
			case <-time.After(at):
				errc <- event()
			case <-ctx.Done():
				errc <- ctx.Err()
			}
		}()
		err := publishPaced(ctx, pub, n, res.Rate, func(i int) []byte {
			env := factory.envelope(tag, i, roomName(i%p.rooms))
			l.pubAt[i].Store(time.Now().UnixNano())
			return env
		})
		if eerr := <-errc; err == nil {
			err = eerr
		}
		if err != nil {
			return phaseLatency{}, err
		}
		want := n * p.dests
		waitFor(ctx, 60*time.Second, func() bool { return l.count() >= want })
		s := l.sorted()
		pl := phaseLatency{PDUs: n, Missing: want - len(s), P50: percentile(s, 0.5), P99: percentile(s, 0.99), Max: percentile(s, 1)}
		if pl.Missing > 0 {
			return pl, fmt.Errorf("%s: %d of %d deliveries missing 60s after publishing", tag, pl.Missing, want)
		}
		return pl, nil
	}
	e.progress("scaleout: latency at %.1f PDUs/s to %d destinations, steady", res.Rate, p.dests)
	if res.Steady, err = phase("steady", 10*time.Second, 0, nil); err != nil {
		return res, err
	}
	// The replica that serves the most destinations, by the receivers.
	since := time.Now().Add(-3 * time.Second)
	count := map[string]int{}
	owner := map[string]string{}
	for _, r := range f.rs {
		txs := r.Transactions()
		for i := len(txs) - 1; i >= 0 && txs[i].Received.After(since); i-- {
			owner[r.ServerName()] = txs[i].Peer
			break
		}
		count[owner[r.ServerName()]]++
	}
	var victim *replicaProc
	for _, r := range replicas {
		if victim == nil || count[r.name] > count[victim.name] {
			victim = r
		}
	}
	res.Killed = victim.name
	var killedAt time.Time
	e.progress("scaleout: kill -9 of %s (it serves %d of %d destinations) 5 s into 25 s of load", victim.name, count[victim.name], p.dests)
	if res.AroundKill, err = phase("kill", 25*time.Second, 5*time.Second, func() error {
		victim.kill()
		killedAt = time.Now()
		return nil
	}); err != nil {
		return res, err
	}
	for _, r := range f.rs {
		if owner[r.ServerName()] != victim.name {
			continue
		}
		for _, tx := range r.Transactions() {
			if tx.Received.After(killedAt) && tx.Peer != victim.name {
				res.Failover = append(res.Failover, tx.Received.Sub(killedAt).Seconds())
				break
			}
		}
	}
	slices.Sort(res.Failover)
	replicas = slices.DeleteFunc(replicas, func(r *replicaProc) bool { return r == victim })
	e.progress("scaleout: %s started again 5 s into 25 s of load: a graceful rebalance", victim.name)
	if res.AroundJoin, err = phase("join", 25*time.Second, 5*time.Second, func() error {
		if err := victim.start(bin); err != nil {
			return err
		}
		replicas = append(replicas, victim)
		ps.add(victim)
		return nil
	}); err != nil {
		return res, err
	}
	res.Checks = f.checks()
	return res, nil
}

// scaleoutRows adds the part's rows to the results table.
func (r *results) scaleoutRows(row func(name, value, lo, hi, setup string)) {
	s := r.scaleout
	if s == nil {
		if slices.Contains(r.parts, "scaleout") {
			row("scale-out", "-", "", "", skipped(r, "scaleout"))
		}
		return
	}
	row("1 replica deliveries/s", f0(s.One.Mean), f0(s.One.Min), f0(s.One.Max),
		fmt.Sprintf("fedsender run processes, 3-node NATS cluster (in this process, R3), %d partitions, %d destinations", s.Partitions, s.Dests))
	row("3 replicas deliveries/s", f0(s.Three.Mean), f0(s.Three.Min), f0(s.Three.Max), fmt.Sprintf("%.2f× one replica, same cluster and load", s.Three.Mean/max(1, s.One.Mean)))
	row("read per replica per PDU, 1", fmt.Sprintf("%.0f B / %.2f msgs", s.ReadOne.Bytes, s.ReadOne.Msgs), "", "", fmt.Sprintf("what the NATS servers sent each replica's connections, per PDU published (envelope %.0f B)", s.ReadOne.PDUBytes))
	row("read per replica per PDU, 3", fmt.Sprintf("%.0f B / %.2f msgs", s.ReadThree.Bytes, s.ReadThree.Msgs), "", "", "mean over the three replicas")
	row("  projected at 20 replicas", fmt.Sprintf("%.0f to %.0f KiB", 20*s.ReadOne.PDUBytes/1024, 20*s.ReadThree.Bytes/1024), "", "",
		"what the cluster sends all replicas per PDU: each reads the whole PDU stream once (the envelope), at most what a replica read at 3")
	if len(s.Failover) > 0 {
		row("failover seconds", f2(slices.Max(s.Failover)), f2(slices.Min(s.Failover)), f2(slices.Max(s.Failover)),
			fmt.Sprintf("kill -9 of %s → next delivery to each of its %d destinations (the value is the worst)", s.Killed, len(s.Failover)))
	} else {
		row("failover seconds", "-", "", "", "no destination of the killed replica was measured")
	}
	row("latency p99 ms, steady", f1(s.Steady.P99), "", "", fmt.Sprintf("3 replicas, %.1f PDUs/s (a fifth of 1 replica's rate); p50 %.1f, max %.1f", s.Rate, s.Steady.P50, s.Steady.Max))
	row("latency p99 ms, kill -9", f1(s.AroundKill.P99), "", "", fmt.Sprintf("PDUs published 5 s before to 20 s after the kill; p50 %.1f, max %.1f", s.AroundKill.P50, s.AroundKill.Max))
	row("latency p99 ms, rebalance", f1(s.AroundJoin.P99), "", "", fmt.Sprintf("the killed replica started again, taking its share back; p50 %.1f, max %.1f", s.AroundJoin.P50, s.AroundJoin.Max))
	row("  receiver checks", checkText(s.Checks), "", "", "violations / PDUs delivered again / requests, the whole part")
}
