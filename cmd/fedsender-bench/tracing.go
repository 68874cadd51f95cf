package main

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/service"
	"github.com/fedsender/fedsender/streams"
)

// The tracing part compares the pipeline's sustained delivery rate with
// tracing off (OTEL_TRACES_EXPORTER unset: the no-op provider, which the
// pipeline checks once and skips) and on (every trace sampled, every span
// built and handed through the SDK's batch processor to an exporter that
// only counts them), alternating off and on to spread drift over both;
// and, for scale, with metrics off too (metrics.listen empty). It is not in
// the default parts: run it with -only tracing.

// optionalParts run only when -only names them.
var optionalParts = []string{"tracing", "postgres", "scaleout", "synapse"}

// tracingResult is the outcome of the tracing part.
type tracingResult struct {
	Off, On, Bare []float64 // each round's mean deliveries/s; Bare: metrics off too
	// The medians of the rounds.
	OffRate  float64
	OnRate   float64
	BareRate float64
	Spans    int64 // spans exported in the rounds with tracing on
}

// Overhead is the rate lost to tracing, as a fraction of the rate without.
func (t *tracingResult) Overhead() float64 {
	if t.OffRate == 0 {
		return 0
	}
	return 1 - t.OnRate/t.OffRate
}

func runTracing(ctx context.Context, e *env) (*tracingResult, error) {
	rounds := 3
	if e.p.short {
		rounds = 1
	}
	res := &tracingResult{}
	modes := []struct {
		name            string
		traced, metrics bool
		rates           *[]float64
	}{
		{"tracing off", false, true, &res.Off},
		{"tracing on", true, true, &res.On},
		{"tracing and metrics off", false, false, &res.Bare},
	}
	for i := range rounds {
		for j, m := range modes {
			rate, spans, err := e.sustainedRate(ctx, fmt.Sprintf("tracing-%d-%d", i, j), m.traced, m.metrics)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", i+1, m.name, err)
			}
			e.progress("tracing: round %d, %-23s %.0f deliveries/s", i+1, m.name+":", rate)
			*m.rates = append(*m.rates, rate)
			res.Spans += spans
		}
	}
	res.OffRate, res.OnRate, res.BareRate = median(res.Off), median(res.On), median(res.Bare)
	return res, nil
}

// median is the middle round's rate: the machine is shared, and one slow
// round must not decide the comparison.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// countingExporter is an in-memory exporter that keeps nothing but a count.
type countingExporter struct{ n atomic.Int64 }

func (c *countingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	c.n.Add(int64(len(spans)))
	return nil
}

func (c *countingExporter) Shutdown(context.Context) error { return nil }

// sustainedRate is the pipeline part's sustained-rate measurement on a new
// fedsender, traced or not, with metrics or not, and the spans exported.
func (e *env) sustainedRate(ctx context.Context, name string, traced, metrics bool) (float64, int64, error) {
	var deps service.Deps
	exp := &countingExporter{}
	if traced {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(exp))
		defer tp.Shutdown(context.WithoutCancel(ctx))
		deps.TracerProvider = tp
	}
	rate, err := e.sustain(ctx, name, deps, func(c *config.Config) {
		if !metrics {
			c.Metrics.Listen = ""
		}
	}, nil)
	return rate, exp.n.Load(), err
}

// sustain measures the pipeline part's sustained rate on a new fedsender
// configured by mutate. during, if set, runs beside the measurement and
// until the measurement ends (its context is then cancelled), then its
// error is the measurement's.
func (e *env) sustain(ctx context.Context, name string, deps service.Deps, mutate func(*config.Config),
	during func(ctx context.Context, in *instance) error) (float64, error) {
	p := e.p
	cfg, err := e.config(name, mutate)
	if err != nil {
		return 0, err
	}
	f, err := e.newFleet(p.dests, nil, nil)
	if err != nil {
		return 0, err
	}
	defer f.close()
	in, err := e.startServiceDeps(cfg, deps)
	if err != nil {
		return 0, err
	}
	defer in.stop()
	dctx, stopDuring := context.WithCancel(ctx)
	duringErr := make(chan error, 1)
	if during != nil {
		go func() { duringErr <- during(dctx, in) }()
	} else {
		duringErr <- nil
	}
	r, _, err := e.measureSustained(ctx, f, in.pub, name)
	stopDuring()
	if err2 := <-duringErr; err == nil {
		err = err2
	}
	if err != nil {
		return 0, err
	}
	if c := f.checks(); c.Violations > 0 {
		return 0, fmt.Errorf("receivers saw %d protocol violations: %v", c.Violations, c.Examples)
	}
	return r.Mean, nil
}

// measureSustained publishes PDUs tagged tag to every receiver of f
// through in, kept at most the lead ahead of what all have acknowledged,
// and measures the delivery rate over the warm-up and windows; it returns
// the rates and how many PDUs were published.
func (e *env) measureSustained(ctx context.Context, f *fleet, pub *streams.Publisher, tag string) (rates, int64, error) {
	p := e.p
	factory := newPDUFactory(f.names, p.pduSize)
	acks := newAckChecker()
	// What the receivers hold from earlier phases does not count.
	base := f.minCount()
	acked := func() int64 { return f.minCount() - base }
	fd := &feeder{
		pub: pub, acked: acked, lead: p.lead, acks: acks,
		make: func(n int) []byte { return factory.envelope(tag, n, roomName(n%p.rooms)) },
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); fd.run(pubCtx) }()
	w := windowed{
		count:      f.total,
		pending:    func() bool { return acked() < fd.count() },
		failed:     acks.failed,
		diagnose:   func() string { return pipelineState(f, fd.count()) },
		stallAfter: 10 * time.Second,
	}
	r, err := w.measure(ctx, p.warmup, p.window, p.windows)
	stopPub()
	<-pubDone
	if err2 := acks.finish(); err == nil {
		err = err2
	}
	return r, fd.count(), err
}

// tracingRows adds the part's rows to the results table: medians, with the
// slowest and fastest rounds.
func (r *results) tracingRows(row func(name, value, lo, hi, setup string)) {
	t := r.tracing
	if t == nil {
		if slices.Contains(r.parts, "tracing") {
			row("tracing off / on deliveries/s", "-", "", "", skipped(r, "tracing"))
		}
		return
	}
	row("tracing off deliveries/s", f0(t.OffRate), f0(slices.Min(t.Off)), f0(slices.Max(t.Off)),
		fmt.Sprintf("pipeline's sustained rate, OTEL_TRACES_EXPORTER unset (no-op provider); median of %d rounds", len(t.Off)))
	row("tracing on deliveries/s", f0(t.OnRate), f0(slices.Min(t.On)), f0(slices.Max(t.On)),
		fmt.Sprintf("every trace sampled, batch processor to a counting exporter; %d spans exported", t.Spans))
	row("  tracing overhead", fmt.Sprintf("%.1f%%", 100*t.Overhead()), "", "", "1 − on/off")
	row("tracing and metrics off", f0(t.BareRate), f0(slices.Min(t.Bare)), f0(slices.Max(t.Bare)),
		"for scale: metrics.listen empty too (no instruments at all)")
}

// tracingSummary adds the part's figures to the JSON line.
func (r *results) tracingSummary(s *summary) {
	if t := r.tracing; t != nil {
		s.TracingOff, s.TracingOn, s.TracingOverhead = ptr(t.OffRate), ptr(t.OnRate), ptr(t.Overhead())
	}
}
