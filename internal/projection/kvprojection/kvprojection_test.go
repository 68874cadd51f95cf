package kvprojection_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/projection/kvprojection"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
)

const partitions = 8

// readModel is a running Projector and Index pair.
type readModel struct {
	idx  *kvprojection.Index
	proj *kvprojection.Projector
}

// start runs a projector and an index until the test ends.
func start(t *testing.T, js jetstream.JetStream, mutate ...func(*kvprojection.ProjectorOptions)) readModel {
	t.Helper()
	idx := kvprojection.NewIndex(js, testLog)
	opts := kvprojection.ProjectorOptions{JS: js, Index: idx, FlushInterval: 20 * time.Millisecond, Log: testLog}
	for _, m := range mutate {
		m(&opts)
	}
	proj := kvprojection.NewProjector(opts)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, run := range []func(context.Context) error{idx.Run, proj.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				errs <- err
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("read model did not stop within 10s")
		}
		close(errs)
		for err := range errs {
			t.Errorf("read model stopped with an error: %v", err)
		}
	})
	return readModel{idx: idx, proj: proj}
}

// synced reports whether the index shows everything the projector read.
func (rm readModel) synced() bool {
	ok, rev := rm.proj.Synced()
	return ok && rm.idx.Ready() && rm.idx.Revision() >= rev
}

func (rm readModel) wait(t *testing.T, n int) {
	t.Helper()
	projectiontest.Eventually(t, 20*time.Second, func() bool { return rm.synced() && rm.idx.Len() == n },
		"read model synced=%v with %d of %d destinations", rm.synced(), rm.idx.Len(), n)
}

// writer appends destination events as an owner does.
type writer struct {
	store *eventlog.Store
	seqs  map[string]uint64
}

func newWriter(t *testing.T, js jetstream.JetStream) *writer {
	t.Helper()
	store, err := eventlog.Open(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	return &writer{store: store, seqs: map[string]uint64{}}
}

// put records an event whose state after it is s.
func (w *writer) put(t *testing.T, s destination.State) {
	t.Helper()
	typ := destination.Failed
	if !s.Failing() {
		typ = destination.Recovered
	}
	seq, err := w.store.Append(context.Background(), streams.Partition(s.Destination, partitions),
		destination.Event{Type: typ, At: time.Now().UnixMilli(), State: s}, w.seqs[s.Destination])
	if err != nil {
		t.Fatalf("append event of %s: %v", s.Destination, err)
	}
	w.seqs[s.Destination] = seq
}

func (w *writer) putAll(t *testing.T, states []destination.State) {
	t.Helper()
	for _, s := range states {
		w.put(t, s)
	}
}

func TestContract(t *testing.T) {
	projectiontest.Run(t, func(t *testing.T, states []destination.State) projectiontest.Reader {
		_, js, _ := projectiontest.JetStream(t)
		newWriter(t, js).putAll(t, states)
		rm := start(t, js)
		rm.wait(t, len(states))
		return rm.idx
	})
}

// TestDocument: the bucket holds Synapse's destination object under the
// documented key, readable as is.
func TestDocument(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	w := newWriter(t, js)
	w.putAll(t, projectiontest.Fixture())
	rm := start(t, js)
	rm.wait(t, len(projectiontest.Fixture()))
	kv, err := js.KeyValue(context.Background(), streams.DestinationBucket)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ key, want string }{
		{"b_example", `{"destination":"b.example","retry_last_ts":300,"retry_interval":600000,"failure_ts":100,"last_successful_stream_ordering":50,"catching_up":false,"event_sequence":2,"pending_edus":0}`},
		{"z_example", `{"destination":"z.example","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":70,"catching_up":false,"event_sequence":3,"pending_edus":0}`},
		{"=5B=3A=3A1=5D=3A8448", `{"destination":"[::1]:8448","retry_last_ts":400,"retry_interval":1200000,"failure_ts":50,"last_successful_stream_ordering":10,"catching_up":false,"event_sequence":4,"pending_edus":0}`},
		{"a_example", `{"destination":"a.example","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":null,"catching_up":false,"event_sequence":1,"pending_edus":0}`},
	}
	for _, tt := range tests {
		e, err := kv.Get(context.Background(), tt.key)
		if err != nil {
			t.Errorf("kv get %s: %v", tt.key, err)
			continue
		}
		if string(e.Value()) != tt.want {
			t.Errorf("kv get %s =\n %s\nwant\n %s", tt.key, e.Value(), tt.want)
		}
	}
}

// TestChangesVisibleWithinOneSecond: events and offsets show in the index
// well within a second.
func TestChangesVisibleWithinOneSecond(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	w := newWriter(t, js)
	w.putAll(t, projectiontest.Fixture())
	rm := start(t, js, func(o *kvprojection.ProjectorOptions) { o.FlushInterval = 0 }) // the default
	rm.wait(t, len(projectiontest.Fixture()))

	began := time.Now()
	w.put(t, destination.State{Destination: "a.example", FailureTS: 5, RetryLastTS: 5, RetryInterval: 600_000})
	projectiontest.Eventually(t, time.Second, func() bool {
		s, _ := rm.idx.Get("a.example")
		return s.RetryLastTS == 5
	}, "a failure of a.example not shown")
	t.Logf("event visible after %v", time.Since(began))

	offsets, err := js.KeyValue(context.Background(), streams.OffsetBucket)
	if err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	if _, err := offsets.Put(context.Background(), streams.OffsetKey(streams.Partition("c.example", partitions), "c.example"), []byte("777")); err != nil {
		t.Fatal(err)
	}
	projectiontest.Eventually(t, time.Second, func() bool {
		p := rm.idx.Page(projection.Query{Order: projection.ByLastSuccessfulStreamOrdering, Backwards: true, Limit: 1})
		return len(p.Destinations) == 1 && p.Destinations[0].Destination == "c.example" && p.Destinations[0].Offset == 777
	}, "the new offset of c.example not first in last_successful_stream_ordering order")
	t.Logf("offset visible after %v", time.Since(began))

	// A new destination, and one whose only record (an offset) is deleted.
	began = time.Now()
	if _, err := offsets.Put(context.Background(), streams.OffsetKey(streams.Partition("new.example", partitions), "new.example"), []byte("9")); err != nil {
		t.Fatal(err)
	}
	projectiontest.Eventually(t, time.Second, func() bool { _, ok := rm.idx.Get("new.example"); return ok }, "new.example not shown")
	if err := offsets.Delete(context.Background(), streams.OffsetKey(streams.Partition("new.example", partitions), "new.example")); err != nil {
		t.Fatal(err)
	}
	projectiontest.Eventually(t, time.Second, func() bool { _, ok := rm.idx.Get("new.example"); return !ok }, "new.example still shown")
	t.Logf("new destination shown and removed after %v", time.Since(began))
}

// TestRebuild deletes the bucket under a running read model: it is rebuilt
// from the event log and answers every query as before; a read model
// started afresh on a deleted bucket does the same.
func TestRebuild(t *testing.T) {
	t.Cleanup(kvprojection.SetRecheck(200 * time.Millisecond))
	_, js, _ := projectiontest.JetStream(t)
	states := append(projectiontest.Fixture(), projectiontest.Generate(500, 7)...)
	newWriter(t, js).putAll(t, states)
	rm := start(t, js)
	rm.wait(t, len(states))
	queries := projectiontest.Queries(len(states))
	before := make([]projection.Page, len(queries))
	for i, q := range queries {
		before[i] = rm.idx.Page(q)
	}
	projectiontest.Check(t, rm.idx, states)

	ctx := context.Background()
	kv, err := js.KeyValue(ctx, streams.DestinationBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Status(ctx); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, streams.DestinationBucket); err != nil {
		t.Fatalf("delete bucket: %v", err)
	}
	// The running pair notices, recreates the bucket and refills it.
	var values uint64
	projectiontest.Eventually(t, 30*time.Second, func() bool {
		kv, err := js.KeyValue(ctx, streams.DestinationBucket)
		if err != nil {
			return false
		}
		st, err := kv.Status(ctx)
		if err != nil {
			return false
		}
		values = st.Values()
		return values == uint64(len(states)) && rm.idx.Len() == len(states) && rm.idx.Revision() <= values
	}, "bucket not rebuilt by the running read model: %d values, index of %d at revision %d", values, rm.idx.Len(), rm.idx.Revision())
	same(t, rm.idx, queries, before)

	// A fresh read model on a deleted bucket.
	if err := js.DeleteKeyValue(ctx, streams.DestinationBucket); err != nil {
		t.Fatalf("delete bucket: %v", err)
	}
	fresh := start(t, js)
	fresh.wait(t, len(states))
	same(t, fresh.idx, queries, before)
}

// same checks that every query is answered as before, waiting for the
// index to converge first.
func same(t *testing.T, idx *kvprojection.Index, queries []projection.Query, before []projection.Page) {
	t.Helper()
	diff := func() int {
		for i, q := range queries {
			got := idx.Page(q)
			if got.Total != before[i].Total || len(got.Destinations) != len(before[i].Destinations) {
				return i
			}
			for j := range got.Destinations {
				if got.Destinations[j] != before[i].Destinations[j] {
					return i
				}
			}
		}
		return -1
	}
	projectiontest.Eventually(t, 20*time.Second, func() bool { return diff() < 0 }, "query %d answered differently after the rebuild", diff())
}

// TestTwoProjectors: two replicas' projectors write the same bucket; it
// ends with the newest state of each destination, never an older one.
func TestTwoProjectors(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	w := newWriter(t, js)
	a := start(t, js)
	b := start(t, js)
	a.wait(t, 0)
	b.wait(t, 0)
	for i := range 30 {
		w.put(t, destination.State{Destination: "flappy.example", FailureTS: 1, RetryLastTS: int64(i + 1), RetryInterval: 1000, Offset: uint64(i)})
	}
	for _, rm := range []readModel{a, b} {
		projectiontest.Eventually(t, 5*time.Second, func() bool {
			s, _ := rm.idx.Get("flappy.example")
			return s.RetryLastTS == 30 && s.Offset == 29
		}, "flappy.example did not converge to its newest state")
	}
}

// TestForeignDocuments: documents that do not match their key, or are not
// JSON, are not shown, and a projector's reconcile puts the right one back.
func TestForeignDocuments(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	w := newWriter(t, js)
	w.putAll(t, projectiontest.Fixture())
	rm := start(t, js, func(o *kvprojection.ProjectorOptions) { o.ReconcileInterval = 100 * time.Millisecond })
	rm.wait(t, len(projectiontest.Fixture()))
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, streams.DestinationBucket)
	if err != nil {
		t.Fatal(err)
	}
	// b.example's key claiming to be another destination, and garbage.
	if _, err := kv.Put(ctx, "b_example", []byte(`{"destination":"evil.example","retry_last_ts":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "c_example", []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "not=token", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	projectiontest.Eventually(t, 5*time.Second, func() bool {
		b, okB := rm.idx.Get("b.example")
		c, okC := rm.idx.Get("c.example")
		_, evil := rm.idx.Get("evil.example")
		return okB && okC && !evil && b.RetryLastTS == 300 && c.RetryLastTS == 200
	}, "foreign documents were not repaired")
}

func TestProjectorNeedsIndex(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	err := kvprojection.NewProjector(kvprojection.ProjectorOptions{JS: js}).Run(context.Background())
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Run without an Index = %v, want an error", err)
	}
}

var testLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
