package memprojection_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection/memprojection"
	"github.com/fedsender/fedsender/streams"
)

// startJetStream runs an embedded NATS server with fedsender's streams.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		JetStream: true, StoreDir: t.TempDir(), Port: -1,
		JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 256 << 20,
	})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready after 10s")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := streams.Ensure(ctx, js, streams.Options{}); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
	return js
}

// writer appends events and offsets the way the destination actors do.
type writer struct {
	t       *testing.T
	store   *eventlog.Store
	states  map[string]*destination.State
	lastSeq map[string]uint64
	revs    map[string]uint64
}

func newWriter(t *testing.T, js jetstream.JetStream) *writer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := eventlog.Open(ctx, js)
	if err != nil {
		t.Fatalf("open event log: %v", err)
	}
	return &writer{t: t, store: store, states: map[string]*destination.State{},
		lastSeq: map[string]uint64{}, revs: map[string]uint64{}}
}

func partitionOf(dest string) int { return streams.Partition(dest, 4) }

// event records an event of dest and returns the state after it.
func (w *writer) event(dest string, ev destination.Event) destination.State {
	w.t.Helper()
	s, ok := w.states[dest]
	if !ok {
		s = &destination.State{Destination: dest}
		w.states[dest] = s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seq, err := w.store.Append(ctx, partitionOf(dest), s.Record(ev), w.lastSeq[dest])
	if err != nil {
		w.t.Fatalf("append %s event of %s: %v", ev.Type, dest, err)
	}
	w.lastSeq[dest] = seq
	return *s
}

func (w *writer) offset(dest string, off uint64) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rev, err := w.store.PutOffset(ctx, partitionOf(dest), dest, off, w.revs[dest])
	if err != nil {
		w.t.Fatalf("put offset of %s: %v", dest, err)
	}
	w.revs[dest] = rev
}

// run starts the projection and waits until it is ready.
func run(t *testing.T, js jetstream.JetStream) *memprojection.Projection {
	t.Helper()
	p := memprojection.New(js)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context ending")
		}
	})
	waitFor(t, "the projection to be ready", func() bool {
		select {
		case err := <-errc:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		return p.Ready()
	})
	return p
}

// waitFor polls cond every few milliseconds until it holds, and fails the
// test if it does not within 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after 10s waiting for %s", what)
		case <-tick.C:
		}
	}
}

func failed(at, interval int64) destination.Event {
	return destination.Event{Type: destination.Failed, At: at, Interval: interval}
}

func TestEmpty(t *testing.T) {
	js := startJetStream(t)
	p := run(t, js)
	if got := p.List(); len(got) != 0 {
		t.Errorf("List() = %v, want nothing", got)
	}
	if _, ok := p.Get("example.org"); ok {
		t.Error("Get(example.org) found a destination in an empty log")
	}
}

func TestCatchUpThenFollow(t *testing.T) {
	js := startJetStream(t)
	w := newWriter(t, js)

	// Written before the projection starts: several events per destination,
	// only the newest of each counts; offsets from the bucket when newer.
	w.event("a.example", failed(1000, 600_000))
	w.event("a.example", failed(1600, 1_200_000))
	wantA := w.event("a.example", destination.Event{Type: destination.CatchUpStarted, At: 1700, Offset: 40})
	w.offset("a.example", 30) // older than the event's offset: the event wins

	w.event("b.example:8448", failed(2000, 600_000))
	wantB := w.event("b.example:8448", destination.Event{Type: destination.Recovered, At: 2500, Offset: 5})
	w.offset("b.example:8448", 90) // newer than the event's: the bucket wins
	wantB.Offset = 90

	w.offset("[::1]:8448", 12) // only an offset, no event yet
	wantV6 := destination.State{Destination: "[::1]:8448", Offset: 12}

	p := run(t, js)
	want := map[string]destination.State{"a.example": wantA, "b.example:8448": wantB, "[::1]:8448": wantV6}
	checkAll(t, p, want)

	// Then it follows: new events, new offsets, a new destination.
	want["a.example"] = w.event("a.example", destination.Event{Type: destination.Reset, At: 3000})
	w.offset("[::1]:8448", 20)
	want["[::1]:8448"] = destination.State{Destination: "[::1]:8448", Offset: 20}
	want["c.example"] = w.event("c.example", failed(4000, 600_000))
	waitFor(t, "the projection to follow new events", func() bool { return sameStates(p.List(), want) })
	checkAll(t, p, want)
}

// TestReadyMeansCaughtUp checks that Ready waits for the whole initial read,
// not just its first messages.
func TestReadyMeansCaughtUp(t *testing.T) {
	js := startJetStream(t)
	w := newWriter(t, js)
	want := map[string]destination.State{}
	for i := range 150 {
		d := fmt.Sprintf("d%03d.example", i)
		w.event(d, failed(int64(i+1), 600_000))
		want[d] = w.event(d, failed(int64(i+2), 1_200_000))
		if i%2 == 0 {
			w.offset(d, uint64(i+100))
			s := want[d]
			s.Offset = uint64(i + 100)
			want[d] = s
		}
	}
	p := run(t, js)
	checkAll(t, p, want)
}

func TestOffsetDeleted(t *testing.T) {
	js := startJetStream(t)
	w := newWriter(t, js)
	w.offset("only-offset.example", 7)
	withEvent := w.event("with-event.example", destination.Event{Type: destination.Failed, At: 10, Interval: 20, Offset: 3})
	w.offset("with-event.example", 9)
	p := run(t, js)
	if s, _ := p.Get("with-event.example"); s.Offset != 9 {
		t.Fatalf("offset of with-event.example = %d, want 9 from the bucket", s.Offset)
	}

	kv, err := js.KeyValue(context.Background(), streams.OffsetBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"only-offset.example", "with-event.example"} {
		if err := kv.Delete(context.Background(), streams.OffsetKey(partitionOf(d), d)); err != nil {
			t.Fatalf("delete offset of %s: %v", d, err)
		}
	}
	want := map[string]destination.State{"with-event.example": withEvent}
	waitFor(t, "deleted offsets to be forgotten", func() bool { return sameStates(p.List(), want) })
}

func TestListIsACopy(t *testing.T) {
	js := startJetStream(t)
	w := newWriter(t, js)
	w.event("a.example", failed(1, 2))
	p := run(t, js)
	l := p.List()
	if len(l) != 1 {
		t.Fatalf("List() = %v, want one destination", l)
	}
	l[0].RetryLastTS = 999
	if s, _ := p.Get("a.example"); s.RetryLastTS != 1 {
		t.Errorf("changing List's result changed the projection: retry_last_ts = %d", s.RetryLastTS)
	}
}

func TestSkipsMalformedEvents(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	if _, err := js.Publish(ctx, streams.EventSubject(0, "bad.example"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "fedsender.events.0.bad=ZZtoken", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	w := newWriter(t, js)
	want := map[string]destination.State{"good.example": w.event("good.example", failed(5, 6))}
	p := run(t, js)
	checkAll(t, p, want)
}

func TestRunStopsWithContext(t *testing.T) {
	js := startJetStream(t)
	p := memprojection.New(js)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	waitFor(t, "ready", p.Ready)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run() = %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
}

func TestRunWithoutStreams(t *testing.T) {
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = memprojection.New(js).Run(ctx)
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("Run() without streams = %v, want ErrBucketNotFound", err)
	}
}

func TestConcurrentReads(t *testing.T) {
	js := startJetStream(t)
	w := newWriter(t, js)
	p := run(t, js)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			w.event("busy.example", failed(int64(i+1), 10))
		}
	}()
	for {
		select {
		case <-done:
			waitFor(t, "the last event", func() bool {
				s, _ := p.Get("busy.example")
				return s.RetryLastTS == 50
			})
			return
		default:
			_ = p.List()
			p.Get("busy.example")
			p.Ready()
		}
	}
}

func checkAll(t *testing.T, p *memprojection.Projection, want map[string]destination.State) {
	t.Helper()
	for name, w := range want {
		got, ok := p.Get(name)
		if !ok {
			t.Errorf("Get(%q) found nothing", name)
			continue
		}
		if got != w {
			t.Errorf("Get(%q) = %+v, want %+v", name, got, w)
		}
	}
	if !sameStates(p.List(), want) {
		t.Errorf("List() = %+v, want %+v", p.List(), want)
	}
}

func sameStates(got []destination.State, want map[string]destination.State) bool {
	if len(got) != len(want) {
		return false
	}
	for _, g := range got {
		if w, ok := want[g.Destination]; !ok || g != w {
			return false
		}
	}
	return true
}
