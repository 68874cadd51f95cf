package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedsender/fedsender/streams"
)

// throughput is the result of a throughput part.
type throughput struct {
	Rates     rates         `json:"deliveries_per_sec"`
	Published int64         `json:"pdus_published"`
	Drain     time.Duration `json:"-"`
	Checks    checks        `json:"checks"`
	EnvBytes  int           `json:"envelope_bytes"`
}

// latency is the result of the latency phase.
type latency struct {
	PDURate    float64 `json:"pdus_per_sec"`
	PDUs       int     `json:"pdus"`
	Deliveries int     `json:"deliveries"`
	Missing    int     `json:"missing"`
	P50, P90   float64
	P99, Max   float64
	// Where the delay goes: until a PDU's first destination has it (the
	// stream, the reader, the first transaction), and from then until its
	// last has it (the fan-out to every destination); p50 and p99 over PDUs.
	FirstP50, FirstP99   float64
	SpreadP50, SpreadP99 float64
	Checks               checks `json:"checks"`
}

// latencyRecorder keeps publish times of the latency series and the delays
// the receivers saw.
type latencyRecorder struct {
	tag     string         // the series: event ids "$tag_n"
	pubAt   []atomic.Int64 // unix ns, by PDU number
	mu      sync.Mutex
	samples []int64 // ns
	// first and last are each PDU's shortest and longest delay (ns; 0:
	// none yet).
	first, last []int64
}

func newLatencyRecorder(tag string, pdus, dests int) *latencyRecorder {
	return &latencyRecorder{tag: tag, pubAt: make([]atomic.Int64, pdus), samples: make([]int64, 0, pdus*dests),
		first: make([]int64, pdus), last: make([]int64, pdus)}
}

// fanOut returns, over the PDUs that arrived, the sorted delays until
// their first destination had them and the sorted spreads from then until
// their last had them.
func (l *latencyRecorder) fanOut() (first, spread []int64) {
	l.mu.Lock()
	for i, f := range l.first {
		if f > 0 {
			first = append(first, f)
			spread = append(spread, l.last[i]-f)
		}
	}
	l.mu.Unlock()
	slices.Sort(first)
	slices.Sort(spread)
	return first, spread
}

func (l *latencyRecorder) onPDU(eventID string, at time.Time) {
	n := eventNumber(eventID, l.tag)
	if n < 0 || n >= len(l.pubAt) {
		return
	}
	t0 := l.pubAt[n].Load()
	if t0 == 0 {
		return
	}
	d := max(at.UnixNano()-t0, 1)
	l.mu.Lock()
	l.samples = append(l.samples, d)
	if l.first[n] == 0 || d < l.first[n] {
		l.first[n] = d
	}
	l.last[n] = max(l.last[n], d)
	l.mu.Unlock()
}

// sorted returns the delays seen so far, shortest first.
func (l *latencyRecorder) sorted() []int64 { return sortedCopy(&l.mu, &l.samples) }

// sortedCopy returns a sorted copy of the samples mu guards.
func sortedCopy(mu *sync.Mutex, samples *[]int64) []int64 {
	mu.Lock()
	out := slices.Clone(*samples)
	mu.Unlock()
	slices.Sort(out)
	return out
}

// percentile is the q-quantile of sorted delays (ns), in ms.
func percentile(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(q*float64(len(sorted)-1))]) / 1e6
}

// publishPaced publishes n envelopes at rate per second, envelope i made
// by next(i) at its time, and waits for their acknowledgements.
func publishPaced(ctx context.Context, pub *streams.Publisher, n int, rate float64, next func(i int) []byte) error {
	acks := newAckChecker()
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-ctx.Done():
				acks.finish()
				return ctx.Err()
			case <-time.After(d):
			}
		}
		fut, err := pub.PublishAsync(next(i))
		if err != nil {
			acks.finish()
			return fmt.Errorf("publish: %w", err)
		}
		acks.futures <- fut
	}
	return acks.finish()
}

func (l *latencyRecorder) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.samples)
}

// runPipeline measures fedsender's sustained delivery rate, then its
// latency at a fraction of that rate.
func runPipeline(ctx context.Context, e *env) (*throughput, *latency, error) {
	p := e.p
	cfg, err := e.config("pipeline", nil)
	if err != nil {
		return nil, nil, err
	}
	var rec atomic.Pointer[latencyRecorder]
	f, err := e.newFleet(p.dests, func(eventID string, at time.Time) {
		if l := rec.Load(); l != nil {
			l.onPDU(eventID, at)
		}
	}, nil)
	if err != nil {
		return nil, nil, err
	}
	defer f.close()
	in, err := e.startService(cfg)
	if err != nil {
		return nil, nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			in.stop()
		}
	}()
	factory := newPDUFactory(f.names, p.pduSize)
	res := &throughput{EnvBytes: len(factory.envelope("tp", 0, roomName(0)))}

	// Sustained rate.
	e.progress("pipeline: %d receivers, fedsender at %s; warm-up %v, then %d × %v", p.dests, in.svc.NATSURL, p.warmup, p.windows, p.window)
	res.Rates, res.Published, err = e.measureSustained(ctx, f, in.pub, "tp")
	if err != nil {
		return nil, nil, err
	}
	e.progress("pipeline: %.0f deliveries/s; waiting for the %d published PDUs to drain", res.Rates.Mean, res.Published)
	t := time.Now()
	if !waitFor(ctx, 60*time.Second, func() bool { return f.minCount() >= res.Published }) {
		return nil, nil, fmt.Errorf("the published PDUs did not all arrive within 60s of the end of publishing: %s", pipelineState(f, res.Published))
	}
	res.Drain = time.Since(t)
	res.Checks = f.checks()

	// Latency at a fraction of the sustained rate.
	lat := &latency{PDURate: res.Rates.Mean / float64(p.dests) * p.latencyPct}
	lat.PDUs = max(1, int(lat.PDURate*p.latencyFor.Seconds()))
	l := newLatencyRecorder("lat", lat.PDUs, p.dests)
	rec.Store(l)
	before := f.checks()
	e.progress("latency: %d PDUs at %.1f PDUs/s (%.0f%% of the sustained rate) to %d destinations", lat.PDUs, lat.PDURate, 100*p.latencyPct, p.dests)
	stopProfile, err := startProfile(latencyProfile)
	if err != nil {
		return nil, nil, fmt.Errorf("latency profile: %w", err)
	}
	defer stopProfile()
	if err := publishPaced(ctx, in.pub, lat.PDUs, lat.PDURate, func(i int) []byte {
		env := factory.envelope("lat", i, roomName(i%p.rooms))
		l.pubAt[i].Store(time.Now().UnixNano())
		return env
	}); err != nil {
		return nil, nil, fmt.Errorf("latency: %w", err)
	}
	want := lat.PDUs * p.dests
	waitFor(ctx, 30*time.Second, func() bool { return l.count() >= want })
	samples := l.sorted()
	lat.Deliveries = len(samples)
	lat.Missing = want - len(samples)
	if len(samples) == 0 {
		return res, nil, errors.New("latency: no PDU of the latency phase arrived within 30s")
	}
	lat.P50, lat.P90, lat.P99, lat.Max = percentile(samples, 0.50), percentile(samples, 0.90), percentile(samples, 0.99), percentile(samples, 1)
	first, spread := l.fanOut()
	lat.FirstP50, lat.FirstP99 = percentile(first, 0.50), percentile(first, 0.99)
	lat.SpreadP50, lat.SpreadP99 = percentile(spread, 0.50), percentile(spread, 0.99)
	after := f.checks()
	lat.Checks = after.since(before)
	stopped = true
	if err := in.stop(); err != nil {
		return res, lat, err
	}
	if lat.Missing > 0 {
		return res, lat, fmt.Errorf("latency: %d of %d deliveries did not arrive within 30s", lat.Missing, want)
	}
	return res, lat, nil
}

// latencyProfile and mixedProfile, when set, are where the latency
// phase's and the mixed load's CPU profiles go.
var latencyProfile, mixedProfile string

// startProfile starts a CPU profile into path, if set; stop ends it.
func startProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// pipelineState describes where the receivers are, for error messages.
func pipelineState(f *fleet, published int64) string {
	c := f.checks()
	s := fmt.Sprintf("published %d PDUs; receivers hold between %d and %d each; %d requests, %d violations",
		published, f.minCount(), f.maxCount(), c.Requests, c.Violations)
	if len(c.Examples) > 0 {
		s += fmt.Sprintf(" (e.g. %q)", c.Examples[0])
	}
	return s
}
