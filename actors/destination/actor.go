package destination

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptrace"
	"runtime/debug"
	"sync"
	"time"

	"github.com/anthdm/hollywood/actor"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsender/fedsender/internal/backoff"
	"github.com/fedsender/fedsender/internal/catchup"
	dstate "github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/edu"
	"github.com/fedsender/fedsender/internal/federation"
	"github.com/fedsender/fedsender/internal/queuebudget"
	"github.com/fedsender/fedsender/internal/telemetry"
	"github.com/fedsender/fedsender/internal/transaction"
	"github.com/fedsender/fedsender/streams"
)

// Sender sends one signed transaction; *federation.Client is one.
type Sender interface {
	SendTransaction(ctx context.Context, destination, txnID string, body, canonical []byte) (federation.TransactionResult, error)
}

// Scanner finds the PDUs a catching-up destination missed; *catchup.Scanner
// is one.
type Scanner interface {
	Scan(ctx context.Context, dest string, from uint64, limit int, newest bool) (catchup.Result, error)
}

// EDUScanner reads again the must-deliver EDUs an actor held when it
// failed; *catchup.Scanner is one.
type EDUScanner interface {
	ScanEDUs(ctx context.Context, dest string, from, through uint64) ([]streams.EDUItem, error)
}

// Fence says whether this replica may still send for the destination's
// partition: its lease (*lease.Lease is one).
type Fence interface{ Valid() bool }

// Config is shared by every destination actor of a process.
type Config struct {
	Origin     string
	Epoch      string // generation of the PDU stream, prefixes transaction ids
	Sender     Sender
	Scanner    Scanner
	Policy     backoff.Policy
	MaxPending int
	// Budget counts the entries of healthy destinations' queues; the reader
	// charged it for every PDU handed over.
	Budget *queuebudget.Budget
	// Slots admits transactions to the CPU: a send takes a slot to build,
	// sign and write its request, and frees it once the request is written
	// (at most SlotHold later). A destination waiting for a slot keeps
	// queueing, and builds its transaction only when admitted, so batches
	// grow when the machine is busy and nothing waits when it is not. nil:
	// no limit. The slot is not held over the network round trip: against
	// remote servers that would cap the whole sender at Slots/RTT
	// transactions a second, and let hung servers stall the others.
	Slots    chan struct{}
	SlotHold time.Duration
	Now      func() time.Time
	Log      *slog.Logger
	// Tracer records transaction and catch-up spans (zero: tracing off).
	Tracer telemetry.Tracer
	// Metrics counts deliveries and failures (nil: none).
	Metrics *telemetry.Metrics
	// Chains keeps what each destination was sent of each user's device
	// list, to fill prev_id (nil: device-list updates are sent as given).
	Chains edu.ChainStore
	// EDUScanner reads the EDU stream for an actor replacing one that
	// failed.
	EDUScanner EDUScanner
	// EDU configures each destination's outbox.
	EDU edu.Options
}

// Actor is one destination's actor.
type Actor struct {
	cfg   *Config
	name  string
	state dstate.State
	log   *slog.Logger

	queue    []streams.Item // pending PDUs in stream order; the in-flight ones first
	out      *edu.Outbox    // EDUs not yet sent (or acknowledged)
	chains   *edu.Chains    // nil: prev_id is not filled
	through  uint64         // highest sequence the supervisor looked at for us
	inflight *txn
	sending  bool

	catching     bool           // catch-up: the supervisor does not feed us
	scanning     bool           // a catch-up scan is running
	scanFrom     uint64         // where the next scan starts (0: from the offset)
	rooms        []streams.Item // catch-up: newest PDU per room, still to send
	awaitingLive bool           // reported a scan; waiting for GoLive or Rescan
	dropInflight bool           // catch-up began while a send was running
	held         bool           // waiting for the supervisor's rate-limited Wake after a start
	dueAt        int64          // ms: a due message is coming then (0: none)
	budgeted     int            // entries of queue counted in the budget
	admitting    bool           // waiting for a send slot
	fence        Fence          // nil: never fenced
	draining     bool           // Drain came: start nothing more
	drained      bool           // Drained was sent

	met        *telemetry.Destination // nil without metrics
	gauge      *telemetry.QueueGauge  // the supervisor's view of the queue; nil: none
	scanSpan   trace.Span             // the catch-up scan running, when traced
	catchTrace trace.SpanContext      // the last catch-up scan's, parent of its transactions

	ctx    context.Context
	engine *actor.Engine
	self   *actor.PID
	parent *actor.PID
}

type txn struct {
	id              string
	body, canonical []byte // built by the first attempt, kept for retries
	ts              int64
	pdus            []transaction.PDU
	seqs            []uint64
	eventIDs        []string
	edus            *edu.Batch    // nil: none
	delivered       edu.Delivered // device-list chains to commit after the 200
	fromRooms       bool
	// detached: catch-up dropped the queue while t carried EDUs; t is
	// retried as it is (a to-device message must not reach the server
	// twice under two transaction ids), but its PDUs are no longer the
	// head of the queue.
	detached bool
	attempt  int
	span     trace.Span // this attempt's, when traced
}

type sendDone struct {
	t   *txn
	res federation.TransactionResult
	err error
}

type admitted struct{ release func() }

// due wakes the actor when a paced EDU is due.
type due struct{}

type eduRestored struct {
	items   []streams.EDUItem
	through uint64
	err     error
}

type scanDone struct {
	res catchup.Result
	err error
}

// New returns the producer of a destination's actor, starting from the state
// its log holds; through is the highest sequence already accounted for, and
// eduOffset the destination's EDU offset. A
// held actor queues PDUs but sends nothing until it gets Wake (or
// ResetConnection): after a start, the supervisor spaces those out. gauge,
// if not nil, is where the actor publishes its queue for the partition's
// gauges.
// Every transaction is sent only while fence (if not nil) is valid.
func New(cfg *Config, state dstate.State, through, eduOffset uint64, held bool, gauge *telemetry.QueueGauge, fence Fence) actor.Producer {
	return func() actor.Receiver {
		gauge.Set(0, 0)
		var chains *edu.Chains
		if cfg.Chains != nil {
			chains = edu.NewChains(cfg.Chains, state.Destination)
		}
		a := &Actor{
			chains:   chains,
			met:      cfg.Metrics.Destination(state.Destination),
			gauge:    gauge,
			cfg:      cfg,
			name:     state.Destination,
			state:    state,
			through:  max(through, state.Offset),
			catching: state.CatchingUp,
			held:     held,
			fence:    fence,
			log:      cfg.Log.With("destination", state.Destination),
		}
		opts := cfg.EDU
		opts.Coalesced = func(t string) { cfg.Metrics.EDUCoalesced(a.ctx, t) }
		opts.Dropped = func(t, reason string) { cfg.Metrics.EDUDropped(a.ctx, t, reason) }
		a.out = edu.New(opts, eduOffset)
		return a
	}
}

// Receive handles one message.
func (a *Actor) Receive(c *actor.Context) {
	switch m := c.Message().(type) {
	case actor.Started:
		a.ctx, a.engine, a.self, a.parent = c.Context(), c.Engine(), c.PID(), c.Parent()
	case Enqueue:
		a.enqueue(m)
	case EnqueueEDU:
		a.enqueueEDU(m)
	case RestoreEDUs:
		a.out.Restoring()
		a.restoreEDUs(m.Through)
	case eduRestored:
		a.eduRestored(m)
	case due:
		a.dueAt = 0
		a.trySend()
	case Wake:
		a.held = false
		a.trySend()
	case ResetConnection:
		a.held = false
		a.met.Reset(a.ctx)
		a.record(dstate.Event{Type: dstate.Reset})
		a.trySend()
	case admitted:
		a.admitting = false
		a.launch(m.release)
	case sendDone:
		a.sent(m)
	case scanDone:
		a.scanned(m)
	case GoLive:
		a.awaitingLive, a.catching, a.scanFrom = false, false, 0
		a.record(dstate.Event{Type: dstate.CatchUpFinished})
		a.progress()
		a.trySend()
	case Rescan:
		a.awaitingLive = false
		a.trySend()
	case Drain:
		a.draining = true
	}
	if a.draining && !a.drained && !a.sending && !a.admitting {
		a.drained = true
		a.engine.Send(a.parent, Drained{Destination: a.name})
	}
	a.observeQueue()
}

// mayAct reports whether the actor may start a transaction: not while the
// partition drains, nor once its lease is no longer valid.
func (a *Actor) mayAct() bool {
	return !a.draining && (a.fence == nil || a.fence.Valid())
}

func (a *Actor) enqueue(m Enqueue) {
	a.through = max(a.through, m.Through)
	if a.catching {
		a.cfg.Budget.Release(int64(len(m.Items)))
		return // the catch-up scan finds these in the stream
	}
	kept := 0
	for _, it := range m.Items {
		if it.Seq > a.state.Offset {
			a.queue = append(a.queue, it)
			kept++
		}
	}
	// A failing destination holds no budget: it must not hold the reader back.
	if a.state.Failing() {
		a.cfg.Budget.Release(int64(len(m.Items)))
	} else {
		a.budgeted += kept
		a.cfg.Budget.Release(int64(len(m.Items) - kept))
	}
	if len(a.queue) > a.cfg.MaxPending {
		a.log.Warn("queue overflowed: catching up", "pending", len(a.queue), "max_pending", a.cfg.MaxPending)
		a.startCatchUp(dstate.ReasonOverflow)
	}
	// Also after an overflow: a healthy destination starts its catch-up scan
	// now, as no timer would wake it.
	a.trySend()
}

func (a *Actor) enqueueEDU(m EnqueueEDU) {
	failing := a.state.Failing()
	for _, it := range m.Items {
		a.out.Add(it, failing)
	}
	a.progress()
	a.trySend()
}

// wakeAt has the actor try again at ms (0: never), when a paced EDU is
// due.
func (a *Actor) wakeAt(ms int64) {
	if ms == 0 || (a.dueAt != 0 && a.dueAt <= ms) {
		return
	}
	a.dueAt = ms
	engine, self := a.engine, a.self
	time.AfterFunc(time.Until(time.UnixMilli(ms)), func() { engine.Send(self, due{}) })
}

// restoreEDUs reads the EDU stream again for what the failed actor held.
func (a *Actor) restoreEDUs(through uint64) {
	scanner, engine, self, ctx, dest, from := a.cfg.EDUScanner, a.engine, a.self, a.ctx, a.name, a.out.Done()+1
	go func() {
		items, err := scanner.ScanEDUs(ctx, dest, from, through)
		engine.Send(self, eduRestored{items: items, through: through, err: err})
	}()
}

func (a *Actor) eduRestored(m eduRestored) {
	if m.err != nil {
		if a.ctx.Err() != nil {
			return
		}
		a.log.Error("could not read the EDU stream again; retrying in 5s", "error", m.err)
		engine, self, through := a.engine, a.self, m.through
		time.AfterFunc(5*time.Second, func() { engine.Send(self, RestoreEDUs{Through: through}) })
		return
	}
	a.out.Restore(m.items)
	a.progress()
	a.trySend()
}

// trySend starts the next transaction if none is in flight and the backoff
// allows it.
func (a *Actor) trySend() {
	if a.sending || a.held || a.admitting || !a.mayAct() {
		return
	}
	if a.state.Failing() && a.cfg.Now().Before(a.state.RetryAt()) {
		return // the supervisor's timer wakes us
	}
	if a.inflight == nil && len(a.queue) == 0 && !(a.catching && len(a.rooms) > 0) {
		if a.catching && !a.scanning && !a.awaitingLive {
			a.startScan()
		}
		// EDUs go out during catch-up too; paced droppable ones only when
		// due (or with another transaction).
		ready, next := a.out.Ready(a.cfg.Now().UnixMilli())
		if !ready {
			a.wakeAt(next)
			return
		}
	}
	if a.cfg.Slots == nil {
		a.launch(func() {})
		return
	}
	a.admitting = true
	slots, engine, self, ctx, hold := a.cfg.Slots, a.engine, a.self, a.ctx, a.cfg.SlotHold
	go func() {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		var once sync.Once
		release := func() { once.Do(func() { <-slots }) }
		time.AfterFunc(hold, release)
		engine.Send(self, admitted{release: release})
	}()
}

// launch builds the transaction (late, so that it carries what queued while
// waiting for admission) unless a retry is pending, and sends it.
func (a *Actor) launch(release func()) {
	if !a.mayAct() {
		release()
		return
	}
	if a.inflight == nil {
		switch {
		case len(a.queue) > 0:
			a.inflight = a.build(a.queue, false)
		case a.catching && len(a.rooms) > 0:
			a.inflight = a.build(a.rooms, true)
		case !a.out.Empty():
			a.inflight = a.build(nil, false)
		}
		if a.inflight == nil { // nothing, or only typing that expired
			release()
			a.trySend()
			return
		}
	}
	a.inflight.attempt++
	a.sending = true
	t, sender, engine, self, dest := a.inflight, a.cfg.Sender, a.engine, a.self, a.name
	ctx := httptrace.WithClientTrace(a.startAttempt(t), &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { release() },
	})
	prepare, fence := t.body == nil, a.fence
	go func() {
		if prepare {
			a.prepare(ctx, t)
		}
		// Checked again right before the request goes out (after
		// preparing, which may take a round trip to NATS, and signing).
		if fence != nil {
			ctx = federation.WithGate(ctx, fence.Valid)
		}
		res, err := sender.SendTransaction(ctx, dest, t.id, t.body, t.canonical)
		release()
		if err == nil {
			a.commitChains(ctx, t)
		}
		engine.Send(self, sendDone{t: t, res: res, err: err})
	}()
}

// prepare fills the device-list updates' prev_id and builds t's body, on
// the send goroutine: reading a chain may take a round trip to NATS. It
// runs once per transaction, so a retry sends the same body; the chains
// are only used by the one transaction in flight.
func (a *Actor) prepare(ctx context.Context, t *txn) {
	var edus [][]byte
	if t.edus != nil {
		if a.chains != nil {
			d, err := a.chains.Fill(ctx, t.edus)
			if err != nil {
				a.log.ErrorContext(ctx, "could not read the device-list chains: device-list updates go without prev_id, and the server resyncs those users", "error", err)
			}
			t.delivered = d
		}
		edus = make([][]byte, len(t.edus.EDUs))
		for i, e := range t.edus.EDUs {
			edus[i] = e.JSON()
		}
	}
	t.body, t.canonical = transaction.BuildWithEDUs(a.cfg.Origin, t.ts, t.pdus, edus)
	t.pdus = nil
}

// commitChains records, after the destination's 200, the device-list
// updates it was sent, before the actor learns of the success (and so
// before the EDU offset moves past them).
func (a *Actor) commitChains(ctx context.Context, t *txn) {
	if a.chains == nil || len(t.delivered) == 0 {
		return
	}
	if err := a.chains.Commit(ctx, t.delivered); err != nil {
		a.log.WarnContext(ctx, "could not store the device-list chains: the next updates of these users may carry an older prev_id, and the server resyncs them", "error", err)
	}
	t.delivered = nil
}

// build takes up to 50 PDUs of items and up to 100 EDUs of the outbox;
// nil when there is nothing to send. The body is built by prepare.
func (a *Actor) build(items []streams.Item, fromRooms bool) *txn {
	n := min(len(items), transaction.MaxPDUs)
	t := &txn{pdus: make([]transaction.PDU, n), seqs: make([]uint64, n), eventIDs: make([]string, n), fromRooms: fromRooms}
	for i, it := range items[:n] {
		t.pdus[i] = transaction.PDU{Raw: it.PDU.Raw, Canonical: it.PDU.Canonical}
		t.seqs[i] = it.Seq
		t.eventIDs[i] = it.PDU.EventID
		t.ts = max(t.ts, it.TS)
	}
	var eduSeqs []uint64
	if t.edus = a.out.Take(a.cfg.Now()); t.edus != nil {
		eduSeqs = t.edus.Seqs
		t.ts = max(t.ts, t.edus.TS)
	}
	if n == 0 && t.edus == nil {
		return nil
	}
	// origin_server_ts is the stream time of the newest PDU or EDU, and
	// the id depends only on the sequences carried, so a batch rebuilt
	// after a restart has the same id and the same body.
	t.id = transaction.IDWithEDUs(a.cfg.Epoch, t.seqs, eduSeqs)
	return t
}

func (t *txn) eduCount() int {
	if t.edus == nil {
		return 0
	}
	return len(t.edus.EDUs)
}

func (a *Actor) sent(m sendDone) {
	a.sending = false
	t := m.t
	if m.err != nil && (errors.Is(m.err, federation.ErrGateClosed) || a.ctx.Err() != nil) {
		// Not a failure of the destination: the partition's lease ended
		// (or the replica stops). Its next owner sends the transaction.
		a.log.Info("transaction not sent: the partition is no longer this replica's", "txn_id", t.id, "error", m.err)
		a.endAttempt(t, m)
		return
	}
	drop := a.dropInflight
	a.dropInflight = false
	a.observeSent(t, m, drop || t.detached)
	if m.err == nil {
		a.succeeded(t, m.res, drop || t.detached)
	} else {
		a.failed(t, m.err, drop)
	}
	a.endAttempt(t, m)
	a.trySend()
}

func (a *Actor) succeeded(t *txn, res federation.TransactionResult, dropped bool) {
	if len(t.seqs) > 0 {
		a.state.Offset = max(a.state.Offset, t.seqs[len(t.seqs)-1])
	}
	acked := false
	if t.edus != nil {
		acked = a.out.Acked(t.edus)
		a.cfg.Metrics.EDUsSent(a.ctx, t.edus.Counts)
	}
	a.inflight = nil
	if !dropped {
		if t.fromRooms {
			a.rooms = a.rooms[len(t.seqs):]
		} else {
			a.queue = a.queue[len(t.seqs):]
			a.unbudget(len(t.seqs))
		}
		if len(a.queue) == 0 {
			a.queue = nil
		}
	}
	for id, reason := range res.PDUErrors {
		a.log.WarnContext(a.spanContext(t), "destination refused a PDU", "event_id", id, "error", reason, "txn_id", t.id)
	}
	if a.state.Failing() {
		a.log.InfoContext(a.spanContext(t), "destination is back", "txn_id", t.id)
		a.record(dstate.Event{Type: dstate.Recovered})
	}
	a.reportProgress(acked)
}

func (a *Actor) failed(t *txn, err error, dropped bool) {
	if dropped {
		a.inflight = nil
		if t.edus != nil {
			a.out.Return(t.edus)
		}
	}
	a.out.DropTyping() // typing is not kept for a destination in backoff
	var se *federation.SendError
	status := 0
	interval := a.cfg.Policy.Next(time.Duration(a.state.RetryInterval) * time.Millisecond)
	if errors.As(err, &se) {
		status = se.Status
		if se.Class == federation.ClassRateLimited && se.RetryAfter > 0 {
			interval = min(se.RetryAfter, a.cfg.Policy.Max)
		}
	}
	startCatchUp := !a.catching && a.cfg.Policy.CatchUp(interval)
	attrs := []any{"txn_id", t.id, "attempt", t.attempt, "retry_in", interval, "error", err}
	if se != nil && se.Class == federation.ClassUnauthorized {
		a.log.ErrorContext(a.spanContext(t), "destination refused our signature or denied us; backing off", attrs...)
	} else {
		a.log.WarnContext(a.spanContext(t), "transaction failed; backing off", attrs...)
	}
	a.record(dstate.Event{Type: dstate.Failed, Interval: interval.Milliseconds(), CatchUp: startCatchUp,
		Status: status, Reason: err.Error()})
	a.unbudget(a.budgeted)
	if startCatchUp {
		a.dropQueue()
	}
}

// startCatchUp drops the in-memory queue; the stream is read from the offset
// when the destination may send again.
func (a *Actor) startCatchUp(reason string) {
	a.dropQueue()
	a.record(dstate.Event{Type: dstate.CatchUpStarted, Reason: reason})
}

func (a *Actor) dropQueue() {
	a.unbudget(a.budgeted)
	a.catching = true
	a.queue, a.rooms, a.scanFrom, a.awaitingLive = nil, nil, 0, false
	switch {
	case a.inflight != nil && a.inflight.edus != nil:
		a.inflight.detached = true
	case a.sending:
		a.dropInflight = true
	default:
		a.inflight = nil
	}
}

func (a *Actor) startScan() {
	from := max(a.scanFrom, a.state.Offset+1)
	a.scanning = true
	scanner, engine, self, ctx, dest, limit, newest := a.cfg.Scanner, a.engine, a.self, a.scanContext(from), a.name, a.cfg.MaxPending, a.state.CatchUpNewest
	go func() {
		res, err := scanner.Scan(ctx, dest, from, limit, newest)
		engine.Send(self, scanDone{res: res, err: err})
	}()
}

func (a *Actor) scanned(m scanDone) {
	a.scanning = false
	sctx := a.endScan(m)
	if !a.catching {
		return
	}
	if m.err != nil {
		a.log.ErrorContext(sctx, "catch-up scan failed", "error", m.err)
		a.record(dstate.Event{Type: dstate.Failed, Interval: a.cfg.Policy.Min.Milliseconds(), Reason: m.err.Error()})
		return
	}
	a.scanFrom = m.res.Through + 1
	a.through = max(a.through, m.res.Through)
	switch {
	case m.res.Exact:
		a.queue = append(a.queue, m.res.Items...)
		a.awaitingLive = true
		a.engine.Send(a.parent, CatchUpScanned{Destination: a.name, Through: m.res.Through})
	case m.res.Newest:
		a.log.InfoContext(sctx, "catching up: newest PDU of each room", "rooms", len(m.res.Items), "through", m.res.Through)
		a.rooms = m.res.Items
	default:
		// A page of every PDU, in order; the next page is read once it is sent.
		a.queue = append(a.queue, m.res.Items...)
	}
	a.trySend()
}

// unbudget releases up to n of the queue's budgeted entries.
func (a *Actor) unbudget(n int) {
	n = min(n, a.budgeted)
	a.budgeted -= n
	a.cfg.Budget.Release(int64(n))
}

// record applies an event and reports it for the destination's log.
func (a *Actor) record(e dstate.Event) {
	e.At = a.cfg.Now().UnixMilli()
	e.Offset = a.state.Offset
	ev := a.state.Record(e)
	a.engine.Send(a.parent, Changed{Destination: a.name, Event: ev})
}

// progress reports the actor's positions; while catching up, only the
// EDU offset (the PDU positions are the catch-up's, reported by GoLive).
func (a *Actor) progress() { a.reportProgress(false) }

// reportProgress is progress; acked says the destination just
// acknowledged must-deliver EDUs, whose offset is then persisted at once.
func (a *Actor) reportProgress(acked bool) {
	p := Progress{Destination: a.name, EDUDone: a.out.Done(), EDUPending: a.out.Pending(), EDUHeldBytes: a.out.HeldBytes(), EDUAcked: acked}
	if !a.catching {
		p.DoneThrough, p.Offset = a.through, a.state.Offset
		if len(a.queue) > 0 {
			p.DoneThrough = a.queue[0].Seq - 1
		}
	}
	a.engine.Send(a.parent, p)
}

// Recover is middleware that turns a panic in an actor into a Crashed
// message to its parent, instead of hollywood's restart (which loses state and,
// after too many restarts, stops the process).
func Recover(next actor.ReceiveFunc) actor.ReceiveFunc {
	return func(c *actor.Context) {
		defer func() {
			if v := recover(); v != nil {
				name := ""
				if a, ok := c.Receiver().(*Actor); ok {
					name = a.name
					a.unbudget(a.budgeted) // the queue dies with the actor
				}
				slog.Error("destination actor panicked", "destination", name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if p := c.Parent(); p != nil {
					c.Engine().Send(p, Crashed{Destination: name, Panic: v})
				}
			}
		}()
		next(c)
	}
}
