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
	Checks     checks `json:"checks"`
}

// latencyRecorder keeps publish times of the latency series and the delays
// the receivers saw.
type latencyRecorder struct {
	pubAt   []atomic.Int64 // unix ns, by PDU number
	mu      sync.Mutex
	samples []int64 // ns
}

func (l *latencyRecorder) onPDU(eventID string, at time.Time) {
	n := eventNumber(eventID, "lat")
	if n < 0 || n >= len(l.pubAt) {
		return
	}
	t0 := l.pubAt[n].Load()
	if t0 == 0 {
		return
	}
	l.mu.Lock()
	l.samples = append(l.samples, at.UnixNano()-t0)
	l.mu.Unlock()
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
	})
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
	res.Rates, res.Published, err = e.measureSustained(ctx, f, in, "tp")
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
	l := &latencyRecorder{pubAt: make([]atomic.Int64, lat.PDUs), samples: make([]int64, 0, lat.PDUs*p.dests)}
	rec.Store(l)
	before := f.checks()
	e.progress("latency: %d PDUs at %.1f PDUs/s (%.0f%% of the sustained rate) to %d destinations", lat.PDUs, lat.PDURate, 100*p.latencyPct, p.dests)
	acks := newAckChecker()
	if latencyProfile != "" {
		pf, err := os.Create(latencyProfile)
		if err != nil {
			return nil, nil, fmt.Errorf("latency profile: %w", err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return nil, nil, fmt.Errorf("latency profile: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			pf.Close()
		}()
	}
	interval := time.Duration(float64(time.Second) / lat.PDURate)
	start := time.Now()
	for i := range lat.PDUs {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			case <-time.After(d):
			}
		}
		env := factory.envelope("lat", i, roomName(i%p.rooms))
		l.pubAt[i].Store(time.Now().UnixNano())
		fut, err := in.pub.PublishAsync(env)
		if err != nil {
			return nil, nil, fmt.Errorf("latency: publish: %w", err)
		}
		acks.futures <- fut
	}
	if err := acks.finish(); err != nil {
		return nil, nil, fmt.Errorf("latency: %w", err)
	}
	want := lat.PDUs * p.dests
	waitFor(ctx, 30*time.Second, func() bool { return l.count() >= want })
	l.mu.Lock()
	samples := slices.Clone(l.samples)
	l.mu.Unlock()
	lat.Deliveries = len(samples)
	lat.Missing = want - len(samples)
	if len(samples) == 0 {
		return res, nil, errors.New("latency: no PDU of the latency phase arrived within 30s")
	}
	slices.Sort(samples)
	pct := func(q float64) float64 { return float64(samples[int(q*float64(len(samples)-1))]) / 1e6 }
	lat.P50, lat.P90, lat.P99, lat.Max = pct(0.50), pct(0.90), pct(0.99), pct(1)
	after := f.checks()
	lat.Checks = checks{
		Violations:  after.Violations - before.Violations,
		Redelivered: after.Redelivered - before.Redelivered,
		Duplicates:  after.Duplicates - before.Duplicates,
		Requests:    after.Requests - before.Requests,
		Examples:    after.Examples,
	}
	stopped = true
	if err := in.stop(); err != nil {
		return res, lat, err
	}
	if lat.Missing > 0 {
		return res, lat, fmt.Errorf("latency: %d of %d deliveries did not arrive within 30s", lat.Missing, want)
	}
	return res, lat, nil
}

// latencyProfile, when set, is where the latency phase's CPU profile goes.
var latencyProfile string

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
