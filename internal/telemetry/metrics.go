package telemetry

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Instrument names. They follow Synapse's federation metrics where one
// exists (synapse_federation_client_sent_transactions becomes
// fedsender_federation_client_sent_transactions); the Prometheus exporter
// appends _total to counters.
const (
	MetricSentTransactions    = "fedsender_federation_client_sent_transactions"
	MetricFailedTransactions  = "fedsender_federation_client_failed_transactions"
	MetricSentPDUs            = "fedsender_federation_client_sent_pdus"
	MetricSentEDUs            = "fedsender_federation_client_sent_edus"
	MetricSentEDUsByType      = "fedsender_federation_client_sent_edus_by_type"
	MetricCoalescedEDUs       = "fedsender_federation_edus_coalesced"
	MetricDroppedEDUs         = "fedsender_federation_edus_dropped"
	MetricPendingEDUs         = "fedsender_federation_transaction_queue_pending_edus"
	MetricHeldEDUBytes        = "fedsender_federation_edus_held_bytes"
	MetricPDUErrors           = "fedsender_federation_client_pdu_errors"
	MetricQueuedPDUs          = "fedsender_federation_client_sent_pdu_destinations_count"
	MetricPDUDestinations     = "fedsender_federation_client_sent_pdu_destinations"
	MetricDeliveryLatency     = "fedsender_federation_delivery_latency_seconds"
	MetricBackoff             = "fedsender_federation_backoff_interval_seconds"
	MetricCatchUps            = "fedsender_federation_catchup_runs"
	MetricResets              = "fedsender_federation_destination_resets"
	MetricResolveFailures     = "fedsender_federation_resolve_failures"
	MetricDeadLetters         = "fedsender_ingest_dead_letters"
	MetricDestinationsRefused = "fedsender_destinations_refused"
	MetricDestinations        = "fedsender_federation_destinations"
	MetricPendingPDUs         = "fedsender_federation_transaction_queue_pending_pdus"
	MetricOldestPending       = "fedsender_federation_transaction_queue_oldest_pending_age_seconds"
	MetricProjectionLag       = "fedsender_projection_lag_events"
	MetricPostgresLag         = "fedsender_postgres_projection_lag_messages"
	MetricSynapseFeedPolling  = "fedsender_synapse_feed_polling"
	MetricSynapseFeedActive   = "fedsender_synapse_feed_active"
	MetricBuildInfo           = "fedsender_build_info"
	MetricCASConflicts        = "fedsender_cas_conflicts"
)

// Attribute keys of the metrics.
const (
	AttrClass       = "class"       // a failed transaction's federation.Class
	AttrDestination = "destination" // only with MetricsOptions.PerDestination
	AttrState       = "state"       // healthy, backing_off, catching_up
	AttrPartition   = "partition"
	AttrReason      = "reason" // why a destination was refused, or an EDU dropped
	AttrType        = "type"   // an EDU's type; "other" for types fedsender does not know
	AttrKind        = "kind"   // what a compare-and-swap wrote: CASEvent, CASOffset, CASEDUOffset, CASWatermark
	AttrCause       = "cause"  // why it conflicted: CauseOwnWriteReplayed, CauseOtherWriter
)

// The writes fedsender fences with compare-and-swap (values of the kind
// attribute), and the causes of their conflicts (values of cause).
const (
	CASEvent     = "event"
	CASOffset    = "offset"
	CASEDUOffset = "edu_offset"
	CASWatermark = "watermark"
	// CauseOwnWriteReplayed: the key held a value this process had written
	// itself, applied by NATS after its answer was lost (a timeout during
	// an outage, a publish buffered over a reconnect); the writer adopts it.
	CauseOwnWriteReplayed = "own_write_replayed"
	// CauseOtherWriter: the key held a value this process never wrote:
	// another process writes the same partition.
	CauseOtherWriter = "other_writer"
)

// knownEDUTypes are the EDU types that label the EDU metrics as they are;
// any other is counted as "other", so that a publisher cannot make series
// without bound.
var knownEDUTypes = map[string]bool{
	"m.typing": true, "m.receipt": true, "m.presence": true, "m.direct_to_device": true,
	"m.device_list_update": true, "m.signing_key_update": true, "org.matrix.signing_key_update": true,
}

func eduTypeAttr(t string) metric.MeasurementOption {
	if !knownEDUTypes[t] {
		t = "other"
	}
	return metric.WithAttributes(attribute.String(AttrType, t))
}

// RefusedInvalidServerName is the reason attribute of a destination that
// is not a valid Matrix server name.
const RefusedInvalidServerName = "invalid_server_name"

// Destination states, the values of the state attribute.
const (
	StateHealthy    = "healthy"
	StateBackingOff = "backing_off"
	StateCatchingUp = "catching_up"
)

// latencyBuckets (seconds) span a healthy delivery (milliseconds) to a
// destination back after a day of backoff.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400}

// backoffBuckets (seconds) follow Synapse's schedule: 10 min doubling up to
// 7 days, with a few short ones for Retry-After.
var backoffBuckets = []float64{1, 10, 60, 600, 1200, 2400, 4800, 9600, 19200, 38400, 76800, 153600, 307200, 604800}

// MetricsOptions shape Metrics.
type MetricsOptions struct {
	// Partitions is queue.partitions: the gauges keep one slot each.
	Partitions int
	// PerDestination labels the per-destination counters and histograms
	// with the destination (one series per remote server: off by default).
	PerDestination bool
	// Instance is the replica's instance_name, the instance label of the
	// ownership metrics.
	Instance string
}

// Metrics are fedsender's instruments, created once per process. A nil
// *Metrics records nothing, so that components built without telemetry
// need no checks.
type Metrics struct {
	perDest bool

	sentTxns, failedTxns, sentPDUs, sentEDUs, pduErrors      metric.Int64Counter
	queuedPDUs, pduDests, catchUps, resets                   metric.Int64Counter
	resolveFailures, deadLetters, refusedDests, casConflicts metric.Int64Counter
	sentEDUsByType, coalescedEDUs, droppedEDUs               metric.Int64Counter
	latency, backoff                                         metric.Float64Histogram
	casOpts                                                  map[[2]string]metric.AddOption

	parts     []PartitionGauges
	partAttrs []metric.ObserveOption
	stateOpts [3]metric.ObserveOption
	shared    *Destination
	reg       metric.Registration
	own       ownership
}

// PartitionGauges are one partition's gauge values. Its supervisor stores
// them at each checkpoint; the gauges' callback loads them at collection.
type PartitionGauges struct {
	Healthy, BackingOff, CatchingUp atomic.Int64
	// Pending is the PDUs waiting in the destinations' in-memory queues.
	Pending atomic.Int64
	// OldestPendingTS is the stream time (ms since the epoch) of the oldest
	// PDU waiting in a queue; 0 when none waits.
	OldestPendingTS atomic.Int64
	// PendingEDUs is the must-deliver EDUs not yet acknowledged.
	PendingEDUs atomic.Int64
	// HeldEDUBytes estimates the memory the destinations' droppable EDUs
	// (typing, receipts, presence, other types) hold.
	HeldEDUBytes atomic.Int64
}

// QueueGauge is one destination actor's queue as the gauges see it: the
// actor stores, its supervisor loads at checkpoints.
type QueueGauge struct {
	Pending  atomic.Int64
	OldestTS atomic.Int64 // stream time (ms) of the queue's head; 0: empty
}

// Set records the queue's length and the stream time of its head.
func (g *QueueGauge) Set(pending int, oldestTS int64) {
	if g == nil {
		return
	}
	if pending == 0 {
		oldestTS = 0
	}
	g.Pending.Store(int64(pending))
	g.OldestTS.Store(oldestTS)
}

// NewMetrics creates every instrument on mp's meter and registers the
// gauges' callback. A nil mp returns a nil *Metrics.
func NewMetrics(mp metric.MeterProvider, o MetricsOptions) (*Metrics, error) {
	if mp == nil {
		return nil, nil
	}
	meter := mp.Meter(ScopeName)
	m := &Metrics{perDest: o.PerDestination, parts: make([]PartitionGauges, max(o.Partitions, 1))}
	var errs []error
	counter := func(name, desc, unit string) metric.Int64Counter {
		c, err := meter.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		errs = append(errs, err)
		return c
	}
	m.sentTxns = counter(MetricSentTransactions, "Transactions a destination accepted (HTTP 200).", "{transaction}")
	m.failedTxns = counter(MetricFailedTransactions, "Transaction attempts that failed, by failure class.", "{transaction}")
	m.sentPDUs = counter(MetricSentPDUs, "PDU deliveries a destination accepted: one per PDU and destination.", "{pdu}")
	m.sentEDUs = counter(MetricSentEDUs, "EDUs in transactions a destination accepted.", "{edu}")
	m.sentEDUsByType = counter(MetricSentEDUsByType, "EDUs in transactions a destination accepted, by type.", "{edu}")
	m.coalescedEDUs = counter(MetricCoalescedEDUs, "Droppable EDUs (typing, receipts, presence, other types) replaced by a newer one with the same key before being sent, by type.", "{edu}")
	m.droppedEDUs = counter(MetricDroppedEDUs, "Droppable EDUs never sent, by type and reason: backoff (typing for a destination in backoff), expired (typing older than 30 s), overflow (over the bound held for a destination that is down).", "{edu}")
	m.pduErrors = counter(MetricPDUErrors, "PDUs a destination answered with a per-PDU error in an accepted transaction (never retried).", "{pdu}")
	m.queuedPDUs = counter(MetricQueuedPDUs, "PDUs read from the stream and queued for one or more destinations.", "{pdu}")
	m.pduDests = counter(MetricPDUDestinations, "PDU deliveries queued: one per PDU and destination.", "{pdu}")
	m.catchUps = counter(MetricCatchUps, "Catch-up scans of the PDU stream.", "{run}")
	m.resets = counter(MetricResets, "Admin resets of a destination's retry timings.", "{reset}")
	m.resolveFailures = counter(MetricResolveFailures, "Server-name resolutions that failed (DNS, .well-known, SRV).", "{resolution}")
	m.deadLetters = counter(MetricDeadLetters, "Envelopes refused by the reader and moved to the dead-letter subject.", "{envelope}")
	m.refusedDests = counter(MetricDestinationsRefused, "Destinations of accepted envelopes that were refused (each recorded on the dead-letter subject), by reason.", "{destination}")
	m.casConflicts = counter(MetricCASConflicts, "Compare-and-swap conflicts of the event log, offsets and watermarks, by kind and cause.", "{conflict}")
	var err error
	m.latency, err = meter.Float64Histogram(MetricDeliveryLatency,
		metric.WithDescription("From the PDU's arrival in the stream to its acceptance by a destination, per delivery."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(latencyBuckets...))
	errs = append(errs, err)
	m.backoff, err = meter.Float64Histogram(MetricBackoff,
		metric.WithDescription("Backoff intervals chosen after failed transactions."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(backoffBuckets...))
	errs = append(errs, err)

	destinations, err := meter.Int64ObservableGauge(MetricDestinations,
		metric.WithDescription("Known destinations by state."), metric.WithUnit("{destination}"))
	errs = append(errs, err)
	pending, err := meter.Int64ObservableGauge(MetricPendingPDUs,
		metric.WithDescription("PDUs waiting in the destinations' in-memory queues, per partition."), metric.WithUnit("{pdu}"))
	errs = append(errs, err)
	oldest, err := meter.Float64ObservableGauge(MetricOldestPending,
		metric.WithDescription("Age of the oldest PDU waiting in a destination's queue, per partition (0: none waits)."), metric.WithUnit("s"))
	errs = append(errs, err)
	pendingEDUs, err := meter.Int64ObservableGauge(MetricPendingEDUs,
		metric.WithDescription("Must-deliver EDUs (to-device, device lists, signing keys) not yet acknowledged, per partition."), metric.WithUnit("{edu}"))
	errs = append(errs, err)
	heldEDUBytes, err := meter.Int64ObservableGauge(MetricHeldEDUBytes,
		metric.WithDescription("Memory the droppable EDUs (typing, receipts, presence, other types) waiting for their destinations hold, an estimate, per partition; most of it is for destinations that are down."), metric.WithUnit("By"))
	errs = append(errs, err)
	buildInfo, err := meter.Int64ObservableGauge(MetricBuildInfo,
		metric.WithDescription("Always 1; its labels say which build runs: version, commit, goversion."))
	errs = append(errs, err)
	errs = append(errs, m.newOwnership(meter, o.Instance))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m.partAttrs = make([]metric.ObserveOption, len(m.parts))
	for i := range m.parts {
		m.partAttrs[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrPartition, strconv.Itoa(i))))
	}
	for i, s := range []string{StateHealthy, StateBackingOff, StateCatchingUp} {
		m.stateOpts[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrState, s)))
	}
	build := ReadBuild()
	buildAttrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("version", build.Version),
		attribute.String("commit", build.Commit), attribute.String("goversion", build.GoVersion)))
	m.reg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := time.Now().UnixMilli()
		var states [3]int64
		for i := range m.parts {
			p := &m.parts[i]
			states[0] += p.Healthy.Load()
			states[1] += p.BackingOff.Load()
			states[2] += p.CatchingUp.Load()
			o.ObserveInt64(pending, p.Pending.Load(), m.partAttrs[i])
			o.ObserveInt64(pendingEDUs, p.PendingEDUs.Load(), m.partAttrs[i])
			o.ObserveInt64(heldEDUBytes, p.HeldEDUBytes.Load(), m.partAttrs[i])
			age := 0.0
			if ts := p.OldestPendingTS.Load(); ts > 0 {
				age = float64(max(now-ts, 0)) / 1000
			}
			o.ObserveFloat64(oldest, age, m.partAttrs[i])
		}
		for i, n := range states {
			o.ObserveInt64(destinations, n, m.stateOpts[i])
		}
		o.ObserveInt64(buildInfo, 1, buildAttrs)
		return nil
	}, destinations, pending, oldest, pendingEDUs, heldEDUBytes, buildInfo)
	if err != nil {
		return nil, err
	}
	m.shared = m.newDestination("")
	// Counters without attributes are exported from the start (at 0), so
	// that rate() and absent() work before the first delivery.
	for _, c := range []metric.Int64Counter{m.sentTxns, m.sentPDUs, m.sentEDUs, m.pduErrors, m.queuedPDUs,
		m.pduDests, m.catchUps, m.resets, m.resolveFailures, m.deadLetters} {
		c.Add(context.Background(), 0)
	}
	m.refusedDests.Add(context.Background(), 0, metric.WithAttributes(attribute.String(AttrReason, RefusedInvalidServerName)))
	m.casOpts = map[[2]string]metric.AddOption{}
	for _, kind := range []string{CASEvent, CASOffset, CASEDUOffset, CASWatermark} {
		for _, cause := range []string{CauseOwnWriteReplayed, CauseOtherWriter} {
			opt := metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrKind, kind), attribute.String(AttrCause, cause)))
			m.casOpts[[2]string{kind, cause}] = opt
			m.casConflicts.Add(context.Background(), 0, opt)
		}
	}
	for t := range knownEDUTypes {
		m.sentEDUsByType.Add(context.Background(), 0, eduTypeAttr(t))
	}
	for _, t := range []string{"m.typing", "m.receipt", "m.presence"} {
		m.coalescedEDUs.Add(context.Background(), 0, eduTypeAttr(t))
	}
	m.droppedEDUs.Add(context.Background(), 0, eduTypeAttr("m.typing"), metric.WithAttributes(attribute.String(AttrReason, "backoff")))
	return m, nil
}

// EDUsSent counts the EDUs of an accepted transaction by type.
func (m *Metrics) EDUsSent(ctx context.Context, byType map[string]int) {
	if m == nil {
		return
	}
	for t, n := range byType {
		m.sentEDUsByType.Add(ctx, int64(n), eduTypeAttr(t))
	}
}

// EDUCoalesced counts a droppable EDU replaced by a newer one.
func (m *Metrics) EDUCoalesced(ctx context.Context, eduType string) {
	if m != nil {
		m.coalescedEDUs.Add(ctx, 1, eduTypeAttr(eduType))
	}
}

// EDUDropped counts a droppable EDU not sent, and why.
func (m *Metrics) EDUDropped(ctx context.Context, eduType, reason string) {
	if m != nil {
		m.droppedEDUs.Add(ctx, 1, eduTypeAttr(eduType), metric.WithAttributes(attribute.String(AttrReason, reason)))
	}
}

// Close unregisters the gauges' callback.
func (m *Metrics) Close() error {
	if m == nil || m.reg == nil {
		return nil
	}
	var err error
	if m.own.reg != nil {
		err = m.own.reg.Unregister()
	}
	return errors.Join(m.reg.Unregister(), err)
}

// Partition returns partition p's gauges (nil for a nil *Metrics).
func (m *Metrics) Partition(p int) *PartitionGauges {
	if m == nil || p < 0 || p >= len(m.parts) {
		return nil
	}
	return &m.parts[p]
}

// Queued counts PDUs read from the stream with their deliveries.
func (m *Metrics) Queued(ctx context.Context, pdus, deliveries int) {
	if m == nil || pdus == 0 {
		return
	}
	m.queuedPDUs.Add(ctx, int64(pdus))
	m.pduDests.Add(ctx, int64(deliveries))
}

// DeadLetter counts a refused envelope.
func (m *Metrics) DeadLetter(ctx context.Context) {
	if m != nil {
		m.deadLetters.Add(ctx, 1)
	}
}

// DestinationRefused counts a refused destination of an accepted envelope.
func (m *Metrics) DestinationRefused(ctx context.Context, reason string) {
	if m != nil {
		m.refusedDests.Add(ctx, 1, metric.WithAttributes(attribute.String(AttrReason, reason)))
	}
}

// CASConflict counts a compare-and-swap conflict of kind (CASEvent...) by
// its cause (CauseOwnWriteReplayed, CauseOtherWriter).
func (m *Metrics) CASConflict(ctx context.Context, kind, cause string) {
	if m == nil {
		return
	}
	opt, ok := m.casOpts[[2]string{kind, cause}]
	if !ok {
		opt = metric.WithAttributes(attribute.String(AttrKind, kind), attribute.String(AttrCause, cause))
	}
	m.casConflicts.Add(ctx, 1, opt)
}

// ResolveFailure counts a failed server-name resolution.
func (m *Metrics) ResolveFailure(ctx context.Context) {
	if m != nil {
		m.resolveFailures.Add(ctx, 1)
	}
}

// Destination returns what records one destination's deliveries. Without
// per-destination labels every destination shares one, so this allocates
// nothing; with them, call it once per actor.
func (m *Metrics) Destination(name string) *Destination {
	switch {
	case m == nil:
		return nil
	case !m.perDest:
		return m.shared
	}
	return m.newDestination(name)
}

func (m *Metrics) newDestination(name string) *Destination {
	var set attribute.Set
	if name != "" {
		set = attribute.NewSet(attribute.String(AttrDestination, name))
	}
	opt := metric.WithAttributeSet(set)
	return &Destination{m: m, name: name, add: []metric.AddOption{opt}, rec: []metric.RecordOption{opt}}
}

// Destination records the deliveries of one destination (or of all, when
// they share it). Its methods are safe for concurrent use; a nil
// *Destination records nothing.
type Destination struct {
	m    *Metrics
	name string // "" when shared
	add  []metric.AddOption
	rec  []metric.RecordOption
}

// Sent counts an accepted transaction with its PDUs, EDUs and per-PDU
// errors.
func (d *Destination) Sent(ctx context.Context, pdus, edus, pduErrors int) {
	if d == nil {
		return
	}
	d.m.sentTxns.Add(ctx, 1, d.add...)
	d.m.sentPDUs.Add(ctx, int64(pdus), d.add...)
	if edus > 0 {
		d.m.sentEDUs.Add(ctx, int64(edus), d.add...)
	}
	if pduErrors > 0 {
		d.m.pduErrors.Add(ctx, int64(pduErrors), d.add...)
	}
}

// Delivered records one PDU's delivery latency.
func (d *Destination) Delivered(ctx context.Context, latency time.Duration) {
	if d != nil {
		d.m.latency.Record(ctx, max(latency, 0).Seconds(), d.rec...)
	}
}

// Failed counts a failed attempt of class and the backoff chosen after it.
func (d *Destination) Failed(ctx context.Context, class string, backoff time.Duration) {
	if d == nil {
		return
	}
	attrs := []attribute.KeyValue{attribute.String(AttrClass, class)}
	if d.name != "" {
		attrs = append(attrs, attribute.String(AttrDestination, d.name))
	}
	d.m.failedTxns.Add(ctx, 1, metric.WithAttributes(attrs...))
	d.m.backoff.Record(ctx, backoff.Seconds(), d.rec...)
}

// CatchUp counts a catch-up scan.
func (d *Destination) CatchUp(ctx context.Context) {
	if d != nil {
		d.m.catchUps.Add(ctx, 1, d.add...)
	}
}

// Reset counts an admin reset.
func (d *Destination) Reset(ctx context.Context) {
	if d != nil {
		d.m.resets.Add(ctx, 1, d.add...)
	}
}
