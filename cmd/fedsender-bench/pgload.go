package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/projection/pgprojection"
	"github.com/fedsender/fedsender/internal/service"
	"github.com/fedsender/fedsender/streams"
)

// roomsBacklog is how fast the projector fills destination_rooms from a
// backlog of PDUs, each to every one of 200 destinations.
type roomsBacklog struct {
	PDUs, Rooms, Rows int
	Seconds           float64
}

// PDUsPerSec is the backlog's PDUs over the time to apply them.
func (b roomsBacklog) PDUsPerSec() float64 { return float64(b.PDUs) / b.Seconds }

// runRoomsBacklog publishes pdus PDUs over rooms rooms, each to the same
// 200 destinations, on a NATS server of its own with nothing sending, then
// times a projector from start until it is synced.
func runRoomsBacklog(ctx context.Context, e *env, url string, pdus, rooms int) (roomsBacklog, error) {
	res := roomsBacklog{PDUs: pdus, Rooms: rooms}
	name := fmt.Sprintf("rooms-%d-%d", pdus, rooms)
	s, err := startNATS(filepath.Join(e.root, name))
	if err != nil {
		return res, err
	}
	defer s.close()
	if err := streams.Ensure(ctx, s.js, streams.Options{}); err != nil {
		return res, err
	}
	dests := make([]string, 200)
	for i := range dests {
		dests[i] = fmt.Sprintf("d%03d.example.org", i)
	}
	factory := newPDUFactory(dests, e.p.pduSize)
	pub := streams.NewPublisher(s.js)
	for i := range pdus {
		if _, err := pub.PublishAsync(factory.envelope(name, i, roomName(i%rooms))); err != nil {
			return res, err
		}
	}
	select {
	case <-s.js.PublishAsyncComplete():
	case <-ctx.Done():
		return res, ctx.Err()
	}
	pool, _, drop, err := benchSchema(ctx, url, "bench_rooms")
	if err != nil {
		return res, err
	}
	defer drop()
	took, err := project(ctx, s.js, pool)
	if err != nil {
		return res, err
	}
	res.Seconds = took.Seconds()
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM destination_rooms").Scan(&res.Rows); err != nil {
		return res, err
	}
	if want := len(dests) * min(rooms, pdus); res.Rows != want {
		return res, fmt.Errorf("destination_rooms holds %d rows, want %d", res.Rows, want)
	}
	return res, nil
}

// pgLoadResult is the pipeline's sustained rate with the PostgreSQL read
// model on, and how its projector kept up with that load.
type pgLoadResult struct {
	// Each round's sustained rate without and with PostgreSQL, alternating,
	// and their medians.
	Off, On         []float64
	OffRate, OnRate float64
	// PDUs published in the last round with PostgreSQL; each names every
	// destination.
	PDUs uint64 `json:"pdus"`
	// The most PDUs and destination events the projector's consumers had
	// not yet applied, sampled every 250 ms while publishing.
	MaxPDUsBehind   uint64 `json:"max_pdus_behind"`
	MaxEventsBehind uint64 `json:"max_events_behind"`
	// From the end of publishing until both consumers had nothing left
	// (the slowest round).
	CatchUp time.Duration `json:"catch_up_ns"`
	// The projector alone on a backlog: few rooms, then a room per PDU.
	Backlogs []roomsBacklog
}

// sustainWithPostgres is sustain with postgres.url set on a new schema; it
// samples the projector's lag into res and times its catch-up.
func sustainWithPostgres(ctx context.Context, e *env, url, name string, res *pgLoadResult) (float64, error) {
	_, schema, drop, err := benchSchema(ctx, url, "bench_load") // fedsender opens its own pool
	if err != nil {
		return 0, err
	}
	defer drop()
	during := func(ctx context.Context, in *instance) error {
		lag := func(ctx context.Context) (pdus, events uint64, err error) {
			if pdus, err = consumerLag(ctx, in.js, streams.PDUStream, pgprojection.RoomsConsumerName); err != nil {
				return 0, 0, err
			}
			events, err = consumerLag(ctx, in.js, streams.EventStream, pgprojection.ConsumerName)
			return pdus, events, err
		}
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
	sample:
		for {
			select {
			case <-ctx.Done():
				break sample
			case <-tick.C:
				pdus, events, err := lag(ctx)
				if err != nil {
					continue // not created yet, or NATS busy
				}
				res.MaxPDUsBehind, res.MaxEventsBehind = max(res.MaxPDUsBehind, pdus), max(res.MaxEventsBehind, events)
			}
		}
		// Publishing has stopped: time the projector's catch-up.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		stopped := time.Now()
		for {
			pdus, events, err := lag(wctx)
			if err == nil && pdus == 0 && events == 0 {
				res.CatchUp = max(res.CatchUp, time.Since(stopped))
				break
			}
			if wctx.Err() != nil {
				return errors.New("the PostgreSQL projector did not catch up within 5 minutes of the end of publishing")
			}
			time.Sleep(20 * time.Millisecond)
		}
		s, err := in.js.Stream(wctx, streams.PDUStream)
		if err != nil {
			return err
		}
		res.PDUs = s.CachedInfo().State.LastSeq
		return nil
	}
	return e.sustain(ctx, name, service.Deps{}, func(c *config.Config) {
		c.Postgres.URL, c.Postgres.Schema = url, schema
	}, during)
}

// runPGLoad runs the pipeline's sustained-rate measurement without and
// with postgres.url set, alternating, so that the projector fills
// destinations and destination_rooms from the same load, and samples its
// consumers' lag; then the rooms projector alone on two backlogs.
func runPGLoad(ctx context.Context, e *env, url string) (*pgLoadResult, error) {
	res := &pgLoadResult{}
	rounds := 2
	if e.p.short {
		rounds = 1
	}
	for i := range rounds {
		off, err := e.sustain(ctx, fmt.Sprintf("pgload-off-%d", i), service.Deps{}, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("round %d without PostgreSQL: %w", i+1, err)
		}
		on, err := sustainWithPostgres(ctx, e, url, fmt.Sprintf("pgload-on-%d", i), res)
		if err != nil {
			return nil, fmt.Errorf("round %d with PostgreSQL: %w", i+1, err)
		}
		e.progress("postgres: round %d, %.0f deliveries/s without PostgreSQL, %.0f with", i+1, off, on)
		res.Off, res.On = append(res.Off, off), append(res.On, on)
	}
	res.OffRate, res.OnRate = median(res.Off), median(res.On)
	pdus := []int{20_000, 5_000}
	if e.p.short {
		pdus = []int{5_000, 1_000}
	}
	for i, rooms := range []int{e.p.rooms, pdus[1]} {
		b, err := runRoomsBacklog(ctx, e, url, pdus[i], rooms)
		if err != nil {
			return nil, err
		}
		e.progress("postgres: %d PDUs over %d rooms to 200 destinations applied in %.1fs", b.PDUs, b.Rooms, b.Seconds)
		res.Backlogs = append(res.Backlogs, b)
	}
	return res, nil
}

// consumerLag is what a durable consumer has not had acknowledged yet:
// pending plus delivered but unacknowledged.
func consumerLag(ctx context.Context, js jetstream.JetStream, stream, name string) (uint64, error) {
	c, err := js.Consumer(ctx, stream, name)
	if err != nil {
		return 0, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// pgLoadRows prints the postgres part's load figures.
func (r *results) pgLoadRows(row func(name, value, lo, hi, setup string)) {
	if r.postgres == nil || r.postgres.Load == nil {
		return
	}
	l := r.postgres.Load
	row("deliveries/s without / with postgres.url", f0(l.OffRate)+" / "+f0(l.OnRate), "", "",
		fmt.Sprintf("the pipeline part's sustained load, medians of %d alternating rounds (%s / %s)", len(l.On), roundRates(l.Off), roundRates(l.On)))
	row("  PostgreSQL read model's cost", fmt.Sprintf("%.1f%%", 100*(1-l.OnRate/l.OffRate)), "", "", "1 − with/without")
	row("  projector max PDUs behind", fmt.Sprint(l.MaxPDUsBehind), "", "", fmt.Sprintf("fedsender-pgrooms pending+unacked, sampled every 250 ms; %d PDUs × %d destinations over %d rooms", l.PDUs, r.params.dests, r.params.rooms))
	row("  projector max events behind", fmt.Sprint(l.MaxEventsBehind), "", "", "fedsender-pgprojection pending+unacked")
	row("  projector catch-up s", f2(l.CatchUp.Seconds()), "", "", "end of publishing → both consumers empty")
	for _, b := range l.Backlogs {
		row("rooms projector PDUs/s", f0(b.PDUsPerSec()), "", "", fmt.Sprintf("backlog of %d PDUs over %d rooms, each to 200 destinations: %d rows in %.1fs (%.0f rows/s)",
			b.PDUs, b.Rooms, b.Rows, b.Seconds, float64(b.Rows)/b.Seconds))
	}
}

// roundRates lists per-round rates.
func roundRates(vs []float64) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = f0(v)
	}
	return strings.Join(out, ", ")
}
