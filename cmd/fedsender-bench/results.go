package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// results collects every part's outcome.
type results struct {
	params   params
	parts    []string
	started  time.Time
	elapsed  time.Duration
	pipeline *throughput
	latency  *latency
	mixed    *mixedResult
	baseline *throughput
	rss      *rssResult
	catchup  *catchupResult
	tracing  *tracingResult
	admin    *adminResult
	postgres *postgresResult
	scaleout *scaleoutResult
	synapse  *synapseResult
	errors   []string
}

func (r *results) fail(part string, err error) {
	r.errors = append(r.errors, part+": "+err.Error())
}

// summary is the last line of the output.
type summary struct {
	Deliveries         *float64 `json:"deliveries_per_sec"`
	Baseline           *float64 `json:"baseline_deliveries_per_sec"`
	P50                *float64 `json:"p50_ms"`
	P99                *float64 `json:"p99_ms"`
	RSSPerDestination  *float64 `json:"rss_bytes_per_idle_destination"`
	CatchupSeconds     *float64 `json:"catchup_seconds"`
	AdminListP99       *float64 `json:"admin_list_p99_ms"`
	AdminVisibleP99    *float64 `json:"admin_visible_p99_ms"`
	DeliveriesMin      *float64 `json:"deliveries_per_sec_min"`
	DeliveriesMax      *float64 `json:"deliveries_per_sec_max"`
	BaselineMin        *float64 `json:"baseline_deliveries_per_sec_min"`
	BaselineMax        *float64 `json:"baseline_deliveries_per_sec_max"`
	PipelineOfBaseline *float64 `json:"pipeline_of_baseline"`
	LatencyPDURate     *float64 `json:"latency_pdus_per_sec"`
	// The mixed part: PDU and to-device p99 under EDU load, EDUs the
	// receivers accepted per second, droppable EDUs published per EDU
	// sent, and the memory held for down destinations' EDUs.
	MixedP99           *float64 `json:"mixed_p99_ms"`
	EDUP99             *float64 `json:"edu_p99_ms"`
	EDUsPerSec         *float64 `json:"edus_per_sec"`
	EDUCoalescing      *float64 `json:"edu_coalescing_ratio"`
	CoalescedBytesHeld *float64 `json:"coalesced_bytes_held"`
	NumCPU             int      `json:"num_cpu"`
	GOMAXPROCS         int      `json:"gomaxprocs"`
	GoVersion          string   `json:"go_version"`
	Destinations       int      `json:"destinations"`
	Rooms              int      `json:"rooms"`
	Short              bool     `json:"short"`
	Parts              []string `json:"parts"`
	Seconds            float64  `json:"seconds"`
	Errors             []string `json:"errors,omitempty"`
	TracingOff         *float64 `json:"tracing_off_deliveries_per_sec,omitempty"`
	TracingOn          *float64 `json:"tracing_on_deliveries_per_sec,omitempty"`
	TracingOverhead    *float64 `json:"tracing_overhead,omitempty"`
	PostgresEventsPS   *float64 `json:"postgres_projector_events_per_sec,omitempty"`
	PostgresListP99    *float64 `json:"postgres_list_p99_ms,omitempty"`
	// The pipeline's load with postgres.url set, and the rooms projector
	// on the backlog with the pipeline's rooms.
	PostgresDeliveries *float64 `json:"postgres_deliveries_per_sec,omitempty"`
	PostgresCatchUp    *float64 `json:"postgres_projector_catch_up_seconds,omitempty"`
	PostgresRoomsPDUPS *float64 `json:"postgres_rooms_projector_pdus_per_sec,omitempty"`
	// The scaleout part: 1 and 3 replicas' deliveries/s, the worst
	// failover after a kill -9, the p99 around it and around a rebalance,
	// and each replica's NATS reads per PDU at 3 replicas.
	ScaleoutOne     *float64 `json:"scaleout_one_replica_deliveries_per_sec,omitempty"`
	ScaleoutThree   *float64 `json:"scaleout_three_replicas_deliveries_per_sec,omitempty"`
	FailoverSeconds *float64 `json:"failover_seconds,omitempty"`
	KillP99         *float64 `json:"handover_kill_p99_ms,omitempty"`
	RebalanceP99    *float64 `json:"handover_rebalance_p99_ms,omitempty"`
	ReadBytesPerPDU *float64 `json:"replica_read_bytes_per_pdu,omitempty"`
	// The Synapse feed: events/s from Synapse's database to envelopes
	// published, the commit-to-envelope p99 at a fifth of that rate, and
	// the feed's database time per event.
	SynapseEventsPS    *float64 `json:"synapse_feed_events_per_sec,omitempty"`
	SynapseLagP99      *float64 `json:"synapse_feed_lag_p99_ms,omitempty"`
	SynapseDBMs        *float64 `json:"synapse_feed_db_ms_per_event,omitempty"`
	SynapseUncachedEPS *float64 `json:"synapse_feed_uncached_events_per_sec,omitempty"`
	SynapseUncachedDB  *float64 `json:"synapse_feed_uncached_db_ms_per_event,omitempty"`
}

func ptr(v float64) *float64 {
	v = math.Round(v*1000) / 1000
	return &v
}

func (r *results) summary() summary {
	s := summary{
		NumCPU:       runtime.NumCPU(),
		GOMAXPROCS:   runtime.GOMAXPROCS(0),
		GoVersion:    runtime.Version(),
		Destinations: r.params.dests,
		Rooms:        r.params.rooms,
		Short:        r.params.short,
		Parts:        r.parts,
		Seconds:      math.Round(r.elapsed.Seconds()*10) / 10,
		Errors:       r.errors,
	}
	if t := r.pipeline; t != nil {
		s.Deliveries, s.DeliveriesMin, s.DeliveriesMax = ptr(t.Rates.Mean), ptr(t.Rates.Min), ptr(t.Rates.Max)
	}
	if t := r.baseline; t != nil {
		s.Baseline, s.BaselineMin, s.BaselineMax = ptr(t.Rates.Mean), ptr(t.Rates.Min), ptr(t.Rates.Max)
	}
	if r.pipeline != nil && r.baseline != nil && r.baseline.Rates.Mean > 0 {
		s.PipelineOfBaseline = ptr(r.pipeline.Rates.Mean / r.baseline.Rates.Mean)
	}
	if l := r.latency; l != nil && l.Deliveries > 0 {
		s.P50, s.P99, s.LatencyPDURate = ptr(l.P50), ptr(l.P99), ptr(l.PDURate)
	}
	if m := r.mixed; m != nil {
		s.MixedP99, s.EDUP99, s.EDUCoalescing = ptr(m.P99), ptr(m.EDUP99), ptr(m.Coalescing)
		s.EDUsPerSec, s.CoalescedBytesHeld = ptr(float64(m.EDUs)/m.Seconds), ptr(float64(m.HeldBytes))
	}
	if m := r.rss; m != nil {
		s.RSSPerDestination = ptr(m.PerDest)
	}
	if c := r.catchup; c != nil {
		s.CatchupSeconds = ptr(c.Seconds)
	}
	if a := r.admin; a != nil {
		s.AdminListP99, s.AdminVisibleP99 = ptr(a.WorstP99), ptr(a.Visible.P99)
	}
	r.tracingSummary(&s)
	if pg := r.postgres; pg != nil {
		s.PostgresEventsPS, s.PostgresListP99 = ptr(pg.EventsPerSec), ptr(pg.WorstP99)
		if l := pg.Load; l != nil {
			s.PostgresDeliveries, s.PostgresCatchUp = ptr(l.OnRate), ptr(l.CatchUp.Seconds())
			if len(l.Backlogs) > 0 {
				s.PostgresRoomsPDUPS = ptr(l.Backlogs[0].PDUsPerSec())
			}
		}
	}
	if so := r.scaleout; so != nil {
		s.ScaleoutOne, s.ScaleoutThree = ptr(so.One.Mean), ptr(so.Three.Mean)
		s.KillP99, s.RebalanceP99, s.ReadBytesPerPDU = ptr(so.AroundKill.P99), ptr(so.AroundJoin.P99), ptr(so.ReadThree.Bytes)
		if len(so.Failover) > 0 {
			s.FailoverSeconds = ptr(slices.Max(so.Failover))
		}
	}
	if sy := r.synapse; sy != nil {
		s.SynapseEventsPS, s.SynapseLagP99, s.SynapseDBMs = ptr(sy.Cached.EventsPerSec), ptr(sy.LagP99), ptr(sy.Cached.DBMsPerEvent)
		s.SynapseUncachedEPS, s.SynapseUncachedDB = ptr(sy.Uncached.EventsPerSec), ptr(sy.Uncached.DBMsPerEvent)
	}
	return s
}

func (r *results) print(out io.Writer) {
	p := r.params
	mode := "full"
	if p.short {
		mode = "short"
	}
	fmt.Fprintf(out, "\nfedsender-bench (%s run, %.0fs)  %s %s/%s  NumCPU=%d GOMAXPROCS=%d\n",
		mode, r.elapsed.Seconds(), runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	sig := "signature check skipped (receivers still parse and check the X-Matrix header)"
	if p.verifySigs {
		sig = "ed25519 signatures verified"
	}
	fmt.Fprintf(out, "receivers: HTTPS on 127.0.0.1 in this process, %s; PDUs of about %d bytes in %d rooms\n\n", sig, p.pduSize, p.rooms)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tvalue\tmin\tmax\tsetup")
	row := func(name, value, lo, hi, setup string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, value, lo, hi, setup)
	}
	windows := fmt.Sprintf("%d × %v after %v warm-up", p.windows, p.window, p.warmup)
	if t := r.pipeline; t != nil {
		row("pipeline deliveries/s", f0(t.Rates.Mean), f0(t.Rates.Min), f0(t.Rates.Max),
			fmt.Sprintf("fedsender (service.Run), %d destinations, every PDU to all; lead ≤ %d PDUs; %s", p.dests, p.lead, windows))
		row("  windows", joinF0(t.Rates.Windows), "", "",
			fmt.Sprintf("%d PDUs published (envelope %d B); drained %.1fs after publishing stopped", t.Published, t.EnvBytes, t.Drain.Seconds()))
		row("  receiver checks", checkText(t.Checks), "", "", "violations / PDUs delivered again / requests")
	} else {
		row("pipeline deliveries/s", "-", "", "", skipped(r, "pipeline"))
	}
	if t := r.baseline; t != nil {
		row("baseline deliveries/s", f0(t.Rates.Mean), f0(t.Rates.Min), f0(t.Rates.Max),
			fmt.Sprintf("no fedsender: 1 ordered consumer, canonicalise once, batch 50, build+sign+PUT per destination on %d workers, batch by batch; %s", p.workers, windows))
		row("  windows", joinF0(t.Rates.Windows), "", "", fmt.Sprintf("%d PDUs published (envelope %d B)", t.Published, t.EnvBytes))
		row("  receiver checks", checkText(t.Checks), "", "", "violations / PDUs delivered again / requests")
	} else {
		row("baseline deliveries/s", "-", "", "", skipped(r, "baseline"))
	}
	if r.pipeline != nil && r.baseline != nil && r.baseline.Rates.Mean > 0 {
		row("pipeline / baseline", fmt.Sprintf("%.0f%%", 100*r.pipeline.Rates.Mean/r.baseline.Rates.Mean), "", "", "")
	}
	if l := r.latency; l != nil && l.Deliveries > 0 {
		row("latency p50 ms", f1(l.P50), "", "", fmt.Sprintf("publish → receiver, %.1f PDUs/s (%.0f%% of sustained) for %v, %d deliveries",
			l.PDURate, 100*p.latencyPct, p.latencyFor, l.Deliveries))
		row("latency p99 ms", f1(l.P99), "", "", fmt.Sprintf("p90 %.1f ms, max %.1f ms; %d missing", l.P90, l.Max, l.Missing))
		row("  to first destination ms", f1(l.FirstP99), "", "", fmt.Sprintf("p99 over PDUs (p50 %.1f): publish → the first receiver to accept it", l.FirstP50))
		row("  first to last ms", f1(l.SpreadP99), "", "", fmt.Sprintf("p99 over PDUs (p50 %.1f): the fan-out, from the first receiver to accept a PDU to the last", l.SpreadP50))
		row("  receiver checks", checkText(l.Checks), "", "", fmt.Sprintf("%.1f PDUs per request", float64(l.Deliveries)/float64(max(1, l.Checks.Requests))))
	} else {
		row("latency p50/p99 ms", "-", "", "", skipped(r, "pipeline"))
	}
	r.mixedRows(row)
	if m := r.rss; m != nil {
		row("RSS bytes / idle destination", f0(m.PerDest), "", "", fmt.Sprintf("(VmRSS with %d − without) / %d, child processes after GC; target ≤ 4096", m.Destinations, m.Destinations))
		row("  VmRSS without / with", mib(m.Without.RSS)+" / "+mib(m.With.RSS), "", "",
			fmt.Sprintf("Go heap in use %s / %s; goroutines %d / %d; ready after %.1fs / %.1fs; %s listed",
				mib(m.Without.HeapInuse), mib(m.With.HeapInuse), m.Without.Goroutines, m.With.Goroutines,
				m.Without.Startup, m.With.Startup, listed(m.With.Known)))
	} else {
		row("RSS bytes / idle destination", "-", "", "", skipped(r, "rss"))
	}
	if c := r.catchup; c != nil {
		row("catch-up seconds", f2(c.Seconds), "", "", fmt.Sprintf("%d rooms pending (max_pending %d): receiver restart + admin reset → all held; target < 2", c.Rooms, c.MaxPending))
		row("  receiver checks", checkText(c.Checks), "", "", fmt.Sprintf("%d transactions accepted", c.Transactions))
	} else {
		row("catch-up seconds", "-", "", "", skipped(r, "catchup"))
	}
	r.printAdmin(row)
	r.tracingRows(row)
	r.postgresRows(row)
	r.pgLoadRows(row)
	r.scaleoutRows(row)
	r.synapseRows(row)
	tw.Flush()
	for _, c := range r.allChecks() {
		for _, v := range c.Examples {
			fmt.Fprintf(out, "receiver violation: %s\n", v)
		}
	}
	for _, msg := range r.errors {
		fmt.Fprintf(out, "FAILED %s\n", msg)
	}
	line, err := json.Marshal(r.summary())
	if err != nil {
		line = []byte(fmt.Sprintf(`{"errors":[%q]}`, err.Error()))
	}
	fmt.Fprintf(out, "\n%s\n", line)
}

func skipped(r *results, part string) string {
	for _, e := range r.errors {
		if strings.HasPrefix(e, part+":") {
			return "failed (below)"
		}
	}
	return "not run"
}

func listed(n int) string {
	if n < 0 {
		return "admin list unavailable,"
	}
	return fmt.Sprintf("%d", n)
}

func checkText(c checks) string {
	return fmt.Sprintf("%d / %d / %d", c.Violations, c.Redelivered, c.Requests)
}

func f0(v float64) string { return fmt.Sprintf("%.0f", v) }
func f1(v float64) string { return fmt.Sprintf("%.1f", v) }
func f2(v float64) string { return fmt.Sprintf("%.2f", v) }

func joinF0(vs []float64) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = f0(v)
	}
	return strings.Join(s, " ")
}

// allChecks returns the receiver checks of every part that ran.
func (r *results) allChecks() []checks {
	var out []checks
	if r.pipeline != nil {
		out = append(out, r.pipeline.Checks)
	}
	if r.latency != nil {
		out = append(out, r.latency.Checks)
	}
	if r.mixed != nil {
		out = append(out, r.mixed.Checks)
	}
	if r.baseline != nil {
		out = append(out, r.baseline.Checks)
	}
	if r.catchup != nil {
		out = append(out, r.catchup.Checks)
	}
	if r.scaleout != nil {
		out = append(out, r.scaleout.Checks)
	}
	return out
}
