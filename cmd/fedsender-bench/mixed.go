package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

// The mixed load's sizes.
const (
	typingUsers   = 50 // users typing in each room
	mixedSenders  = 50 // users the PDUs (and their receipts and presence) come from
	toDeviceBurst = 10_000
)

// mixedResult is the result of the mixed part.
type mixedResult struct {
	Sustained  float64 // deliveries/s the PDU rate is a fraction of
	OwnRate    bool    // measured by this part (the pipeline part did not run)
	PDURate    float64
	PDUs       int
	Deliveries int
	Missing    int
	P50, P99   float64
	Max        float64
	// the PDUs' p99 delay to their first destination, and from then to
	// their last (as in the latency phase)
	FirstP99, SpreadP99 float64

	Bursts, ToDevice       int // to-device messages published, in bursts
	ToDeviceMissing        int
	ToDeviceDuplicates     int
	EDUP50, EDUP99, EDUMax float64

	EDUs       int64   // EDUs the receivers accepted during the load, every type
	Seconds    float64 // from the first publish until the last to-device arrived
	Published  int64   // droppable (EDU, destination) pairs published
	Droppable  int64   // droppable EDUs the receivers accepted
	Coalescing float64 // Published / Droppable

	Down          int // destinations stopped in the down phase
	DownFor       time.Duration
	HeldBytes     int64 // fedsender_federation_edus_held_bytes once the healthy ones sent theirs
	HeldPeak      int64 // the most it showed under load, every destination's EDUs
	HeldAfterBack int64 // the same, once the destinations were back
	Checks        checks
}

// eduRecorder counts what the receivers accept and times to-device
// messages from publish to acceptance.
type eduRecorder struct {
	all, droppable atomic.Int64
	pubAt          []atomic.Int64 // unix ns, by to-device message number
	seen           []atomic.Int32
	mu             sync.Mutex
	samples        []int64
}

var messageIDPrefix = []byte(`"message_id":"td`)

func (r *eduRecorder) onEDU(e receiver.EDU) {
	r.all.Add(1)
	switch e.Type {
	case "m.typing", "m.receipt", "m.presence":
		r.droppable.Add(1)
		return
	case "m.direct_to_device":
	default:
		return
	}
	i := bytes.Index(e.Content, messageIDPrefix)
	if i < 0 {
		return
	}
	rest := e.Content[i+len(messageIDPrefix):]
	n, err := strconv.Atoi(string(rest[:max(bytes.IndexByte(rest, '"'), 0)]))
	if err != nil || n < 0 || n >= len(r.pubAt) {
		return
	}
	if r.seen[n].Add(1) > 1 {
		return // a duplicate: counted, not timed
	}
	if t0 := r.pubAt[n].Load(); t0 != 0 {
		r.mu.Lock()
		r.samples = append(r.samples, e.Received.UnixNano()-t0)
		r.mu.Unlock()
	}
}

func (r *eduRecorder) toDeviceSeen() (seen, dups int) {
	for i := range r.seen {
		switch c := r.seen[i].Load(); {
		case c > 0:
			seen++
			dups += int(c - 1)
		}
	}
	return seen, dups
}

// mixedLoad publishes the EDUs of the mixed part beside its PDUs.
type mixedLoad struct {
	in        *instance
	p         params
	factory   *pduFactory
	acks      *ackChecker
	published atomic.Int64 // droppable (EDU, destination) pairs
}

func (m *mixedLoad) publish(eduType string, content string, dests []byte, droppable bool) {
	env := make([]byte, 0, 64+len(content)+len(dests))
	env = append(env, `{"edu_type":"`...)
	env = append(env, eduType...)
	env = append(env, `","content":`...)
	env = append(env, content...)
	env = append(env, `,"destinations":`...)
	env = append(env, dests...)
	env = append(env, '}')
	fut, err := m.in.pub.PublishAsync(env)
	// A publisher waits while JetStream has not acknowledged what it
	// sent: the wait counts in a to-device message's latency.
	for errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
		fut, err = m.in.pub.PublishAsync(env)
	}
	if err != nil {
		m.acks.setErr(fmt.Errorf("publish %s: %w", eduType, err))
		return
	}
	m.acks.futures <- fut
	if droppable {
		m.published.Add(int64(m.p.dests))
	}
}

// receiptAndPresence publishes PDU n's sender's read receipt of it and
// presence, to every destination.
func (m *mixedLoad) receiptAndPresence(n int, tag string) {
	room, user, event := roomName(n%m.p.rooms), m.factory.sender(n), "$"+tag+"_"+strconv.Itoa(n)
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	m.publish("m.receipt", `{"`+room+`":{"m.read":{"`+user+`":{"data":{"ts":`+ts+`},"event_ids":["`+event+`"]}}}}`, m.factory.dests, true)
	m.publish("m.presence", `{"push":[{"user_id":"`+user+`","presence":"online","last_active_ago":0,"currently_active":true}]}`, m.factory.dests, true)
}

// typingStorm publishes typingPerSec typing EDUs a second until ctx ends.
func (m *mixedLoad) typingStorm(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for range m.p.typingRate / 100 {
			room := roomName(n % m.p.rooms)
			user := "@typer" + strconv.Itoa(n/m.p.rooms%typingUsers) + ":origin.test"
			m.publish("m.typing", `{"room_id":"`+room+`","user_id":"`+user+`","typing":`+strconv.FormatBool(n%3 != 0)+`}`, m.factory.dests, true)
			n++
		}
	}
}

// toDevice publishes messages from..to-1, message i to destination i %
// dests, each with its own message_id.
func (m *mixedLoad) toDevice(rec *eduRecorder, names []string, from, to int) {
	for i := from; i < to; i++ {
		dest := names[i%len(names)]
		content := `{"sender":"` + m.factory.sender(i) + `","type":"m.room.encrypted","message_id":"td` + strconv.Itoa(i) +
			`","messages":{"@user:` + dest + `":{"DEVICE":{"algorithm":"m.olm.v1.curve25519-aes-sha2","ciphertext":{}}}}}`
		rec.pubAt[i].Store(time.Now().UnixNano())
		m.publish("m.direct_to_device", content, []byte(`["`+dest+`"]`), false)
	}
}

// runMixed measures the PDU latency under EDU load on the pipeline's 200
// destinations: the latency phase's PDUs (a fraction of sustained, the
// pipeline part's rate, measured here when that part did not run), each
// followed by its sender's read receipt and presence, a typing storm, and
// bursts of to-device messages; then, with a tenth of the destinations
// down, the memory fedsender holds for their receipts and presence.
func runMixed(ctx context.Context, e *env, sustained float64) (*mixedResult, error) {
	p := e.p
	cfg, err := e.config("mixed", nil)
	if err != nil {
		return nil, err
	}
	var pdus atomic.Pointer[latencyRecorder]
	var edus atomic.Pointer[eduRecorder]
	f, err := e.newFleet(p.dests, func(eventID string, at time.Time) {
		if l := pdus.Load(); l != nil {
			l.onPDU(eventID, at)
		}
	}, func(ed receiver.EDU) {
		if r := edus.Load(); r != nil {
			r.onEDU(ed)
		}
	})
	if err != nil {
		return nil, err
	}
	defer f.close()
	in, err := e.startService(cfg)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	res := &mixedResult{Sustained: sustained}
	if sustained <= 0 {
		e.progress("mixed: the pipeline part did not run: measuring the sustained rate first")
		r, published, err := e.measureSustained(ctx, f, in.pub, "tp")
		if err != nil {
			return nil, err
		}
		if !waitFor(ctx, 60*time.Second, func() bool { return f.minCount() >= published }) {
			return nil, fmt.Errorf("the published PDUs did not all arrive within 60s of the end of publishing: %s", pipelineState(f, published))
		}
		res.Sustained, res.OwnRate = r.Mean, true
	}

	factory := newPDUFactory(f.names, p.pduSize)
	factory.senders = mixedSenders
	res.PDURate = res.Sustained / float64(p.dests) * p.latencyPct
	res.PDUs = max(1, int(res.PDURate*p.latencyFor.Seconds()))
	res.Bursts, res.ToDevice = 2, 2*toDeviceBurst
	if p.short {
		res.ToDevice = 2 * toDeviceBurst / 10
	}
	l := newLatencyRecorder("mix", res.PDUs, p.dests)
	rec := &eduRecorder{pubAt: make([]atomic.Int64, res.ToDevice), seen: make([]atomic.Int32, res.ToDevice)}
	pdus.Store(l)
	edus.Store(rec)
	before := f.checks()
	load := &mixedLoad{in: in, p: p, factory: factory, acks: newAckChecker()}
	e.progress("mixed: %d PDUs at %.1f PDUs/s (%.0f%% of %.0f deliveries/s) with a receipt and presence each, %d typing/s, %d to-device in %d bursts, to %d destinations",
		res.PDUs, res.PDURate, 100*p.latencyPct, res.Sustained, p.typingRate, res.ToDevice, res.Bursts, p.dests)

	stopProfile, err := startProfile(mixedProfile)
	if err != nil {
		return nil, fmt.Errorf("mixed profile: %w", err)
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { load.typingStorm(loadCtx) })
	wg.Go(func() {
		// The bursts start a second in and half-way through.
		half := res.ToDevice / 2
		for i, at := range []time.Duration{time.Second, p.latencyFor / 2} {
			select {
			case <-loadCtx.Done():
				return
			case <-time.After(time.Until(start.Add(at))):
			}
			load.toDevice(rec, f.names, i*half, (i+1)*half)
		}
	})
	err = publishPaced(ctx, in.pub, res.PDUs, res.PDURate, func(i int) []byte {
		env := factory.envelope("mix", i, roomName(i%p.rooms))
		l.pubAt[i].Store(time.Now().UnixNano())
		load.receiptAndPresence(i, "mix")
		return env
	})
	stopLoad()
	wg.Wait()
	if err2 := load.acks.finish(); err == nil {
		err = err2
	}
	if err != nil {
		return nil, fmt.Errorf("mixed: %w", err)
	}
	want := res.PDUs * p.dests
	waitFor(ctx, 30*time.Second, func() bool {
		seen, _ := rec.toDeviceSeen()
		return l.count() >= want && seen >= res.ToDevice
	})
	res.Seconds = time.Since(start).Seconds()
	stopProfile()
	res.EDUs = rec.all.Load()
	samples := l.sorted()
	res.Deliveries, res.Missing = len(samples), want-len(samples)
	res.P50, res.P99, res.Max = percentile(samples, 0.50), percentile(samples, 0.99), percentile(samples, 1)
	first, spread := l.fanOut()
	res.FirstP99, res.SpreadP99 = percentile(first, 0.99), percentile(spread, 0.99)
	seen, dups := rec.toDeviceSeen()
	res.ToDeviceMissing, res.ToDeviceDuplicates = res.ToDevice-seen, dups
	timed := sortedCopy(&rec.mu, &rec.samples)
	res.EDUP50, res.EDUP99, res.EDUMax = percentile(timed, 0.50), percentile(timed, 0.99), percentile(timed, 1)
	// The droppable EDUs still held go with the next transactions: wait
	// until the receivers stop getting them.
	settled(ctx, rec.droppable.Load, time.Second, 30*time.Second)
	res.Published, res.Droppable = load.published.Load(), rec.droppable.Load()
	if res.Droppable > 0 {
		res.Coalescing = float64(res.Published) / float64(res.Droppable)
	}
	res.Checks = f.checks().since(before)
	e.progress("mixed: PDU p99 %.1f ms, to-device p99 %.1f ms; %.2f droppable EDUs published per EDU sent", res.P99, res.EDUP99, res.Coalescing)

	if err := downPhase(ctx, e, in, f, load, res); err != nil {
		return res, err
	}
	switch {
	case res.Missing > 0:
		return res, fmt.Errorf("mixed: %d of %d PDU deliveries did not arrive within 30s", res.Missing, want)
	case res.ToDeviceMissing > 0:
		return res, fmt.Errorf("mixed: %d of %d to-device messages did not arrive within 30s", res.ToDeviceMissing, res.ToDevice)
	case res.ToDeviceDuplicates > 0:
		return res, fmt.Errorf("mixed: %d to-device messages arrived twice", res.ToDeviceDuplicates)
	}
	return res, nil
}

// downPhase stops a tenth of the receivers, keeps the receipts, presence
// and typing coming for a while, and reads the memory fedsender holds for
// them; then starts them again, has fedsender told they are up, and waits
// for the memory to be let go.
func downPhase(ctx context.Context, e *env, in *instance, f *fleet, load *mixedLoad, res *mixedResult) error {
	p := e.p
	res.Down, res.DownFor = max(1, p.dests/10), 5*time.Second
	if p.short {
		res.DownFor = 3 * time.Second
	}
	down := f.rs[:res.Down]
	for _, r := range down {
		r.Stop()
	}
	e.progress("mixed: %d destinations down for %v under receipts, presence and typing", res.Down, res.DownFor)
	metrics := "http://" + in.svc.MetricsAddr + "/metrics"
	load.acks = newAckChecker()
	loadCtx, stopLoad := context.WithTimeout(ctx, res.DownFor)
	var wg sync.WaitGroup
	wg.Go(func() { load.typingStorm(loadCtx) })
	wg.Go(func() {
		tick := time.NewTicker(time.Duration(float64(time.Second) / res.PDURate))
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
				load.receiptAndPresence(n, "down")
			}
		}
	})
	var scrapeErr error
	for loadCtx.Err() == nil {
		held, err := heldEDUBytes(loadCtx, metrics)
		if err != nil && loadCtx.Err() == nil {
			scrapeErr = err
		}
		res.HeldPeak = max(res.HeldPeak, held)
		select {
		case <-loadCtx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	stopLoad()
	wg.Wait()
	if err := load.acks.finish(); err != nil {
		return fmt.Errorf("mixed: %w", err)
	}
	// The healthy destinations send what they hold; what stays is the down
	// destinations'. The gauges are written at each checkpoint: the figure
	// counts once it has not moved for two of them.
	var held int64
	settled(ctx, func() int64 {
		v, err := heldEDUBytes(ctx, metrics)
		if err != nil {
			scrapeErr = err
		}
		held = v
		return v
	}, 2*cfgCheckpoint, 30*time.Second)
	res.HeldBytes = held
	for _, r := range down {
		if err := r.Restart(); err != nil {
			return err
		}
		if err := in.nc.Publish(streams.ServerUpSubject, []byte(`{"destination":"`+r.ServerName()+`"}`)); err != nil {
			return fmt.Errorf("server_up: %w", err)
		}
	}
	var err error
	waitFor(ctx, 30*time.Second, func() bool {
		res.HeldAfterBack, err = heldEDUBytes(ctx, metrics)
		return err == nil && res.HeldAfterBack == 0
	})
	if scrapeErr != nil {
		return fmt.Errorf("mixed: read fedsender's metrics: %w", scrapeErr)
	}
	if res.HeldBytes == 0 {
		return errors.New("mixed: fedsender_federation_edus_held_bytes stayed 0 while destinations were down")
	}
	return nil
}

// cfgCheckpoint is the bench's queue.checkpoint_interval (the default), at
// which the partitions publish their gauges.
const cfgCheckpoint = time.Second

// heldEDUBytes reads fedsender_federation_edus_held_bytes, summed over the
// partitions, from fedsender's /metrics.
func heldEDUBytes(ctx context.Context, url string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "fedsender_federation_edus_held_bytes{") && !strings.HasPrefix(line, "fedsender_federation_edus_held_bytes ") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", url, line, err)
		}
		sum, found = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%s has no fedsender_federation_edus_held_bytes", url)
	}
	return int64(sum), nil
}

// settled waits until count has not moved for quiet, at most timeout.
func settled(ctx context.Context, count func() int64, quiet, timeout time.Duration) {
	last, lastAt := count(), time.Now()
	waitFor(ctx, timeout, func() bool {
		if c := count(); c != last {
			last, lastAt = c, time.Now()
		}
		return time.Since(lastAt) >= quiet
	})
}

// sustained is the pipeline part's sustained rate, 0 when it did not run.
func (r *results) sustained() float64 {
	if r.pipeline == nil {
		return 0
	}
	return r.pipeline.Rates.Mean
}

// mixedRows adds the part's rows to the results table.
func (r *results) mixedRows(row func(name, value, lo, hi, setup string)) {
	m := r.mixed
	if m == nil {
		if slices.Contains(r.parts, "mixed") {
			row("mixed latency p99 ms", "-", "", "", skipped(r, "mixed"))
		}
		return
	}
	source := "the pipeline part's rate"
	if m.OwnRate {
		source = "measured first by this part"
	}
	row("mixed latency p99 ms", f1(m.P99), "", "", fmt.Sprintf("PDUs publish → receiver at %.1f PDUs/s (%.0f%% of %.0f deliveries/s, %s), each with a receipt and presence; %d typing/s; p50 %.1f, max %.1f; %d missing",
		m.PDURate, 100*r.params.latencyPct, m.Sustained, source, r.params.typingRate, m.P50, m.Max, m.Missing))
	row("  to first / first to last ms", f1(m.FirstP99)+" / "+f1(m.SpreadP99), "", "", "p99 over PDUs: publish → the first receiver to accept it; from then to the last")
	row("  to-device p99 ms", f1(m.EDUP99), "", "", fmt.Sprintf("%d messages in %d bursts, one destination each: p50 %.1f, max %.1f; %d missing, %d twice", m.ToDevice, m.Bursts, m.EDUP50, m.EDUMax, m.ToDeviceMissing, m.ToDeviceDuplicates))
	row("  EDUs/s", f0(float64(m.EDUs)/m.Seconds), "", "", fmt.Sprintf("EDUs the receivers accepted, every type, over %.1fs", m.Seconds))
	row("  coalescing ratio", f2(m.Coalescing), "", "", fmt.Sprintf("typing, receipts, presence: %d (EDU, destination) published / %d sent", m.Published, m.Droppable))
	row("  coalesced bytes held", f0(float64(m.HeldBytes)), "", "", fmt.Sprintf("fedsender_federation_edus_held_bytes for %d destinations down %v under the same EDUs (%.0f each), once the others sent theirs; %d at most under load; %d once back",
		m.Down, m.DownFor, float64(m.HeldBytes)/float64(m.Down), m.HeldPeak, m.HeldAfterBack))
	row("  receiver checks", checkText(m.Checks), "", "", "violations / PDUs delivered again / requests")
}
