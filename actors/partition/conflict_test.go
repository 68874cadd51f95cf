package partition

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fedsender/fedsender/actors/destination"
	dstate "github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/telemetry"
)

// conflictWriter is a partition's writer on a real JetStream, with its
// conflict counter and its log.
type conflictWriter struct {
	*writer
	reader *sdkmetric.ManualReader
	logs   *bytes.Buffer
}

func newConflictWriter(t *testing.T) (*conflictWriter, *eventlog.Store) {
	t.Helper()
	_, js, _ := projectiontest.JetStream(t)
	store, err := eventlog.Open(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	reader := sdkmetric.NewManualReader()
	metrics, err := telemetry.NewMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), telemetry.MetricsOptions{Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	s := &Supervisor{id: 2, log: slog.New(slog.NewTextHandler(logs, nil)),
		cfg: &Config{Store: store, Destination: &destination.Config{Metrics: metrics}}}
	return &conflictWriter{writer: newWriter(s, nil, 0), reader: reader, logs: logs}, store
}

// conflicts is fedsender_cas_conflicts by "kind/cause".
func (w *conflictWriter) conflicts(t *testing.T) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := w.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == telemetry.MetricCASConflicts {
				for _, dp := range sum.DataPoints {
					kind, _ := dp.Attributes.Value(attribute.Key(telemetry.AttrKind))
					cause, _ := dp.Attributes.Value(attribute.Key(telemetry.AttrCause))
					out[kind.AsString()+"/"+cause.AsString()] = dp.Value
				}
			}
		}
	}
	return out
}

// TestOwnDelayedWritesAreAdopted stores a value the writer tried, as NATS
// does when a write's answer is lost (a timeout during an outage, a publish
// sent from the reconnect buffer): the writer's next compare-and-swap
// conflicts with it, finds its own value, adopts the revision and goes on.
func TestOwnDelayedWritesAreAdopted(t *testing.T) {
	w, store := newConflictWriter(t)
	ctx := context.Background()
	const dest = "remote.example"

	// Offset 7 was tried and stored, its answer lost; 9 is written next.
	keyOf(w.offsetKeys, dest).try(7)
	if _, err := store.PutOffset(ctx, 2, dest, 7, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.writeOffset(ctx, dest, 9); err != nil {
		t.Fatalf("offset after its own delayed write: %v", err)
	}
	if off, _, err := store.Offset(ctx, 2, dest); err != nil || off != 9 {
		t.Fatalf("stored offset %d (%v), want 9", off, err)
	}

	// The same for the watermark, and for an offset the delayed write
	// already covers (nothing more to write).
	old := eventlog.Watermark{Seq: 40, Owner: "host", At: 1}
	w.wmKey.try(old)
	if _, err := store.PutWatermark(ctx, 2, old, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.writeWatermark(ctx, eventlog.Watermark{Seq: 41, Owner: "host", At: 2}); err != nil {
		t.Fatalf("watermark after its own delayed write: %v", err)
	}
	if wm, _, err := store.LoadWatermark(ctx, 2); err != nil || wm.Seq != 41 {
		t.Fatalf("stored watermark %+v (%v), want seq 41", wm, err)
	}
	keyOf(w.offsetKeys, dest).try(12)
	if _, err := store.PutOffset(ctx, 2, dest, 12, keyOf(w.offsetKeys, dest).rev); err != nil {
		t.Fatal(err)
	}
	if err := w.writeOffset(ctx, dest, 11); err != nil {
		t.Fatalf("offset covered by its own delayed write: %v", err)
	}
	if off, _, _ := store.Offset(ctx, 2, dest); off != 12 {
		t.Fatalf("stored offset %d, want 12 (never moved back)", off)
	}

	// An event stored once although its append timed out is not
	// appended again.
	st := dstate.State{Destination: dest}
	ev := st.Record(dstate.Event{Type: dstate.Failed, At: 5, Interval: 600000})
	f, err := store.AppendAsync(2, ev, keyOf(w.eventLogs, dest).try(ev))
	if err != nil {
		t.Fatal(err)
	}
	seq, err := eventlog.AckResult(ctx, f) // the answer the writer did not get
	if err != nil {
		t.Fatal(err)
	}
	done, failed := w.writeEvents(ctx, []dstate.Event{ev})
	if len(done) != 1 || len(failed) != 0 {
		t.Fatalf("event after its own delayed append: done %d, failed %d", len(done), len(failed))
	}
	if last, lastSeq, err := store.LastEvent(ctx, 2, dest); err != nil || last != ev || lastSeq != seq {
		t.Fatalf("last event %+v at %d (%v), want the one event at %d", last, lastSeq, err, seq)
	}

	got := w.conflicts(t)
	for _, k := range []string{"offset/own_write_replayed", "watermark/own_write_replayed", "event/own_write_replayed"} {
		if got[k] == 0 {
			t.Errorf("fedsender_cas_conflicts{%s} = 0, want counted; all: %v", k, got)
		}
	}
	for k, n := range got {
		if strings.HasSuffix(k, "/other_writer") && n != 0 {
			t.Errorf("fedsender_cas_conflicts{%s} = %d with no other writer", k, n)
		}
	}
	if strings.Contains(w.logs.String(), "another replica") {
		t.Errorf("blamed another replica:\n%s", w.logs)
	}
}

// TestAnotherWritersValueIsARealConflict: a value the writer never tried is
// another process's, and stays a final conflict, logged and counted.
func TestAnotherWritersValueIsARealConflict(t *testing.T) {
	w, store := newConflictWriter(t)
	ctx := context.Background()
	const dest = "remote.example"

	keyOf(w.offsetKeys, dest).try(7)
	if _, err := store.PutOffset(ctx, 2, dest, 8, 0); err != nil { // not ours
		t.Fatal(err)
	}
	err := w.writeOffset(ctx, dest, 9)
	if !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("offset over another writer's: %v, want ErrConflict", err)
	}
	if w.fail(ctx, telemetry.CASOffset, dest, err) {
		t.Error("a conflict with another writer is retried")
	}
	if !strings.Contains(w.logs.String(), "another replica wrote this partition") {
		t.Errorf("the conflict is not logged:\n%s", w.logs)
	}

	st, mst := dstate.State{Destination: dest}, dstate.State{Destination: dest}
	other := st.Record(dstate.Event{Type: dstate.Reset, At: 1})
	if _, err := store.Append(ctx, 2, other, 0); err != nil {
		t.Fatal(err)
	}
	mine := mst.Record(dstate.Event{Type: dstate.Failed, At: 2, Interval: 600000})
	if done, _ := w.writeEvents(ctx, []dstate.Event{mine}); len(done) != 0 {
		t.Fatal("an event was appended over another writer's")
	}
	if off, _, _ := store.Offset(ctx, 2, dest); off != 8 {
		t.Errorf("stored offset %d, want the other writer's 8", off)
	}
	got := w.conflicts(t)
	if got["offset/other_writer"] != 1 || got["event/other_writer"] != 1 || got["offset/own_write_replayed"] != 0 {
		t.Errorf("fedsender_cas_conflicts = %v, want one offset and one event conflict with another writer", got)
	}
}
