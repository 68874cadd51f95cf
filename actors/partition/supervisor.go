package partition

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/anthdm/hollywood/actor"
	"golang.org/x/time/rate"

	"github.com/fedsender/fedsender/actors/destination"
	dstate "github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/telemetry"
	"github.com/fedsender/fedsender/streams"
)

// Config is shared by every supervisor of a process.
type Config struct {
	Destination *destination.Config
	Store       Store
	// WakeLimiter spaces out the destinations woken after a start.
	WakeLimiter *rate.Limiter
	// IdleTimeout: an actor with nothing to do is stopped after it.
	IdleTimeout time.Duration
	// Checkpoint is how often offsets and the watermark are persisted.
	Checkpoint time.Duration
	// ServerUpInterval: a destination is woken by the homeserver's
	// server_up signal at most once per interval.
	ServerUpInterval time.Duration
	Owner            string
	Log              *slog.Logger
	// Context bounds the supervisor's background work.
	Context context.Context
}

// Messages the reader and the admin surfaces send a supervisor.
type (
	// Pair is one PDU for one destination of the partition.
	Pair struct {
		Destination string
		Item        streams.Item
	}
	// Dispatch hands over PDUs. Through: the reader has dispatched every PDU
	// up to it.
	Dispatch struct {
		Pairs   []Pair
		Through uint64
	}
	// Advance moves the reader position without PDUs for this partition.
	Advance struct{ Through uint64 }
	// Reset clears a destination's retry timings and wakes it now. Done,
	// if not nil, is called once, on the supervisor's goroutine (it must
	// not block): with the event-log sequence through which the reset is
	// durable; with dstate.ErrNotFailing when the destination is not
	// backing off (nothing is done); or with ErrResetLost when its actor
	// failed before recording it, or its event was given up. It may also
	// never be called (the supervisor stops, or the event is the last the
	// writer gives up): the caller bounds its wait.
	Reset struct {
		Destination string
		Done        func(seq uint64, err error)
	}
	// EDUPair is one EDU for one destination of the partition.
	EDUPair struct {
		Destination string
		Item        streams.EDUItem
	}
	// DispatchEDU hands over EDUs. Through: the EDU reader has dispatched
	// every EDU up to it.
	DispatchEDU struct {
		Pairs   []EDUPair
		Through uint64
	}
	// AdvanceEDU moves the EDU reader position.
	AdvanceEDU struct{ Through uint64 }
	// ServerUp: the homeserver saw the destination up. A backing-off
	// destination is reset and woken (at most once per ServerUpInterval);
	// a healthy one is left alone.
	ServerUp struct{ Destination string }
	// Drain prepares the partition's handover to another replica, once the
	// readers no longer dispatch to it: no destination starts another
	// transaction, those in flight finish, then the offsets and the
	// watermark are persisted, and Done is called (once, from another
	// goroutine; it must not block).
	Drain struct{ Done func() }
)

// Lease is the partition's lease as the supervisor needs it; *lease.Lease
// is one. Its context bounds everything the supervisor and its
// destinations do, and every send checks Valid first.
type Lease interface {
	Valid() bool
	Context() context.Context
}

// ErrResetLost: the destination's actor failed before it recorded a reset,
// or its event could not be stored; the reset may be asked again.
var ErrResetLost = errors.New("partition: the reset was lost before it was stored")

type (
	wakeDest struct{ name string }
	tick     struct{}
)

type entry struct {
	state          dstate.State
	pid            *actor.PID
	incarnation    int
	lastSent       uint64 // highest sequence dispatched to it
	done           uint64 // every PDU at or below is done
	skip           uint64 // catch-up already covered PDUs at or below
	catching       bool
	catchPersisted bool
	held           bool // a start-up wake is pending: the actor must wait for it
	activeAt       time.Time
	timer          *time.Timer
	offsetSaved    uint64
	queue          telemetry.QueueGauge // the actor's queue, for the gauges
	eduLast        uint64               // highest EDU sequence dispatched to it
	eduDone        uint64               // its EDU offset, as the actor reported it
	eduSaved       uint64               // the EDU offset persisted
	eduPending     int                  // must-deliver EDUs it holds
	eduHeldBytes   int                  // memory its droppable EDUs hold
	serverUpAt     time.Time            // the last server_up that woke it
	// eduRestore: the EDU watermark passed must-deliver EDUs this
	// destination had not acknowledged (it was backing off); its next
	// actor reads them from the stream, through eduRestore.
	eduRestore uint64
	// resets are the Done of the resets handed to the actor, oldest first,
	// until its Reset event comes back (the actor records them in order);
	// then they wait in durable, with that event, until the writer has
	// stored it.
	resets  []func(seq uint64, err error)
	durable []pendingReset
}

// pendingReset is a reset whose event is handed to the writer.
type pendingReset struct {
	event dstate.Event
	done  func(seq uint64, err error)
}

func (e *entry) busy() bool { return !e.catching && e.done < e.lastSent }

// eduBusy: EDUs handed to the actor are not all done.
func (e *entry) eduBusy() bool { return e.eduDone < e.eduLast }

// Supervisor is one partition's supervisor actor.
type Supervisor struct {
	cfg       *Config
	id        int
	entries   map[string]*entry
	busy      map[string]*entry
	readerPos uint64
	eduPos    uint64 // the EDU reader's position
	wm        eventlog.Watermark
	wmSaved   uint64
	eduSaved  uint64 // the EDU watermark persisted
	// pendingSaved is the watermark's EDUPending persisted.
	pendingSaved string
	w            *writer
	log          *slog.Logger
	lastCheck    time.Time

	// lease fences the partition's sends (nil: not fenced); ctx bounds
	// the supervisor's and its actors' work: Config.Context, or the
	// lease's.
	lease Lease
	ctx   context.Context
	// draining: Drain came; drained is called once no actor sends.
	draining  bool
	drainWait map[string]bool
	drained   func()

	engine *actor.Engine
	self   *actor.PID
	c      *actor.Context
}

// New returns the producer of partition id's supervisor, starting from what
// the event log remembers of its destinations and its watermark. With a
// lease, the supervisor and its destinations act only under it (nil: for
// as long as Config.Context lasts).
func New(cfg *Config, id int, loaded map[string]*eventlog.Loaded, wm eventlog.Watermark, wmRev uint64, l Lease) actor.Producer {
	return func() actor.Receiver {
		ctx := cfg.Context
		if l != nil {
			ctx = l.Context()
		}
		s := &Supervisor{
			cfg: cfg, id: id, lease: l, ctx: ctx,
			entries:      make(map[string]*entry, len(loaded)),
			busy:         map[string]*entry{},
			readerPos:    wm.Seq,
			eduPos:       wm.EDUSeq,
			wm:           wm,
			wmSaved:      wm.Seq,
			eduSaved:     wm.EDUSeq,
			log:          cfg.Log.With("partition", id),
			pendingSaved: wm.EDUPending,
		}
		for name, l := range loaded {
			e := &entry{state: l.State, done: l.State.Offset, lastSent: l.State.Offset,
				catching: l.State.CatchingUp, catchPersisted: l.State.CatchingUp, offsetSaved: l.State.Offset,
				eduLast: l.EDUOffset, eduDone: l.EDUOffset, eduSaved: l.EDUOffset}
			s.entries[name] = e
		}
		for name, off := range eventlog.ParsePending(wm.EDUPending) {
			e := s.entries[name]
			if e == nil {
				e = &entry{state: dstate.State{Destination: name}}
				s.entries[name] = e
			}
			e.eduDone = max(e.eduDone, off)
			if e.eduDone < wm.EDUSeq {
				e.eduRestore, e.eduLast = wm.EDUSeq, wm.EDUSeq
			}
		}
		s.w = newWriter(s, loaded, wmRev)
		return s
	}
}

// Receive handles one message.
func (s *Supervisor) Receive(c *actor.Context) {
	s.c = c
	switch m := c.Message().(type) {
	case actor.Started:
		s.started(c)
	case Dispatch:
		s.dispatch(m)
	case Advance:
		s.readerPos = max(s.readerPos, m.Through)
	case DispatchEDU:
		s.dispatchEDU(m)
	case AdvanceEDU:
		s.eduPos = max(s.eduPos, m.Through)
	case Reset:
		s.reset(m)
	case ServerUp:
		s.serverUp(m.Destination)
	case Drain:
		s.drain(m.Done)
	case destination.Drained:
		s.actorDrained(m.Destination)
	case wakeDest:
		s.wake(m.name)
	case tick:
		s.tick()
	case destination.Progress:
		s.progress(m)
	case destination.Changed:
		s.changed(m)
	case destination.CatchUpScanned:
		s.scanned(m)
	case destination.Crashed:
		s.crashed(m)
	case persisted:
		s.persisted(m)
	}
}

func (s *Supervisor) started(c *actor.Context) {
	s.engine, s.self = c.Engine(), c.PID()
	s.w.engine, s.w.super = s.engine, s.self
	go s.w.run(s.ctx)
	now := time.Now()
	for name, e := range s.entries {
		switch {
		case e.state.Failing():
			d := e.state.RetryAt().Sub(now)
			e.held = d <= 0 // due now: wait for the limiter, even if PDUs arrive first
			s.schedule(name, e, d)
		case e.catching, e.eduRestore > 0:
			e.held = true
			s.schedule(name, e, 0)
		}
	}
	s.after(s.cfg.Checkpoint/10, tick{})
}

// schedule wakes a destination after d; wake-ups due now go through the
// start-up limiter so that a restart never wakes every destination at once.
func (s *Supervisor) schedule(name string, e *entry, d time.Duration) {
	if e.timer != nil {
		e.timer.Stop()
	}
	if d <= 0 {
		d = s.cfg.WakeLimiter.Reserve().Delay()
	}
	engine, self := s.engine, s.self
	e.timer = time.AfterFunc(d, func() { engine.Send(self, wakeDest{name}) })
}

func (s *Supervisor) after(d time.Duration, msg any) {
	engine, self := s.engine, s.self
	time.AfterFunc(d, func() { engine.Send(self, msg) })
}

func (s *Supervisor) entry(name string) *entry {
	e := s.entries[name]
	if e == nil {
		e = &entry{state: dstate.State{Destination: name}}
		s.entries[name] = e
	}
	return e
}

func (s *Supervisor) spawn(name string, e *entry) *actor.PID {
	if e.pid == nil {
		e.incarnation++
		var fence destination.Fence
		if s.lease != nil {
			fence = s.lease
		}
		e.pid = s.c.SpawnChild(destination.New(s.cfg.Destination, e.state, e.done, e.eduDone, e.held, &e.queue, fence), "dest",
			actor.WithID(name+"#"+strconv.Itoa(e.incarnation)),
			actor.WithInboxSize(64),
			actor.WithMiddleware(destination.Recover),
			actor.WithContext(s.ctx))
		if s.draining {
			s.drainWait[name] = true
			s.engine.Send(e.pid, destination.Drain{})
		}
		if e.eduRestore > 0 {
			s.engine.Send(e.pid, destination.RestoreEDUs{Through: e.eduRestore})
			e.eduRestore = 0
		}
	}
	e.activeAt = time.Now()
	return e.pid
}

func (s *Supervisor) dispatch(m Dispatch) {
	groups := map[string][]streams.Item{}
	skipped := 0
	for _, p := range m.Pairs {
		if p.Item.Seq <= s.readerPos {
			// Done before the last restart (the watermark), or dispatched
			// already: the reader read the stream again for a partition
			// this replica acquired.
			skipped++
			continue
		}
		e := s.entry(p.Destination)
		if e.catching || p.Item.Seq <= e.state.Offset || p.Item.Seq <= e.skip {
			skipped++
			continue
		}
		groups[p.Destination] = append(groups[p.Destination], p.Item)
	}
	// The reader charged the budget for every pair; the destination actors
	// release what they queue.
	s.cfg.Destination.Budget.Release(int64(skipped))
	for name, items := range groups {
		e := s.entries[name]
		if !e.busy() {
			e.done = max(e.done, items[0].Seq-1)
		}
		e.lastSent = items[len(items)-1].Seq
		s.busy[name] = e
		s.engine.Send(s.spawn(name, e), destination.Enqueue{Items: items, Through: m.Through})
	}
	s.readerPos = max(s.readerPos, m.Through)
}

// dispatchEDU hands EDUs to their destinations' actors, but those done
// before the last restart.
func (s *Supervisor) dispatchEDU(m DispatchEDU) {
	groups := map[string][]streams.EDUItem{}
	for _, p := range m.Pairs {
		if p.Item.Seq <= s.eduPos { // done before the restart, or dispatched already
			continue
		}
		e := s.entry(p.Destination)
		if p.Item.Seq <= e.eduDone {
			continue
		}
		groups[p.Destination] = append(groups[p.Destination], p.Item)
	}
	for name, items := range groups {
		e := s.entries[name]
		e.eduLast = items[len(items)-1].Seq
		s.engine.Send(s.spawn(name, e), destination.EnqueueEDU{Items: items})
	}
	s.eduPos = max(s.eduPos, m.Through)
}

func (s *Supervisor) progress(m destination.Progress) {
	e := s.entries[m.Destination]
	if e == nil {
		return
	}
	e.eduDone = max(e.eduDone, m.EDUDone)
	e.eduPending, e.eduHeldBytes = m.EDUPending, m.EDUHeldBytes
	if m.EDUAcked && e.eduDone > e.eduSaved {
		// Persisted now rather than at the next checkpoint: what the
		// destination acknowledged is not sent again after a crash.
		s.w.putEDUOffset(m.Destination, e.eduDone)
		e.eduSaved = e.eduDone
	}
	e.done = max(e.done, m.DoneThrough)
	e.state.Offset = max(e.state.Offset, m.Offset)
	e.activeAt = time.Now()
	if !e.busy() {
		delete(s.busy, m.Destination)
	}
}

func (s *Supervisor) changed(m destination.Changed) {
	e := s.entries[m.Destination]
	if e == nil {
		return
	}
	e.state = m.Event.State
	s.w.appendEvent(m.Event)
	if m.Event.Type == dstate.Reset && len(e.resets) > 0 {
		e.durable = append(e.durable, pendingReset{event: m.Event, done: e.resets[0]})
		e.resets = e.resets[1:]
	}
	if e.state.CatchingUp && !e.catching {
		e.catching, e.catchPersisted = true, false
		delete(s.busy, m.Destination)
	}
	if e.state.Failing() {
		s.schedule(m.Destination, e, time.Until(e.state.RetryAt()))
	} else if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

func (s *Supervisor) scanned(m destination.CatchUpScanned) {
	e := s.entries[m.Destination]
	if e == nil || e.pid == nil {
		return
	}
	if s.readerPos > m.Through {
		s.engine.Send(e.pid, destination.Rescan{})
		return
	}
	// Everything up to m.Through is in the actor's queue; the reader has not
	// dispatched past it, so from here on the supervisor feeds the actor.
	e.catching, e.catchPersisted = false, false
	e.skip = m.Through
	e.lastSent = max(e.lastSent, m.Through)
	e.done = e.state.Offset
	if e.busy() {
		s.busy[m.Destination] = e
	}
	s.engine.Send(e.pid, destination.GoLive{})
}

func (s *Supervisor) wake(name string) {
	e := s.entries[name]
	if e == nil || s.draining {
		return
	}
	e.timer = nil
	e.held = false
	s.engine.Send(s.spawn(name, e), destination.Wake{})
}

// reset hands a reset to the destination's actor, if it is backing off.
func (s *Supervisor) reset(m Reset) {
	if s.draining {
		answer(m.Done, 0, ErrResetLost) // asked again, it reaches the new owner
		return
	}
	e := s.entries[m.Destination]
	if e == nil || !e.state.Failing() {
		answer(m.Done, 0, dstate.ErrNotFailing)
		return
	}
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	e.held = false
	e.resets = append(e.resets, m.Done)
	s.engine.Send(s.spawn(m.Destination, e), destination.ResetConnection{})
}

// answer calls a reset's Done, if any.
func answer(done func(uint64, error), seq uint64, err error) {
	if done != nil {
		done(seq, err)
	}
}

// persisted notes which events are durable, and answers the resets among
// them.
func (s *Supervisor) persisted(m persisted) {
	for _, ev := range m.events {
		e := s.entries[ev.State.Destination]
		if e == nil {
			continue
		}
		if e.catching && ev.State.CatchingUp {
			e.catchPersisted = true
		}
		if ev.Type == dstate.Reset {
			s.resetStored(e, ev, m.through[ev.State.Destination])
		}
	}
}

// resetStored answers the reset whose event ev the writer stored. A
// destination's events are stored in order, so the resets waiting before
// it lost their events (the writer gave them up).
func (s *Supervisor) resetStored(e *entry, ev dstate.Event, seq uint64) {
	for i, p := range e.durable {
		if p.event != ev {
			continue
		}
		for _, lost := range e.durable[:i] {
			answer(lost.done, 0, ErrResetLost)
		}
		answer(p.done, seq, nil)
		e.durable = e.durable[i+1:]
		return
	}
}

func (s *Supervisor) serverUp(name string) {
	e := s.entries[name]
	if e == nil || !e.state.Failing() {
		return
	}
	now := time.Now()
	if now.Sub(e.serverUpAt) < s.cfg.ServerUpInterval {
		return
	}
	e.serverUpAt = now
	s.log.Info("the homeserver saw the destination up: retrying now", "destination", name)
	s.reset(Reset{Destination: name})
}

func (s *Supervisor) crashed(m destination.Crashed) {
	e := s.entries[m.Destination]
	if e == nil || e.pid == nil {
		return
	}
	s.engine.Poison(e.pid)
	e.pid = nil
	// Every event the actor recorded came before this message: the resets
	// it had not recorded died with it.
	for _, done := range e.resets {
		answer(done, 0, ErrResetLost)
	}
	e.resets = nil
	// The queue died with the actor: read what is pending from the stream.
	ev := e.state.Record(dstate.Event{Type: dstate.CatchUpStarted, At: time.Now().UnixMilli(),
		Reason: dstate.ReasonRecover})
	s.w.appendEvent(ev)
	e.catching, e.catchPersisted = true, false
	delete(s.busy, m.Destination)
	pid := s.spawn(m.Destination, e)
	if e.eduBusy() {
		s.engine.Send(pid, destination.RestoreEDUs{Through: e.eduLast})
	}
	s.engine.Send(pid, destination.Wake{})
}

func (s *Supervisor) tick() {
	now := time.Now()
	if now.Sub(s.lastCheck) >= s.cfg.Checkpoint {
		s.lastCheck = now
		s.checkpoint(now)
	}
	s.after(s.cfg.Checkpoint/10, tick{})
}

// checkpoint persists moved offsets and the watermark, and stops idle actors.
func (s *Supervisor) checkpoint(now time.Time) {
	s.publishGauges()
	wm, eduWM := s.readerPos, s.eduPos
	pending := map[string]uint64{}
	for name, e := range s.entries {
		if e.state.Offset > e.offsetSaved {
			s.w.putOffset(name, e.state.Offset)
			e.offsetSaved = e.state.Offset
		}
		if e.eduDone > e.eduSaved {
			s.w.putEDUOffset(name, e.eduDone)
			e.eduSaved = e.eduDone
		}
		// A backing-off destination does not hold the EDU watermark back
		// (it may be down for days): the watermark lists it, and after a
		// restart its actor reads what it had pending from the stream.
		switch {
		case e.eduBusy() && (e.state.Failing() || e.eduDone < s.eduSaved):
			// Listed until it has caught up with the watermark.
			pending[name] = e.eduDone
		case e.eduBusy():
			eduWM = min(eduWM, e.eduDone)
		}
		switch {
		case e.catching && !e.catchPersisted:
			wm = min(wm, e.done)
		case e.busy():
			wm = min(wm, e.done)
		}
		if e.pid != nil && !e.busy() && !e.eduBusy() && !e.catching && !e.state.Failing() && len(e.resets) == 0 && now.Sub(e.activeAt) > s.cfg.IdleTimeout {
			s.engine.Poison(e.pid)
			e.pid = nil
		}
	}
	if p := eventlog.FormatPending(pending); wm > s.wmSaved || eduWM > s.eduSaved || p != s.pendingSaved {
		s.wmSaved, s.eduSaved, s.pendingSaved = max(s.wmSaved, wm), max(s.eduSaved, eduWM), p
		s.w.putWatermark(eventlog.Watermark{Seq: s.wmSaved, EDUSeq: s.eduSaved, EDUPending: p, Owner: s.cfg.Owner, At: now.UnixMilli()})
	}
}

// drain stops every destination from starting a transaction; done is
// called once those in flight finished and everything is persisted.
func (s *Supervisor) drain(done func()) {
	s.draining, s.drained, s.drainWait = true, done, map[string]bool{}
	for name, e := range s.entries {
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
		if e.pid != nil {
			s.drainWait[name] = true
			s.engine.Send(e.pid, destination.Drain{})
		}
	}
	s.drainedIfIdle()
}

func (s *Supervisor) actorDrained(name string) {
	if s.draining {
		delete(s.drainWait, name)
		s.drainedIfIdle()
	}
}

// drainedIfIdle persists the offsets and the watermark once no actor
// sends, and reports the drain done when the writer has stored them.
func (s *Supervisor) drainedIfIdle() {
	if len(s.drainWait) > 0 || s.drained == nil {
		return
	}
	done := s.drained
	s.drained = nil
	s.checkpoint(time.Now())
	s.w.flush(done)
}
