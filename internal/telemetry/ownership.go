package telemetry

import (
	"context"
	"errors"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Partition ownership's instruments (internal/ownership).
const (
	MetricPartitionsOwned    = "fedsender_partitions_owned"
	MetricPartitionHandovers = "fedsender_partition_handovers"
	SpanHandover             = "fedsender.partition.handover" // acquiring, draining or losing one partition
	AttrInstance             = "instance"                     // the replica's instance_name
)

// Reasons of a handover (the reason attribute of MetricPartitionHandovers).
const (
	HandoverAcquired = "acquired" // this replica took the partition
	HandoverReleased = "released" // it drained the partition and gave it up
	HandoverLost     = "lost"     // its lease ended before it gave it up
)

// Span attributes of a handover.
const (
	KeyPartition = attribute.Key("fedsender.partition")
	KeyHandover  = attribute.Key("fedsender.handover") // acquired, released or lost
	KeyInstance  = attribute.Key("service.instance.id")
)

// ownership is the instruments of partition ownership.
type ownership struct {
	owned     atomic.Int64
	handovers metric.Int64Counter
	attrs     attribute.Set // the instance
	byReason  map[string]metric.AddOption
	reg       metric.Registration
}

// newOwnership creates the ownership instruments on meter.
func (m *Metrics) newOwnership(meter metric.Meter, instance string) error {
	o := &m.own
	o.attrs = attribute.NewSet(attribute.String(AttrInstance, instance))
	var err1, err2 error
	o.handovers, err1 = meter.Int64Counter(MetricPartitionHandovers,
		metric.WithDescription("Partitions this replica acquired, released after draining them, or lost (its lease ended first), by reason."),
		metric.WithUnit("{handover}"))
	owned, err2 := meter.Int64ObservableGauge(MetricPartitionsOwned,
		metric.WithDescription("Partitions this replica owns (holds the lease of and serves)."), metric.WithUnit("{partition}"))
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	o.byReason = map[string]metric.AddOption{}
	for _, r := range []string{HandoverAcquired, HandoverReleased, HandoverLost} {
		opt := metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrInstance, instance), attribute.String(AttrReason, r)))
		o.byReason[r] = opt
		o.handovers.Add(context.Background(), 0, opt)
	}
	opt := metric.WithAttributeSet(o.attrs)
	var err error
	o.reg, err = meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		obs.ObserveInt64(owned, o.owned.Load(), opt)
		return nil
	}, owned)
	return err
}

// Handover counts one handover of a partition (HandoverAcquired,
// HandoverReleased or HandoverLost) and sets the owned gauge to owned.
func (m *Metrics) Handover(ctx context.Context, reason string, owned int) {
	if m == nil {
		return
	}
	m.own.owned.Store(int64(owned))
	if opt, ok := m.own.byReason[reason]; ok {
		m.own.handovers.Add(ctx, 1, opt)
	}
}

// Clear zeroes a partition's gauges: the replica no longer serves it, and
// its new owner reports them.
func (g *PartitionGauges) Clear() {
	if g == nil {
		return
	}
	for _, v := range []*atomic.Int64{&g.Healthy, &g.BackingOff, &g.CatchingUp, &g.Pending, &g.OldestPendingTS, &g.PendingEDUs, &g.HeldEDUBytes} {
		v.Store(0)
	}
}
